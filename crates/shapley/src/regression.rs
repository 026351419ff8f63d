//! Regression-adjusted Monte Carlo (Witter et al., NeurIPS 2025): φ(v) = φ(f) + φ(v − f)
//! for any surrogate f. A quadratic f has exact Shapley values φ_i(f) = w_i + ½ Σ_j w_ij;
//! the residual's Shapley values are estimated without bias by a maximum-sample-reuse
//! (importance-weighted) Monte Carlo estimate over the paired kernel design, whose variance
//! scales with the size of the residual, so a good surrogate means a small error.
//!
//! Why not permutation chains for the residual: with antithetic pairs the permutation
//! estimator is linear in the game and exact on every quadratic, so φ(f) + φ̂(v − f) would
//! equal φ̂(v) identically and the surrogate would change nothing.
//!
//! Cross-fitting keeps the estimate unbiased although f is fitted on the same evaluations:
//! the pairs are split in two halves; f fitted on half A (plus the empty and full masks)
//! corrects the residual estimate on half B and vice versa, and the two are averaged.
//!
//! The residual estimator: with q(S) = p̄_|S| / C(n, |S|) the design's probability of S
//! (p̄ its size distribution: the Shapley kernel for designs drawn here), φ_i(r) = (r(N) − r(∅))/n + E_q[r(S) c_i(S)] where
//! c_i(S) = 1/(|S| p_|S|) when i ∈ S and −1/((n − |S|) p_|S|) otherwise. Σ_i c_i(S) = 0, so
//! every estimate is exactly efficient: Σ φ̂_i = v(N) − v(∅).

use layerprune_core::{Game, Mask};
use layerprune_surrogate::{fit, FitOptions, Surrogate, SurrogateKind};

use crate::kernelshap::{paired_kernel_design, PairedDesign};
use crate::values::mean_and_se;
use crate::{evaluate_masks, rng_from_seed, Estimates, Players, ShapleyError, ValueTable};

pub const REGRESSION_ADJUSTED: &str = "regression-adjusted";

/// Ridge strength of the quadratic surrogate: small, so an exactly quadratic game is
/// recovered when each half has more distinct masks than the quadratic has coefficients,
/// yet enough to keep the fit defined when it has fewer (the residual term corrects the
/// bias either way).
pub const SURROGATE_RIDGE_ALPHA: f64 = 1e-6;

/// The cross-fitted estimate from evaluated masks of a paired kernel design (at least two
/// pairs, one per half).
pub fn regression_adjusted_estimate(
    design: &PairedDesign,
    rows: &[(Mask, f64)],
) -> Result<Estimates, ShapleyError> {
    let n = design.num_players;
    let table = ValueTable::from_rows(rows);
    let empty = Mask::empty(n);
    let full = Mask::full(n);
    let v_empty = table.get(&empty)?;
    let v_full = table.get(&full)?;
    if n <= 1 {
        return Ok(Estimates::new(
            REGRESSION_ADJUSTED,
            vec![v_full - v_empty; n],
            Some(vec![0.0; n]),
        ));
    }
    if design.coalitions.len() < 2 {
        return Err(ShapleyError::Design(
            "cross-fitting needs at least two complementary pairs".into(),
        ));
    }
    let size_probability = &design.size_probabilities;
    let halves: [Vec<&Mask>; 2] = [0, 1].map(|h| {
        design
            .coalitions
            .iter()
            .skip(h)
            .step_by(2)
            .collect::<Vec<_>>()
    });
    let mut half_values = Vec::with_capacity(2);
    let mut half_variances = Vec::with_capacity(2);
    for (h, estimate_half) in halves.iter().enumerate() {
        // Fit on the other half's distinct masks plus the empty and full masks.
        let mut train: Vec<Mask> = halves[1 - h]
            .iter()
            .flat_map(|s| [(*s).clone(), s.complement()])
            .chain([empty.clone(), full.clone()])
            .collect();
        train.sort();
        train.dedup();
        let targets = train
            .iter()
            .map(|m| table.get(m))
            .collect::<Result<Vec<_>, _>>()?;
        let options = FitOptions {
            ridge_alpha: SURROGATE_RIDGE_ALPHA,
            ..FitOptions::default()
        };
        let surrogate = fit(SurrogateKind::Quadratic, &train, &targets, &options)?;
        let surrogate_shapley = surrogate.exact_shapley().ok_or(ShapleyError::Design(
            "the surrogate has no exact Shapley values".into(),
        ))?;
        let residual = |mask: &Mask| -> Result<f64, ShapleyError> {
            Ok(table.get(mask)? - surrogate.predict(std::slice::from_ref(mask))[0])
        };
        let anchor = (residual(&full)? - residual(&empty)?) / n as f64;
        let units: Vec<Vec<f64>> = estimate_half
            .iter()
            .map(|s| {
                let mut contribution = vec![0.0; n];
                for coalition in [(*s).clone(), s.complement()] {
                    let size = coalition.num_kept();
                    let r = residual(&coalition)? / 2.0;
                    let inside = r / (size as f64 * size_probability[size]);
                    let outside = r / ((n - size) as f64 * size_probability[size]);
                    for (i, c) in contribution.iter_mut().enumerate() {
                        *c += if coalition.is_kept(i) {
                            inside
                        } else {
                            -outside
                        };
                    }
                }
                Ok(contribution)
            })
            .collect::<Result<_, ShapleyError>>()?;
        let (residual_mean, residual_se) = mean_and_se(&units, n);
        half_values.push(
            (0..n)
                .map(|i| surrogate_shapley[i] + anchor + residual_mean[i])
                .collect::<Vec<_>>(),
        );
        half_variances.push(residual_se.map(|se| se.iter().map(|s| s * s).collect::<Vec<_>>()));
    }
    let values = (0..n)
        .map(|i| (half_values[0][i] + half_values[1][i]) / 2.0)
        .collect();
    // Treats the halves as independent (each half's residual mean is, given the other
    // half's fit); an approximation, documented.
    let std_errors = match (&half_variances[0], &half_variances[1]) {
        (Some(a), Some(b)) => Some((0..n).map(|i| (a[i] + b[i]).sqrt() / 2.0).collect()),
        _ => None,
    };
    Ok(Estimates::new(REGRESSION_ADJUSTED, values, std_errors))
}

/// Design, evaluation through `game` (fixed blocks kept) and estimate in one call.
pub fn run_regression_adjusted(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let design = paired_kernel_design(
        players.len(),
        budget,
        2,
        REGRESSION_ADJUSTED,
        &mut rng_from_seed(seed),
    )?;
    let (rows, evaluations) = evaluate_masks(game, players, &design.queries())?;
    Ok(regression_adjusted_estimate(&design, &rows)?
        .for_players(players)
        .with_evaluations(evaluations))
}
