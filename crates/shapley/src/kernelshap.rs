//! Paired KernelSHAP: coalitions S drawn from the Shapley kernel distribution over sizes
//! 1..n−1 (size s with probability ∝ 1/(s(n−s)), then S uniform of that size), each with
//! its complement, and the Shapley values found as the least-squares linear fit
//! v(S) − v(∅) ≈ Σ_{i∈S} φ_i under the exact efficiency constraint Σ φ_i = v(N) − v(∅).
//! Because the coalitions are drawn from the kernel, the regression weights are uniform.
//! A design read back from a mask table may draw its sizes otherwise (the sampler's
//! stratified complement pairs); each coalition T is then weighted by kernel(|T|) / p̄(|T|),
//! p̄ being the design's size distribution, which restores the kernel weighting for every
//! size the design covers. The standard error is the sandwich (Huber–White) formula over
//! pairs: over all pairs as iid draws for the kernel draws here; per class of sizes {s, n − s}
//! with finite-population factors for a table drawn without replacement (the sampler's: a
//! fixed number of pairs per class, small classes whole), where the iid formula overstated the
//! error up to 5 times (mean z² 0.04–0.8 on the recorded games; per class about 1.0–1.15 from
//! 100 pairs up, 1.4 at 50 pairs). Both count the n − 1 coefficients fitted (HC1: 1.44 → 1.15
//! at 50 pairs), and both pass the one guard of every sampled SE (`values::guarded_se`:
//! moderated across the players, none where no pair's score spreads beyond the rounding of the
//! game's values), which the per-class reading lacked until 2026-12-07. With few pairs the
//! sandwich understates the error whatever the reading: below 2n pairs there is no SE, from 2n
//! to 4n it is widened to Student's t interval ([`kernelshap_standard_errors`], since
//! 2026-12-07; the stage warns of both).
//!
//! The same paired kernel design feeds the regression-adjusted estimator.

use layerprune_core::{Game, Mask};
use rand::Rng;

use crate::values::{
    distinct_sorted, finite_population_factor, guarded_se, mean_and_variance, rounding_of_units,
    sample_variance, student_t_975, Spread, StandardErrors, NORMAL_975,
};
use crate::{evaluate_masks_for, rng_from_seed, Estimates, Players, ShapleyError, ValueTable};
use layerprune_core::linalg::Cholesky;

pub const KERNELSHAP: &str = "kernelshap-paired";

/// Coalitions drawn from the Shapley kernel; each is evaluated with its complement, and
/// the empty and full masks are always evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct PairedDesign {
    pub num_players: usize,
    /// One coalition of each pair (the other is its complement).
    pub coalitions: Vec<Mask>,
    /// p̄_s, s = 0..=n: the probability that a coalition of the design (either member of a
    /// pair) has s players; symmetric (p̄_s = p̄_{n−s}). The Shapley kernel for designs drawn
    /// here; the empirical frequencies for designs read from a table.
    pub size_probabilities: Vec<f64>,
    /// How the pairs were drawn. `false`: independently, with replacement (the kernel draws
    /// here). `true`: as `sample-masks --complement-pairs` draws them, without replacement, a
    /// fixed number in each class of sizes {s, n − s}, no mask twice (small classes then are
    /// often drawn whole). [`PairedDesign::from_pairs`] sets it when no mask repeats. It
    /// chooses the standard errors (per class, with finite-population factors) and, for the
    /// regression-adjusted estimators, the residual means (see [`crate::regression`]).
    pub without_replacement: bool,
}

/// P(|S| = s) for s = 0..=n under the Shapley kernel restricted to 1..n−1 (zero at 0 and n).
pub fn kernel_size_probabilities(num_players: usize) -> Vec<f64> {
    let n = num_players;
    let mut p: Vec<f64> = (0..=n)
        .map(|s| {
            if s == 0 || s == n {
                0.0
            } else {
                1.0 / (s * (n - s)) as f64
            }
        })
        .collect();
    let total: f64 = p.iter().sum();
    if total > 0.0 {
        p.iter_mut().for_each(|x| *x /= total);
    }
    p
}

