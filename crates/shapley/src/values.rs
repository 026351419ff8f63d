//! Evaluated masks in, estimates out: the types every estimator shares.

use std::collections::{HashMap, HashSet};

use layerprune_core::{CountingGame, Game, Mask};

use crate::progress::Progress;
use crate::{PlayerGame, Players, ShapleyError};

/// How many masks go to the game in one `values` call: large enough for the evaluator to
/// share work across masks, small enough to bound memory.
pub(crate) const CHUNK: usize = 8192;

/// One estimator's contribution estimate for each player.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimates {
    /// What was estimated and how, e.g. "permutation-shapley" or "stratified-semivalue".
    pub estimator: String,
    /// The block of each entry (player `p` is `blocks[p]`).
    pub blocks: Vec<usize>,
    /// The estimate for each player; higher = more important.
    pub values: Vec<f64>,
    /// Standard error of each estimate; `None` where the estimator has none (exact values).
    pub std_errors: Option<Vec<f64>>,
    /// Degrees of freedom of each standard error's variance, which make its 95 % interval
    /// Student's t ([`interval_factor_95`]); `None` (with standard errors): the normal interval,
    /// ± 1.96 SE (SEs of 0, or already widened to their t interval, as `kernelshap-paired`'s).
    pub degrees_of_freedom: Option<Vec<f64>>,
    /// Distinct masks valued by the game the estimate came from.
    pub llm_evaluations: usize,
}

impl Estimates {
    pub(crate) fn new(
        estimator: &str,
        values: Vec<f64>,
        std_errors: Option<StandardErrors>,
    ) -> Self {
        let (std_errors, degrees_of_freedom) = match std_errors {
            Some(se) => (Some(se.values), se.degrees_of_freedom),
            None => (None, None),
        };
        Estimates {
            estimator: estimator.to_string(),
            blocks: (0..values.len()).collect(),
            values,
            std_errors,
            degrees_of_freedom,
            llm_evaluations: 0,
        }
    }

    /// Relabels player entries with the blocks they stand for.
    pub fn for_players(mut self, players: &Players) -> Self {
        self.blocks = players.blocks().to_vec();
        self
    }

    pub fn with_evaluations(mut self, llm_evaluations: usize) -> Self {
        self.llm_evaluations = llm_evaluations;
        self
    }

    /// The 95 % interval of entry `index`, where a standard error exists: estimate ± factor ·
    /// SE, the factor Student's t of the SE's degrees of freedom ([`Self::interval_factor`]).
    pub fn ci95(&self, index: usize) -> Option<(f64, f64)> {
        let se = self.std_errors.as_ref()?.get(index)?;
        let half_width = self.interval_factor(index) * se;
        let value = self.values[index];
        Some((value - half_width, value + half_width))
    }

    /// The half-width of entry `index`'s 95 % interval in standard errors:
    /// [`interval_factor_95`] of its degrees of freedom (1.96 where there are none).
    pub fn interval_factor(&self, index: usize) -> f64 {
        let degrees_of_freedom = self
            .degrees_of_freedom
            .as_ref()
            .and_then(|df| df.get(index).copied());
        interval_factor_95(degrees_of_freedom.unwrap_or(f64::INFINITY))
    }

    pub fn sum(&self) -> f64 {
        self.values.iter().sum()
    }

    /// How well the standard errors tell the error against known values `truth` (e.g. the
    /// exact Shapley values): the mean over the players of ((estimate − truth)/SE)², 1 where
    /// they are right (`estimator_accuracy`, `tests/standard_errors.rs`). A player whose
    /// estimate is exact to rounding (`values::rounding_of` `truth`: 1e-9 of its range, at least
    /// floating-point rounding of its largest |value|) counts 0: its error says nothing of the
    /// SE's calibration (its SE may be of rounding size too, and the ratio of two rounding
    /// errors reached 1e29 on the synthetic game). `None` without standard errors, or where one
    /// is 0 about an error; infinite where an estimate or an SE is not a number (no guard built
    /// on it may pass an estimator that returns NaN).
    pub fn mean_z2(&self, truth: &[f64]) -> Option<f64> {
        let mut sum = 0.0;
        for (error, se) in self.errors_beyond_rounding(truth)? {
            if se <= 0.0 {
                return None;
            }
            sum += z_of(error, se).powi(2);
        }
        Some(sum / self.values.len() as f64)
    }

    /// The share of the players whose 95 % interval ([`Self::ci95`]) misses `truth`, 0.05
    /// where the standard errors are right; a player exact to rounding is covered (as in
    /// [`Self::mean_z2`]), an SE of 0 about an error misses. `None` without standard errors.
    pub fn miss95(&self, truth: &[f64]) -> Option<f64> {
        let misses = self.misses95(truth)?.into_iter().filter(|&m| m).count();
        Some(misses as f64 / self.values.len() as f64)
    }

    /// Whether each player's 95 % interval ([`Self::ci95`]) misses `truth` (as in
    /// [`Self::miss95`], player by player: the replay benchmark's per-block shares). `None`
    /// without standard errors.
    pub fn misses95(&self, truth: &[f64]) -> Option<Vec<bool>> {
        self.misses95_with(truth, |index| self.interval_factor(index))
    }

    /// [`Self::misses95`] of the intervals ± `factor(player)` SE (the replay benchmark sets the
    /// normal 1.96 beside the t intervals).
    pub fn misses95_with(&self, truth: &[f64], factor: impl Fn(usize) -> f64) -> Option<Vec<bool>> {
        Some(
            self.player_errors(truth)?
                .map(|(index, error, se, beyond_rounding)| {
                    beyond_rounding && z_of(error, se) > factor(index)
                })
                .collect(),
        )
    }

