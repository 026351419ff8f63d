//! The published surrogate network, in plain Rust:
//! Linear(L, 2L) → CELU(α = 1) → Linear(2L, 1) → Sigmoid, trained on the mean squared error by
//! SGD with momentum (PyTorch semantics) and a step-decayed learning rate.
//!
//! Inputs are 0/1, so the first layer is a sum of the weight rows of the kept blocks, and its
//! weight gradient only touches those rows. Masks that keep most blocks (the published strata
//! remove 2 to 14 of 32) are taken from the other side: the sum over all rows minus the rows of
//! the removed blocks. Either way a mask costs O(min(kept, removed) · 2L) additions, with no
//! multiplications, forward and backward. CELU's exponential is a short polynomial that the
//! compiler can vectorise ([`exp_non_positive`]). Arithmetic is f32, like the published
//! network.
//!
//! Targets and the sigmoid: the published target, utility = PPL_full / PPL_mask, lies in (0, 1]
//! and is fitted as it is. Any other target (e.g. −(NLL increase), which is ≤ 0 and unbounded
//! below) is mapped affinely onto [0, 1] by the minimum and maximum of the training targets
//! before fitting, and predictions are mapped back ([`TargetScaling`], saved with the model);
//! the network then never predicts outside the training range, which is the price of keeping
//! the published architecture unchanged.

use layerprune_core::Mask;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{FitOptions, Surrogate};

/// prediction = offset + scale · network_output.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetScaling {
    pub offset: f64,
    pub scale: f64,
}

impl TargetScaling {
    pub const IDENTITY: TargetScaling = TargetScaling {
        offset: 0.0,
        scale: 1.0,
    };

    /// Identity when every target is already in [0, 1] (the published utility), else the map
    /// of [min, max] onto [0, 1].
    pub fn for_targets(targets: &[f64]) -> Self {
        let low = targets.iter().copied().fold(f64::INFINITY, f64::min);
        let high = targets.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if low >= 0.0 && high <= 1.0 {
            TargetScaling::IDENTITY
        } else if high > low {
            TargetScaling {
                offset: low,
                scale: high - low,
            }
        } else {
            // One value repeated: put it at the sigmoid's centre.
            TargetScaling {
                offset: low - 0.5,
                scale: 1.0,
            }
        }
    }

    fn target_to_network(self, target: f64) -> f32 {
        ((target - self.offset) / self.scale) as f32
    }

    fn network_to_target(self, output: f32) -> f64 {
        self.offset + self.scale * f64::from(output)
    }
}

/// The published network, fitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpSurrogate {
    pub num_players: usize,
    /// Width of the hidden layer (2L in the published network).
    pub hidden: usize,
    /// First layer, `num_players × hidden`, row i = the weights leaving input i (the transpose
    /// of PyTorch's `weight`, so that a kept block adds one contiguous row).
    pub input_weights: Vec<f32>,
    pub hidden_bias: Vec<f32>,
    /// Second layer, one weight per hidden unit.
    pub output_weights: Vec<f32>,
    pub output_bias: f32,
    pub target_scaling: TargetScaling,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Each mask as the shorter of its kept and removed block lists, flattened (compressed rows),
/// so training touches no `Mask`.
struct SparseMasks {
    offsets: Vec<usize>,
    blocks: Vec<u32>,
    /// Whether row r lists its removed blocks (true) or its kept blocks (false).
    lists_removed: Vec<bool>,
}

/// One mask as [`SparseMasks`] stores it.
#[derive(Clone, Copy)]
struct SparseMask<'a> {
    blocks: &'a [u32],
    lists_removed: bool,
}

impl SparseMasks {
    fn new(masks: &[Mask]) -> Self {
        let mut sparse = SparseMasks {
            offsets: Vec::with_capacity(masks.len() + 1),
            blocks: Vec::new(),
            lists_removed: Vec::with_capacity(masks.len()),
        };
        sparse.offsets.push(0);
        for mask in masks {
            let lists_removed = 2 * mask.num_kept() > mask.num_blocks();
            sparse.blocks.extend(
                mask.kept()
                    .iter()
                    .enumerate()
                    .filter(|(_, &kept)| kept != lists_removed)
                    .map(|(i, _)| i as u32),
            );
            sparse.offsets.push(sparse.blocks.len());
            sparse.lists_removed.push(lists_removed);
        }
        sparse
    }

