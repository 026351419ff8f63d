//! Regression-adjusted Monte Carlo (Witter et al., NeurIPS 2025): φ(v) = φ(f) + φ(v − f)
//! for any surrogate f. φ(f) is computed without LLM calls; φ(v − f) is estimated without
//! bias from evaluated masks, with a variance that scales with the residual, so a good
//! surrogate means a small error.
//!
//! Three estimators share this code and differ in two choices:
//!
//! | name | surrogate f | residual estimate over |
//! |---|---|---|
//! | `regression-adjusted` | quadratic fitted to v | paired kernel coalitions (MSR) |
//! | `regression-adjusted-exp` | c + exp(polynomial of order ≤ 3), fitted in value space | paired kernel coalitions (MSR) |
//! | `regression-adjusted-exp-chains` | c + exp(polynomial of order ≤ 3), fitted in value space | antithetic permutation chains |
//!
//! The log surrogate: removing layers adds to the loss roughly additively with pairwise and
//! third-order corrections, and the published utility is exp(−Δnll), so exp of a polynomial
//! is the natural shape (see `HalfSurrogate::fit` for why it is fitted in value space, and
//! [`crate::polynomial`] for how its order follows the rows). The shift c lies below every
//! training value, so the estimator runs on any game, by the share of their spread that fits
//! best ([`SHIFT_SPREADS`]; fitted freely where that reproduces the training values), so that
//! the game plus a constant is fitted as the game (until 2026-12-07 c was 0 for any positive
//! game). The quadratic's Shapley values have a closed form, exp of a polynomial has none: φ(f) is computed
//! exactly by enumerating the 2^n masks through f when n ≤ [`MAX_SURROGATE_ENUMERATED_PLAYERS`], and
//! otherwise by [`SURROGATE_PERMUTATION_PAIRS`] antithetic permutation pairs through f
//! (independent randomness, so the estimate stays unbiased; efficiency still holds).
//!
//! Residual over permutation chains: the antithetic permutation estimator is linear in the
//! game and exact on every quadratic, so with a quadratic f it would give φ(f) + φ̂(v − f) =
//! φ̂(v) identically; with the exp-polynomial f it does not, and its error is set by the part
//! of v − f that is not quadratic. Residual over kernel pairs (MSR): with q(S) = p̄_|S| /
//! C(n, |S|) the design's probability of S (p̄ its size distribution), φ_i(r) = (r(N) −
//! r(∅))/n + E_q[r(S) c_i(S)] where c_i(S) = 1/(|S| p̄_|S|) when i ∈ S and −1/((n − |S|)
//! p̄_|S|) otherwise. Σ_i c_i(S) = 0 and every chain sums to r(N) − r(∅), so every estimate
//! here is exactly efficient: Σ φ̂_i = v(N) − v(∅).
//!
//! Cross-fitting keeps the estimate unbiased although f is fitted on the same evaluations:
//! the sampling units (complementary pairs, or antithetic chain pairs) are split in two
//! halves; f fitted on half A (plus the empty and full masks, which are not random) corrects
//! the residual estimate on half B and vice versa, and the two are averaged. Fitting f on
//! all masks would make φ(f) a little better but the residual estimate biased (f would have
//! seen the masks it is corrected on, which shrinks the residual there); it is not done.
//! Half B is an independent sample given half A only when the units are drawn independently
//! with replacement (the kernel draws of `run_*`). On a mask table of `sample-masks
//! --complement-pairs` (no mask twice, a fixed number of pairs per class of sizes {s, n − s},
//! small classes drawn whole) half B holds exactly the class's masks that A does not, so the
//! MSR mean over B is over the class minus f_A's training masks, where f_A fits worst, and was
//! biased (until 2026-12-06: on the recorded games the mean of 100 runs lay up to 7 times the
//! noise of such a mean from the truth for the exp-polynomial, 1.9 times for the quadratic). There the residual means are finite-population ones, class by class: A's
//! masks enter exactly and B's represent the rest (`finite_population_residual`), unbiased
//! given A ([`PairedDesign::without_replacement`] chooses).
//!
//! Small samples (since 2026-12-07): the kernel-pair variants take at least
//! [`minimum_kernel_pairs`] (2n) pairs; the exp-polynomial is bounded to its training values'
//! range widened by their spread ([`EXTRAPOLATION_SPREADS`]), as φ(f) sums it over masks nothing
//! near was fitted on; and residual terms that spread by no more than the surrogate's fitting
//! precision ([`RESIDUAL_RESOLUTION`] of the values' range), or a surrogate that reproduces the
//! masks it is checked on (1 − R² at most [`REPRODUCED_VARIATION`]), give no standard error.

use layerprune_core::synthetic::exact_shapley;
use layerprune_core::{Game, GameError, Mask};
use layerprune_surrogate::{
    fit, FitOptions, FittedSurrogate, QuadraticSurrogate, Surrogate, SurrogateKind,
};

use crate::kernelshap::{
    complement_pairs_command, paired_kernel_design, PairedDesign, MINIMUM_PAIRS_PER_PLAYER,
};
use crate::permutation::{self, permutation_design, PermutationDesign};
use crate::polynomial::{order_for_rows, term_count, MaskTerms, Multilinear};
use crate::surrogate::sampled_shapley;
use crate::values::{
    finite_population_factor, guarded_se, mean_and_se, partly_known_mean, rounding_of_units,
    sample_variance, Spread, StandardErrors, ValueRange,
};
use crate::{evaluate_masks_for, rng_from_seed, Estimates, Players, ShapleyError, ValueTable};
use layerprune_core::binomial;

pub const REGRESSION_ADJUSTED: &str = "regression-adjusted";
pub const REGRESSION_ADJUSTED_LOG: &str = "regression-adjusted-exp";
pub const REGRESSION_ADJUSTED_LOG_CHAINS: &str = "regression-adjusted-exp-chains";

/// Ridge strength of the quadratic surrogate: small, so an exactly quadratic game is
/// recovered when each half has more distinct masks than the quadratic has coefficients,
/// yet enough to keep the fit defined when it has fewer (the residual term corrects the
/// bias either way).
pub const SURROGATE_RIDGE_ALPHA: f64 = 1e-6;

/// The surrogate's fitting precision, relative to the range of the game's values: residual
/// terms v − f over held-out masks that spread by no more than this say only that f reproduces
/// those masks to within its own ridge (α = [`SURROGATE_RIDGE_ALPHA`] acts on the coefficients,
/// so on the values' spread, and bends a fit of an exactly representable game by about α of
/// it), nothing about its error on the masks nobody evaluated, which φ(f) sums over: no
/// standard error there (`values::guarded_se`), as where no unit spreads at all. 100 α:
/// residual terms spread by 1e-6 to 6e-6 of the values where a surrogate reproduced the
/// held-out masks of the 0/1 veto game (8 players; 16 sampler pairs, 4 runs in 200; 4 pairs of
/// chains, budget 64, 40 player-SEs in 400 runs of 1e-5 about errors of 0.05) while the
/// estimate erred by 0.05 to 0.45; the residual terms of the recorded games spread by 1e-3
/// and more at every budget measured (R² up to 0.998). Of the range, not of the largest |v|
/// (until 2026-12-07), so that a shifted game is read as the game: a game of range 0.74
/// shifted by 1e4 lost every SE, shifted by 3 (chains, budget 64) 16 in 40. A surrogate can
/// also reproduce the held-out masks while its residual terms still spread past this (by 1e-4
/// to 3e-4 on the veto game): [`REPRODUCED_VARIATION`] catches those.
pub const RESIDUAL_RESOLUTION: f64 = 100.0 * SURROGATE_RIDGE_ALPHA;

