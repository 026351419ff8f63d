//! The quadratic surrogate v(m) = b + Σ_i w_i m_i + Σ_{i<j} w_ij m_i m_j, fitted by ridge
//! regression on the normal equations.
//!
//! Why not linfa: linfa 0.8's only ridge is the elastic net with `l1_ratio` 0, a coordinate
//! descent that (a) fits the intercept by centring the target only, not the features, so with
//! uncentred 0/1 features the intercept is wrong unless the caller centres them, and (b) stops
//! at a duality-gap tolerance after many sweeps over ~500 strongly correlated columns, so it is
//! neither exact nor fast at L = 32. The normal equations here are exact, and building them
//! exploits the 0/1 features: each feature is a column of bits over the masks, and an entry
//! of the Gram matrix is the count of bits two columns share. `tests/ridge_against_linfa.rs`
//! checks the solver against linfa on a small case.
//!
//! Standardisation: features are centred (so that the intercept, which is not penalised, drops
//! out of the system) but not scaled. Every feature is a 0/1 indicator already, so one α
//! shrinks every coefficient in the units in which the Shapley closed form reads them; scaling
//! by the standard deviation would penalise rare pairs less than common ones for no reason
//! that the game gives.
//!
//! Blocks that do not vary over the training masks (the fixed blocks) are left out of the
//! system, their coefficients 0 in the result (the saved format is unchanged): their features
//! are constant and their pairs repeat the players' own features, which made a fit without a
//! ridge singular and, with one, split a player's effect between w_j and w_fj (until
//! 2026-12-06).

use layerprune_core::Mask;
use serde::{Deserialize, Serialize};

use crate::{Surrogate, SurrogateError};
use layerprune_core::linalg::Cholesky;

/// A fitted quadratic game.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuadraticSurrogate {
    pub num_players: usize,
    /// b, the value of the empty coalition.
    pub intercept: f64,
    /// w_i, one per block.
    pub linear: Vec<f64>,
    /// w_ij as a symmetric `num_players × num_players` matrix with a zero diagonal (the same
    /// layout as `layerprune_core::synthetic::PairwiseGame::pairs`).
    pub pairs: Vec<Vec<f64>>,
}

/// Most players (blocks that vary over the training masks) of a quadratic fit: 8,256 features, whose dense p × p matrix (the Gram
/// matrix, turned into the centred system and then its factor in place) takes 0.5 GiB (a fit
/// of 8,000 masks at 128 players: 6–8 s on 2 cores, `fit-surrogate`, most of it the
/// factorization; 174 s for 50 masks before it ran in panels on every core,
/// `layerprune_core::linalg`).
/// Every transformer released so far has fewer blocks (Llama 3.1 405B: 126).
pub const MAX_PLAYERS: usize = 128;

/// Number of quadratic features for `num_players` blocks: L linear plus L(L−1)/2 pairs.
fn num_features(num_players: usize) -> usize {
    num_players + num_players * num_players.saturating_sub(1) / 2
}

/// Index of the pair feature (i, j), i < j, after the L linear features: pairs are numbered
/// (0,1), (0,2), …, (0,L−1), (1,2), …
fn pair_feature(num_players: usize, i: usize, j: usize) -> usize {
    num_players + i * (2 * num_players - i - 1) / 2 + (j - i - 1)
}

/// Appends to `active` the features that are 1 for `mask` (ascending): its kept blocks, then
/// the pairs of kept blocks.
fn add_active_features(num_players: usize, mask: &Mask, active: &mut Vec<usize>) {
    let kept = mask.kept_blocks();
    active.extend_from_slice(&kept);
    for (a, &i) in kept.iter().enumerate() {
        for &j in &kept[a + 1..] {
            active.push(pair_feature(num_players, i, j));
        }
    }
}