    fn row(&self, index: usize) -> SparseMask<'_> {
        SparseMask {
            blocks: &self.blocks[self.offsets[index]..self.offsets[index + 1]],
            lists_removed: self.lists_removed[index],
        }
    }
}

/// e^x for x ≤ 0 (clamped below at −87, where f32 still has normal numbers), to about 2e-7
/// relative error: x = n·ln2 + r with |r| ≤ ½ln2, e^r by its Taylor polynomial of degree 6,
/// 2^n built in the exponent bits. Branch-free, so loops over it vectorise.
fn exp_non_positive(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_145_75;
    const LN2_LOW: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 0.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = x - n * LN2_HIGH - n * LN2_LOW;
    let polynomial = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n_bits = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    polynomial * f32::from_bits(((n_bits + 127) << 23) as u32)
}

/// CELU(α = 1) in place: z for z > 0, e^z − 1 otherwise.
fn celu_in_place(values: &mut [f32]) {
    for value in values {
        let negative_part = exp_non_positive(*value) - 1.0;
        *value = if *value > 0.0 { *value } else { negative_part };
    }
}

/// PyTorch's default `nn.Linear` initialisation: weights and biases U(−1/√fan_in, 1/√fan_in).
fn uniform_init(rng: &mut ChaCha8Rng, count: usize, fan_in: usize) -> Vec<f32> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    (0..count)
        .map(|_| rng.random_range(-bound..bound))
        .collect()
}

impl MlpSurrogate {
    pub(crate) fn fit(
        num_players: usize,
        masks: &[Mask],
        targets: &[f64],
        options: &FitOptions,
    ) -> Self {
        let hidden = 2 * num_players;
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        let target_scaling = TargetScaling::for_targets(targets);
        let mut model = MlpSurrogate {
            num_players,
            hidden,
            input_weights: uniform_init(&mut rng, num_players * hidden, num_players),
            hidden_bias: uniform_init(&mut rng, hidden, num_players),
            output_weights: uniform_init(&mut rng, hidden, hidden),
            output_bias: uniform_init(&mut rng, 1, hidden)[0],
            target_scaling,
        };
        let sparse = SparseMasks::new(masks);
        let network_targets: Vec<f32> = targets
            .iter()
            .map(|&t| target_scaling.target_to_network(t))
            .collect();
        model.train(&sparse, &network_targets, options, &mut rng);
        model
    }