    /// The largest |error| / SE against `truth` over the players whose estimate is not `truth`
    /// to rounding (as in [`Self::mean_z2`]): infinite where such an error has an SE of 0, 0
    /// where every estimate is `truth` to rounding; infinite too where an estimate or an SE is
    /// not a number. An interval far too narrow for its error
    /// (an SE of rounding size, or of a surrogate's fitting precision, about a real error)
    /// shows as a ratio no normal error reaches (`tests/standard_errors.rs` takes 1e3), whatever
    /// the values' scale. `None` without standard errors.
    pub fn largest_z(&self, truth: &[f64]) -> Option<f64> {
        Some(
            self.errors_beyond_rounding(truth)?
                .map(|(error, se)| z_of(error, se))
                .fold(0.0, f64::max),
        )
    }

    /// (error, SE) of each player whose estimate is not `truth` to rounding (a NaN error is
    /// not); `None` without standard errors.
    fn errors_beyond_rounding<'a>(
        &'a self,
        truth: &'a [f64],
    ) -> Option<impl Iterator<Item = (f64, f64)> + 'a> {
        Some(
            self.player_errors(truth)?
                .filter(|&(_, _, _, beyond_rounding)| beyond_rounding)
                .map(|(_, error, se, _)| (error, se)),
        )
    }

    /// (index, error, SE, whether the error is beyond rounding, a NaN error being so) of every
    /// player; `None` without standard errors.
    fn player_errors<'a>(
        &'a self,
        truth: &'a [f64],
    ) -> Option<impl Iterator<Item = (usize, f64, f64, bool)> + 'a> {
        let rounding = rounding_of(truth);
        let std_errors = self.std_errors.as_ref()?;
        Some(
            self.values
                .iter()
                .zip(truth)
                .zip(std_errors.iter().copied())
                .enumerate()
                .map(move |(index, ((v, t), se))| {
                    let error = v - t;
                    (index, error, se, error.is_nan() || error.abs() > rounding)
                }),
        )
    }
}

/// |error| / SE, infinite where the SE is 0 or either is not a number (an estimate or an SE of
/// NaN fails every check built on it rather than dropping out of a comparison).
fn z_of(error: f64, se: f64) -> f64 {
    if error.is_nan() || se.is_nan() || se <= 0.0 {
        f64::INFINITY
    } else {
        error.abs() / se
    }
}

/// Values of masks looked up by mask; asking for a mask that is not there is an error that
/// names it.
#[derive(Clone, Debug, Default)]
pub struct ValueTable {
    values: HashMap<Mask, f64>,
}

impl ValueTable {
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a (Mask, f64)>) -> Self {
        ValueTable {
            values: rows.into_iter().map(|(m, v)| (m.clone(), *v)).collect(),
        }
    }

    pub fn get(&self, mask: &Mask) -> Result<f64, ShapleyError> {
        self.values
            .get(mask)
            .copied()
            .ok_or_else(|| ShapleyError::MissingMask { mask: mask.id() })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn rows(&self) -> Vec<(Mask, f64)> {
        self.values.iter().map(|(m, &v)| (m.clone(), v)).collect()
    }
}

/// The distinct masks of a list, sorted (so the evaluator can share prefixes).
pub(crate) fn distinct_sorted(masks: impl IntoIterator<Item = Mask>) -> Vec<Mask> {
    let mut distinct: Vec<Mask> = masks
        .into_iter()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    distinct.sort();
    distinct
}

/// Values the player masks through a block game (fixed blocks kept), each distinct mask
/// once, one `values` call per chunk. Returns the `(player mask, value)` rows and the number
/// of distinct masks the game was asked for.
pub fn evaluate_masks(
    game: &mut dyn Game,
    players: &Players,
    masks: &[Mask],
) -> Result<(Vec<(Mask, f64)>, usize), ShapleyError> {
    evaluate_masks_for("evaluate-masks", game, players, masks)
}

/// [`evaluate_masks`] for the estimator `name`, which its progress lines are labelled with
/// (`{name}: 16384 of 65536 masks valued`, see [`crate::progress`]).
pub(crate) fn evaluate_masks_for(
    name: &str,
    game: &mut dyn Game,
    players: &Players,
    masks: &[Mask],
) -> Result<(Vec<(Mask, f64)>, usize), ShapleyError> {
    let distinct = distinct_sorted(masks.iter().cloned());
    let mut counting = CountingGame::new(PlayerGame::new(game, players.clone())?);
    let mut rows = Vec::with_capacity(distinct.len());
    let mut progress = Progress::new(name, "masks valued", distinct.len(), CHUNK);
    for chunk in distinct.chunks(CHUNK) {
        let values = counting.values(chunk)?;
        rows.extend(chunk.iter().cloned().zip(values));
        progress.advance(chunk.len());
    }
    Ok((rows, counting.evaluations()))
}

/// Mean and standard error of the mean of each column (a player) of per-unit rows drawn
/// independently: the variance of each player's units moderated towards the players' pooled
/// variance (or towards its trend in `trend`, a covariate independent of the rows), and no SE
/// below two rows or where no unit differs from another beyond `rounding` (set by the game's
/// values the units were computed from, [`rounding_of_units`]): the shared guard,
/// [`guarded_se`].
pub(crate) fn mean_and_se(
    rows: &[Vec<f64>],
    width: usize,
    trend: Option<&[f64]>,
    rounding: f64,
) -> (Vec<f64>, Option<StandardErrors>) {
    let (mean, variances) = mean_and_variance(rows, width);
    let std_errors = variances.and_then(|variances| {
        let degrees_of_freedom = (rows.len() - 1) as f64;
        let spread = Spread::uniform(1.0 / rows.len() as f64, variances, degrees_of_freedom);
        guarded_se(&[spread], trend, degrees_of_freedom, rounding)
    });
    (mean, std_errors)
}