/// The share of the held-out values' variation, 1 − R² = Σ(v − f)² / Σ(v − v̄)² over the masks
/// a surrogate was checked on (f fitted on the others), at or below which f is taken to
/// reproduce them: its residuals there then say nothing of its error on the masks nobody
/// evaluated, which φ(f) sums over, and the estimate has no standard error
/// (`reproduces_held_out`). Relative to the held-out values' spread, so the same for the game
/// shifted or scaled. 1e-6, an rms residual of 1e-3 of the values' standard deviation: on the
/// 0/1 veto games (8 players) surrogates that said "dictator" reproduced every held-out mask
/// to 1 − R² of 1e-7 and less, with residual terms spreading past [`RESIDUAL_RESOLUTION`],
/// while the estimate erred by 0.02–0.12 with SEs of 1e-5
/// (`regression-adjusted-stratified` at budget 34: 59 runs in 100; `regression-adjusted-exp`
/// at budget 34: 4 in 100); on the recorded games and the synthetic third-order game the
/// overall 1 − R² was never below 2e-3, three decades above (review of 2026-12-07).
pub const REPRODUCED_VARIATION: f64 = 1e-6;

/// Most players for which φ(f) of a surrogate without closed form is found by enumerating
/// all 2^n masks through it (65,536 predictions).
pub const MAX_SURROGATE_ENUMERATED_PLAYERS: usize = 16;

/// Antithetic permutation pairs through the surrogate when there are more players.
pub const SURROGATE_PERMUTATION_PAIRS: usize = 4096;
/// XORed into the seed of the permutations through the surrogate (φ(f) beyond 16 players), so
/// that they are not the design's own, which the estimator's seed draws.
const SURROGATE_PERMUTATION_STREAM: u64 = 0x9e37_79b9_7f4a_7c15;

/// What the quadratic is fitted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SurrogateTarget {
    /// f = the quadratic fitted to v.
    Value,
    /// f = c + exp(quadratic), least squares in value space.
    LogValue,
}

/// An estimate and how well its surrogate fitted.
#[derive(Clone, Debug, PartialEq)]
pub struct RegressionAdjusted {
    pub estimates: Estimates,
    /// 1 − Σ(v − f)² / Σ(v − v̄)² over each half's masks, f fitted on the other half:
    /// the share of the game's variation the surrogate explains out of sample. The residual
    /// term's noise shrinks as this approaches 1.
    pub held_out_r2: f64,
}

/// A surrogate fitted on one half (or fold) of the evaluations, played as a game over the
/// players.
pub(crate) enum HalfSurrogate {
    /// f = a quadratic fitted to v.
    Quadratic(QuadraticSurrogate),
    /// f = shift + exp(p), p a multilinear polynomial of order ≤ 3.
    ExpPolynomial {
        polynomial: Multilinear,
        shift: f64,
        /// f is held to [lower, upper], its training values' range widened by their spread
        /// on each side ([`EXTRAPOLATION_SPREADS`]).
        bounds: (f64, f64),
    },
}

/// Gauss–Newton steps of the exp-polynomial fit in value space.
const GAUSS_NEWTON_STEPS: usize = 8;

/// Gauss–Newton steps of the exp-polynomial fit with its shift free. It starts from the grid's
/// best guess ([`SHIFT_SPREADS`]), which can be a fraction of the spread from the shift that
/// reproduces an exp-polynomial game: 15 steps were needed there on exp(pairwise) games (8
/// players), 2–5 elsewhere.
const SHIFT_GAUSS_NEWTON_STEPS: usize = 16;

/// Ridge strength of the exp-polynomial fit with its shift free. Free, the shift trades against
/// the ridge (a lower shift flattens the logarithm, so smaller coefficients fit): at
/// [`SURROGATE_RIDGE_ALPHA`] it settled 3e-4 of the spread from the true one on exp(pairwise)
/// games and the estimates 3e-6 from their Shapley values; at 1e-9, 5e-7 of the spread, and the
/// estimates within the tests' 1e-6. Not 0: the masks of a chain design's half left the
/// unridged system singular.
const SHIFT_FIT_RIDGE_ALPHA: f64 = 1e-9;

/// Halvings of a Gauss–Newton step that raises the error before the fit stops.
const STEP_HALVINGS: usize = 12;

/// How far beyond its training values' range the exp-polynomial surrogate may predict, in
/// spreads (highest − lowest) of those values on each side: f is clamped to [lowest − spread,
/// highest + spread]. exp of a polynomial fitted on a few dozen masks can run to 10–100 times
/// the game's values on masks nothing near was fitted on (an additive q with mixed-sign
/// coefficients grows exponentially towards a corner of the cube), and φ(f) sums it over all
/// 2^n masks, while the residual term sees only the evaluated ones: an estimate of −5.7 for a
/// block whose Shapley value is 0.04 (utility; 24 sampler pairs over 12 players), with an SE
/// of 0.09. Any f leaves φ(v) = φ(f) + φ(v − f) unbiased, so a bound costs nothing there, and
/// bounded residuals keep the residual term's spread honest. Measured on the recorded games
/// (200 sampler tables each, 16 and 24 pairs): runs with an error beyond 10 SE 2 / 9 / 0 → 0 /
/// 1 / 0 at 16 pairs and 6 / 7 / 3 → 1 / 1 / 1 at 24 (smollm2 16–27 / gemma3 / smollm2 3–13);
/// bounds at the range itself or half a spread out gave the same. The quadratic is not bounded:
/// it grows polynomially, its closed form would be lost, and bounding it changed nothing
/// measured.
pub const EXTRAPOLATION_SPREADS: f64 = 1.0;

/// The shifts c the exp-polynomial f = c + e^p tries, each below the training values' lowest by
/// this share of their spread (highest − lowest); the one whose fit has the least squared error
/// over the training masks is kept (and freed where that reproduces them exactly:
/// `HalfSurrogate::fit`). Relative to the values, so the game plus a constant is fitted as the
/// game: until 2026-12-07 c was 0 for a positive game and a tenth of the spread below the lowest
/// value otherwise, and the third-order game plus 10 lost its SE in 16 runs of 40
/// (`regression-adjusted-exp-chains`, 8 players, budget 64; the other runs' SEs moved by up to
/// 120 %). The utility exp(−Δnll), whose lowest value is 1e-9–1e-3 of its spread, was fitted
/// with c = 0 and now takes c a hundredth or a tenth of the spread below; neg-nll a tenth or a
/// whole spread below. Measured against the earlier rule on the recorded games (utility and
/// neg-nll; sampler tables of 2n, 50 and 100 pairs for `regression-adjusted-exp`, budgets
/// 128–512 for the chains; 100 seeds; docs/estimators.md): RMSE 0.62–1.07 times the earlier's
/// (0.89 on average), 95 % intervals holding the truth 91.7–96.6 % of the time (91.5–96.7 %
/// before). A thousandth was left out: on the 0/1 veto game it let a half's surrogate nearly
/// reproduce a "two dictators" game, SEs of 2e-4 about errors of 0.45 (3 runs in 200 at budget
/// 34); a hundredth still does it once in those 200 runs, an error of 270 SE (38 SE under the
/// earlier rule).
///
/// `regression-adjusted-stratified` on the recorded games (utility and neg-nll, budgets
/// 64–2,048, 10 seeds): RMSE 0.70–1.00 times the earlier's. The fits cost 5–13 times the
/// earlier single one (three, the free fit's start and the free fit, which runs its 16 steps
/// where it does not reproduce): `regression-adjusted-stratified` over 32 blocks and 8,000 masks
/// took 16 s of CPU time against 3.2 s, over the recorded games' 11–12 blocks at budgets up to
/// 2,048 1.7 s a run against 0.18 s, the chains over 12 players at budget 2,048 1.4 s against
/// 0.1 s. Since made cheaper with the same estimates (the free fit starts from a grid fit where
/// its start is a grid point, is given up early where it cannot reproduce,
/// `FREE_FIT_GIVE_UP`, and the masks' terms are listed once per surrogate): the replay
/// benchmark's `--synthetic` run 62 → 17 s of CPU time, its `regression-adjusted-stratified`
/// rows 53 → 15 s; the 32-block case 14.0 → 14.2 s (its free fit reproduces in 4–6 steps).
pub const SHIFT_SPREADS: [f64; 3] = [1e-2, 1e-1, 1.0];

