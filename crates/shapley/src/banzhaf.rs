//! The Banzhaf value β_i = 2^{−(n−1)} Σ_{S∌i} (v(S ∪ i) − v(S)) by maximum sample reuse:
//! masks uniform on {0,1}^n, and β_i estimated as the mean value of the masks keeping i
//! minus the mean value of those removing i, so every evaluation serves every player.

use layerprune_core::{Game, Mask};
use rand::Rng;

use crate::values::{
    distinct_sorted, finite_population_factor, guarded_se, rounding_of, sample_variance, Spread,
    StandardErrors,
};
use crate::{evaluate_masks_for, rng_from_seed, Estimates, Players, ShapleyError, ValueTable};

pub const BANZHAF_MSR: &str = "banzhaf-msr";

/// Uniform masks: drawn with replacement (so the distinct count can be below `budget`), or
/// distinct, read from a mask table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniformDesign {
    pub num_players: usize,
    pub masks: Vec<Mask>,
    /// The masks are distinct (a table's): a draw without replacement, whose means over the
    /// 2^(n−1) masks keeping (or removing) a player take the finite-population factor.
    pub without_replacement: bool,
}

pub fn uniform_design(num_players: usize, budget: usize, rng: &mut impl Rng) -> UniformDesign {
    UniformDesign {
        num_players,
        masks: (0..budget)
            .map(|_| Mask::from_kept((0..num_players).map(|_| rng.random_bool(0.5)).collect()))
            .collect(),
        without_replacement: false,
    }
}

impl UniformDesign {
    pub fn queries(&self) -> Vec<Mask> {
        distinct_sorted(self.masks.iter().cloned())
    }
}

/// What `banzhaf-msr` does with recorded masks that [`uniformity_problem`] does not read as a
/// uniform sample of the coalitions. The rule is a heuristic (counts by number of removed
/// players against a uniform draw's): a table of another design the user knows to suit the
/// estimate, or a uniform sample the rule calls another design by chance, would otherwise have
/// no way through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonuniformMasks {
    /// Refused, saying what the masks lack and how to sample a uniform table.
    #[default]
    Refused,
    /// Estimated all the same, with a warning that the estimate may be biased and why
    /// (`shapley --allow-nonuniform-masks`).
    Allowed,
}

/// How far the number of recorded masks removing `r` of the players may stray from a uniform
/// sample's share `e_r = M C(n, r) / 2^n` before [`uniformity_problem`] calls the masks another
/// design: 1 for rounding (a proportional allocation is within it) plus 4 standard deviations
/// of a uniform draw's count (at most √e_r).
const STRAY_SDS: f64 = 4.0;

/// The most masks a uniform sample may be expected to hold, all told, among the numbers of
/// removed players a table has none of: a uniform draw of M masks leaves sizes of share E
/// empty with probability about e^−E, so past ln 1000 those sizes were not sampled (a
/// proportional allocation of `sample-masks` leaves none of share 1 or more empty).
const EMPTY_SHARE: f64 = 6.907_755_278_982_137; // ln 1000

/// Why `masks` (a sample over `n` players, in player space) is not read as uniform on {0,1}^n,
/// or `None`: the MSR estimate weights every mask alike, so it is unbiased only where each
/// number of removed players r holds about its share `e_r = M C(n, r) / 2^n` of the M masks.
/// Refused: numbers with none whose shares add up past ln 1000, `EMPTY_SHARE` (strata not
/// sampled: the published ones, an evaluation stopped part-way), or a count further than 1 + 4 √e_r
/// from its share (equal allocation, permutation chains, the anchors beside a small sample).
/// What a uniform sample leaves empty by chance, ∅ and N below 2^(n−1) masks among them
/// (docs/estimators.md), passes.
pub fn uniformity_problem(num_players: usize, masks: &[Mask]) -> Option<String> {
    let n = num_players;
    let total = masks.len();
    if n == 0 || total == 0 {
        return None;
    }
    let mut counts = vec![0usize; n + 1];
    for mask in masks {
        counts[n - mask.num_kept().min(n)] += 1;
    }
    // ln C(n, r) step by step, so the share stays finite for thousands of players (the
    // project's `layerprune_core::binomial`, exact in u128, saturates from n = 132 on).
    let ln_two_to_n = n as f64 * std::f64::consts::LN_2;
    let mut ln_binomial = 0.0f64;
    let shares: Vec<f64> = (0..=n)
        .map(|removed| {
            if removed > 0 {
                ln_binomial += ((n - removed + 1) as f64).ln() - (removed as f64).ln();
            }
            total as f64 * (ln_binomial - ln_two_to_n).exp()
        })
        .collect();
    let empty: Vec<usize> = (0..=n).filter(|&r| counts[r] == 0).collect();
    let empty_share: f64 = empty.iter().map(|&r| shares[r]).sum();
    if empty_share > EMPTY_SHARE {
        // Named: the sizes a uniform sample holds a mask of (all, where none is that large).
        let mut named: Vec<usize> = empty
            .iter()
            .copied()
            .filter(|&r| shares[r] >= 1.0)
            .collect();
        if named.is_empty() {
            named = empty;
        }
        let held: f64 = named.iter().map(|&r| shares[r]).sum();
        let mut list: Vec<String> = named.iter().map(usize::to_string).collect();
        let last = list.pop().unwrap_or_default();
        let list = if list.is_empty() {
            last
        } else {
            format!("{} or {last}", list.join(", "))
        };
        return Some(format!(
            "no mask removes {list} of the {n} players, where a uniform sample of {total} masks \
             holds about {held:.1}"
        ));
    }
    for (removed, (&count, &share)) in counts.iter().zip(&shares).enumerate() {
        let stray = 1.0 + STRAY_SDS * share.sqrt();
        if (count as f64 - share).abs() > stray {
            return Some(format!(
                "{count} masks remove {removed} of the {n} players, where a uniform sample of \
                 {total} masks holds {share:.1} ± {stray:.1}"
            ));
        }
    }
    None
}