/// Mean and sample variance (divisor rows − 1) of each column of per-unit rows (no variance
/// below two rows). Both are taken about the first row, so that a column whose units are all
/// alike has variance exactly 0 (not the rounding of its mean).
pub(crate) fn mean_and_variance(rows: &[Vec<f64>], width: usize) -> (Vec<f64>, Option<Vec<f64>>) {
    let Some(first) = rows.first() else {
        return (vec![0.0; width], None);
    };
    let count = rows.len() as f64;
    let mut offset = vec![0.0; width];
    for row in rows {
        for ((o, x), x0) in offset.iter_mut().zip(row).zip(first) {
            *o += (x - x0) / count;
        }
    }
    let mean = first.iter().zip(&offset).map(|(x0, o)| x0 + o).collect();
    if rows.len() < 2 {
        return (mean, None);
    }
    let mut var = vec![0.0; width];
    for row in rows {
        for (((v, x), x0), o) in var.iter_mut().zip(row).zip(first).zip(&offset) {
            *v += (x - x0 - o).powi(2) / (count - 1.0);
        }
    }
    (mean, Some(var))
}

/// What a difference among `values` below counts as rounding: 1e-9 of their range (an
/// estimate exact to rounding), and at least [`FLOATING_POINT_ROUNDING`] of their largest
/// magnitude, what differences of values that large carry from the arithmetic alone. Of the
/// range, not of the magnitude (until 2026-12-07: 1e-9 of the largest |v|), so that a game
/// shifted by a constant, whose marginals, residuals and spreads are the same, is read the same:
/// a game of spread 1e-3 shifted by 1e6 had a rounding of 1e-3 and no standard errors.
pub(crate) fn rounding_of<'a>(values: impl IntoIterator<Item = &'a f64>) -> f64 {
    let mut range = ValueRange::default();
    range.include(values);
    range.rounding()
}

/// The lowest and highest of values met so far (valued in batches), for [`rounding_of`] them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueRange {
    lowest: f64,
    highest: f64,
}

impl Default for ValueRange {
    fn default() -> ValueRange {
        ValueRange {
            lowest: f64::INFINITY,
            highest: f64::NEG_INFINITY,
        }
    }
}

impl ValueRange {
    pub(crate) fn include<'a>(&mut self, values: impl IntoIterator<Item = &'a f64>) {
        for v in values {
            self.lowest = self.lowest.min(*v);
            self.highest = self.highest.max(*v);
        }
    }

    /// Highest less lowest of the values met (0 where none).
    pub(crate) fn spread(&self) -> f64 {
        (self.highest - self.lowest).max(0.0)
    }

    /// [`rounding_of`] the values met (0 where none).
    pub(crate) fn rounding(&self) -> f64 {
        if self.lowest > self.highest {
            return 0.0;
        }
        let largest = self.lowest.abs().max(self.highest.abs());
        (1e-9 * (self.highest - self.lowest)).max(FLOATING_POINT_ROUNDING * largest)
    }
}

/// The rounding of differences among values of magnitude 1, as a share of that magnitude:
/// about 4,500 times f64's machine epsilon (2.2e-16), room for the few operations a marginal,
/// a residual or a projected score takes, far below any spread an estimate's error shows.
pub(crate) const FLOATING_POINT_ROUNDING: f64 = 1e-12;

/// What a spread of units computed from the game's `values` (marginals, residuals v − f,
/// projected scores) below counts as rounding: [`rounding_of`] the values or of the units,
/// whichever is larger. Of the values, not of the units alone: units that are all differences of
/// rounding size (residuals of a surrogate that interpolates the masks it is checked on,
/// 1e-12 beside values of 1) spread by rounding size too, and measured against themselves they
/// passed as a spread (an SE of 4e-12 about an error of 0.375).
pub(crate) fn rounding_of_units<'a>(
    values: &[f64],
    units: impl IntoIterator<Item = &'a f64>,
) -> f64 {
    rounding_of(values).max(rounding_of(units))
}

/// Weight, in units' degrees of freedom, of the players' pooled variance in each player's
/// moderated variance ([`guarded_se`]). 4: with the player's own d = 1 (two units) the
/// moderated t has 5 degrees of freedom and E t² = 5/3 (with d0 = 2: 3 and E t² = 3); and from
/// about 40 units (permutation sampling at budget 1,024 over 12 players) the player's own spread
/// carries 90 % of the weight, so large samples keep their standard errors. The players'
/// variances differ up to 12-fold within a game (0.2–3.6 times their mean on the recorded and
/// synthetic games of docs/estimators.md), which argues against more: the pooled variance would
/// stand for players it does not fit. Measured with the t intervals (2026-12-07; 200 seeds,
/// budgets 64–1,024): d0 = 2 and 8 moved the share of intervals missing by game in opposite
/// directions (permutation sampling at budget 64: d0 = 2 nearest 5 % on the synthetic games, 8
/// on the recorded ones but with a worse worst block), no value better on every game, so it
/// stays 4.
const POOLED_DEGREES_OF_FREEDOM: f64 = 4.0;

/// One group of units behind an estimate (every unit, or one stratum of a stratified draw):
/// the spread (sample variance) of each player's units, the weight with which it enters
/// that player's variance of the estimate, Var_i = Σ_groups weight_i · spread_i (e.g. 1/m for
/// the mean of m iid units; (m_c/m)² (1 − m_c/P_c)/m_c for a stratum of m_c of P_c units
/// drawn without replacement, 0 for a stratum drawn whole, whose mean is exact), and the
/// degrees of freedom of each spread (m − 1 for m units), from which [`guarded_se`] counts the
/// variance's (Welch–Satterthwaite).
#[derive(Clone, Debug)]
pub(crate) struct Spread {
    pub weights: Vec<f64>,
    pub variances: Vec<f64>,
    pub degrees_of_freedom: Vec<f64>,
}