/// Number of complementary pairs that fit in `budget` distinct evaluations (two go to the
/// empty and full masks).
pub fn pairs_for_budget(budget: usize) -> usize {
    budget.saturating_sub(2) / 2
}

/// Draws `pairs` coalitions from the kernel distribution.
pub fn paired_kernel_design_pairs(
    num_players: usize,
    pairs: usize,
    rng: &mut impl Rng,
) -> PairedDesign {
    let probabilities = kernel_size_probabilities(num_players);
    let mut players: Vec<usize> = (0..num_players).collect();
    let mut coalitions = Vec::with_capacity(pairs);
    if num_players >= 2 {
        for _ in 0..pairs {
            let mut u: f64 = rng.random();
            let mut size = num_players - 1;
            for (s, &p) in probabilities.iter().enumerate() {
                if u < p {
                    size = s;
                    break;
                }
                u -= p;
            }
            for a in 0..size {
                let b = rng.random_range(a..num_players);
                players.swap(a, b);
            }
            let mut mask = Mask::empty(num_players);
            players[..size].iter().for_each(|&i| mask.set(i, true));
            coalitions.push(mask);
        }
    }
    PairedDesign {
        num_players,
        coalitions,
        size_probabilities: probabilities,
        without_replacement: false,
    }
}

/// Draws as many pairs as fit in `budget` distinct evaluations.
pub fn paired_kernel_design(
    num_players: usize,
    budget: usize,
    minimum_pairs: usize,
    estimator: &'static str,
    rng: &mut impl Rng,
) -> Result<PairedDesign, ShapleyError> {
    let pairs = pairs_for_budget(budget);
    if pairs < minimum_pairs {
        return Err(ShapleyError::BudgetTooSmall {
            estimator,
            players: num_players,
            budget,
            needed: 2 + 2 * minimum_pairs,
        });
    }
    Ok(paired_kernel_design_pairs(num_players, pairs, rng))
}

/// The `sample-masks` command that draws `pairs` complement pairs over `num_players` players
/// for the paired estimators: every size 1..n−1 a stratum (the default strata leave sizes out,
/// the middle one among them for even n, and a regression-adjusted estimate then leaves those
/// sizes out of the Shapley weighting), equal allocation, each mask with its complement. What
/// [`PairedDesign::sampled_complement_pairs`] draws; the refusals name it.
pub fn complement_pairs_command(num_players: usize, pairs: usize) -> String {
    let strata: Vec<String> = (1..num_players).map(|size| size.to_string()).collect();
    format!(
        "sample-masks --strata {} --complement-pairs --stratified-masks {pairs}",
        strata.join(",")
    )
}

impl PairedDesign {
    /// The pairs [`complement_pairs_command`] (with `--seed SEED`) draws over `num_players`
    /// players (equal allocation; without replacement, a fixed number per class of sizes
    /// {s, n − s}, small classes whole), read back as from a mask table: the designs the
    /// paired estimators meet in the pipeline, to calibrate them on.
    pub fn sampled_complement_pairs(
        num_players: usize,
        pairs: usize,
        seed: u64,
    ) -> Result<Self, ShapleyError> {
        use layerprune_sampling::{
            sample, Allocation, Existing, SamplingPlan, StrataSpec, StratifiedDesign,
        };
        let plan = SamplingPlan {
            stratified: Some(StratifiedDesign {
                strata: StrataSpec::Removed((1..num_players as i64).collect()),
                total_masks: pairs,
                allocation: Allocation::Equal,
            }),
            complement_pairs: true,
            ..SamplingPlan::default()
        };
        let players = layerprune_core::Players::all(num_players);
        let rows = sample(&players, &plan, Existing::default(), seed)
            .map_err(|e| ShapleyError::Design(e.to_string()))?
            .rows;
        let pairs: Vec<(Mask, Mask)> = rows
            .chunks(2)
            .filter(|two| two.len() == 2 && two[0].group_id.is_some())
            .map(|two| (two[0].mask.clone(), two[1].mask.clone()))
            .collect();
        Self::from_pairs(num_players, &pairs)
    }

