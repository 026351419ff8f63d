//! Permutation sampling of the Shapley value with antithetic pairs: each random order of the
//! players is followed by its reverse. Along a chain the players are added one by one, from
//! the empty coalition to the full one (n + 1 prefixes), and each player's marginal
//! contribution is the value gained when it joins. The pair average is exact for games with
//! at most pairwise interactions, and every chain sums to v(all) − v(none) (efficiency).

use layerprune_core::{Game, Mask};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::values::{distinct_sorted, mean_and_se, rounding_of_units, StandardErrors};
use crate::{evaluate_masks_for, rng_from_seed, Estimates, Players, ShapleyError, ValueTable};

pub const PERMUTATION: &str = "permutation-shapley";

/// Orders of the players; `units` groups chains that are averaged before the standard
/// error is taken (an antithetic pair, or a lone chain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermutationDesign {
    pub num_players: usize,
    /// `orders[c][p]` is the player that joins at step `p` of chain `c`.
    pub orders: Vec<Vec<usize>>,
    /// Chain indices of each unit.
    pub units: Vec<Vec<usize>>,
}

/// Distinct evaluations one antithetic pair adds beyond the shared empty and full masks.
fn evaluations_per_pair(num_players: usize) -> usize {
    2 * num_players.saturating_sub(1)
}

/// Number of antithetic pairs that fit in `budget` distinct evaluations.
pub fn pairs_for_budget(num_players: usize, budget: usize) -> usize {
    match evaluations_per_pair(num_players) {
        0 => usize::from(budget >= 2),
        per_pair => budget.saturating_sub(2) / per_pair,
    }
}

/// Draws as many antithetic pairs of orders as fit in `budget` distinct evaluations.
pub fn permutation_design(
    num_players: usize,
    budget: usize,
    rng: &mut impl Rng,
) -> Result<PermutationDesign, ShapleyError> {
    let pairs = pairs_for_budget(num_players, budget);
    if pairs == 0 {
        return Err(ShapleyError::BudgetTooSmall {
            estimator: PERMUTATION,
            players: num_players,
            budget,
            needed: 2 + evaluations_per_pair(num_players),
        });
    }
    Ok(permutation_design_pairs(num_players, pairs, rng))
}

/// Draws `pairs` antithetic pairs of orders.
pub fn permutation_design_pairs(
    num_players: usize,
    pairs: usize,
    rng: &mut impl Rng,
) -> PermutationDesign {
    let mut orders = Vec::with_capacity(2 * pairs);
    let mut units = Vec::with_capacity(pairs);
    for unit in 0..pairs {
        let mut order: Vec<usize> = (0..num_players).collect();
        order.shuffle(rng);
        let reversed: Vec<usize> = order.iter().rev().copied().collect();
        orders.push(order);
        orders.push(reversed);
        units.push(vec![2 * unit, 2 * unit + 1]);
    }
    PermutationDesign {
        num_players,
        orders,
        units,
    }
}

impl PermutationDesign {
    /// Rebuilds a design from chains of masks read back from a mask table (each chain in
    /// position order, from the empty coalition up or from the full one down). Consecutive
    /// chains whose orders are each other's reverse form an antithetic unit.
    pub fn from_chains(num_players: usize, chains: &[Vec<Mask>]) -> Result<Self, ShapleyError> {
        let mut orders = Vec::with_capacity(chains.len());
        for (c, chain) in chains.iter().enumerate() {
            let mut chain = chain.clone();
            if chain.first().is_some_and(|m| m.num_kept() == num_players) {
                chain.reverse();
            }
            let bad = |why: &str| ShapleyError::Design(format!("chain {c}: {why}"));
            if chain.len() != num_players + 1 || chain[0] != Mask::empty(num_players) {
                return Err(bad("a chain must run through all n + 1 prefixes from the empty mask to the full one"));
            }
            let mut order = Vec::with_capacity(num_players);
            for step in chain.windows(2) {
                step[1]
                    .check_len(num_players)
                    .map_err(|e| bad(&e.to_string()))?;
                let joined: Vec<usize> = (0..num_players)
                    .filter(|&i| step[1].is_kept(i) != step[0].is_kept(i))
                    .collect();
                match joined[..] {
                    [player] if step[1].is_kept(player) => order.push(player),
                    _ => return Err(bad("consecutive masks must differ by one added player")),
                }
            }
            orders.push(order);
        }
        let mut units = Vec::new();
        let mut c = 0;
        while c < orders.len() {
            let antithetic =
                c + 1 < orders.len() && orders[c].iter().rev().eq(orders[c + 1].iter());
            if antithetic {
                units.push(vec![c, c + 1]);
                c += 2;
            } else {
                units.push(vec![c]);
                c += 1;
            }
        }
        Ok(PermutationDesign {
            num_players,
            orders,
            units,
        })
    }