/// An exp-polynomial fit c + e^p.
#[derive(Clone)]
struct ExpFit {
    /// Its squared error over the training masks.
    loss: f64,
    /// p.
    polynomial: Multilinear,
    /// c.
    shift: f64,
}

/// Gauss–Newton steps after which the fit with its shift free ([`SHIFT_GAUSS_NEWTON_STEPS`]) is
/// given up where its 1 − R² on the training masks is still above [`FREE_FIT_GIVE_UP`]: it is
/// only taken where it reproduces them (1 − R² at most [`REPRODUCED_VARIATION`]).
const FREE_FIT_CHECK_STEPS: usize = 4;

/// 1 − R² on the training masks after [`FREE_FIT_CHECK_STEPS`] steps above which the fit with
/// its shift free is taken not to reproduce them in the steps left. Measured on the
/// exp(pairwise) games, plus constants, of `tests/estimators.rs` (8 players; the games the free
/// fit exists for; 126 free fits, all 16 steps run): the 17 that went on to reproduce their
/// masks were at most 1.2e-3 after 4 steps (the slowest: 1.3e-3 at the first step, 1.2e-3 at
/// the fourth, 7e-4 at the 13th, 6e-15 at the 16th); the 109 that did not, 3.7e-3 to 4e-2, most
/// above 1e-2, and there they barely moved in the steps left.
const FREE_FIT_GIVE_UP: f64 = 1e-2;

/// Least squares in value space of `values` − c − e^p over the polynomial p by Gauss–Newton
/// steps (progress lines labelled `name`): linearising c + e^p about the current p gives weights
/// e^{2p} and working targets p + (v − c − e^p)/e^p. From `Start::Shift(c)`, c is held and the
/// start is p = ln(v − c), the log fit weighted by (v − c)², so the saturated masks (v − c near
/// 0, where the log is large and noisy but the residual tiny) do not dominate, as they do in an
/// unweighted log fit. From `Start::Fit`, c is fitted too, its step's regressor e^{−p}
/// ([`Multilinear::fit_weighted_with_offset`]; where that is a polynomial of the masks, c
/// stays), under [`SHIFT_FIT_RIDGE_ALPHA`], and a step that raises the error is halved until it
/// does not. The steps stop where one lowers the error by less than 1e-9 of it, and with c
/// free where after [`FREE_FIT_CHECK_STEPS`] its 1 − R² is still above [`FREE_FIT_GIVE_UP`].
/// The best step's fit; `None` where no step had a finite error. `terms`: the masks' terms,
/// listed once for all the fits of one surrogate.
fn fit_exp_polynomial(
    name: &str,
    terms: &MaskTerms,
    values: &[f64],
    start: Start,
) -> Result<Option<ExpFit>, ShapleyError> {
    let loss_of = |polynomial: &Multilinear, shift: f64| -> (f64, Vec<f64>) {
        let predicted = polynomial.predict_terms(terms);
        let loss = predicted
            .iter()
            .zip(values)
            .map(|(p, v)| (v - shift - p.exp()).powi(2))
            .sum();
        (loss, predicted)
    };
    let fits_shift = matches!(start, Start::Fit(_));
    let (mut shift, mut current, mut best, steps) = match start {
        Start::Shift(shift) => (
            shift,
            values
                .iter()
                .map(|v| (v - shift).ln())
                .collect::<Vec<f64>>(),
            None,
            GAUSS_NEWTON_STEPS,
        ),
        Start::Fit(fit) => (
            fit.shift,
            fit.polynomial.predict_terms(terms),
            Some(fit),
            SHIFT_GAUSS_NEWTON_STEPS,
        ),
    };
    let ridge_alpha = if fits_shift {
        SHIFT_FIT_RIDGE_ALPHA
    } else {
        SURROGATE_RIDGE_ALPHA
    };
    let variation = total_squares(values);
    for step in 0..steps {
        let weights: Vec<f64> = current.iter().map(|p| (2.0 * p).exp()).collect();
        let working: Vec<f64> = current
            .iter()
            .zip(values)
            .map(|(p, v)| p + (v - shift - p.exp()) / p.exp())
            .collect();
        let offsets: Option<Vec<f64>> =
            fits_shift.then(|| current.iter().map(|p| (-p).exp()).collect());
        // Where the offset is (to rounding) a polynomial of the masks, c stays.
        let (polynomial, shift_step) =
            Multilinear::fit_terms(terms, &working, &weights, offsets.as_deref(), ridge_alpha)?;
        let shift_step = shift_step.unwrap_or(0.0);
        // The full step where it lowers the error (the first step from a log start is taken
        // whole: the start is no polynomial to compare with); with the shift free, whose step
        // can overshoot, else the longest of its halves that does.
        let mut accepted = None;
        let mut fraction = 1.0;
        let (halvings, least_gain) = if fits_shift {
            (STEP_HALVINGS, 1e-12)
        } else {
            (1, 1e-9)
        };
        for _ in 0..halvings {
            let candidate = match &best {
                Some(previous) if fraction < 1.0 => Multilinear {
                    coefficients: previous
                        .polynomial
                        .coefficients
                        .iter()
                        .zip(&polynomial.coefficients)
                        .map(|(a, b)| a + fraction * (b - a))
                        .collect(),
                    ..polynomial.clone()
                },
                _ => polynomial.clone(),
            };
            let candidate_shift = shift + fraction * shift_step;
            let (loss, predicted) = loss_of(&candidate, candidate_shift);
            let lowers = best
                .as_ref()
                .is_none_or(|least| loss < least.loss * (1.0 - least_gain));
            if loss.is_finite() && lowers {
                accepted = Some((
                    ExpFit {
                        loss,
                        polynomial: candidate,
                        shift: candidate_shift,
                    },
                    predicted,
                ));
                break;
            }
            if best.is_none() {
                break;
            }
            fraction /= 2.0;
        }
        let Some((fit, predicted)) = accepted else {
            break;
        };
        tracing::debug!(
            "{name}: Gauss–Newton step {}/{steps} of the order-{} surrogate on {} masks, \
             shift {:.6e}, loss {:.6e}",
            step + 1,
            fit.polynomial.order,
            values.len(),
            fit.shift,
            fit.loss
        );
        let converged = best
            .as_ref()
            .is_some_and(|least| fit.loss >= least.loss * (1.0 - 1e-9));
        // The free fit is only taken where it reproduces the training values: given up where
        // it is still far from that ([`FREE_FIT_GIVE_UP`]).
        let hopeless = fits_shift
            && step + 1 == FREE_FIT_CHECK_STEPS
            && fit.loss > FREE_FIT_GIVE_UP * variation;
        (shift, current) = (fit.shift, predicted);
        best = Some(fit);
        if converged || hopeless {
            break;
        }
    }
    Ok(best)
}