    fn train(
        &mut self,
        masks: &SparseMasks,
        targets: &[f32],
        options: &FitOptions,
        rng: &mut ChaCha8Rng,
    ) {
        let hidden = self.hidden;
        let momentum = options.momentum as f32;
        // Gradients and momentum buffers, laid out like the parameters.
        let mut grad_input = vec![0.0f32; self.input_weights.len()];
        let mut grad_hidden_bias = vec![0.0f32; hidden];
        let mut grad_output = vec![0.0f32; hidden];
        let mut velocity_input = vec![0.0f32; self.input_weights.len()];
        let mut velocity_hidden_bias = vec![0.0f32; hidden];
        let mut velocity_output = vec![0.0f32; hidden];
        let mut velocity_output_bias = 0.0f32;
        // Gradient shared by every input row, from masks that list their removed blocks: such
        // a mask adds its hidden delta to every row, then takes it back from its removed ones.
        let mut grad_every_row = vec![0.0f32; hidden];
        let mut all_kept = vec![0.0f32; hidden];
        let mut activation = vec![0.0f32; hidden];
        let mut hidden_delta = vec![0.0f32; hidden];
        let mut order: Vec<usize> = (0..targets.len()).collect();
        // Progress: a debug line about every twentieth of the epochs, an info line at the end.
        let log_every = (options.epochs / 20).max(1);
        let started = std::time::Instant::now();
        let mut epoch_loss = f64::NAN;

        for epoch in 0..options.epochs {
            // Mean squared error (network scale) of the rows as they were met in this epoch.
            let mut squared_error = 0.0f64;
            let decays = (epoch / options.lr_decay_every) as i32;
            let learning_rate =
                (options.learning_rate * options.lr_decay_factor.powi(decays)) as f32;
            order.shuffle(rng);
            for batch in order.chunks(options.batch_size) {
                self.all_kept_pre_activation(&mut all_kept);
                grad_input.fill(0.0);
                grad_hidden_bias.fill(0.0);
                grad_output.fill(0.0);
                grad_every_row.fill(0.0);
                let mut grad_output_bias = 0.0f32;
                // d(mean squared error)/d(output) = 2 (output − target) / batch size.
                let loss_scale = 2.0 / batch.len() as f32;
                for &row in batch {
                    let mask = masks.row(row);
                    let output = self.forward(mask, &all_kept, &mut activation);
                    squared_error += f64::from(output - targets[row]).powi(2);
                    let output_delta =
                        loss_scale * (output - targets[row]) * output * (1.0 - output);
                    grad_output_bias += output_delta;
                    for (((grad, delta), &active), &weight) in grad_output
                        .iter_mut()
                        .zip(hidden_delta.iter_mut())
                        .zip(activation.iter())
                        .zip(&self.output_weights)
                    {
                        *grad += output_delta * active;
                        // CELU'(z) = 1 for z > 0, else e^z = CELU(z) + 1.
                        let slope = if active > 0.0 { 1.0 } else { active + 1.0 };
                        *delta = output_delta * weight * slope;
                    }
                    add_into(&mut grad_hidden_bias, &hidden_delta);
                    if mask.lists_removed {
                        add_into(&mut grad_every_row, &hidden_delta);
                    }
                    for &block in mask.blocks {
                        let start = block as usize * hidden;
                        let grad_row = &mut grad_input[start..start + hidden];
                        if mask.lists_removed {
                            subtract_from(grad_row, &hidden_delta);
                        } else {
                            add_into(grad_row, &hidden_delta);
                        }
                    }
                }
                for grad_row in grad_input.chunks_exact_mut(hidden) {
                    add_into(grad_row, &grad_every_row);
                }
                sgd_step(
                    &mut self.input_weights,
                    &mut velocity_input,
                    &grad_input,
                    learning_rate,
                    momentum,
                );
                sgd_step(
                    &mut self.hidden_bias,
                    &mut velocity_hidden_bias,
                    &grad_hidden_bias,
                    learning_rate,
                    momentum,
                );
                sgd_step(
                    &mut self.output_weights,
                    &mut velocity_output,
                    &grad_output,
                    learning_rate,
                    momentum,
                );
                velocity_output_bias = momentum * velocity_output_bias + grad_output_bias;
                self.output_bias -= learning_rate * velocity_output_bias;
            }
            epoch_loss = squared_error / targets.len().max(1) as f64;
            if (epoch + 1) % log_every == 0 || epoch + 1 == options.epochs {
                tracing::debug!(
                    "mlp: epoch {}/{}, training loss {epoch_loss:.6e}, learning rate {learning_rate:.3e}",
                    epoch + 1,
                    options.epochs
                );
            }
        }
        tracing::info!(
            "mlp: trained {} epochs on {} rows in {:.1} s, final training loss {epoch_loss:.6e}",
            options.epochs,
            targets.len(),
            started.elapsed().as_secs_f64()
        );
    }

    /// The first layer's pre-activation for the full mask: bias plus every input row.
    fn all_kept_pre_activation(&self, sum: &mut [f32]) {
        sum.copy_from_slice(&self.hidden_bias);
        for row in self.input_weights.chunks_exact(self.hidden) {
            add_into(sum, row);
        }
    }

