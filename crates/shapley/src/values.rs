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
    /// Distinct masks valued by the game the estimate came from.
    pub llm_evaluations: usize,
}

impl Estimates {
    pub(crate) fn new(estimator: &str, values: Vec<f64>, std_errors: Option<Vec<f64>>) -> Self {
        Estimates {
            estimator: estimator.to_string(),
            blocks: (0..values.len()).collect(),
            values,
            std_errors,
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

    /// The normal-approximation 95 % interval of entry `index`, where a standard error exists.
    pub fn ci95(&self, index: usize) -> Option<(f64, f64)> {
        let se = self.std_errors.as_ref()?.get(index)?;
        let value = self.values[index];
        Some((value - 1.96 * se, value + 1.96 * se))
    }

    pub fn sum(&self) -> f64 {
        self.values.iter().sum()
    }

    /// How well the standard errors tell the error against known values `truth` (e.g. the
    /// exact Shapley values): the mean over the players of ((estimate − truth)/SE)², 1 where
    /// they are right (`estimator_accuracy`, `tests/standard_errors.rs`). A player whose
    /// estimate is exact to rounding (within 1e-9 of the largest |truth|) counts 0: its error
    /// says nothing of the SE's calibration (its SE may be of rounding size too, and the ratio
    /// of two rounding errors reached 1e29 on the synthetic game). `None` without standard
    /// errors, or where one is 0 about an error.
    pub fn mean_z2(&self, truth: &[f64]) -> Option<f64> {
        let mut sum = 0.0;
        for (error, se) in self.errors_beyond_rounding(truth)? {
            if se <= 0.0 {
                return None;
            }
            sum += (error / se).powi(2);
        }
        Some(sum / self.values.len() as f64)
    }

    /// The share of the players whose 95 % interval ([`Self::ci95`]) misses `truth`, 0.05
    /// where the standard errors are right; a player exact to rounding is covered (as in
    /// [`Self::mean_z2`]), an SE of 0 about an error misses. `None` without standard errors.
    pub fn miss95(&self, truth: &[f64]) -> Option<f64> {
        let misses = self
            .errors_beyond_rounding(truth)?
            .filter(|(error, se)| error.abs() > 1.96 * se)
            .count();
        Some(misses as f64 / self.values.len() as f64)
    }

    /// (error, SE) of each player whose estimate is not `truth` to rounding; `None` without
    /// standard errors.
    fn errors_beyond_rounding<'a>(
        &'a self,
        truth: &'a [f64],
    ) -> Option<impl Iterator<Item = (f64, f64)> + 'a> {
        let rounding = rounding_of(truth);
        let std_errors = self.std_errors.as_ref()?;
        Some(
            self.values
                .iter()
                .zip(truth)
                .map(|(v, t)| v - t)
                .zip(std_errors.iter().copied())
                .filter(move |(error, _)| error.abs() > rounding),
        )
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

/// Mean and standard error of the mean of each column (a player) of per-unit rows: the
/// variance of each player's units moderated towards the players' pooled variance
/// ([`moderated_se`]). `None` below two rows, or where no unit differs from another.
pub(crate) fn mean_and_se(rows: &[Vec<f64>], width: usize) -> (Vec<f64>, Option<Vec<f64>>) {
    let (mean, variances) = mean_and_variance(rows, width);
    let rounding = rounding_of(rows.iter().flatten());
    let std_errors = variances.and_then(|variances| {
        moderated_se(&variances, rows.len(), (rows.len() - 1) as f64, rounding)
    });
    (mean, std_errors)
}

/// Mean and sample variance (divisor rows − 1) of each column of per-unit rows (no variance
/// below two rows).
pub(crate) fn mean_and_variance(rows: &[Vec<f64>], width: usize) -> (Vec<f64>, Option<Vec<f64>>) {
    let count = rows.len() as f64;
    let mut mean = vec![0.0; width];
    for row in rows {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / count;
        }
    }
    if rows.len() < 2 {
        return (mean, None);
    }
    let mut var = vec![0.0; width];
    for row in rows {
        for ((v, x), m) in var.iter_mut().zip(row).zip(&mean) {
            *v += (x - m).powi(2) / (count - 1.0);
        }
    }
    (mean, Some(var))
}

/// What a difference among `values` below counts as rounding: 1e-9 of the largest magnitude
/// (an estimate exact to rounding, units that do not spread).
pub(crate) fn rounding_of<'a>(values: impl IntoIterator<Item = &'a f64>) -> f64 {
    1e-9 * values.into_iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

/// Weight, in units' degrees of freedom, of the players' pooled variance in each player's
/// moderated variance ([`moderated_se`]). 4: with the player's own d = 1 (two units) the
/// moderated t has 5 degrees of freedom and E t² = 5/3 (with d0 = 2: 3 and E t² = 3); and from
/// about 40 units (permutation sampling at budget 1,024 over 12 players) the player's own spread
/// carries 90 % of the weight, so large samples keep their standard errors. The players'
/// variances differ up to 12-fold within a game (0.2–3.6 times their mean on the recorded and
/// synthetic games of docs/estimators.md), which argues against more: the pooled variance would
/// stand for players it does not fit.
const POOLED_DEGREES_OF_FREEDOM: f64 = 4.0;

/// Standard errors of the means of `units` units from each player's unit variance with
/// `degrees_of_freedom` d, moderated towards the players' pooled variance (empirical Bayes,
/// as limma's moderated t): s̃² = (d0 s0² + d s²)/(d0 + d), s0² the mean of the players'
/// variances, d0 = [`POOLED_DEGREES_OF_FREEDOM`]; SE = sqrt(s̃²/units).
///
/// Why: from a few units a player's own variance is noisy, and on games with higher-order
/// terms its units take few distinct values, often all the same (permutation pairs of a
/// third-order game): an SE of 0 about a wrong estimate, a mean (error/SE)² of 1e28–1e30 on
/// the synthetic game at 2–11 permutation pairs. The other players' spread bounds such an
/// SE away from 0. `None` where no player's units spread beyond `rounding` (that of the
/// quantities averaged, [`rounding_of`]): the sample then says nothing of its error
/// (e.g. two permutation pairs of a third-order game whose every triple they order alike, or
/// a game with at most pairwise interactions, on which permutation sampling is exact).
pub(crate) fn moderated_se(
    variances: &[f64],
    units: usize,
    degrees_of_freedom: f64,
    rounding: f64,
) -> Option<Vec<f64>> {
    if variances.is_empty() || degrees_of_freedom <= 0.0 {
        return None;
    }
    let largest = variances.iter().fold(0.0_f64, |m, v| m.max(*v));
    if largest.sqrt() <= rounding {
        return None;
    }
    let pooled = variances.iter().sum::<f64>() / variances.len() as f64;
    let (d0, d) = (POOLED_DEGREES_OF_FREEDOM, degrees_of_freedom);
    Some(
        variances
            .iter()
            .map(|v| ((d0 * pooled + d * v) / (d0 + d) / units as f64).sqrt())
            .collect(),
    )
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

/// The sample variance of `values` (divisor count − 1); 0 below two values.
pub(crate) fn sample_variance(values: &[f64]) -> f64 {
    let count = values.len() as f64;
    if values.len() < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / count;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0)
}
