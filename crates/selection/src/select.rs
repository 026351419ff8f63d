//! From scores or a surrogate to a set of k removed blocks: one-shot, iterative removal
//! through a surrogate, and surrogate-guided search. None of these runs the LLM; the caller
//! measures the result.

use std::cmp::Ordering;
use std::collections::HashMap;

use layerprune_core::{Mask, PlayerGame, Players};
use layerprune_surrogate::{FittedSurrogate, QuadraticSurrogate, Surrogate, SurrogateGame};
use rand::seq::index::sample;

use crate::{removable_blocks, rng_from_seed, SelectionError};

/// The `k` blocks with the lowest scores, never a fixed block, ascending. Ties go to the lower
/// block index (the earlier block is removed first), so the result is a pure function of the
/// scores; a score of +∞ goes last. Fails when a score is NaN or −∞ (they rank nothing) or `k`
/// is not below the number of removable blocks.
pub fn one_shot(scores: &[f64], k: usize, fixed: &[usize]) -> Result<Vec<usize>, SelectionError> {
    let mut players = removable_blocks(scores.len(), fixed, k)?;
    if let Some(&block) = players
        .iter()
        .find(|&&b| !crate::baselines::ranks(scores[b]))
    {
        return Err(SelectionError::NonFiniteScore {
            method: "one-shot".into(),
            block,
            value: scores[block],
        });
    }
    players.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut removed = players[..k].to_vec();
    removed.sort_unstable();
    Ok(removed)
}

/// The block mask with `removed` deleted and every other block kept.
fn mask_without(num_blocks: usize, removed: &[usize]) -> Mask {
    let mut kept = vec![true; num_blocks];
    for &block in removed {
        kept[block] = false;
    }
    Mask::from_kept(kept)
}

/// How to compute the Shapley values of a surrogate's game restricted to some of its blocks:
/// in closed form for a quadratic surrogate, otherwise by antithetic permutation sampling
/// through the surrogate (free to query, batched).
pub struct SurrogateShapley<'a> {
    surrogate: &'a dyn Surrogate,
    /// Whether to take the surrogate's closed form where it has one
    /// ([`Surrogate::exact_shapley_on`]); sampled otherwise.
    closed_form: bool,
    /// Antithetic permutation pairs per Shapley computation when there is no closed form.
    pub permutation_pairs: usize,
    /// Seeds the permutations; round r of an iterative removal uses `seed + r`.
    pub seed: u64,
}

impl<'a> SurrogateShapley<'a> {
    /// Sampled Shapley values of any surrogate.
    pub fn sampled(surrogate: &'a dyn Surrogate, permutation_pairs: usize, seed: u64) -> Self {
        SurrogateShapley {
            surrogate,
            closed_form: false,
            permutation_pairs,
            seed,
        }
    }

    /// Exact Shapley values of a quadratic surrogate.
    pub fn quadratic(surrogate: &'a QuadraticSurrogate) -> Self {
        SurrogateShapley {
            surrogate,
            closed_form: true,
            permutation_pairs: 0,
            seed: 0,
        }
    }

    /// The surrogate's closed form where it has one (a quadratic's,
    /// [`Surrogate::exact_shapley_on`]), sampling otherwise.
    pub fn for_fitted(surrogate: &'a FittedSurrogate, permutation_pairs: usize, seed: u64) -> Self {
        SurrogateShapley {
            surrogate,
            closed_form: true,
            permutation_pairs,
            seed,
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.surrogate.num_players()
    }

    pub fn surrogate(&self) -> &'a dyn Surrogate {
        self.surrogate
    }

    /// The Shapley value of each of `players` in the game whose other blocks are fixed as in
    /// `base` (kept or removed): the surrogate's closed form where it has one
    /// ([`Surrogate::exact_shapley_on`]), else sampled.
    pub fn restricted(
        &self,
        base: &Mask,
        players: &[usize],
        round: u64,
    ) -> Result<Vec<f64>, SelectionError> {
        if self.closed_form {
            if let Some(values) = self.surrogate.exact_shapley_on(base, players) {
                return Ok(values);
            }
        }
        // The surrogate restricted to `players` (ascending, so player p is `players[p]`); the
        // other blocks as in `base`.
        if players.windows(2).any(|w| w[0] >= w[1]) {
            return Err(SelectionError::BadOption(
                "the players of a restricted game must be ascending and distinct".into(),
            ));
        }
        let restricted = Players::from_blocks(base.num_blocks(), players.to_vec())
            .map_err(|e| SelectionError::BadOption(e.to_string()))?;
        let mut game = PlayerGame::on_base(SurrogateGame(self.surrogate), restricted, base.clone())
            .map_err(|e| SelectionError::BadOption(e.to_string()))?;
        let estimates = layerprune_shapley::surrogate::surrogate_shapley(
            &mut game,
            None,
            self.permutation_pairs,
            self.seed.wrapping_add(round),
        )?;
        Ok(estimates.values)
    }
}