impl QuadraticSurrogate {
    pub(crate) fn fit(
        num_players: usize,
        masks: &[Mask],
        targets: &[f64],
        ridge_alpha: f64,
    ) -> Result<Self, SurrogateError> {
        // Blocks constant over the rows (the fixed blocks, kept in every mask) have constant
        // features, and their pair with a block j repeats j's own feature: they leave the
        // system singular without a ridge, and with one they split j's effect between w_j and
        // w_fj, penalising the players unevenly. They are left out (coefficients 0; the
        // intercept takes their constant part).
        let varying: Vec<usize> = (0..num_players)
            .filter(|&i| {
                let first = masks.first().is_some_and(|m| m.is_kept(i));
                masks.iter().any(|m| m.is_kept(i) != first)
            })
            .collect();
        let fitted = varying.len();
        // The system's size is set by the blocks that vary (the players), not by the masks'
        // length: counted over every block until 2026-12-06, a model of more than
        // MAX_PLAYERS blocks was refused however many of them were fixed, which the refusal
        // itself gave as a way out.
        if fitted > MAX_PLAYERS {
            let features = num_features(fitted);
            return Err(SurrogateError::TooManyPlayers {
                players: fitted,
                features,
                gib: 8.0 * (features as f64).powi(2) / f64::from(1u32 << 30),
            });
        }
        let mut reduced = Mask::empty(fitted);
        let equations =
            NormalEquations::of_binary_rows(num_features(fitted), targets, |row, active| {
                for (a, &block) in varying.iter().enumerate() {
                    reduced.set(a, masks[row].is_kept(block));
                }
                add_active_features(fitted, &reduced, active)
            });
        let (intercept, weights) = equations.solve(ridge_alpha)?;
        let mut linear = vec![0.0; num_players];
        let mut pairs = vec![vec![0.0; num_players]; num_players];
        for (a, &i) in varying.iter().enumerate() {
            linear[i] = weights[a];
            for (b, &j) in varying.iter().enumerate().skip(a + 1) {
                let w = weights[pair_feature(fitted, a, b)];
                pairs[i][j] = w;
                pairs[j][i] = w;
            }
        }
        Ok(QuadraticSurrogate {
            num_players,
            intercept,
            linear,
            pairs,
        })
    }

    /// The Shapley values in closed form, φ_i = w_i + ½ Σ_j w_ij: [`Surrogate::exact_shapley_on`]
    /// with every block a player.
    pub fn shapley_values(&self) -> Vec<f64> {
        let players: Vec<usize> = (0..self.num_players).collect();
        self.exact_shapley_on(&Mask::full(self.num_players), &players)
            .expect("a quadratic surrogate has a closed form")
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let n = self.num_players;
        if n == 0 {
            return Err("quadratic surrogate has no players".into());
        }
        if self.linear.len() != n {
            return Err(format!(
                "quadratic surrogate has {} linear weights for {n} players",
                self.linear.len()
            ));
        }
        if self.pairs.len() != n || self.pairs.iter().any(|row| row.len() != n) {
            return Err(format!(
                "quadratic surrogate's pair matrix is not {n} × {n}"
            ));
        }
        for i in 0..n {
            if self.pairs[i][i] != 0.0 {
                return Err(format!(
                    "quadratic surrogate's pair matrix has a non-zero diagonal entry at block {i}"
                ));
            }
            for j in 0..i {
                if self.pairs[i][j] != self.pairs[j][i] {
                    return Err(format!(
                        "quadratic surrogate's pair matrix is not symmetric at ({i}, {j})"
                    ));
                }
            }
        }
        let all_finite = self.intercept.is_finite()
            && self.linear.iter().all(|w| w.is_finite())
            && self.pairs.iter().flatten().all(|w| w.is_finite());
        if !all_finite {
            return Err("quadratic surrogate has a non-finite coefficient".into());
        }
        // Every prediction is a sum of some of the coefficients, so it is finite when the sum of
        // their magnitudes is (with room for rounding): finite coefficients near f64::MAX
        // (a damaged file, or values too large to fit) would predict inf or NaN.
        let magnitude = self.intercept.abs()
            + self.linear.iter().map(|w| w.abs()).sum::<f64>()
            + self.pairs.iter().flatten().map(|w| w.abs()).sum::<f64>() / 2.0;
        if magnitude >= f64::MAX / 4.0 {
            return Err(format!(
                "quadratic surrogate's coefficients sum to {magnitude:e} in magnitude, too large \
                 for its predictions to be finite"
            ));
        }
        Ok(())
    }
}