impl Spread {
    /// A group whose spread enters every player's variance with the same `weight`, from units
    /// with `degrees_of_freedom` for every player.
    pub(crate) fn uniform(weight: f64, variances: Vec<f64>, degrees_of_freedom: f64) -> Spread {
        Spread {
            weights: vec![weight; variances.len()],
            degrees_of_freedom: vec![degrees_of_freedom; variances.len()],
            variances,
        }
    }

    /// A group of `width` players to fill player by player.
    pub(crate) fn empty(width: usize) -> Spread {
        Spread {
            weights: vec![0.0; width],
            variances: vec![0.0; width],
            degrees_of_freedom: vec![0.0; width],
        }
    }
}

/// The standard errors of an estimate's players and the degrees of freedom of each one's
/// variance, which make its 95 % interval Student's t ([`interval_factor_95`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StandardErrors {
    pub values: Vec<f64>,
    /// `None`: the normal interval (SEs of 0, or already widened to their t interval).
    pub degrees_of_freedom: Option<Vec<f64>>,
}

impl StandardErrors {
    /// Standard errors whose interval is the normal one, ± 1.96 SE: SEs of 0 (an exact
    /// estimate) or SEs already widened to their t interval (`kernelshap-paired`'s).
    pub(crate) fn normal(values: Vec<f64>) -> StandardErrors {
        StandardErrors {
            values,
            degrees_of_freedom: None,
        }
    }
}

/// The standard errors of estimates whose variance is Var_i = Σ_groups weight_i · spread_i
/// ([`Spread`]), from units with `degrees_of_freedom` d in all: the one guard every
/// sampled estimate's SE passes (permutation sampling, KernelSHAP's two readings, the
/// regression-adjusted residuals, the stratified semivalue, Banzhaf MSR, stratified Shapley).
///
/// - **Moderated**: each player's variance moderated towards a prior variance s0²(i)
///   (empirical Bayes, as limma's moderated t): Ṽ_i = (d0 s0²(i) + d V_i)/(d0 + d), d0 =
///   [`POOLED_DEGREES_OF_FREEDOM`]; SE = sqrt(Ṽ_i). From a few units a player's own variance is
///   noisy, and on games with higher-order terms its units take few distinct values, often all
///   the same (permutation pairs of a third-order game; a class of sampled kernel pairs whose
///   projected scores agree): an SE of 0 about a wrong estimate (a mean (error/SE)² of
///   1e28–1e30 on the synthetic game at 2–11 permutation pairs). The other players' spread
///   bounds such an SE away from 0. With strata whose weights the players share, this is
///   moderating each stratum's spreads towards their players' prior.
/// - **Prior**: without `trend`, the players' mean V̄ for every player. With `trend`, a
///   covariate of each player's variance that the units' errors do not enter (the
///   regression-adjusted estimators' surrogate Shapley values, fitted on the other
///   cross-fitting half's masks): V̄ shaped by the variances' trend in it, limma-trend's prior
///   ([`trended_prior`]): the important blocks' units spread more than the others' (up to
///   12-fold within a game), and towards V̄ their variance was pulled down (the chains' worst
///   block missed 10–26 % at budget 128, docs/estimators.md "Intervals"). The estimate itself
///   as covariate was measured and loses where a player has few units (permutation sampling
///   at budget 64): an estimate that falls towards 0 by chance lowers its own prior, and the
///   interval that should have widened narrows (gemma3: 4.3 → 9.8 % pooled, worst block 11 →
///   18 %).
/// - **No SE** (`None`) where no unit spreads beyond `rounding` (the game's values',
///   [`rounding_of_units`]) in any group that enters with a weight: the sample then says
///   nothing of its error (e.g. two permutation pairs of a third-order game whose every triple
///   they order alike, a game with at most pairwise interactions, on which permutation sampling
///   is exact, or a surrogate that interpolates the held-out masks), or where `d` ≤ 0.
/// - **SE 0** where no group enters with a weight: every stratum drawn whole, the estimate
///   exact.
/// - **Degrees of freedom** of each moderated variance: d0 + d_i, so that its 95 % interval is
///   Student's t of d0 + d_i ([`interval_factor_95`]): under normal units a variance moderated
///   with d0 prior degrees of freedom gives a t of d + d0 (Smyth 2004, limma's moderated t).
///   d_i is the Welch–Satterthwaite count of the player's own variance, (Σ w s)² / Σ (w s)²/d_g
///   over the groups that enter (one group: its units less one), at most `d`; d where the
///   player's own spread is 0 (the pooled share alone).
pub(crate) fn guarded_se(
    groups: &[Spread],
    trend: Option<&[f64]>,
    degrees_of_freedom: f64,
    rounding: f64,
) -> Option<StandardErrors> {
    let width = groups.first()?.variances.len();
    let entering = || {
        groups.iter().flat_map(|group| {
            group
                .weights
                .iter()
                .zip(&group.variances)
                .filter(|(weight, _)| **weight > 0.0)
        })
    };
    if entering().next().is_none() {
        return Some(StandardErrors::normal(vec![0.0; width]));
    }
    if degrees_of_freedom <= 0.0 {
        return None;
    }
    let largest = entering().fold(0.0_f64, |m, (_, v)| m.max(*v));
    if largest.sqrt() <= rounding {
        return None;
    }
    let mut variances = vec![0.0; width];
    // Σ (w s)²/d_g, the denominator of the Welch–Satterthwaite count.
    let mut squares_over_df = vec![0.0; width];
    for group in groups {
        for (i, v) in variances.iter_mut().enumerate() {
            let term = group.weights[i] * group.variances[i];
            *v += term;
            if term > 0.0 {
                squares_over_df[i] += term * term / group.degrees_of_freedom[i].max(1.0);
            }
        }
    }
    let pooled = variances.iter().sum::<f64>() / width as f64;
    let (d0, d) = (POOLED_DEGREES_OF_FREEDOM, degrees_of_freedom);
    let own_degrees_of_freedom: Vec<f64> = (0..width)
        .map(|i| {
            if squares_over_df[i] > 0.0 {
                (variances[i] * variances[i] / squares_over_df[i]).min(d)
            } else {
                d
            }
        })
        .collect();
    let priors = trend
        .and_then(|covariate| trended_prior(&variances, pooled, &own_degrees_of_freedom, covariate))
        .unwrap_or_else(|| vec![pooled; width]);
    Some(StandardErrors {
        values: variances
            .iter()
            .zip(&priors)
            .map(|(v, prior)| ((d0 * prior + d * v) / (d0 + d)).sqrt())
            .collect(),
        degrees_of_freedom: Some(own_degrees_of_freedom.iter().map(|di| d0 + di).collect()),
    })
}