    /// Rebuilds a design from pairs read back from a mask table; each pair must be a mask
    /// and its complement. A table in which no mask repeats is taken as drawn without
    /// replacement, class by class (what `sample-masks --complement-pairs` writes).
    pub fn from_pairs(num_players: usize, pairs: &[(Mask, Mask)]) -> Result<Self, ShapleyError> {
        let mut coalitions = Vec::with_capacity(pairs.len());
        for (p, (first, second)) in pairs.iter().enumerate() {
            if first.check_len(num_players).is_err() || *second != first.complement() {
                return Err(ShapleyError::Design(format!(
                    "pair {p}: {first} and {second} are not complements over {num_players} players"
                )));
            }
            coalitions.push(first.clone());
        }
        let mut size_probabilities = vec![0.0; num_players + 1];
        for coalition in &coalitions {
            let size = coalition.num_kept();
            size_probabilities[size] += 0.5 / coalitions.len() as f64;
            size_probabilities[num_players - size] += 0.5 / coalitions.len() as f64;
        }
        let mut distinct = std::collections::HashSet::with_capacity(2 * coalitions.len());
        let without_replacement = coalitions
            .iter()
            .all(|s| distinct.insert(s.clone()) && distinct.insert(s.complement()));
        Ok(PairedDesign {
            num_players,
            coalitions,
            size_probabilities,
            without_replacement,
        })
    }

    /// The pairs that inform the fit: those of class 1 and above (the pair (∅, N), class 0, has
    /// kernel weight 0 and adds no equation). What the rules of [`MINIMUM_PAIRS_PER_PLAYER`]
    /// and [`WELL_MEASURED_PAIRS_PER_PLAYER`] and the fit's residual degrees of freedom count.
    /// A pair drawn again counts again, as the fit and the spread of its scores take every
    /// draw, and as the coverage behind those rules was measured on kernel draws (with
    /// replacement; a table drawn without replacement has no repeats): over a few players a
    /// rule of distinct pairs could never be met (5 players have 15 pairs, fewer than 4n).
    pub fn informative_pairs(&self) -> usize {
        self.coalitions
            .iter()
            .filter(|s| self.class_of(s.num_kept()) >= 1)
            .count()
    }

    /// The class {s, n − s} of a coalition of `size` players, by its smaller size (0 for the
    /// pair (∅, N)).
    pub(crate) fn class_of(&self, size: usize) -> usize {
        size.min(self.num_players - size)
    }

    /// Number of complement pairs in class `class`: C(n, class), half that for the middle
    /// class (n = 2·class), whose pairs lie inside one size.
    pub(crate) fn pairs_in_class(&self, class: usize) -> f64 {
        let n = self.num_players;
        let masks = layerprune_core::binomial(n, class) as f64;
        if 2 * class == n {
            masks / 2.0
        } else {
            masks
        }
    }

    /// Sizes in 1..n−1 that no coalition of the design has: estimates of the Shapley value
    /// leave out those sizes (biased) unless the list is empty.
    pub fn missing_sizes(&self) -> Vec<usize> {
        (1..self.num_players)
            .filter(|&s| self.size_probabilities[s] <= 0.0)
            .collect()
    }

    /// Regression weight of a coalition of `size` players: kernel(size) / p̄(size).
    pub(crate) fn kernel_weight(&self, kernel: &[f64], size: usize) -> f64 {
        if self.size_probabilities[size] > 0.0 {
            kernel[size] / self.size_probabilities[size]
        } else {
            0.0
        }
    }