/// The exp surrogate's shift `below` spreads under the `lowest` value (values spreading by
/// `spread`), and at least a few ulps of `lowest` under it: a hundredth of a spread of a few
/// ulps of a large value rounded to the value itself, and that grid entry was lost to ln 0
/// without a word. Values all alike: 1e-6 of their size under them (any c below fits them).
fn shift_below(lowest: f64, spread: f64, below: f64) -> f64 {
    lowest
        - if spread > 0.0 {
            (below * spread).max(4.0 * f64::EPSILON * lowest.abs())
        } else {
            1e-6 * lowest.abs().max(1.0)
        }
}

/// The x of the lowest point of the parabola through three points of increasing x, held to
/// their x range; `None` where the parabola opens downwards (or is a line).
fn parabola_lowest(points: [(f64, f64); 3]) -> Option<f64> {
    let [(x0, y0), (x1, y1), (x2, y2)] = points;
    let curvature = (y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0);
    let vertex = x1
        - 0.5 * ((x1 - x0).powi(2) * (y1 - y2) - (x1 - x2).powi(2) * (y1 - y0))
            / ((x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0));
    (curvature > 0.0 && vertex.is_finite()).then(|| vertex.clamp(x0, x2))
}

/// Where [`fit_exp_polynomial`] starts.
enum Start {
    /// From the log of the values less this shift, which stays.
    Shift(f64),
    /// From this fit, its shift fitted too.
    Fit(ExpFit),
}

impl HalfSurrogate {
    /// Fits f to `values` of `masks`; each Gauss–Newton step of the exp-polynomial is a
    /// `debug` line labelled `name`.
    pub(crate) fn fit(
        name: &str,
        target: SurrogateTarget,
        masks: &[Mask],
        values: &[f64],
    ) -> Result<HalfSurrogate, ShapleyError> {
        if target == SurrogateTarget::Value {
            let options = FitOptions {
                ridge_alpha: SURROGATE_RIDGE_ALPHA,
                ..FitOptions::default()
            };
            let FittedSurrogate::Quadratic(quadratic) =
                fit(SurrogateKind::Quadratic, masks, values, &options)?
            else {
                return Err(ShapleyError::Design("expected a quadratic fit".into()));
            };
            return Ok(HalfSurrogate::Quadratic(quadratic));
        }
        let n = masks.first().map_or(0, Mask::num_blocks);
        let order = order_for_rows(n, masks.len());
        let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // The shift c of f = c + e^p, below every value so that ln stays finite: each of
        // `SHIFT_SPREADS` below the lowest, and the best fit kept (least squares over c too).
        // Relative to the values' lowest and spread, so the game plus a constant is fitted as
        // the game. Values all alike fit exactly at any c below them.
        let spread = highest - lowest;
        let shift_of = |below: f64| shift_below(lowest, spread, below);
        // Every fit below is over the same masks: their terms are listed once.
        let terms = MaskTerms::new(masks, order);
        let mut grid: Vec<(f64, ExpFit)> = Vec::with_capacity(SHIFT_SPREADS.len());
        for below in SHIFT_SPREADS {
            let start = Start::Shift(shift_of(below));
            if let Some(fitted) = fit_exp_polynomial(name, &terms, values, start)? {
                grid.push((below, fitted));
            }
        }
        let least = (0..grid.len())
            .min_by(|&a, &b| grid[a].1.loss.total_cmp(&grid[b].1.loss))
            .ok_or(ShapleyError::Singular("the exp-polynomial surrogate"))?;
        // A game that is c + e^p for a c between the grid's (an exp-polynomial game, e.g.
        // exp(pairwise), plus any constant) is fitted with c free and taken where that
        // reproduces the training values (1 − R² at most `REPRODUCED_VARIATION`), so that such a
        // game is recovered whatever its constant. Only there: elsewhere the grid fitted the
        // recorded games better out of sample than c fitted freely (on neg-nll the free c's
        // RMSE was up to 3.7 times the grid's). Only where the rows determine the polynomial
        // (two a coefficient, as `order_for_rows` asks), so that reproducing them with one
        // coefficient more is no interpolation. It starts where a parabola through the grid's
        // errors about the least (in the log of the share of the spread) has its lowest point;
        // where that is a point of the grid (the parabola opens downwards, or its lowest point
        // is held to an end), from that point's fit, not fitted again.
        let free = if masks.len() >= 2 * term_count(n, order) {
            let below = if grid.len() >= 3 {
                let middle = least.clamp(1, grid.len() - 2);
                let point = |i: usize| (grid[i].0.ln(), grid[i].1.loss);
                parabola_lowest([point(middle - 1), point(middle), point(middle + 1)])
                    .map_or(grid[least].0, f64::exp)
            } else {
                grid[least].0
            };
            let on_the_grid = grid
                .iter()
                .find(|(grid_below, _)| (below / grid_below - 1.0).abs() <= 1e-12);
            let start = match on_the_grid {
                Some((_, fitted)) => Some(fitted.clone()),
                None => fit_exp_polynomial(name, &terms, values, Start::Shift(shift_of(below)))
                    .ok()
                    .flatten(),
            };
            start.and_then(|start| {
                fit_exp_polynomial(name, &terms, values, Start::Fit(start))
                    .ok()
                    .flatten()
            })
        } else {
            None
        };
        let ExpFit {
            polynomial, shift, ..
        } = match free {
            Some(free) if reproduces_training(free.loss, values) => free,
            _ => grid.swap_remove(least).1,
        };
        let margin = EXTRAPOLATION_SPREADS * (highest - lowest);
        Ok(HalfSurrogate::ExpPolynomial {
            polynomial,
            shift,
            bounds: (lowest - margin, highest + margin),
        })
    }

    pub(crate) fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        match self {
            HalfSurrogate::Quadratic(quadratic) => quadratic.predict(masks),
            HalfSurrogate::ExpPolynomial {
                polynomial,
                shift,
                bounds: (lower, upper),
            } => polynomial
                .predict(masks)
                .into_iter()
                .map(|p| (shift + p.exp()).clamp(*lower, *upper))
                .collect(),
        }
    }

    /// φ(f): closed form for the quadratic, enumeration or permutation sampling through f
    /// otherwise (its progress lines labelled `name`).
    fn shapley(&mut self, name: &str, seed: u64) -> Result<Vec<f64>, ShapleyError> {
        if let HalfSurrogate::Quadratic(quadratic) = self {
            return Ok(quadratic.shapley_values());
        }
        if self.num_players() <= MAX_SURROGATE_ENUMERATED_PLAYERS {
            return Ok(exact_shapley(self)?);
        }
        Ok(sampled_shapley(name, self, SURROGATE_PERMUTATION_PAIRS, seed)?.0)
    }

    /// What f is, for progress lines: `quadratic`, `exp-polynomial of order 3`.
    pub(crate) fn describe(&self) -> String {
        match self {
            HalfSurrogate::Quadratic(_) => "quadratic".into(),
            HalfSurrogate::ExpPolynomial { polynomial, .. } => {
                format!("exp-polynomial of order {}", polynomial.order)
            }
        }
    }
}

impl Game for HalfSurrogate {
    fn num_players(&self) -> usize {
        match self {
            HalfSurrogate::Quadratic(quadratic) => quadratic.num_players,
            HalfSurrogate::ExpPolynomial { polynomial, .. } => polynomial.num_players,
        }
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        for mask in masks {
            mask.check_len(self.num_players())?;
        }
        Ok(self.predict(masks))
    }
}