impl Surrogate for QuadraticSurrogate {
    fn num_players(&self) -> usize {
        self.num_players
    }

    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        let mut kept = Vec::with_capacity(self.num_players);
        masks
            .iter()
            .map(|mask| {
                assert_eq!(mask.num_blocks(), self.num_players, "mask length");
                kept.clear();
                kept.extend((0..self.num_players).filter(|&i| mask.is_kept(i)));
                let mut value = self.intercept;
                for (a, &i) in kept.iter().enumerate() {
                    value += self.linear[i];
                    let row = &self.pairs[i];
                    value += kept[a + 1..].iter().map(|&j| row[j]).sum::<f64>();
                }
                value
            })
            .collect()
    }

    /// For v(m) = b + Σ w_i m_i + Σ_{i<j} w_ij m_i m_j restricted to `players` with the other
    /// blocks as in `base`: φ_i = w_i + Σ_{f kept outside the players} w_if + ½ Σ_{j player}
    /// w_ij. With every block a player that is [`QuadraticSurrogate::shapley_values`].
    fn exact_shapley_on(&self, base: &Mask, players: &[usize]) -> Option<Vec<f64>> {
        let kept_outside: Vec<usize> = base
            .kept_blocks()
            .into_iter()
            .filter(|block| !players.contains(block))
            .collect();
        Some(
            players
                .iter()
                .map(|&i| {
                    let row = &self.pairs[i];
                    self.linear[i]
                        + kept_outside.iter().map(|&f| row[f]).sum::<f64>()
                        + 0.5 * players.iter().map(|&j| row[j]).sum::<f64>()
                })
                .collect(),
        )
    }
}

/// Rows whose bit columns are held at a time: 8 KiB a feature, 68 MB at 128 players,
/// whatever the number of masks.
const BIT_COLUMN_ROWS: usize = 1 << 16;

/// The sufficient statistics of a least-squares problem with an intercept: raw Σ x xᵀ, Σ x,
/// Σ x y, Σ y and n. Centring happens in [`NormalEquations::solve`], which keeps the
/// statistics of 0/1 features counts.
struct NormalEquations {
    num_features: usize,
    rows: usize,
    /// Upper triangle (a ≤ b) of Σ x_a x_b, row-major `num_features × num_features`.
    gram: Vec<f64>,
    feature_sums: Vec<f64>,
    cross: Vec<f64>,
    target_sum: f64,
}

impl NormalEquations {
    fn new(num_features: usize) -> Self {
        NormalEquations {
            num_features,
            rows: 0,
            gram: vec![0.0; num_features * num_features],
            feature_sums: vec![0.0; num_features],
            cross: vec![0.0; num_features],
            target_sum: 0.0,
        }
    }

    /// The statistics of one row per target whose features are 1 at the indices
    /// `write_active` writes for it (given the row's index and an empty list) and 0
    /// elsewhere. The features go into bit columns, [`BIT_COLUMN_ROWS`] rows at a time, and
    /// the Gram matrix is counted from them ([`layerprune_core::linalg::add_binary_gram`]):
    /// adding each row's `active²/2` entries one by one missed the cache on every entry once
    /// the matrix outgrew it (64 players, 8,000 masks, 5 folds: 27 s, now 1.5 s). The counts
    /// are exact, and the sums of targets are added row by row in order, so the statistics are
    /// those of adding the rows one by one.
    fn of_binary_rows(
        num_features: usize,
        targets: &[f64],
        mut write_active: impl FnMut(usize, &mut Vec<usize>),
    ) -> Self {
        let mut equations = NormalEquations::new(num_features);
        equations.rows = targets.len();
        let mut active = Vec::with_capacity(num_features);
        let mut columns = Vec::new();
        for (index, chunk_targets) in targets.chunks(BIT_COLUMN_ROWS).enumerate() {
            let first = index * BIT_COLUMN_ROWS;
            let words = chunk_targets.len().div_ceil(64);
            columns.clear();
            columns.resize(num_features * words, 0u64);
            for (row, &target) in chunk_targets.iter().enumerate() {
                active.clear();
                write_active(first + row, &mut active);
                equations.target_sum += target;
                for &a in &active {
                    equations.feature_sums[a] += 1.0;
                    equations.cross[a] += target;
                    columns[a * words + row / 64] |= 1 << (row % 64);
                }
            }
            layerprune_core::linalg::add_binary_gram(
                &mut equations.gram,
                &columns,
                words,
                num_features,
            );
        }
        equations
    }