impl SurrogateShapley<'_> {
    /// Each block's Shapley value in the game of the players, every block but `fixed` (which
    /// stay kept): one score per block, +∞ for a fixed one (never removed). Not the closed
    /// form over all blocks: a surrogate fitted on masks that always keep the fixed blocks
    /// cannot tell a player's own effect from its pairs' with them (x_i x_f = x_i there), so
    /// that form would count only half of what the fit put into those pairs.
    pub fn player_scores(&self, fixed: &[usize]) -> Result<Vec<f64>, SelectionError> {
        let num_blocks = self.num_blocks();
        let players: Vec<usize> = (0..num_blocks).filter(|b| !fixed.contains(b)).collect();
        let values = self.restricted(&Mask::full(num_blocks), &players, 0)?;
        let mut scores = vec![f64::INFINITY; num_blocks];
        for (&block, value) in players.iter().zip(values) {
            scores[block] = value;
        }
        Ok(scores)
    }
}

/// The result of [`iterative_removal`].
#[derive(Clone, Debug, PartialEq)]
pub struct IterativeRemoval {
    /// Blocks in the order they were removed; its first j entries are the plan for k = j.
    pub removal_order: Vec<usize>,
    /// Each removed block's Shapley value in the game it was removed from.
    pub shapley_at_removal: Vec<f64>,
}

impl IterativeRemoval {
    /// The first `k` removed blocks, ascending.
    pub fn removed_blocks(&self, k: usize) -> Vec<usize> {
        let mut removed = self.removal_order[..k.min(self.removal_order.len())].to_vec();
        removed.sort_unstable();
        removed
    }
}

/// Iterative removal through a surrogate, with no new LLM calls: remove the block with the
/// lowest Shapley value, then re-play the game with the removed blocks fixed OUT over the
/// remaining players, recompute their Shapley values, and repeat until `k` are removed. Ties go
/// to the lower block index. Fixed blocks are kept throughout and never removed.
pub fn iterative_removal(
    shapley: &SurrogateShapley<'_>,
    k: usize,
    fixed: &[usize],
) -> Result<IterativeRemoval, SelectionError> {
    let num_blocks = shapley.num_blocks();
    let mut players = removable_blocks(num_blocks, fixed, k)?;
    let mut removal_order = Vec::with_capacity(k);
    let mut shapley_at_removal = Vec::with_capacity(k);
    for round in 0..k {
        let base = mask_without(num_blocks, &removal_order);
        let values = shapley.restricted(&base, &players, round as u64)?;
        let lowest = (0..players.len())
            .min_by(|&a, &b| {
                values[a]
                    .total_cmp(&values[b])
                    .then(players[a].cmp(&players[b]))
            })
            .ok_or_else(|| SelectionError::BadOption("no players left".into()))?;
        if !values[lowest].is_finite() {
            return Err(SelectionError::NonFiniteScore {
                method: "iterative surrogate Shapley".into(),
                block: players[lowest],
                value: values[lowest],
            });
        }
        let block = players.remove(lowest);
        tracing::debug!(
            "iterative: k={k}, {}/{k} blocks removed (block {block}, Shapley {:.6})",
            round + 1,
            values[lowest]
        );
        removal_order.push(block);
        shapley_at_removal.push(values[lowest]);
    }
    Ok(IterativeRemoval {
        removal_order,
        shapley_at_removal,
    })
}

/// Settings of [`surrogate_search`].
#[derive(Clone, Debug, PartialEq)]
pub struct SearchOptions {
    /// Random starting sets of k removed blocks, besides the caller's starts.
    pub random_starts: usize,
    /// Candidates returned (the best distinct masks seen, by prediction).
    pub top_n: usize,
    /// Seeds the random starts.
    pub seed: u64,
    /// When the number of k-subsets of the removable blocks is at most this, every subset is
    /// predicted instead of searched (the surrogate is cheap; this makes small cases exact).
    pub exhaustive_limit: usize,
    /// Improving swaps per local search, at most.
    pub max_steps: usize,
}