/// Offset of the trend's covariate, as a share of its players' mean |c|: ln(|c_i| + 0.1 ·
/// mean |c|), so that a player whose covariate is about 0 does not send the log towards −∞.
/// 0.01 and 0.5 were measured too (the chains, budgets 128–1,024, docs/estimators.md): the
/// same worst blocks within a point.
const TREND_OFFSET_SHARE: f64 = 0.1;

/// limma-trend's prior variance (Smyth 2004; Law et al. 2014) of each player: V̄ (`pooled`,
/// the players' mean variance) · g_i / ḡ,
/// g_i = exp(b · ln(|c_i| + ε)) = (|c_i| + ε)^b, where b is the least-squares slope of the
/// players' log variances on ln(|c_i| + ε) (ε: [`TREND_OFFSET_SHARE`]), each log variance
/// corrected for its bias, E ln V = ln σ² + ψ(d_i/2) − ln(d_i/2) (ψ the digamma function),
/// which differs between players of different degrees of freedom. The fit sets the shape
/// only: the prior's mean stays V̄, the players' mean variance (unbiased, where the log fit's
/// level is not for variances of a few degrees of freedom). b is clamped to [0, 2]: a
/// variance that grows with the covariate at most as its square (a scale), and none that
/// falls with it, which would be the noise of 12 log variances of 1–10 degrees of freedom.
/// Players whose variance is 0 (units all alike) have no logarithm and stay out of the fit.
/// `None` (the flat prior V̄) below three players with a variance, or where the covariate is
/// all 0 or not the players' length.
fn trended_prior(
    variances: &[f64],
    pooled: f64,
    degrees_of_freedom: &[f64],
    covariate: &[f64],
) -> Option<Vec<f64>> {
    let width = variances.len();
    let scale = covariate.iter().map(|c| c.abs()).sum::<f64>() / width as f64;
    if covariate.len() != width || !(scale > 0.0 && scale.is_finite()) {
        return None;
    }
    let offset = TREND_OFFSET_SHARE * scale;
    let log_covariate: Vec<f64> = covariate.iter().map(|c| (c.abs() + offset).ln()).collect();
    let fitted: Vec<usize> = (0..width).filter(|&i| variances[i] > 0.0).collect();
    if fitted.len() < 3 {
        return None;
    }
    let x: Vec<f64> = fitted.iter().map(|&i| log_covariate[i]).collect();
    let y: Vec<f64> = fitted
        .iter()
        .map(|&i| {
            let half = degrees_of_freedom[i] / 2.0;
            variances[i].ln() - digamma(half) + half.ln()
        })
        .collect();
    let slope = least_squares_slope(&x, &y).clamp(0.0, 2.0);
    let shape: Vec<f64> = log_covariate.iter().map(|l| (slope * l).exp()).collect();
    let mean_shape = shape.iter().sum::<f64>() / width as f64;
    Some(shape.iter().map(|g| pooled * g / mean_shape).collect())
}