    /// Every mask the estimate needs (empty, full, each coalition and its complement), each
    /// once, sorted.
    pub fn queries(&self) -> Vec<Mask> {
        let n = self.num_players;
        distinct_sorted(
            [Mask::empty(n), Mask::full(n)].into_iter().chain(
                self.coalitions
                    .iter()
                    .flat_map(|s| [s.clone(), s.complement()]),
            ),
        )
    }
}

/// The constrained least-squares fit and its sandwich standard errors.
pub fn kernelshap_estimate(
    design: &PairedDesign,
    rows: &[(Mask, f64)],
) -> Result<Estimates, ShapleyError> {
    let n = design.num_players;
    let table = ValueTable::from_rows(rows);
    let v_empty = table.get(&Mask::empty(n))?;
    let total = table.get(&Mask::full(n))? - v_empty;
    if n <= 1 {
        return Ok(Estimates::new(
            KERNELSHAP,
            vec![total; n],
            Some(StandardErrors::normal(vec![0.0; n])),
        ));
    }
    let kernel = kernel_size_probabilities(n);
    // Each pair is one sampling unit: its two coalitions with targets y = v(S) − v(∅).
    let units: Vec<[(Mask, f64); 2]> = design
        .coalitions
        .iter()
        .map(|s| {
            let complement = s.complement();
            Ok([
                (s.clone(), table.get(s)? - v_empty),
                (complement.clone(), table.get(&complement)? - v_empty),
            ])
        })
        .collect::<Result<_, ShapleyError>>()?;
    let count = (2 * units.len()) as f64;
    // A = mean w z zᵀ, b = mean w z y.
    let mut a = vec![0.0; n * n];
    let mut b = vec![0.0; n];
    for (mask, y) in units.iter().flatten() {
        let kept = mask.kept_blocks();
        let weight = design.kernel_weight(&kernel, kept.len()) / count;
        for &i in &kept {
            b[i] += weight * y;
            for &j in &kept {
                a[i * n + j] += weight;
            }
        }
    }
    let cholesky = Cholesky::new_owned(a, n).ok_or(ShapleyError::Singular(KERNELSHAP))?;
    let a_inv_ones = cholesky.solve(&vec![1.0; n]);
    let a_inv_b = cholesky.solve(&b);
    let ones_a_inv_ones: f64 = a_inv_ones.iter().sum();
    let shift = (a_inv_b.iter().sum::<f64>() - total) / ones_a_inv_ones;
    let values: Vec<f64> = (0..n).map(|i| a_inv_b[i] - shift * a_inv_ones[i]).collect();

    // Sandwich: φ̂ − φ = C · mean ψ with C = A⁻¹ − A⁻¹11ᵀA⁻¹ / (1ᵀA⁻¹1) and ψ the pair's
    // score ½ Σ w z (y − zᵀφ̂); Var φ̂_i ≈ sample variance of (C ψ)_i over pairs / pairs,
    // corrected for the coefficients fitted (below).
    let projected_scores: Vec<Vec<f64>> = units
        .iter()
        .map(|pair| {
            let mut score = vec![0.0; n];
            for (mask, y) in pair {
                let kept = mask.kept_blocks();
                let residual = y - kept.iter().map(|&i| values[i]).sum::<f64>();
                let weight = design.kernel_weight(&kernel, kept.len());
                kept.iter()
                    .for_each(|&i| score[i] += weight * residual / 2.0);
            }
            let a_inv_score = cholesky.solve(&score);
            let along = a_inv_score.iter().sum::<f64>() / ones_a_inv_ones;
            (0..n)
                .map(|i| a_inv_score[i] - along * a_inv_ones[i])
                .collect()
        })
        .collect();
    // Only a pair's difference v(S) − v(S̄) (S̄ the complement) informs the fit: its sum is
    // fixed by the constraint, and C removes it from ψ. So the m pairs are m observations of
    // n − 1 free coefficients, and the fitted residuals' sum of squares is (m − n + 1)/m of the
    // errors': the scores' spread is scaled up by m/(m − n + 1) (HC1). Without it the mean
    // (error/SE)² was 1.9–2.3 at 31 iid pairs over 11–12 players, 1.44 at 50 pairs of the
    // sampler's tables. No standard error where the fit can interpolate the pairs. m counts
    // the informative pairs ([`PairedDesign::informative_pairs`]): the pair (∅, N) has kernel
    // weight 0 and adds no degree of freedom.
    let pairs = design.informative_pairs();
    let std_errors = match (pairs + 1).checked_sub(n).filter(|&df| df > 0) {
        // Two players have one pair of coalitions ({0}, {1}), and the fit is their Shapley
        // values whatever the game: exact (SE 0) from one pair on, where the scores, all 0,
        // would give none (`guarded_se`), or one pair too few.
        _ if n == 2 => Some(vec![0.0; n]),
        None => None,
        Some(residual_df) => {
            // HC1: the iid scores' spread, divisor m − 1, by (m − 1)/(m − n + 1); the classes'
            // variance by m/(m − n + 1).
            let (groups, correction) = if design.without_replacement {
                let classes: Vec<usize> = design
                    .coalitions
                    .iter()
                    .map(|s| design.class_of(s.num_kept()))
                    .collect();
                let groups = class_spreads(design, &classes, &projected_scores);
                (groups, pairs as f64 / residual_df as f64)
            } else {
                // (The spread's divisor counts every draw, as its mean does.)
                let groups = iid_spread(&projected_scores, n);
                (
                    groups,
                    (projected_scores.len() - 1) as f64 / residual_df as f64,
                )
            };
            // Both readings pass the one guard: moderated across the players, and no SE where
            // no pair's score spreads beyond the rounding of the game's values (until
            // 2026-12-07 the reading of a table drawn without replacement had neither, and a
            // class whose scores agreed gave SEs of 1e-16 about errors of 0.02).
            let game_values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
            let rounding = rounding_of_units(&game_values, projected_scores.iter().flatten());
            groups.and_then(|groups| {
                let groups: Vec<Spread> = groups
                    .into_iter()
                    .map(|group| Spread {
                        weights: group.weights.iter().map(|w| w * correction).collect(),
                        ..group
                    })
                    .collect();
                // The values alone: the SEs are widened to Student's t of the fit's residual
                // degrees of freedom below (fewer than the moderated variance's, so the wider
                // interval), and their interval is then ± 1.96 SE.
                guarded_se(&groups, None, residual_df as f64, rounding).map(|se| se.values)
            })
        }
    };
    // With few pairs the sandwich understates the error (`kernelshap_standard_errors`): widened
    // to Student's t from 2n, withheld below. SEs of 0 (every class drawn whole: the estimate exact) stay.
    let std_errors = match kernelshap_standard_errors(n, pairs) {
        _ if std_errors
            .as_ref()
            .is_some_and(|se| se.iter().all(|s| *s == 0.0)) =>
        {
            std_errors
        }
        PairedStandardErrors::AsMeasured => std_errors,
        PairedStandardErrors::Widened { factor, .. } => {
            std_errors.map(|se| se.into_iter().map(|s| s * factor).collect())
        }
        PairedStandardErrors::Withheld => None,
    };
    Ok(Estimates::new(
        KERNELSHAP,
        values,
        std_errors.map(StandardErrors::normal),
    ))
}