impl SearchOptions {
    /// Whether a search for `k` of `players` removable blocks predicts every subset (then
    /// it draws no random start: `random_starts` and `seed` play no part).
    pub fn is_exhaustive(&self, players: usize, k: usize) -> bool {
        binomial(players, k) <= self.exhaustive_limit
    }
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            random_starts: 16,
            top_n: 8,
            seed: 0,
            exhaustive_limit: 100_000,
            max_steps: 1_000,
        }
    }
}

/// A set of removed blocks and the surrogate's prediction for the pruned model.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// Ascending.
    pub removed_blocks: Vec<usize>,
    pub predicted: f64,
}

/// Number of k-subsets of n items, saturating.
fn binomial(n: usize, k: usize) -> usize {
    usize::try_from(layerprune_core::binomial(n, k.min(n))).unwrap_or(usize::MAX)
}

/// Every k-subset of `players`, in lexicographic order of positions.
fn for_each_subset(players: &[usize], k: usize, mut visit: impl FnMut(&[usize])) {
    let n = players.len();
    let mut positions: Vec<usize> = (0..k).collect();
    let mut subset = vec![0; k];
    loop {
        for (slot, &p) in subset.iter_mut().zip(&positions) {
            *slot = players[p];
        }
        visit(&subset);
        // Advance the rightmost position that can still move.
        let Some(i) = (0..k).rev().find(|&i| positions[i] < n - k + i) else {
            return;
        };
        positions[i] += 1;
        for j in i + 1..k {
            positions[j] = positions[j - 1] + 1;
        }
    }
}

/// Predicted values of masks seen so far, by sorted removed set.
struct Seen<'a> {
    surrogate: &'a dyn Surrogate,
    values: HashMap<Vec<usize>, f64>,
}

impl Seen<'_> {
    /// Predicts every set not seen yet (one batch) and returns the value of each set.
    fn predict(&mut self, sets: &[Vec<usize>]) -> Vec<f64> {
        let num_blocks = self.surrogate.num_players();
        let new: Vec<&Vec<usize>> = sets
            .iter()
            .filter(|s| !self.values.contains_key(*s))
            .collect();
        if !new.is_empty() {
            let masks: Vec<Mask> = new.iter().map(|s| mask_without(num_blocks, s)).collect();
            let predictions = self.surrogate.predict(&masks);
            for (set, value) in new.into_iter().zip(predictions) {
                self.values.insert(set.clone(), value);
            }
        }
        sets.iter().map(|s| self.values[s]).collect()
    }
}

/// Orders by prediction (higher first; NaN last), then by removed set for determinism.
fn better_first(a: &Candidate, b: &Candidate) -> Ordering {
    let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    key(b.predicted)
        .total_cmp(&key(a.predicted))
        .then_with(|| a.removed_blocks.cmp(&b.removed_blocks))
}

/// Surrogate-guided search over masks with exactly `k` blocks removed (never a fixed one) for
/// the best predicted value. Small cases (at most `exhaustive_limit` subsets) are enumerated.
/// Otherwise each start (the caller's `starts`, e.g. the one-shot and iterative solutions, then
/// `random_starts` random sets) is improved by swapping one removed block for one kept block,
/// taking the best swap while it improves the prediction. Returns the `top_n` best distinct
/// masks seen, best first; the caller measures the best few on the LLM and keeps the best
/// measured. Costs no LLM evaluations.
pub fn surrogate_search(
    surrogate: &dyn Surrogate,
    k: usize,
    fixed: &[usize],
    starts: &[Vec<usize>],
    options: &SearchOptions,
) -> Result<Vec<Candidate>, SelectionError> {
    let num_blocks = surrogate.num_players();
    let players = removable_blocks(num_blocks, fixed, k)?;
    if options.top_n == 0 {
        return Err(SelectionError::BadOption(
            "the search must return at least one candidate".into(),
        ));
    }
    let mut seen = Seen {
        surrogate,
        values: HashMap::new(),
    };
    if options.is_exhaustive(players.len(), k) {
        let mut batch = Vec::new();
        for_each_subset(&players, k, |subset| {
            batch.push(subset.to_vec());
            if batch.len() == 8192 {
                seen.predict(&batch);
                batch.clear();
            }
        });
        seen.predict(&batch);
        // Said, so that a --random-starts given here is not thought to have searched.
        tracing::info!(
            "search: k={k}, every subset predicted ({} predictions; no starts needed, {} \
             random starts not drawn)",
            seen.values.len(),
            options.random_starts
        );
    } else {
        let mut all_starts = Vec::with_capacity(starts.len() + options.random_starts);
        for start in starts {
            let mut start = start.clone();
            start.sort_unstable();
            start.dedup();
            if start.len() != k || start.iter().any(|b| !players.contains(b)) {
                return Err(SelectionError::BadOption(format!(
                    "search start {start:?} is not a set of {k} removable blocks"
                )));
            }
            all_starts.push(start);
        }
        let mut rng = rng_from_seed(options.seed);
        for _ in 0..options.random_starts {
            let mut start: Vec<usize> = sample(&mut rng, players.len(), k)
                .into_iter()
                .map(|p| players[p])
                .collect();
            start.sort_unstable();
            all_starts.push(start);
        }
        let total = all_starts.len();
        for (i, start) in all_starts.into_iter().enumerate() {
            local_search(&mut seen, &players, start, options.max_steps);
            tracing::debug!(
                "search: k={k}, {}/{total} local searches done, {} predictions",
                i + 1,
                seen.values.len()
            );
        }
        tracing::info!(
            "search: k={k}, {total} local searches done, {} predictions",
            seen.values.len()
        );
    }
    let mut candidates: Vec<Candidate> = seen
        .values
        .into_iter()
        .map(|(removed_blocks, predicted)| Candidate {
            removed_blocks,
            predicted,
        })
        .collect();
    candidates.sort_by(better_first);
    candidates.truncate(options.top_n);
    Ok(candidates)
}