    /// Network output (in (0, 1), before target scaling) for one mask; leaves the hidden
    /// activations in `activation`. `all_kept` is [`Self::all_kept_pre_activation`].
    fn forward(&self, mask: SparseMask<'_>, all_kept: &[f32], activation: &mut [f32]) -> f32 {
        let hidden = self.hidden;
        if mask.lists_removed {
            activation.copy_from_slice(all_kept);
        } else {
            activation.copy_from_slice(&self.hidden_bias);
        }
        for &block in mask.blocks {
            let start = block as usize * hidden;
            let weights = &self.input_weights[start..start + hidden];
            if mask.lists_removed {
                subtract_from(activation, weights);
            } else {
                add_into(activation, weights);
            }
        }
        celu_in_place(activation);
        sigmoid(self.output_bias + dot(activation, &self.output_weights))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let (l, h) = (self.num_players, self.hidden);
        if l == 0 || h == 0 {
            return Err(format!(
                "MLP has {l} players and {h} hidden units; it needs at least one of each"
            ));
        }
        // `l * h` of a damaged file may overflow (a panic, where overflow is checked).
        if l.checked_mul(h) != Some(self.input_weights.len())
            || self.hidden_bias.len() != h
            || self.output_weights.len() != h
        {
            return Err(format!(
                "MLP parameter shapes do not match {l} players and {h} hidden units"
            ));
        }
        let all_finite = self
            .input_weights
            .iter()
            .chain(&self.hidden_bias)
            .chain(&self.output_weights)
            .chain(std::iter::once(&self.output_bias))
            .all(|w| w.is_finite());
        if !all_finite {
            return Err("MLP has a non-finite weight".into());
        }
        let scaling = self.target_scaling;
        if !(scaling.offset.is_finite() && scaling.scale.is_finite() && scaling.scale > 0.0) {
            return Err("MLP target scaling must be finite with a positive scale".into());
        }
        // Finite weights may still overflow f32 on the way to the output, and inf − inf or
        // inf · 0 is NaN. Bound every value the forward pass computes, in f64: a hidden unit's
        // pre-activation (any subset of its input weights, plus its bias, whichever side the
        // sum starts from) by B_h = |b_h| + Σ_i |W_ih|, so its CELU by max(B_h, 1), and the
        // logit by |c| + Σ_h max(B_h, 1)·|v_h|. Each bound is kept well below f32::MAX for the
        // rounding of f32 sums; then every prediction is finite.
        let mut bounds: Vec<f64> = self
            .hidden_bias
            .iter()
            .map(|b| f64::from(b.abs()))
            .collect();
        for row in self.input_weights.chunks_exact(h) {
            for (bound, w) in bounds.iter_mut().zip(row) {
                *bound += f64::from(w.abs());
            }
        }
        let logit_bound = f64::from(self.output_bias.abs())
            + bounds
                .iter()
                .zip(&self.output_weights)
                .map(|(bound, v)| bound.max(1.0) * f64::from(v.abs()))
                .sum::<f64>();
        let f32_safe = f64::from(f32::MAX) / 4.0;
        if !(bounds.iter().all(|b| *b < f32_safe) && logit_bound < f32_safe) {
            return Err("MLP weights are too large for its arithmetic (f32) to stay finite".into());
        }
        if scaling.offset.abs() + scaling.scale >= f64::MAX / 4.0 {
            return Err("MLP target scaling is too large for its predictions to be finite".into());
        }
        Ok(())
    }
}

/// Dot product over eight running sums (`layerprune_core::linalg::dot`).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    layerprune_core::linalg::dot::<f32, 8>(a, b)
}

fn add_into(target: &mut [f32], values: &[f32]) {
    for (t, v) in target.iter_mut().zip(values) {
        *t += v;
    }
}

fn subtract_from(target: &mut [f32], values: &[f32]) {
    for (t, v) in target.iter_mut().zip(values) {
        *t -= v;
    }
}

/// PyTorch SGD with momentum (no dampening, no Nesterov): v = μ·v + g; w −= lr·v.
fn sgd_step(weights: &mut [f32], velocity: &mut [f32], gradient: &[f32], lr: f32, momentum: f32) {
    for ((w, v), g) in weights.iter_mut().zip(velocity.iter_mut()).zip(gradient) {
        *v = momentum * *v + g;
        *w -= lr * *v;
    }
}