/// Complement pairs per player below which the paired estimators' standard errors were measured
/// to miss too often to be read (`kernelshap-paired`'s 95 % intervals holding the truth 60–97 %
/// of the time at n to 1.5n pairs, docs/estimators.md): `regression-adjusted` and `regression-adjusted-exp` refuse
/// such a design ([`crate::regression::minimum_kernel_pairs`]), `kernelshap-paired` estimates
/// without standard errors ([`kernelshap_standard_errors`]).
pub const MINIMUM_PAIRS_PER_PLAYER: usize = 2;

/// Complement pairs per player from which the paired estimators' 95 % intervals were measured to
/// hold the truth 90–95 % of the time on the recorded and synthetic games (sampler tables and
/// kernel draws, 200 seeds each); below it the stage warns (`kernelshap-paired` widens its
/// standard errors to Student's t at every number of pairs, [`kernelshap_standard_errors`]).
pub const WELL_MEASURED_PAIRS_PER_PLAYER: usize = 4;

/// How `kernelshap-paired` reports the standard errors of a design of `pairs` informative
/// complement pairs ([`PairedDesign::informative_pairs`]) over `num_players` players
/// ([`kernelshap_standard_errors`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PairedStandardErrors {
    /// Two players or fewer (exact): the sandwich standard errors as they are.
    AsMeasured,
    /// From [`MINIMUM_PAIRS_PER_PLAYER`] · n pairs on: multiplied by `factor` =
    /// t(`degrees_of_freedom`) / 1.96, Student's t 97.5 % quantile for the m − n + 1 degrees of
    /// freedom of the fit's residuals, so that ± 1.96 SE is the t interval. The factor falls
    /// smoothly towards 1 as pairs are added (1.10 at 2n over 12 players, 1.034 at 4n, 1.014 at
    /// 8n).
    Widened {
        degrees_of_freedom: usize,
        factor: f64,
    },
    /// Fewer than [`MINIMUM_PAIRS_PER_PLAYER`] · n pairs: no standard errors.
    Withheld,
}