/// One half's residual estimate: per-player mean and standard error of φ(v − f), given the
/// residual r(m) = v(m) − f(m) and φ(f), the surrogate's Shapley values: the covariate of the
/// standard errors' prior (`values::guarded_se`), which the held-out residuals do not enter
/// (f is fitted on the other half's masks).
type ResidualEstimate<'a> = dyn Fn(
        usize,
        &dyn Fn(&Mask) -> Result<f64, ShapleyError>,
        &[f64],
    ) -> Result<(Vec<f64>, Option<StandardErrors>), ShapleyError>
    + 'a;

/// The cross-fitting shared by every variant: for each half h, f is fitted on the other
/// half's masks plus the empty and full masks, and φ(f) + the residual estimate on half h
/// is averaged over the two halves. `half_masks[h]` are the masks of half h.
fn cross_fit(
    name: &str,
    num_players: usize,
    table: &ValueTable,
    target: SurrogateTarget,
    half_masks: [Vec<Mask>; 2],
    residual_estimate: &ResidualEstimate<'_>,
    seed: u64,
) -> Result<RegressionAdjusted, ShapleyError> {
    let n = num_players;
    let ends = [Mask::empty(n), Mask::full(n)];
    let mut half_values = Vec::with_capacity(2);
    let mut half_variances = Vec::with_capacity(2);
    let (mut residual_squares, mut held_out) = (0.0, Vec::new());
    for h in 0..2 {
        let mut train: Vec<Mask> = half_masks[1 - h].iter().chain(&ends).cloned().collect();
        train.sort();
        train.dedup();
        let targets = train
            .iter()
            .map(|m| table.get(m))
            .collect::<Result<Vec<_>, _>>()?;
        let label = format!("{name}: surrogate {}/2", h + 1);
        let mut surrogate = HalfSurrogate::fit(&label, target, &train, &targets)?;
        // Permutations of their own: on `seed` itself, half 0's were the design's chains
        // (`permutation_design` draws from it too), so φ(f) and the trend's covariate would share
        // units with the residuals they stand beside.
        let surrogate_shapley = surrogate.shapley(
            &label,
            (seed ^ SURROGATE_PERMUTATION_STREAM).wrapping_add(h as u64),
        )?;
        let residual = |mask: &Mask| -> Result<f64, ShapleyError> {
            Ok(table.get(mask)? - surrogate.predict(std::slice::from_ref(mask))[0])
        };
        let (mut half_squares, mut half_held_out) = (0.0, Vec::new());
        for mask in &half_masks[h] {
            half_squares += residual(mask)?.powi(2);
            half_held_out.push(table.get(mask)?);
        }
        let (residual_mean, residual_se) = residual_estimate(h, &residual, &surrogate_shapley)?;
        // A surrogate that reproduces the masks it is checked on leaves residual terms that
        // say nothing of its error elsewhere: no SE, unless the residual term is exact (SE 0:
        // every class drawn whole, or two players).
        let reproduced = reproduces_held_out(half_squares, &half_held_out);
        let residual_se =
            residual_se.filter(|se| !reproduced || se.values.iter().all(|s| *s == 0.0));
        residual_squares += half_squares;
        held_out.extend(half_held_out);
        half_values.push(
            (0..n)
                .map(|i| surrogate_shapley[i] + residual_mean[i])
                .collect::<Vec<_>>(),
        );
        half_variances.push(residual_se);
        tracing::info!(
            "{name}: cross-fitting half {}/2 done ({} fitted on {} masks, residual over the \
             other {})",
            h + 1,
            surrogate.describe(),
            train.len(),
            half_masks[h].len()
        );
    }
    let values = (0..n)
        .map(|i| (half_values[0][i] + half_values[1][i]) / 2.0)
        .collect();
    // Treats the halves as independent (each half's residual mean is, given the other
    // half's fit); an approximation, documented. For a design drawn without replacement each
    // half's variance is its share of the whole draw's (see `finite_population_residual`).
    let std_errors = match (&half_variances[0], &half_variances[1]) {
        (Some(a), Some(b)) => Some(halves_combined(a, b)),
        _ => None,
    };
    let held_out_r2 = held_out_r2(residual_squares, &held_out);
    Ok(RegressionAdjusted {
        estimates: Estimates::new(name, values, std_errors),
        held_out_r2,
    })
}

/// The standard errors of the mean of two halves' estimates, taken as independent:
/// ½ sqrt(SE_A² + SE_B²), with the Welch–Satterthwaite degrees of freedom of that sum,
/// (V_A + V_B)² / (V_A²/df_A + V_B²/df_B) (a half without degrees of freedom, SE 0 or normal,
/// adds no term; none where neither half has any).
fn halves_combined(a: &StandardErrors, b: &StandardErrors) -> StandardErrors {
    let n = a.values.len();
    let variance = |se: &StandardErrors, i: usize| se.values[i] * se.values[i];
    let values = (0..n)
        .map(|i| (variance(a, i) + variance(b, i)).sqrt() / 2.0)
        .collect();
    let degrees_of_freedom = (a.degrees_of_freedom.is_some() || b.degrees_of_freedom.is_some())
        .then(|| {
            (0..n)
                .map(|i| {
                    let term = |se: &StandardErrors| match &se.degrees_of_freedom {
                        Some(df) => variance(se, i).powi(2) / df[i],
                        None => 0.0,
                    };
                    let total = variance(a, i) + variance(b, i);
                    let denominator = term(a) + term(b);
                    if denominator > 0.0 {
                        total * total / denominator
                    } else {
                        f64::INFINITY
                    }
                })
                .collect()
        });
    StandardErrors {
        values,
        degrees_of_freedom,
    }
}

/// 1 − Σ residual² / Σ (v − v̄)² over the held-out values (NaN when they do not vary).
pub(crate) fn held_out_r2(residual_squares: f64, held_out: &[f64]) -> f64 {
    let total_squares = total_squares(held_out);
    if total_squares > 0.0 {
        1.0 - residual_squares / total_squares
    } else {
        f64::NAN
    }
}

/// Σ (v − v̄)², taken about the first value (values all alike give exactly 0).
fn total_squares(values: &[f64]) -> f64 {
    sample_variance(values) * values.len().saturating_sub(1) as f64
}

/// Whether a surrogate reproduces the `held_out` values it was checked on, its residuals
/// there summing to `residual_squares`: 1 − R² at most [`REPRODUCED_VARIATION`] (held-out
/// values all alike: residuals of exactly 0). Such a fit's residual term gives no standard
/// error.
pub(crate) fn reproduces_held_out(residual_squares: f64, held_out: &[f64]) -> bool {
    residual_squares <= REPRODUCED_VARIATION * total_squares(held_out)
}

/// Whether a fit reproduces the `training` values it was fitted to, its residuals there summing
/// to `residual_squares`: 1 − R² at most [`REPRODUCED_VARIATION`], as
/// [`reproduces_held_out`] reads the values a fit was checked on.
fn reproduces_training(residual_squares: f64, training: &[f64]) -> bool {
    residual_squares <= REPRODUCED_VARIATION * total_squares(training)
}