    fn add_dense_row(&mut self, features: &[f64], target: f64) {
        self.rows += 1;
        self.target_sum += target;
        for (a, &x_a) in features.iter().enumerate() {
            self.feature_sums[a] += x_a;
            self.cross[a] += x_a * target;
            let gram_row = &mut self.gram[a * self.num_features..(a + 1) * self.num_features];
            for (b, &x_b) in features.iter().enumerate().skip(a) {
                gram_row[b] += x_a * x_b;
            }
        }
    }

    /// Minimises (1/n)·Σ (y − c − wᵀx)² + α‖w‖² over c (unpenalised) and w: with centred
    /// features, (X_cᵀX_c + nαI) w = X_cᵀ y_c and c = ȳ − x̄ᵀw. Returns (c, w).
    /// The Gram matrix becomes the centred system and then its factor, in its own storage:
    /// one `p × p` matrix at a time (545 MB at 128 players).
    fn solve(self, alpha: f64) -> Result<(f64, Vec<f64>), SurrogateError> {
        let p = self.num_features;
        let n = self.rows as f64;
        let target_mean = self.target_sum / n;
        let shift = n * alpha;
        if shift.is_infinite() {
            // n·α beyond f64 (α near 1e308): its infinite diagonal read as a zero pivot, and
            // the fit was refused as singular with advice to use a ridge_alpha > 0. The limit
            // of the ridge as α grows, every weight 0 and the mean as intercept, is what the
            // solve would give: each weight is at most √p·n·max|y − ȳ| / (nα), under 1e-290
            // times the spread of the values for any table that fits in memory.
            return Ok((target_mean, vec![0.0; p]));
        }
        let mut system = self.gram;
        for a in 0..p {
            // Row a's upper entries (b ≥ a), each written to its mirror below the diagonal
            // too, which no later row reads.
            for b in a..p {
                let centred = system[a * p + b] - self.feature_sums[a] * self.feature_sums[b] / n;
                system[a * p + b] = centred;
                system[b * p + a] = centred;
            }
            system[a * p + a] += shift;
        }
        let rhs: Vec<f64> = (0..p)
            .map(|a| self.cross[a] - self.feature_sums[a] * target_mean)
            .collect();
        let weights = Cholesky::new_owned(system, p)
            .ok_or(SurrogateError::SingularSystem { ridge_alpha: alpha })?
            .solve(&rhs);
        let intercept = target_mean
            - weights
                .iter()
                .zip(&self.feature_sums)
                .map(|(w, s)| w * s / n)
                .sum::<f64>();
        Ok((intercept, weights))
    }
}