/// Whether and how `kernelshap-paired` reports standard errors from `pairs` informative
/// complement pairs ([`PairedDesign::informative_pairs`]) over `num_players` players. The
/// sandwich has m − n + 1 residual degrees of freedom and understates the error when that is
/// small (measured on the three recorded games and four synthetic ones, sampler tables and
/// kernel draws, 200 seeds each; docs/estimators.md): from 2n to 3n pairs the 95 % intervals
/// held the truth 86–94 % of the time, with Student's t interval 88–96 %, and from 4n pairs
/// 90–95 % unwidened (the 0/1 veto game's tables 90 % at 4n). The t interval is applied at
/// every m from 2n on, so that one pair more never narrows the SEs by a step (until
/// 2026-12-07 it stopped at 4n, where the factor fell from 1.035 to 1 over 12 players). Its df
/// is the iid reading's, m − n + 1, for tables drawn without replacement too, whose variance
/// is pooled class by class and whose Welch–Satterthwaite df can be well below it; the
/// measured 88–96 % backs it. Below 2n 60–97 % (the recorded games 60–71 % at n pairs, 84–89 %
/// at 1.5n; and at n pairs a quarter to half of the designs too thin to solve), and reaching
/// 95 % would have taken widening by 1.1–1.9 at 1.5n and up to 17 at n pairs, by game and
/// reading: no rule the data support. The estimates themselves are kept: they err by 0.2–1.05
/// of the values' root mean square at 1.5n (0.13–0.8 at 2n), as noisy samples do, and are exact
/// on pairwise games.
pub fn kernelshap_standard_errors(num_players: usize, pairs: usize) -> PairedStandardErrors {
    let n = num_players;
    if n <= 2 {
        PairedStandardErrors::AsMeasured
    } else if pairs >= MINIMUM_PAIRS_PER_PLAYER * n {
        let degrees_of_freedom = pairs + 1 - n;
        PairedStandardErrors::Widened {
            degrees_of_freedom,
            factor: student_t_975(degrees_of_freedom as f64) / NORMAL_975,
        }
    } else {
        PairedStandardErrors::Withheld
    }
}