/// MSR estimate; standard error sqrt(f_in var_in/n_in + f_out var_out/n_out) per player (f the
/// finite-population factor 1 − n_in/2^(n−1) for distinct masks, 1 for a draw with
/// replacement), through the
/// guard every SE passes (`values::guarded_se`: moderated across the players, none where no
/// mask's value differs beyond rounding from the others of its group); none where a group has
/// fewer than two masks.
pub fn banzhaf_msr_estimate(
    design: &UniformDesign,
    rows: &[(Mask, f64)],
) -> Result<Estimates, ShapleyError> {
    let n = design.num_players;
    let table = ValueTable::from_rows(rows);
    let values = design
        .masks
        .iter()
        .map(|m| table.get(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut estimates = vec![0.0; n];
    // [kept, removed]: each group's spread and its weight 1/count, by player.
    let mut groups = [0, 1].map(|_| Spread::empty(n));
    let mut has_se = true;
    for (i, estimate) in estimates.iter_mut().enumerate() {
        let (inside, outside): (Vec<f64>, Vec<f64>) = {
            let (kept, removed): (Vec<_>, Vec<_>) = design
                .masks
                .iter()
                .zip(&values)
                .partition(|(m, _)| m.is_kept(i));
            (
                kept.into_iter().map(|(_, &v)| v).collect(),
                removed.into_iter().map(|(_, &v)| v).collect(),
            )
        };
        if inside.is_empty() || outside.is_empty() {
            return Err(ShapleyError::NeverVaries { player: i });
        }
        let mean = |group: &[f64]| group.iter().sum::<f64>() / group.len() as f64;
        *estimate = mean(&inside) - mean(&outside);
        has_se &= inside.len() >= 2 && outside.len() >= 2;
        for (group, masks) in groups.iter_mut().zip([&inside, &outside]) {
            let count = masks.len() as f64;
            // A table's masks are distinct: of 2^(n−1) keeping i (or removing it). Without the
            // factor every mask of a 6-player game read once gave the exact values with SEs of
            // 0.02–0.03 (until 2026-12-07).
            let finite = if design.without_replacement {
                finite_population_factor(count, 2f64.powi(n as i32 - 1))
            } else {
                1.0
            };
            group.weights[i] = finite / count;
            group.variances[i] = sample_variance(masks);
            group.degrees_of_freedom[i] = count - 1.0;
        }
    }
    // Each player's two groups hold every mask: M − 2 degrees of freedom.
    let degrees_of_freedom = design.masks.len() as f64 - 2.0;
    let std_errors = if n == 1 {
        // Every mask is ∅ or N: the estimate is v(N) − v(∅), exact, where its groups, which do
        // not spread for that reason, would give none.
        Some(StandardErrors::normal(vec![0.0]))
    } else if has_se {
        guarded_se(&groups, None, degrees_of_freedom, rounding_of(&values))
    } else {
        None
    };
    Ok(Estimates::new(BANZHAF_MSR, estimates, std_errors))
}

/// Design, evaluation through `game` (fixed blocks kept) and estimate in one call.
pub fn run_banzhaf_msr(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let design = uniform_design(players.len(), budget, &mut rng_from_seed(seed));
    let (rows, evaluations) = evaluate_masks_for(BANZHAF_MSR, game, players, &design.queries())?;
    Ok(banzhaf_msr_estimate(&design, &rows)?
        .for_players(players)
        .with_evaluations(evaluations))
}