/// Ridge regression with an unpenalised intercept on dense features: minimises
/// (1/n)·Σ (y − c − wᵀx)² + α‖w‖², returning (c, w). The same solver the quadratic surrogate
/// uses; public so that it can be checked against other implementations.
pub fn ridge_solve(
    features: &[Vec<f64>],
    targets: &[f64],
    alpha: f64,
) -> Result<(f64, Vec<f64>), SurrogateError> {
    if features.len() != targets.len() {
        return Err(SurrogateError::LengthMismatch {
            masks: features.len(),
            targets: targets.len(),
        });
    }
    let first = features
        .first()
        .ok_or(SurrogateError::TooFewRows { rows: 0 })?;
    let mut equations = NormalEquations::new(first.len());
    for (row, (x, &y)) in features.iter().zip(targets).enumerate() {
        if x.len() != first.len() {
            return Err(SurrogateError::MixedMaskLengths {
                row,
                got: x.len(),
                expected: first.len(),
            });
        }
        equations.add_dense_row(x, y);
    }
    equations.solve(alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_features_are_numbered_densely() {
        let l = 5;
        let mut seen = Vec::new();
        for i in 0..l {
            for j in i + 1..l {
                seen.push(pair_feature(l, i, j));
            }
        }
        let expected: Vec<usize> = (l..num_features(l)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn binary_accumulation_matches_dense_expansion() {
        // The quadratic fit (statistics counted from bit columns) and ridge_solve on the
        // expanded features (dense statistics) must agree coefficient for coefficient; 150
        // rows fill two words of each bit column and part of a third.
        let l = 4;
        let masks: Vec<Mask> = (0..150u32)
            .map(|k| {
                let bits = (k * 7 + k / 16) % 16;
                Mask::from_kept((0..l).map(|i| bits >> i & 1 == 1).collect())
            })
            .collect();
        let targets: Vec<f64> = (0..150)
            .map(|k| ((k * 7) % 5) as f64 - 0.03 * k as f64)
            .collect();
        let model = QuadraticSurrogate::fit(l, &masks, &targets, 0.01).unwrap();
        let expanded: Vec<Vec<f64>> = masks
            .iter()
            .map(|m| {
                let x = m.to_features();
                let mut row = x.clone();
                for i in 0..l {
                    for j in i + 1..l {
                        row.push(x[i] * x[j]);
                    }
                }
                row
            })
            .collect();
        let (intercept, weights) = ridge_solve(&expanded, &targets, 0.01).unwrap();
        assert!((intercept - model.intercept).abs() < 1e-10);
        for i in 0..l {
            assert!((weights[i] - model.linear[i]).abs() < 1e-10);
            for j in i + 1..l {
                assert!((weights[pair_feature(l, i, j)] - model.pairs[i][j]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn rows_past_one_chunk_of_bit_columns_are_each_counted_once() {
        // More rows than one chunk of bit columns holds: the statistics of the chunks add up
        // to those of the dense rows.
        let l = 3;
        let rows = BIT_COLUMN_ROWS + 100;
        let masks: Vec<Mask> = (0..rows)
            .map(|r| Mask::from_kept((0..l).map(|i| (r * 5 + r / 7) >> i & 1 == 1).collect()))
            .collect();
        let targets: Vec<f64> = (0..rows).map(|r| ((r * 13) % 11) as f64 * 0.1).collect();
        let statistics =
            NormalEquations::of_binary_rows(num_features(l), &targets, |row, active| {
                add_active_features(l, &masks[row], active)
            });
        let mut dense = NormalEquations::new(num_features(l));
        for (mask, &y) in masks.iter().zip(&targets) {
            let x = mask.to_features();
            let mut row = x.clone();
            for i in 0..l {
                for j in i + 1..l {
                    row.push(x[i] * x[j]);
                }
            }
            dense.add_dense_row(&row, y);
        }
        let p = num_features(l);
        for a in 0..p {
            for b in a..p {
                assert_eq!(
                    statistics.gram[a * p + b],
                    dense.gram[a * p + b],
                    "({a}, {b})"
                );
            }
        }
        assert_eq!(statistics.feature_sums, dense.feature_sums);
        assert_eq!(statistics.rows, dense.rows);
        // Added row by row in the same order, times 1.0: the same bits.
        assert_eq!(statistics.cross, dense.cross);
        assert_eq!(statistics.target_sum, dense.target_sum);
    }

    /// Fixed blocks (kept in every mask) have constant features, and their pairs repeat the
    /// players' own features: kept in the system they made it singular without a ridge
    /// (`--ridge-alpha 0` failed) and split each player's effect between w_j and w_fj under
    /// one. Left out, an exactly quadratic game over the players is recovered with α = 0, and
    /// every coefficient of a fixed block is 0.
    #[test]
    fn fixed_blocks_are_left_out_of_the_fit() {
        let (blocks, fixed) = (6, [0usize, 4]);
        let players: Vec<usize> = (0..blocks).filter(|b| !fixed.contains(b)).collect();
        let masks: Vec<Mask> = (0..1u32 << players.len())
            .map(|bits| {
                let mut mask = Mask::full(blocks);
                for (k, &b) in players.iter().enumerate() {
                    mask.set(b, bits >> k & 1 == 1);
                }
                mask
            })
            .collect();
        let value = |m: &Mask| {
            let x = |b: usize| f64::from(u8::from(m.is_kept(b)));
            0.3 + 0.5 * x(1) - 0.2 * x(2) + 0.1 * x(3) + 0.7 * x(5) + 0.25 * x(1) * x(3)
                - 0.4 * x(2) * x(5)
        };
        let targets: Vec<f64> = masks.iter().map(value).collect();
        let model = QuadraticSurrogate::fit(blocks, &masks, &targets, 0.0).unwrap();
        for (m, t) in masks.iter().zip(&targets) {
            assert!((model.predict(std::slice::from_ref(m))[0] - t).abs() < 1e-10);
        }
        assert!((model.linear[1] - 0.5).abs() < 1e-10 && (model.pairs[2][5] + 0.4).abs() < 1e-10);
        for f in fixed {
            assert_eq!(model.linear[f], 0.0);
            assert!(model.pairs[f].iter().all(|&w| w == 0.0));
            assert!((0..blocks).all(|j| model.pairs[j][f] == 0.0));
        }
        // With a ridge, the players' coefficients do not depend on whether the fixed blocks'
        // columns exist: the same as the fit over the players alone.
        let alone: Vec<Mask> = masks
            .iter()
            .map(|m| Mask::from_kept(players.iter().map(|&b| m.is_kept(b)).collect()))
            .collect();
        let ridge = QuadraticSurrogate::fit(blocks, &masks, &targets, 0.01).unwrap();
        let reference = QuadraticSurrogate::fit(players.len(), &alone, &targets, 0.01).unwrap();
        assert!((ridge.intercept - reference.intercept).abs() < 1e-12);
        for (a, &i) in players.iter().enumerate() {
            assert!((ridge.linear[i] - reference.linear[a]).abs() < 1e-12);
            for (b, &j) in players.iter().enumerate() {
                assert!((ridge.pairs[i][j] - reference.pairs[a][b]).abs() < 1e-12);
            }
        }
        // Every row the same mask: nothing varies, the fit is the mean.
        let same = vec![Mask::full(blocks); 3];
        let flat = QuadraticSurrogate::fit(blocks, &same, &[1.0, 2.0, 3.0], 0.0).unwrap();
        assert!((flat.intercept - 2.0).abs() < 1e-12 && flat.linear.iter().all(|&w| w == 0.0));
    }

    #[test]
    fn collinear_features_without_ridge_are_singular() {
        let features = vec![vec![1.0, 2.0], vec![2.0, 4.0], vec![3.0, 6.0]];
        let error = ridge_solve(&features, &[1.0, 2.0, 3.0], 0.0).unwrap_err();
        assert!(
            matches!(error, SurrogateError::SingularSystem { .. })
                && error.to_string().contains("use a ridge_alpha > 0"),
            "{error}"
        );
        assert!(ridge_solve(&features, &[1.0, 2.0, 3.0], 0.1).is_ok());
        // A ridge too small to lift the collinear direction above the factorization's
        // tolerance: the advice is a larger one, not "a ridge_alpha > 0", which was given.
        let error = ridge_solve(&features, &[1.0, 2.0, 3.0], 1e-16).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("ridge_alpha 1e-16 is too small to make it solvable; use a larger one"),
            "{error}"
        );
    }

    #[test]
    fn unregularised_solution_is_least_squares() {
        // y = 1 + 2 x0 − x1 exactly.
        let features = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 1.0],
            vec![2.0, 3.0],
        ];
        let targets: Vec<f64> = features.iter().map(|x| 1.0 + 2.0 * x[0] - x[1]).collect();
        let (c, w) = ridge_solve(&features, &targets, 0.0).unwrap();
        assert!(
            (c - 1.0).abs() < 1e-12 && (w[0] - 2.0).abs() < 1e-12 && (w[1] + 1.0).abs() < 1e-12
        );
    }
}