/// The fewest complement pairs the kernel-pair variants (`regression-adjusted`,
/// `regression-adjusted-exp`) take over `num_players` players: 2n from three players on,
/// counted as [`PairedDesign::informative_pairs`] counts them (the pair (∅, N) adds no
/// equation), two (one a half) for two players, whose estimate is exact. Each half's surrogate
/// is fitted on the other half's 2·(pairs/2) masks and ∅ and N. For the exp-polynomial, 2n pairs give its
/// additive part (n + 1 coefficients) two masks per coefficient, the rule that chooses its
/// order ([`crate::polynomial::order_for_rows`]), which below it fell back to the additive
/// model anyway. The quadratic always fits all 1 + n + n(n−1)/2 coefficients under its ridge
/// (79 on 26 masks at n = 12), so no count of masks per coefficient argues for 2n there: its
/// minimum is the measured one (8 players, a recorded sub-game, 2n pairs: mean (error/SE)²
/// 1.2–1.5; 11–12 players: as below). Below it the surrogate's Shapley values, taken over all 2^n
/// masks, rest on masks nothing near was fitted on. At n pairs on the recorded games (sampler
/// tables, 200 seeds) the 95 % intervals held the truth 79–87 % of the time and up to 6 % of
/// the runs erred by more than 10 SE before 2026-12-07 (when such tables were read); with the
/// bounded surrogate and the shared SE guard, 84–95 % and up to 1.5 %, against 91–95 % and
/// about 1 run in 500 from 2n to 4n pairs.
pub fn minimum_kernel_pairs(num_players: usize) -> usize {
    if num_players <= 2 {
        2
    } else {
        MINIMUM_PAIRS_PER_PLAYER * num_players
    }
}

/// What a spread of residual units (terms of v − f over held-out masks) no larger than counts
/// as none: [`RESIDUAL_RESOLUTION`] of the range of the game's values, or the rounding of the
/// values and the units where that is larger.
fn residual_resolution<'a>(game_values: &[f64], units: impl IntoIterator<Item = &'a f64>) -> f64 {
    let mut range = ValueRange::default();
    range.include(game_values);
    rounding_of_units(game_values, units).max(RESIDUAL_RESOLUTION * range.spread())
}

/// Units alternately into two halves.
fn split_halves<T>(units: &[T]) -> [Vec<&T>; 2] {
    [0, 1].map(|h| units.iter().skip(h).step_by(2).collect())
}

/// The cross-fitted estimate from evaluated masks of a paired kernel design (at least two
/// pairs, one per half): the surrogate's Shapley values plus the MSR residual estimate.
pub fn regression_adjusted_kernel_estimate(
    design: &PairedDesign,
    rows: &[(Mask, f64)],
    target: SurrogateTarget,
    seed: u64,
) -> Result<RegressionAdjusted, ShapleyError> {
    let n = design.num_players;
    let name = match target {
        SurrogateTarget::Value => REGRESSION_ADJUSTED,
        SurrogateTarget::LogValue => REGRESSION_ADJUSTED_LOG,
    };
    let table = ValueTable::from_rows(rows);
    let (empty, full) = (Mask::empty(n), Mask::full(n));
    if n <= 1 {
        let total = table.get(&full)? - table.get(&empty)?;
        return Ok(RegressionAdjusted {
            estimates: Estimates::new(
                name,
                vec![total; n],
                Some(StandardErrors::normal(vec![0.0; n])),
            ),
            held_out_r2: f64::NAN,
        });
    }
    let minimum = minimum_kernel_pairs(n);
    // From three players on, the pairs counted are those that inform the fit, as kernelshap's
    // limits count them (the pair (∅, N) adds no equation: ∅ and N are in every fold anyway).
    // Two players have one informative pair, so there the rule is two pairs of any kind.
    let pairs = if n <= 2 {
        design.coalitions.len()
    } else {
        design.informative_pairs()
    };
    if pairs < minimum {
        // With 4 players or fewer the minimum's 2 + 4n masks are at least all 2^n.
        let cheaper = if 1usize << n <= 2 + 4 * n {
            format!(
                "; over {n} players every mask ({}, sample-masks --enumerate) costs no more, and \
                 --estimator exact-shapley reads it exactly",
                1usize << n
            )
        } else {
            String::new()
        };
        return Err(ShapleyError::Design(format!(
            "--estimator {name} needs at least {minimum} complement pairs over {n} players \
             and the design has {pairs}{}: {}; {} draws enough{cheaper}",
            if pairs < design.coalitions.len() {
                " besides the pair (empty, full), which adds no equation"
            } else {
                ""
            },
            if n <= 2 {
                "cross-fitting takes a pair for each half".to_string()
            } else {
                "2 per player; with fewer, each cross-fitting half's surrogate, fitted on the \
                 other half's pairs, has its Shapley values rest on masks nothing near was \
                 fitted on, and the standard errors were measured to miss (at n pairs over \
                 11–12 players, 95 % intervals held the truth 84–95 % of the time)"
                    .to_string()
            },
            complement_pairs_command(n, minimum)
        )));
    }
    let halves = split_halves(&design.coalitions);
    let half_masks = halves.clone().map(|half| {
        half.iter()
            .flat_map(|s| [(*s).clone(), s.complement()])
            .collect()
    });
    let exact = residual_is_exact(design);
    let game_values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let residual_estimate = |h: usize,
                             residual: &dyn Fn(&Mask) -> Result<f64, ShapleyError>,
                             trend: &[f64]| {
        let anchor = (residual(&full)? - residual(&empty)?) / n as f64;
        let (values, std_errors) = if design.without_replacement {
            finite_population_residual(design, &halves, h, anchor, residual, trend, &game_values)?
        } else {
            msr_residual(design, &halves[h], anchor, residual, trend, &game_values)?
        };
        // φ(f) is exact too (the quadratic's closed form, or f's four masks enumerated), so
        // the half's estimate is φ(v) itself: its error is 0, where its units, which agree
        // because of that, gave no SE (`guarded_se`) or one unit too few.
        Ok(if exact {
            (values, Some(StandardErrors::normal(vec![0.0; n])))
        } else {
            (values, std_errors)
        })
    };
    cross_fit(
        name,
        n,
        &table,
        target,
        half_masks,
        &residual_estimate,
        seed,
    )
}

/// Whether each cross-fitting half's residual term is φ(r) exactly, whatever the game: with two
/// players the one class of sizes 1..n−1 is the single pair ({0}, {1}), whose term is (r(N) −
/// r(∅))/2 ± (r({0}) − r({1}))/2, the Shapley values of r. Drawn with replacement, so only
/// where no pair (∅, N) is among the pairs: beside it p̄_1 is below 1 and a half's share of
/// ({0}, {1}) pairs need not be p̄_1, so a half's mean is not exact (though unbiased). Drawn
/// without replacement the class is that one pair, which one half holds (its finite-population
/// mean is the pair's term) and the other reads exactly (as training).
fn residual_is_exact(design: &PairedDesign) -> bool {
    design.num_players == 2
        && (design.without_replacement || design.coalitions.iter().all(|s| s.num_kept() == 1))
}