/// The least-squares slope of `y` on `x` (0 where `x` does not vary).
fn least_squares_slope(x: &[f64], y: &[f64]) -> f64 {
    let count = x.len() as f64;
    let (mean_x, mean_y) = (x.iter().sum::<f64>() / count, y.iter().sum::<f64>() / count);
    let sxx: f64 = x.iter().map(|a| (a - mean_x).powi(2)).sum();
    let sxy: f64 = x
        .iter()
        .zip(y)
        .map(|(a, b)| (a - mean_x) * (b - mean_y))
        .sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

/// The digamma function ψ(x) = d ln Γ(x)/dx for x > 0: the recurrence ψ(x) = ψ(x + 1) − 1/x
/// up to x ≥ 10, then the asymptotic series to its x⁻¹⁰ term (about 1e-14 there).
fn digamma(x: f64) -> f64 {
    let (mut x, mut shift) = (x, 0.0);
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let inverse_square = 1.0 / (x * x);
    shift + x.ln()
        - 0.5 / x
        - inverse_square
            * (1.0 / 12.0
                - inverse_square
                    * (1.0 / 120.0
                        - inverse_square
                            * (1.0 / 252.0
                                - inverse_square * (1.0 / 240.0 - inverse_square / 132.0))))
}

/// The 97.5 % quantile of the standard normal distribution as the score tables' intervals take
/// it where a standard error has no degrees of freedom ([`interval_factor_95`]).
pub(crate) const NORMAL_975: f64 = 1.96;

/// The half-width, in standard errors, of the 95 % interval of an estimate whose variance was
/// estimated with `degrees_of_freedom`: Student's t 97.5 % quantile (`student_t_975`; 2.571
/// for 5, 2.306 for 8, 2.145 for 14), and 1.96 for infinite degrees of freedom or where t is
/// below it (from about 66,000 degrees of freedom: 1.96 is the normal quantile, 1.959964,
/// rounded up), so that large samples keep the normal interval and the factor never steps.
pub fn interval_factor_95(degrees_of_freedom: f64) -> f64 {
    if degrees_of_freedom.is_finite() {
        student_t_975(degrees_of_freedom).max(NORMAL_975)
    } else {
        NORMAL_975
    }
}

/// The 97.5 % quantile of Student's t distribution with `degrees_of_freedom` (any real number,
/// at least 1): 12.71 for 1, 2.23 for 10, 2.04 for 30, towards 1.96. Bisection on
/// P(|T| ≤ t) = 1 − I_{ν/(ν+t²)}(ν/2, ½), the regularized incomplete beta function
/// ([`regularized_incomplete_beta`]); a real count, as Welch–Satterthwaite gives.
pub(crate) fn student_t_975(degrees_of_freedom: f64) -> f64 {
    let df = degrees_of_freedom.max(1.0);
    let central = |t: f64| 1.0 - regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t));
    let (mut low, mut high) = (0.0, NORMAL_975);
    while central(high) < 0.95 {
        (low, high) = (high, 2.0 * high);
    }
    for _ in 0..100 {
        let middle = 0.5 * (low + high);
        if central(middle) < 0.95 {
            low = middle;
        } else {
            high = middle;
        }
    }
    high
}

/// I_x(a, b), the regularized incomplete beta function, for a, b ≥ ½: its continued fraction
/// (modified Lentz; Numerical Recipes 6.4), taken on the side of x where it converges fast.
fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - front * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

/// The continued fraction of I_x(a, b) (Numerical Recipes' betacf), to f64 precision.
fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (sum, plus, minus) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - sum * x / plus);
    let mut fraction = d;
    for m in 1..=1000 {
        let m = f64::from(m);
        let even = m * (b - m) * x / ((minus + 2.0 * m) * (a + 2.0 * m));
        d = 1.0 / guard(1.0 + even * d);
        c = guard(1.0 + even / c);
        fraction *= d * c;
        let odd = -(a + m) * (sum + m) * x / ((a + 2.0 * m) * (plus + 2.0 * m));
        d = 1.0 / guard(1.0 + odd * d);
        c = guard(1.0 + odd / c);
        let step = d * c;
        fraction *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    fraction
}

/// ln Γ(x) for x ≥ ½ (Lanczos, g = 7, nine terms: about 1e-15 relative).
fn ln_gamma(x: f64) -> f64 {
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let series = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |sum, (k, c)| {
            sum + c / (x + k as f64 + 1.0)
        });
    let t = x + 7.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The finite-population factor 1 − drawn/population of a mean over `drawn` distinct members of
/// a population of `population`, drawn uniformly without replacement: the share of the
/// population its sample variance still stands for (0 where every member is drawn, the mean
/// exact). The one factor of every estimate read from distinct masks (stratified sizes, classes
/// of complement pairs, Banzhaf's kept and removed halves).
pub(crate) fn finite_population_factor(drawn: f64, population: f64) -> f64 {
    (1.0 - drawn / population).max(0.0)
}

/// The mean of a quantity over a finite population of `population` members, `known` of which
/// enter exactly while the other `population − known` are represented by `held`, a uniform
/// sample of them drawn without replacement: (`exact_sum` + (population − known) · mean(held))
/// / population, `exact_sum` holding the known members' sum (and any baseline for the others
/// that `held` is a residual about). Unbiased given which members are known. `held` must not
/// be empty.
pub(crate) fn partly_known_mean(population: f64, known: f64, exact_sum: f64, held: &[f64]) -> f64 {
    let held_mean = held.iter().sum::<f64>() / held.len() as f64;
    (exact_sum + (population - known) * held_mean) / population
}

/// Variance of the mean of a sample (0 below two values).
pub(crate) fn variance_of_mean(values: &[f64]) -> f64 {
    sample_variance(values) / values.len().max(1) as f64
}

