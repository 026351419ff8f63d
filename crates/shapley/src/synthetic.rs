//! Synthetic games beyond those in `layerprune_core::synthetic`: a game with third-order
//! interactions, which no pairwise-exact estimator recovers by construction, and a
//! layer-pruning-like instance of it for the replay benchmark; a game plus a constant; and the
//! list of every mask, which the tests value games on.

use layerprune_core::synthetic::PairwiseGame;
use layerprune_core::{Game, GameError, Mask};
use rand::Rng;

use crate::rng_from_seed;

/// Every mask over `num_players` players (2^n), mask `bits` keeping player i where bit i of
/// `bits` is set: the order `exact_shapley` enumerates them in.
pub fn every_mask(num_players: usize) -> Vec<Mask> {
    crate::exact::all_masks(num_players)
}

/// A game plus a constant: v(S) + c for every S (its Shapley values are the game's, and
/// estimators whose surrogates are relative to the values' range should not move).
#[derive(Clone, Debug)]
pub struct Plus<G>(pub G, pub f64);

impl<G: Game> Game for Plus<G> {
    fn num_players(&self) -> usize {
        self.0.num_players()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        Ok(self.0.values(masks)?.iter().map(|v| v + self.1).collect())
    }
}

/// A pairwise game plus third-order terms: v(S) = pairwise(S) + Σ_{t ⊆ S} w_t over triples t.
/// Shapley value of i: the pairwise one plus Σ_{t ∋ i} w_t / 3.
#[derive(Clone, Debug)]
pub struct TripleGame {
    pub pairwise: PairwiseGame,
    pub triples: Vec<([usize; 3], f64)>,
}

impl TripleGame {
    pub fn shapley_values(&self) -> Vec<f64> {
        let mut values = self.pairwise.shapley_values();
        for (triple, weight) in &self.triples {
            triple.iter().for_each(|&i| values[i] += weight / 3.0);
        }
        values
    }

    /// A game shaped like layer pruning of an n-block model, documented in
    /// docs/estimators.md: the full model is worth about 1 and the value collapses as
    /// blocks go. Every block adds a small amount on its own (more for the first and last
    /// blocks, which the literature finds hardest to remove); neighbouring blocks are
    /// complements (positive interaction: removing two neighbours hurts more than the sum);
    /// some distant pairs are substitutes (negative interaction); and n / 4 runs of three
    /// consecutive blocks (one at least from 3 blocks, none below) carry a strong third-order
    /// term (removing any block of the run loses it).
    pub fn layer_pruning_like(num_players: usize, seed: u64) -> Self {
        let n = num_players;
        let mut rng = rng_from_seed(seed);
        let mut linear: Vec<f64> = (0..n).map(|_| rng.random_range(0.005..0.03)).collect();
        if n > 0 {
            linear[0] += 0.15;
            linear[n - 1] += 0.08;
        }
        let mut pairs = vec![vec![0.0; n]; n];
        for i in 0..n.saturating_sub(1) {
            let w = rng.random_range(0.01..0.05);
            pairs[i][i + 1] = w;
            pairs[i + 1][i] = w;
        }
        for _ in 0..n {
            let i = rng.random_range(0..n);
            let j = rng.random_range(0..n);
            if i.abs_diff(j) > 2 {
                let w = -rng.random_range(0.0..0.02);
                pairs[i][j] = w;
                pairs[j][i] = w;
            }
        }
        // Runs of three distinct blocks: with fewer than three, a run wrapped onto itself
        // ([0, 1, 0] of 2 blocks, whose closed form then split its weight 2:1 instead of the
        // game's 1:1; 0 blocks divided by zero), so there are none.
        let runs = if n >= 3 { (n / 4).max(1) } else { 0 };
        let triples = (0..runs)
            .map(|_| {
                let start = rng.random_range(0..n.saturating_sub(2).max(1));
                (
                    [start, (start + 1) % n, (start + 2) % n],
                    rng.random_range(0.05..0.15),
                )
            })
            .collect();
        TripleGame {
            pairwise: PairwiseGame {
                linear,
                pairs,
                base: 0.0,
            },
            triples,
        }
    }
}

impl Game for TripleGame {
    fn num_players(&self) -> usize {
        self.pairwise.linear.len()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let mut values = self.pairwise.values(masks)?;
        for (value, mask) in values.iter_mut().zip(masks) {
            for (triple, weight) in &self.triples {
                if triple.iter().all(|&i| mask.is_kept(i)) {
                    *value += weight;
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_core::synthetic::exact_shapley;

    #[test]
    fn triple_game_closed_form_matches_enumeration() {
        let mut game = TripleGame::layer_pruning_like(9, 4);
        let exact = exact_shapley(&mut game).unwrap();
        for (a, b) in exact.iter().zip(game.shapley_values()) {
            assert!((a - b).abs() < 1e-12, "{exact:?}");
        }
        let full = game.value(&Mask::full(9)).unwrap();
        assert!(full > 0.3 && full < 3.0, "{full}");
    }

    /// The closed form is the game's Shapley value for every number of blocks, also the
    /// few for which a run of three does not fit.
    #[test]
    fn triple_game_closed_form_holds_for_every_small_size() {
        for n in 0..=5 {
            let mut game = TripleGame::layer_pruning_like(n, 1);
            let exact = exact_shapley(&mut game).unwrap();
            for (a, b) in exact.iter().zip(game.shapley_values()) {
                assert!((a - b).abs() < 1e-12, "{n} blocks: {exact:?}");
            }
        }
    }
}