/// φ(r) by maximum sample reuse over `half`'s pairs, drawn independently with replacement:
/// the mean of each pair's residual term about `anchor` = (r(N) − r(∅))/n, and its standard
/// error from their spread (`mean_and_se`, moderated towards the variances' trend in `trend`,
/// φ(f); none where they spread by no more than [`residual_resolution`] of `game_values`,
/// v's).
fn msr_residual(
    design: &PairedDesign,
    half: &[&Mask],
    anchor: f64,
    residual: &dyn Fn(&Mask) -> Result<f64, ShapleyError>,
    trend: &[f64],
    game_values: &[f64],
) -> Result<(Vec<f64>, Option<StandardErrors>), ShapleyError> {
    let n = design.num_players;
    let size_probability = &design.size_probabilities;
    let units: Vec<Vec<f64>> = half
        .iter()
        .map(|s| {
            let mut contribution = vec![anchor; n];
            for coalition in [(*s).clone(), s.complement()] {
                let size = coalition.num_kept();
                // The pair (∅, N) (a mask table may hold it, e.g. strata 0 and n with
                // --complement-pairs) is the anchor, counted above: it adds nothing here,
                // which keeps every unit's sum at the anchor's (efficiency) and the
                // estimate unbiased (p̄ cancels within each size 1..n−1).
                if size == 0 || size == n {
                    continue;
                }
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
    let resolution = residual_resolution(game_values, units.iter().flatten());
    Ok(mean_and_se(&units, n, Some(trend), resolution))
}

/// φ(r) over a design drawn without replacement class by class (see
/// [`PairedDesign::without_replacement`]), for the half `h` whose masks the surrogate has not
/// seen. With c̃_i(T) = 1/|T| if i ∈ T, −1/(n − |T|) otherwise,
///
///   φ_i(r) = (r(N) − r(∅))/n + Σ_{s=1}^{n−1} mean over all C(n, s) coalitions T of size s of
///   r(T) c̃_i(T),
///
/// summed class by class ({s, n − s}, pairs as units: u(pair) = P_c Σ_{T ∈ pair} r(T) c̃_i(T)
/// / C(n, |T|), P_c the pairs of the class, so that the class's term is the mean of u over its
/// P_c pairs). The other half's pairs, the surrogate's training masks, enter exactly; the
/// rest of the class is represented by this half's pairs, a uniform sample of it without
/// replacement given the training set ([`partly_known_mean`]). The MSR mean over this half's
/// pairs alone is not unbiased here: this half holds none of the other half's masks, so its
/// mean is over the class minus the training masks, where the surrogate fits worst. A class
/// this half holds no pair of is filled by the training pairs alone (the surrogate for the
/// rest: biased there; logged).
///
/// Variance, per class: (1 − M_c/P_c) s²/m_c, M_c the class's pairs in both halves, m_c in
/// this one, s² the spread of u over them (a class of one pair here takes the spread of all
/// this half's units). [`cross_fit`] combines the halves as ¼(V_A + V_B), which is then the
/// variance of the mean of u over all M_c pairs under the finite-population factor of the
/// whole draw: what the average of the halves comes to when the two surrogates agree. Each
/// half's own conditional variance, ((P_c − k_c)/P_c)² (1 − m_c/(P_c − k_c)) s²/m_c (k_c the
/// other half's pairs), would leave out that the halves hold the same evaluated masks, one as
/// training and one as held-out, and understate the error by a factor 1 − M_c/(2P_c).
fn finite_population_residual(
    design: &PairedDesign,
    halves: &[Vec<&Mask>; 2],
    h: usize,
    anchor: f64,
    residual: &dyn Fn(&Mask) -> Result<f64, ShapleyError>,
    trend: &[f64],
    game_values: &[f64],
) -> Result<(Vec<f64>, Option<StandardErrors>), ShapleyError> {
    let n = design.num_players;
    let unit = |coalition: &Mask| -> Result<(usize, Vec<f64>), ShapleyError> {
        let class = design.class_of(coalition.num_kept());
        let mut u = vec![0.0; n];
        if class == 0 {
            return Ok((class, u));
        }
        let pairs = design.pairs_in_class(class);
        for member in [coalition.clone(), coalition.complement()] {
            let size = member.num_kept();
            let scale = pairs * residual(&member)? / binomial(n, size) as f64;
            let (inside, outside) = (scale / size as f64, scale / (n - size) as f64);
            for (i, x) in u.iter_mut().enumerate() {
                *x += if member.is_kept(i) { inside } else { -outside };
            }
        }
        Ok((class, u))
    };
    let classes = n / 2 + 1;
    let mut known_sums = vec![vec![0.0; n]; classes];
    let mut known = vec![0usize; classes];
    for coalition in &halves[1 - h] {
        let (class, u) = unit(coalition)?;
        known[class] += 1;
        known_sums[class]
            .iter_mut()
            .zip(&u)
            .for_each(|(s, x)| *s += x);
    }
    let mut held: Vec<Vec<Vec<f64>>> = vec![Vec::new(); classes];
    for coalition in &halves[h] {
        let (class, u) = unit(coalition)?;
        held[class].push(u);
    }
    let all_held: Vec<&Vec<f64>> = held.iter().flatten().collect();
    let column = |rows: &[&Vec<f64>], i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
    let spread_of_all: Vec<f64> = (0..n)
        .map(|i| sample_variance(&column(&all_held, i)))
        .collect();
    let mut values = vec![anchor; n];
    let mut groups = Vec::new();
    let mut uncorrected = 0;
    for class in 1..classes {
        let pairs = design.pairs_in_class(class);
        let rows: Vec<&Vec<f64>> = held[class].iter().collect();
        if rows.is_empty() {
            uncorrected += usize::from(known[class] > 0 && (known[class] as f64) < pairs);
            for (v, s) in values.iter_mut().zip(&known_sums[class]) {
                *v += s / pairs;
            }
            continue;
        }
        let count = rows.len() as f64;
        let finite = finite_population_factor(known[class] as f64 + count, pairs);
        let mut spreads = Vec::with_capacity(n);
        for (i, value) in values.iter_mut().enumerate() {
            let x = column(&rows, i);
            *value += partly_known_mean(pairs, known[class] as f64, known_sums[class][i], &x);
            spreads.push(if x.len() >= 2 {
                sample_variance(&x)
            } else {
                spread_of_all[i]
            });
        }
        let degrees_of_freedom = if rows.len() >= 2 {
            count - 1.0
        } else {
            all_held.len() as f64 - 1.0
        };
        groups.push(Spread::uniform(finite / count, spreads, degrees_of_freedom));
    }
    if uncorrected > 0 {
        tracing::info!(
            "{uncorrected} class(es) of sizes {{s, n − s}} have no pair in one cross-fitting \
             half: the surrogate alone fills their unevaluated masks there (biased by its \
             error; more pairs remove it)"
        );
    }
    // The guard every SE passes (as the iid residual's, `mean_and_se`): moderated across the
    // players, none where no held-out residual term spreads beyond the surrogate's fitting
    // precision ([`residual_resolution`]; until 2026-12-07 neither, and a surrogate that
    // reproduced the held-out masks gave SEs of 1e-6 about errors of 0.45).
    let resolution = residual_resolution(game_values, all_held.iter().copied().flatten());
    let std_errors = if all_held.len() >= 2 {
        guarded_se(
            &groups,
            Some(trend),
            (all_held.len() - 1) as f64,
            resolution,
        )
    } else {
        None
    };
    Ok((values, std_errors))
}

/// The cross-fitted estimate from evaluated masks of an antithetic permutation design (at
/// least two units, one per half; the same masks as permutation sampling needs): the log
/// surrogate's Shapley values plus the permutation estimate of the residual. `seed` drives
/// only the permutations through the surrogate (more than [`MAX_SURROGATE_ENUMERATED_PLAYERS`]
/// players).
pub fn regression_adjusted_chains_estimate(
    design: &PermutationDesign,
    rows: &[(Mask, f64)],
    seed: u64,
) -> Result<RegressionAdjusted, ShapleyError> {
    let n = design.num_players;
    let table = ValueTable::from_rows(rows);
    // One player: its value is the whole gain, as in the kernel variant (its one chain is one
    // unit, too few to cross-fit).
    if n <= 1 {
        let (empty, full) = (Mask::empty(n), Mask::full(n));
        let total = table.get(&full)? - table.get(&empty)?;
        return Ok(RegressionAdjusted {
            estimates: Estimates::new(
                REGRESSION_ADJUSTED_LOG_CHAINS,
                vec![total; n],
                Some(StandardErrors::normal(vec![0.0; n])),
            ),
            held_out_r2: f64::NAN,
        });
    }
    if design.units.len() < 2 {
        return Err(ShapleyError::Design(
            "cross-fitting needs at least two permutation units".into(),
        ));
    }
    let game_values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let halves: [Vec<Vec<usize>>; 2] =
        split_halves(&design.units).map(|half| half.into_iter().cloned().collect());
    let half_masks = halves.clone().map(|units| {
        units
            .iter()
            .flatten()
            .flat_map(|&chain| design.chain_masks(chain))
            .collect()
    });
    let residual_estimate =
        |h: usize, residual: &dyn Fn(&Mask) -> Result<f64, ShapleyError>, trend: &[f64]| {
            let units = design.unit_marginals(&halves[h], &mut |chain| {
                design.chain_masks(chain).iter().map(residual).collect()
            })?;
            let resolution = residual_resolution(&game_values, units.iter().flatten());
            Ok(design.mean_and_se(&units, Some(trend), resolution))
        };
    cross_fit(
        REGRESSION_ADJUSTED_LOG_CHAINS,
        n,
        &table,
        SurrogateTarget::LogValue,
        half_masks,
        &residual_estimate,
        seed,
    )
}

/// Design, evaluation through `game` (fixed blocks kept) and estimate in one call, for the
/// kernel-pair variants.
pub fn run_regression_adjusted_kernel(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
    target: SurrogateTarget,
) -> Result<RegressionAdjusted, ShapleyError> {
    let name = match target {
        SurrogateTarget::Value => REGRESSION_ADJUSTED,
        SurrogateTarget::LogValue => REGRESSION_ADJUSTED_LOG,
    };
    let n = players.len();
    let design = paired_kernel_design(
        n,
        budget,
        minimum_kernel_pairs(n),
        name,
        &mut rng_from_seed(seed),
    )?;
    let (rows, evaluations) = evaluate_masks_for(name, game, players, &design.queries())?;
    let mut result = regression_adjusted_kernel_estimate(&design, &rows, target, seed)?;
    result.estimates = result
        .estimates
        .for_players(players)
        .with_evaluations(evaluations);
    Ok(result)
}

/// The regression-adjusted estimator in one call.
pub fn run_regression_adjusted(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    Ok(
        run_regression_adjusted_kernel(game, players, budget, seed, SurrogateTarget::Value)?
            .estimates,
    )
}

/// Design (antithetic permutation chains), evaluation through `game` and estimate in one
/// call.
pub fn run_regression_adjusted_chains(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<RegressionAdjusted, ShapleyError> {
    // Two antithetic pairs, one a cross-fitting half (one player needs none: its value is the
    // whole gain), refused before the chains are valued: permutation sampling's own minimum,
    // one pair, let a budget of one pair spend 2n evaluations and then fail.
    let n = players.len();
    let minimum_pairs = if n <= 1 { 1 } else { 2 };
    if permutation::pairs_for_budget(n, budget) < minimum_pairs {
        return Err(ShapleyError::BudgetTooSmall {
            estimator: REGRESSION_ADJUSTED_LOG_CHAINS,
            players: n,
            budget,
            needed: 2 + minimum_pairs * 2 * n.saturating_sub(1),
        });
    }
    let design = permutation_design(n, budget, &mut rng_from_seed(seed))?;
    let (rows, evaluations) = evaluate_masks_for(
        REGRESSION_ADJUSTED_LOG_CHAINS,
        game,
        players,
        &design.queries(),
    )?;
    let mut result = regression_adjusted_chains_estimate(&design, &rows, seed)?;
    result.estimates = result
        .estimates
        .for_players(players)
        .with_evaluations(evaluations);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The halves' mean has the Welch–Satterthwaite degrees of freedom of the summed variance:
    /// two halves alike add theirs (3 + 3), a half that dominates keeps about its own, and a
    /// half with no degrees of freedom (SE 0) adds no term.
    #[test]
    fn halves_combine_their_degrees_of_freedom() {
        let half = |se: f64, df: Option<f64>| StandardErrors {
            values: vec![se],
            degrees_of_freedom: df.map(|df| vec![df]),
        };
        let alike = halves_combined(&half(0.2, Some(3.0)), &half(0.2, Some(3.0)));
        assert!((alike.values[0] - 0.08f64.sqrt() / 2.0).abs() < 1e-12);
        assert!((alike.degrees_of_freedom.unwrap()[0] - 6.0).abs() < 1e-12);
        let dominated = halves_combined(&half(1.0, Some(3.0)), &half(0.01, Some(3.0)));
        assert!((dominated.degrees_of_freedom.unwrap()[0] - 3.0).abs() < 1e-3);
        let exact = halves_combined(&half(0.2, Some(5.0)), &StandardErrors::normal(vec![0.0]));
        assert!((exact.degrees_of_freedom.unwrap()[0] - 5.0).abs() < 1e-12);
        let neither = halves_combined(
            &StandardErrors::normal(vec![0.1]),
            &StandardErrors::normal(vec![0.1]),
        );
        assert_eq!(neither.degrees_of_freedom, None);
    }

    #[test]
    fn the_lowest_point_of_a_parabola_through_three_points() {
        let y = |x: f64| 3.0 * (x - 0.3).powi(2) + 1.0;
        let points = |xs: [f64; 3]| xs.map(|x| (x, y(x)));
        assert!((parabola_lowest(points([-1.0, 0.0, 2.0])).unwrap() - 0.3).abs() < 1e-12);
        // Held to the points' range, and none where the parabola opens downwards.
        assert_eq!(parabola_lowest(points([1.0, 2.0, 3.0])), Some(1.0));
        assert_eq!(parabola_lowest([(0.0, 0.0), (1.0, 1.0), (2.0, 0.0)]), None);
        assert_eq!(parabola_lowest([(0.0, 0.0), (1.0, 1.0), (2.0, 2.0)]), None);
    }

    /// Every shift of the grid is below the lowest value, so ln(v − c) is finite, also where
    /// the values spread by a few ulps of their size.
    #[test]
    fn every_grid_shift_is_below_the_values() {
        for lowest in [1e6, -1e6, 3.0, 1e-300, 0.0] {
            let ulp = f64::EPSILON * f64::abs(lowest);
            for spread in [3.0 * ulp, 1e-3 * f64::abs(lowest), 1.0] {
                if spread <= 0.0 {
                    continue;
                }
                for below in SHIFT_SPREADS {
                    let shift = shift_below(lowest, spread, below);
                    assert!(
                        (lowest - shift).ln().is_finite(),
                        "lowest {lowest}, spread {spread}, {below} spreads below: {shift}"
                    );
                }
            }
        }
    }

    /// The exp-polynomial surrogate of a game and of the game plus a constant are one surrogate
    /// shifted by the constant.
    #[test]
    fn the_exp_surrogate_of_a_shifted_game_is_the_shifted_surrogate() {
        let n = 6;
        let mut game = crate::synthetic::TripleGame::layer_pruning_like(n, 4);
        let every = crate::synthetic::every_mask(n);
        let masks: Vec<Mask> = every.iter().step_by(3).cloned().collect();
        let values = game.values(&masks).unwrap();
        let fit = |constant: f64| {
            let shifted: Vec<f64> = values.iter().map(|v| v + constant).collect();
            HalfSurrogate::fit("test", SurrogateTarget::LogValue, &masks, &shifted).unwrap()
        };
        let plain = fit(0.0).predict(&every);
        for constant in [10.0, 1e3, -7.0] {
            for (a, b) in plain.iter().zip(fit(constant).predict(&every)) {
                assert!(
                    (a + constant - b).abs() < 1e-9,
                    "+{constant}: {a} against {b}"
                );
            }
        }
    }
}