/// The sample variance of `values` (divisor count − 1); 0 below two values. Taken about the
/// first value, so that values all alike have variance exactly 0 (not the rounding of their
/// mean).
pub(crate) fn sample_variance(values: &[f64]) -> f64 {
    let (Some(&first), true) = (values.first(), values.len() >= 2) else {
        return 0.0;
    };
    let count = values.len() as f64;
    let offset = values.iter().map(|v| v - first).sum::<f64>() / count;
    values
        .iter()
        .map(|v| (v - first - offset).powi(2))
        .sum::<f64>()
        / (count - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values all alike have a variance of exactly 0, not the rounding of their mean (0.1 three
    /// times has a mean that is not 0.1 in binary, and (x − mean)² summed to 1e-34).
    #[test]
    fn spreads_of_values_all_alike_are_exactly_0() {
        assert_eq!(sample_variance(&[0.1, 0.1, 0.1]), 0.0);
        assert_eq!(variance_of_mean(&[0.7; 5]), 0.0);
        let (mean, variances) = mean_and_variance(&vec![vec![0.1, 0.3]; 3], 2);
        assert_eq!(mean, vec![0.1, 0.3]);
        assert_eq!(variances, Some(vec![0.0, 0.0]));
        assert!((sample_variance(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-15);
    }

    /// Student's t quantile against the tables' values (to 1e-6, as statistics libraries
    /// print them) and the normal one for many degrees of freedom.
    #[test]
    fn student_t_quantiles_match_the_tables() {
        for (df, quantile) in [
            (1.0, 12.706_205),
            (2.0, 4.302_653),
            (3.0, 3.182_446),
            (4.0, 2.776_445),
            (5.0, 2.570_582),
            (8.0, 2.306_004),
            (10.0, 2.228_139),
            (13.0, 2.160_369),
            (30.0, 2.042_272),
            (120.0, 1.979_930),
        ] {
            let t = student_t_975(df);
            assert!((t - quantile).abs() < 1e-6, "{df}: {t} against {quantile}");
        }
        assert!((student_t_975(1e7) - 1.959_964).abs() < 1e-6);
    }

    /// Between whole degrees of freedom (Welch–Satterthwaite counts), P(|T| ≤ t) at the
    /// quantile is 0.95 by an independent reckoning: Simpson's rule over the t density.
    #[test]
    fn student_t_quantiles_of_fractional_degrees_of_freedom_hold_95_percent() {
        for df in [1.5, 5.5, 7.25, 13.7, 41.3] {
            let t = student_t_975(df);
            let density = |x: f64| {
                (ln_gamma((df + 1.0) / 2.0) - ln_gamma(df / 2.0)).exp()
                    / (df * std::f64::consts::PI).sqrt()
                    * (1.0 + x * x / df).powf(-(df + 1.0) / 2.0)
            };
            let steps = 20_000;
            let h = t / steps as f64;
            let simpson = (0..=steps)
                .map(|k| {
                    let weight = match k {
                        0 => 1.0,
                        k if k == steps => 1.0,
                        k if k % 2 == 1 => 4.0,
                        _ => 2.0,
                    };
                    weight * density(k as f64 * h)
                })
                .sum::<f64>()
                * h
                / 3.0;
            assert!(
                (2.0 * simpson - 0.95).abs() < 1e-9,
                "{df}: {}",
                2.0 * simpson
            );
        }
        // Monotone between the whole numbers around them.
        assert!(student_t_975(5.0) > student_t_975(5.5) && student_t_975(5.5) > student_t_975(6.0));
    }

    /// The interval factor is t of the degrees of freedom, falls towards 1.96 as they grow
    /// and is 1.96 from there on (large samples keep the normal interval), never below it.
    #[test]
    fn the_interval_factor_falls_to_the_normal_one() {
        assert!((interval_factor_95(8.0) - 2.306_004).abs() < 1e-6);
        let mut last = f64::INFINITY;
        for df in [1.0, 2.0, 5.0, 8.0, 20.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e9] {
            let factor = interval_factor_95(df);
            assert!(factor <= last && factor >= NORMAL_975, "{df}: {factor}");
            last = factor;
        }
        assert!((interval_factor_95(1e4) - 1.96).abs() < 3e-4);
        assert_eq!(interval_factor_95(1e6), NORMAL_975);
        assert_eq!(interval_factor_95(f64::INFINITY), NORMAL_975);
    }

    /// The score tables' interval is estimate ± t(df) SE, player by player, and ± 1.96 SE
    /// without degrees of freedom.
    #[test]
    fn intervals_are_student_t_of_the_standard_errors_degrees_of_freedom() {
        let mut estimates = Estimates::new(
            "test",
            vec![1.0, 2.0],
            Some(StandardErrors {
                values: vec![0.1, 0.2],
                degrees_of_freedom: Some(vec![8.0, 1e9]),
            }),
        );
        let (low, high) = estimates.ci95(0).unwrap();
        assert!((low - (1.0 - 0.230_600_4)).abs() < 1e-6, "{low}");
        assert!((high - (1.0 + 0.230_600_4)).abs() < 1e-6, "{high}");
        assert_eq!(estimates.ci95(1), Some((2.0 - 0.392, 2.0 + 0.392)));
        // An error of 2.1 SE: outside the normal interval, inside t(8)'s.
        let truth = [1.21, 2.0];
        assert_eq!(estimates.misses95(&truth), Some(vec![false, false]));
        assert_eq!(
            estimates.misses95_with(&truth, |_| NORMAL_975),
            Some(vec![true, false])
        );
        estimates.degrees_of_freedom = None;
        assert_eq!(estimates.ci95(0), Some((1.0 - 0.196, 1.0 + 0.196)));
        assert_eq!(estimates.misses95(&truth), Some(vec![true, false]));
    }

    /// An estimate or an SE that is not a number fails the checks (infinite z) rather than
    /// dropping out of their comparisons: it passed as exact to rounding, or its ratio was
    /// dropped by the maximum, until 2026-12-07.
    #[test]
    fn estimates_and_standard_errors_of_nan_fail_the_z_checks() {
        let truth = [0.5, 0.25];
        let with = |values: Vec<f64>, std_errors: Vec<f64>| Estimates {
            estimator: "test".into(),
            blocks: vec![0, 1],
            values,
            std_errors: Some(std_errors),
            degrees_of_freedom: None,
            llm_evaluations: 0,
        };
        let fine = with(vec![0.5, 0.35], vec![0.1, 0.1]);
        assert!((fine.largest_z(&truth).unwrap() - 1.0).abs() < 1e-9);
        assert!((fine.mean_z2(&truth).unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(fine.miss95(&truth), Some(0.0));
        for nan in [
            with(vec![f64::NAN, 0.35], vec![0.1, 0.1]),
            with(vec![0.5, 0.35], vec![0.1, f64::NAN]),
            with(vec![f64::NAN, 0.25], vec![f64::NAN, 0.1]),
        ] {
            assert_eq!(nan.largest_z(&truth), Some(f64::INFINITY), "{nan:?}");
            assert_eq!(nan.mean_z2(&truth), Some(f64::INFINITY), "{nan:?}");
            assert_eq!(nan.miss95(&truth), Some(0.5), "{nan:?}");
        }
    }

    /// The one guard: SE 0 where every group is drawn whole (weight 0), none where nothing
    /// that enters spreads beyond `rounding`, and a player whose own units agree moderated
    /// towards the others' variance rather than 0.
    #[test]
    fn the_guard_reads_exact_silent_and_single_agreeing_players() {
        let whole = Spread::uniform(0.0, vec![0.5, 0.5], 3.0);
        assert_eq!(
            guarded_se(&[whole], None, 3.0, 1e-9),
            Some(StandardErrors::normal(vec![0.0, 0.0]))
        );
        let silent = Spread::uniform(0.25, vec![1e-20, 0.0], 3.0);
        assert_eq!(
            guarded_se(std::slice::from_ref(&silent), None, 3.0, 1e-9),
            None
        );
        assert_eq!(guarded_se(&[silent], None, 0.0, 0.0), None);
        let agreeing = Spread::uniform(0.25, vec![0.0, 4.0], 4.0);
        let se = guarded_se(&[agreeing], None, 4.0, 1e-9).unwrap();
        // V = (0, 1), pooled 0.5, d0 = d = 4: Ṽ = (0.25, 0.75), each a t of d + d0 = 8.
        let values = &se.values;
        assert!((values[0] - 0.5).abs() < 1e-12 && (values[1] - 0.75f64.sqrt()).abs() < 1e-12);
        assert_eq!(se.degrees_of_freedom, Some(vec![8.0, 8.0]));
    }

    /// limma-trend's prior: where the variances grow with the covariate, each player's
    /// variance is moderated towards its trend, not the players' mean: the player of the
    /// largest covariate and variance keeps more of it (a larger SE than towards V̄), the
    /// others less, the prior's mean stays V̄ and the degrees of freedom are those of the flat
    /// prior. A covariate the variances fall with (a negative slope, clamped to 0), one of 0
    /// everywhere, or one of another length leave the flat prior.
    #[test]
    fn a_trend_moderates_each_variance_towards_its_fitted_prior() {
        let variances = vec![0.5, 1.0, 2.0, 16.0];
        let covariate = [0.05, 0.1, 0.2, 0.8];
        let spread = Spread::uniform(1.0, variances.clone(), 1.0);
        let flat = guarded_se(std::slice::from_ref(&spread), None, 1.0, 1e-9).unwrap();
        let trended =
            guarded_se(std::slice::from_ref(&spread), Some(&covariate), 1.0, 1e-9).unwrap();
        assert!(
            trended.values[3] > flat.values[3] * 1.4,
            "{trended:?} {flat:?}"
        );
        for i in 0..3 {
            assert!(
                trended.values[i] < flat.values[i],
                "{i}: {trended:?} {flat:?}"
            );
        }
        assert_eq!(trended.degrees_of_freedom, flat.degrees_of_freedom);
        let pooled = variances.iter().sum::<f64>() / 4.0;
        let prior = trended_prior(&variances, pooled, &[1.0; 4], &covariate).unwrap();
        assert!(
            (prior.iter().sum::<f64>() / 4.0 - pooled).abs() < 1e-12,
            "{prior:?}"
        );
        assert!(prior.windows(2).all(|p| p[0] < p[1]), "{prior:?}");
        // Ṽ = (d0 s0² + d V)/(d0 + d) with the fitted prior.
        let expected = ((4.0 * prior[3] + 16.0) / 5.0f64).sqrt();
        assert!((trended.values[3] - expected).abs() < 1e-12);
        let falling = [0.8, 0.2, 0.1, 0.05];
        let zero = [0.0; 4];
        for covariate in [&falling[..], &zero[..], &[1.0, 2.0][..]] {
            let se = guarded_se(std::slice::from_ref(&spread), Some(covariate), 1.0, 1e-9);
            assert_eq!(se.as_ref(), Some(&flat), "{covariate:?}");
        }
    }

    /// The log variances' bias correction: ψ against its known values (ψ(1) = −γ, ψ(½) = −γ −
    /// 2 ln 2, ψ(n + 1) = ψ(n) + 1/n).
    #[test]
    fn digamma_has_its_known_values() {
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-12, "{}", digamma(1.0));
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-12);
        assert!((digamma(12.0) - digamma(11.0) - 1.0 / 11.0).abs() < 1e-13);
        assert!((digamma(2.5) - (2.0 - euler - 2.0 * 2f64.ln() + 2.0 / 3.0)).abs() < 1e-12);
    }

    /// Degrees of freedom from several groups: Welch–Satterthwaite of each player's own
    /// variance (the pooled count where one group dominates it: fewer), at most the total d,
    /// plus d0.
    #[test]
    fn the_guard_counts_welch_satterthwaite_degrees_of_freedom() {
        // Player 0: two strata alike (2 + 2 = 4 degrees of freedom); player 1: all its
        // variance from the stratum of 2, so 2.
        let groups = [
            Spread::uniform(0.5, vec![1.0, 1.0], 2.0),
            Spread {
                weights: vec![0.5, 0.5],
                variances: vec![1.0, 0.0],
                degrees_of_freedom: vec![2.0, 2.0],
            },
        ];
        let se = guarded_se(&groups, None, 4.0, 1e-9).unwrap();
        let df = se.degrees_of_freedom.unwrap();
        assert!(
            (df[0] - 8.0).abs() < 1e-12 && (df[1] - 6.0).abs() < 1e-12,
            "{df:?}"
        );
    }
}