    /// The n + 1 prefixes of chain `chain`, from the empty coalition to the full one.
    pub fn chain_masks(&self, chain: usize) -> Vec<Mask> {
        let mut mask = Mask::empty(self.num_players);
        let mut masks = vec![mask.clone()];
        for &player in &self.orders[chain] {
            mask.set(player, true);
            masks.push(mask.clone());
        }
        masks
    }

    /// Whether every unit gives the Shapley values exactly, whatever the game: one player's
    /// chain (its one marginal is the whole gain), or two players' antithetic pair (both orders
    /// there are). Its units agree, which here says that the estimate is exact (SE 0), not, as
    /// `values::guarded_se` reads units that agree, that the sample says nothing of its error
    /// (no SE).
    pub fn is_exact(&self) -> bool {
        !self.units.is_empty()
            && (self.num_players <= 1
                || (self.num_players == 2 && self.units.iter().all(|unit| unit.len() == 2)))
    }

    /// The mean of `units` (per-unit average marginals of units of this design, as
    /// [`Self::unit_marginals`] gives them) and its standard errors (`values::mean_and_se`, no
    /// SE where the units spread by no more than `rounding`; moderated towards the variances'
    /// trend in `trend` where given), 0 where the design is exact ([`Self::is_exact`]).
    /// Permutation sampling, the sampled Shapley values of a surrogate and the chains' residual
    /// halves all read their units so.
    pub(crate) fn mean_and_se(
        &self,
        units: &[Vec<f64>],
        trend: Option<&[f64]>,
        rounding: f64,
    ) -> (Vec<f64>, Option<StandardErrors>) {
        let (means, std_errors) = mean_and_se(units, self.num_players, trend, rounding);
        if self.is_exact() {
            (
                means,
                Some(StandardErrors::normal(vec![0.0; self.num_players])),
            )
        } else {
            (means, std_errors)
        }
    }

    /// Every mask the estimate needs, each once, sorted.
    pub fn queries(&self) -> Vec<Mask> {
        distinct_sorted((0..self.orders.len()).flat_map(|c| self.chain_masks(c)))
    }

    /// Each player's marginal contributions along chain `chain`, given the values of its
    /// n + 1 prefixes in order.
    fn chain_marginals(&self, chain: usize, prefix_values: &[f64]) -> Vec<f64> {
        let mut marginals = vec![0.0; self.num_players];
        for (step, &player) in self.orders[chain].iter().enumerate() {
            marginals[player] = prefix_values[step + 1] - prefix_values[step];
        }
        marginals
    }

    /// Per-unit averages of the chains' marginal contributions; `prefix_values(c)` gives the
    /// values of chain `c`'s prefixes in order.
    pub(crate) fn unit_marginals(
        &self,
        units: &[Vec<usize>],
        prefix_values: &mut dyn FnMut(usize) -> Result<Vec<f64>, ShapleyError>,
    ) -> Result<Vec<Vec<f64>>, ShapleyError> {
        units
            .iter()
            .map(|unit| {
                let mut average = vec![0.0; self.num_players];
                for &chain in unit {
                    let marginals = self.chain_marginals(chain, &prefix_values(chain)?);
                    for (a, m) in average.iter_mut().zip(marginals) {
                        *a += m / unit.len() as f64;
                    }
                }
                Ok(average)
            })
            .collect()
    }
}

/// The estimate from evaluated masks: mean over units of the unit's average marginal
/// contributions; standard error from the spread of the unit averages, each player's
/// moderated towards the players' pooled spread (few units: see `values::guarded_se`), and
/// none where the units do not spread at all — unless the design is exact by construction
/// ([`PermutationDesign::is_exact`]): SE 0 there.
pub fn permutation_estimate(
    design: &PermutationDesign,
    rows: &[(Mask, f64)],
) -> Result<Estimates, ShapleyError> {
    let table = ValueTable::from_rows(rows);
    let units = design.unit_marginals(&design.units, &mut |chain| {
        design
            .chain_masks(chain)
            .iter()
            .map(|m| table.get(m))
            .collect()
    })?;
    // What counts as no spread: rounding of the game's values, not of the marginals alone.
    let game_values: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let rounding = rounding_of_units(&game_values, units.iter().flatten());
    // The flat prior: the estimate is the only covariate here, and it measured worse as one
    // (`values::guarded_se`).
    let (values, std_errors) = design.mean_and_se(&units, None, rounding);
    Ok(Estimates::new(PERMUTATION, values, std_errors))
}

/// Design, evaluation through `game` (fixed blocks kept) and estimate in one call.
pub fn run_permutation(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let design = permutation_design(players.len(), budget, &mut rng_from_seed(seed))?;
    let (rows, evaluations) = evaluate_masks_for(PERMUTATION, game, players, &design.queries())?;
    Ok(permutation_estimate(&design, &rows)?
        .for_players(players)
        .with_evaluations(evaluations))
}