/// The spread of iid pairs' projected scores (Cψ)_i (their mean is 0), entering the variance
/// of the mean with weight 1/m (`None` below two pairs). With the HC1 factor the caller
/// applies, (m − 1)/(m − n + 1), the spread is the scores' sum of squares over the fitted
/// residuals' degrees of freedom, m − n + 1.
fn iid_spread(projected_scores: &[Vec<f64>], width: usize) -> Option<Vec<Spread>> {
    let pairs = projected_scores.len();
    let (_, variances) = mean_and_variance(projected_scores, width);
    Some(vec![Spread::uniform(
        1.0 / pairs as f64,
        variances?,
        (pairs - 1) as f64,
    )])
}

/// The spreads behind the standard error of the mean of per-pair terms over a design drawn
/// without replacement class by class (a fixed number of pairs m_c out of the class's P_c):
/// Var = Σ_c (m_c/m)² (1 − m_c/P_c) s_c²/m_c, s_c² the variance of the terms inside class c.
/// The iid formula (sd over all pairs / √m) also counts the spread between the classes' means,
/// which the fixed counts remove, and no finite-population factor, so that small classes drawn
/// whole still count: it overstated the error up to 5 times on the sampler's tables. A class
/// with a single pair (no spread of its own) takes the spread of all the pairs about their
/// class means, or about their overall mean when no class has two. `None` below two pairs.
fn class_spreads(
    design: &PairedDesign,
    classes: &[usize],
    terms: &[Vec<f64>],
) -> Option<Vec<Spread>> {
    let width = terms.first()?.len();
    let total = terms.len() as f64;
    if terms.len() < 2 {
        return None;
    }
    let mut by_class: std::collections::BTreeMap<usize, Vec<&Vec<f64>>> = Default::default();
    for (class, term) in classes.iter().zip(terms) {
        by_class.entry(*class).or_default().push(term);
    }
    let column = |rows: &[&Vec<f64>], i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
    // pooled spread inside the classes, for the classes of one pair
    let (mut pooled_squares, mut pooled_df) = (vec![0.0; width], 0.0);
    for rows in by_class.values().filter(|rows| rows.len() >= 2) {
        for (i, squares) in pooled_squares.iter_mut().enumerate() {
            let x = column(rows, i);
            *squares += sample_variance(&x) * (x.len() - 1) as f64;
        }
        pooled_df += (rows.len() - 1) as f64;
    }
    let (fallback, fallback_df): (Vec<f64>, f64) = if pooled_df > 0.0 {
        (
            pooled_squares.iter().map(|s| s / pooled_df).collect(),
            pooled_df,
        )
    } else {
        let all: Vec<&Vec<f64>> = terms.iter().collect();
        (
            (0..width)
                .map(|i| sample_variance(&column(&all, i)))
                .collect(),
            total - 1.0,
        )
    };
    Some(
        by_class
            .iter()
            .map(|(&class, rows)| {
                let count = rows.len() as f64;
                let finite = finite_population_factor(count, design.pairs_in_class(class));
                let (spreads, degrees_of_freedom) = if rows.len() >= 2 {
                    let spreads = (0..width)
                        .map(|i| sample_variance(&column(rows, i)))
                        .collect();
                    (spreads, count - 1.0)
                } else {
                    (fallback.clone(), fallback_df)
                };
                Spread::uniform(
                    (count / total).powi(2) * finite / count,
                    spreads,
                    degrees_of_freedom,
                )
            })
            .collect(),
    )
}

/// Design, evaluation through `game` (fixed blocks kept) and estimate in one call.
pub fn run_kernelshap(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let design = paired_kernel_design(
        players.len(),
        budget,
        1,
        KERNELSHAP,
        &mut rng_from_seed(seed),
    )?;
    let (rows, evaluations) = evaluate_masks_for(KERNELSHAP, game, players, &design.queries())?;
    Ok(kernelshap_estimate(&design, &rows)?
        .for_players(players)
        .with_evaluations(evaluations))
}