impl Surrogate for MlpSurrogate {
    fn num_players(&self) -> usize {
        self.num_players
    }

    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        let mut all_kept = vec![0.0f32; self.hidden];
        self.all_kept_pre_activation(&mut all_kept);
        let mut activation = vec![0.0f32; self.hidden];
        let mut blocks = Vec::with_capacity(self.num_players);
        masks
            .iter()
            .map(|mask| {
                assert_eq!(mask.num_blocks(), self.num_players, "mask length");
                let lists_removed = 2 * mask.num_kept() > self.num_players;
                blocks.clear();
                blocks.extend(
                    (0..self.num_players)
                        .filter(|&i| mask.is_kept(i) != lists_removed)
                        .map(|i| i as u32),
                );
                let sparse = SparseMask {
                    blocks: &blocks,
                    lists_removed,
                };
                let output = self.forward(sparse, &all_kept, &mut activation);
                self.target_scaling.network_to_target(output)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_is_identity_for_utilities_and_min_max_otherwise() {
        assert_eq!(
            TargetScaling::for_targets(&[0.2, 1.0, 0.7]),
            TargetScaling::IDENTITY
        );
        let scaling = TargetScaling::for_targets(&[-4.0, 0.0, -1.0]);
        assert_eq!(scaling.target_to_network(-4.0), 0.0);
        assert_eq!(scaling.target_to_network(0.0), 1.0);
        assert_eq!(scaling.network_to_target(0.75), -1.0);
        let constant = TargetScaling::for_targets(&[3.0, 3.0]);
        assert_eq!(constant.target_to_network(3.0), 0.5);
    }

    #[test]
    fn fast_exponential_is_accurate() {
        for k in 0..=2000 {
            let x = -20.0 * k as f32 / 2000.0;
            let (fast, exact) = (exp_non_positive(x), x.exp());
            assert!(
                (fast - exact).abs() <= 3e-7 * exact,
                "e^{x}: {fast} vs {exact}"
            );
        }
        assert!(exp_non_positive(-200.0) >= 0.0 && exp_non_positive(-200.0) < 1e-37);
        let mut values = [2.0, 0.0, -1.0];
        celu_in_place(&mut values);
        assert_eq!(values[..2], [2.0, 0.0]);
        assert!((values[2] - (-1.0f32).exp_m1()).abs() < 1e-7);
    }

    #[test]
    fn both_sides_of_the_sparse_form_predict_alike() {
        // Masks listed by kept blocks and by removed blocks must give the dense forward pass.
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let model = MlpSurrogate {
            num_players: 5,
            hidden: 10,
            input_weights: uniform_init(&mut rng, 50, 5),
            hidden_bias: uniform_init(&mut rng, 10, 5),
            output_weights: uniform_init(&mut rng, 10, 10),
            output_bias: -0.2,
            target_scaling: TargetScaling::IDENTITY,
        };
        for text in [
            "00000", "10000", "11000", "11100", "11110", "11111", "01011",
        ] {
            let mask: Mask = text.parse().unwrap();
            let x = mask.to_features();
            let logit = (0..10)
                .map(|h| {
                    let z = f64::from(model.hidden_bias[h])
                        + (0..5)
                            .map(|i| x[i] * f64::from(model.input_weights[i * 10 + h]))
                            .sum::<f64>();
                    let a = if z > 0.0 { z } else { z.exp_m1() };
                    a * f64::from(model.output_weights[h])
                })
                .sum::<f64>()
                + f64::from(model.output_bias);
            let dense = 1.0 / (1.0 + (-logit).exp());
            let predicted = model.predict(&[mask])[0];
            assert!(
                (predicted - dense).abs() < 1e-6,
                "{text}: {predicted} vs {dense}"
            );
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        // One SGD step with lr = ε and no momentum moves each weight by −ε·∂loss/∂w; compare
        // the loss change along that step with ε·‖g‖² predicted by the analytic gradient.
        let masks: Vec<Mask> = ["1011", "0110", "1111", "0001"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let targets = [0.3f32, 0.8, 0.9, 0.1];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let model = MlpSurrogate {
            num_players: 4,
            hidden: 8,
            input_weights: uniform_init(&mut rng, 32, 4),
            hidden_bias: uniform_init(&mut rng, 8, 4),
            output_weights: uniform_init(&mut rng, 8, 8),
            output_bias: 0.1,
            target_scaling: TargetScaling::IDENTITY,
        };
        let sparse = SparseMasks::new(&masks);
        let loss = |m: &MlpSurrogate| -> f64 {
            let mut act = vec![0.0; m.hidden];
            let mut all_kept = vec![0.0; m.hidden];
            m.all_kept_pre_activation(&mut all_kept);
            (0..4)
                .map(|r| {
                    let e = f64::from(m.forward(sparse.row(r), &all_kept, &mut act) - targets[r]);
                    e * e
                })
                .sum::<f64>()
                / 4.0
        };
        let options = FitOptions {
            epochs: 1,
            batch_size: 4,
            learning_rate: 1e-3,
            momentum: 0.0,
            ..FitOptions::default()
        };
        let mut stepped = model.clone();
        stepped.train(&sparse, &targets, &options, &mut rng);
        let squared_step: f64 = model
            .input_weights
            .iter()
            .zip(&stepped.input_weights)
            .chain(model.hidden_bias.iter().zip(&stepped.hidden_bias))
            .chain(model.output_weights.iter().zip(&stepped.output_weights))
            .chain(std::iter::once((&model.output_bias, &stepped.output_bias)))
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        // loss(w − lr·g) − loss(w) ≈ −lr·‖g‖² = −‖step‖²/lr.
        let predicted = -squared_step / 1e-3;
        let actual = loss(&stepped) - loss(&model);
        assert!(predicted < 0.0);
        assert!(
            (actual - predicted).abs() < 0.05 * predicted.abs(),
            "actual {actual}, predicted {predicted}"
        );
    }
}