/// Best-improvement swap search from `start`.
fn local_search(seen: &mut Seen<'_>, players: &[usize], start: Vec<usize>, max_steps: usize) {
    let mut current = start;
    let mut current_value = seen.predict(std::slice::from_ref(&current))[0];
    for _ in 0..max_steps {
        let mut neighbours = Vec::new();
        for position in 0..current.len() {
            for &added in players.iter().filter(|b| !current.contains(b)) {
                let mut swapped = current.clone();
                swapped[position] = added;
                swapped.sort_unstable();
                neighbours.push(swapped);
            }
        }
        let values = seen.predict(&neighbours);
        // A NaN prediction is no improvement (total_cmp would rank it above every number).
        let best = (0..neighbours.len())
            .filter(|&a| !values[a].is_nan())
            .max_by(|&a, &b| {
                values[a]
                    .total_cmp(&values[b])
                    .then_with(|| neighbours[b].cmp(&neighbours[a]))
            });
        match best {
            Some(best) if values[best] > current_value => {
                current = neighbours.swap_remove(best);
                current_value = values[best];
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_enumerated_once_each() {
        let mut seen = Vec::new();
        for_each_subset(&[1, 3, 4, 7], 2, |s| seen.push(s.to_vec()));
        assert_eq!(
            seen,
            vec![
                vec![1, 3],
                vec![1, 4],
                vec![1, 7],
                vec![3, 4],
                vec![3, 7],
                vec![4, 7]
            ]
        );
        assert_eq!(binomial(4, 2), 6);
        assert_eq!(binomial(32, 8), 10_518_300);
        let mut count = 0;
        for_each_subset(&[0, 1, 2], 0, |s| {
            assert!(s.is_empty());
            count += 1;
        });
        assert_eq!(count, 1);
    }

    #[test]
    fn one_shot_takes_the_lowest_with_ties_to_the_lower_block() {
        let scores = [0.5, 0.1, 0.3, 0.1, 0.9];
        assert_eq!(one_shot(&scores, 2, &[]).unwrap(), vec![1, 3]);
        assert_eq!(one_shot(&[0.2, 0.2, 0.2], 1, &[]).unwrap(), vec![0]);
        assert_eq!(one_shot(&scores, 2, &[1]).unwrap(), vec![2, 3]);
        assert!(one_shot(&[0.1, f64::NAN], 1, &[]).is_err());
        assert!(one_shot(&[0.1, f64::NEG_INFINITY], 1, &[]).is_err());
        // +∞ (a leave-one-out removal that collapsed the model) goes last, ties to the lower.
        let collapsed = [f64::INFINITY, 0.5, f64::INFINITY, 0.2];
        assert_eq!(one_shot(&collapsed, 2, &[]).unwrap(), vec![1, 3]);
        assert_eq!(one_shot(&collapsed, 3, &[]).unwrap(), vec![0, 1, 3]);
        assert!(matches!(
            one_shot(&scores, 5, &[]),
            Err(SelectionError::TooManyRemoved { .. })
        ));
    }
}
