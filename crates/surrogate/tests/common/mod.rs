//! Synthetic masks and games shared by the integration tests.
#![allow(dead_code)]
// Symmetric matrices are filled by (i, j) index; iterators would hide the symmetry.
#![allow(clippy::needless_range_loop)]

use layerprune_core::synthetic::PairwiseGame;
use layerprune_core::{Game, Mask};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `count` masks of `num_blocks` blocks, stratified like the published sampler: the number of
/// removed blocks is drawn from `removed_counts`, the removed set uniformly.
pub fn stratified_masks(
    num_blocks: usize,
    removed_counts: &[usize],
    count: usize,
    seed: u64,
) -> Vec<Mask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut blocks: Vec<usize> = (0..num_blocks).collect();
    (0..count)
        .map(|k| {
            let removed = removed_counts[k % removed_counts.len()];
            blocks.shuffle(&mut rng);
            Mask::from_removed(num_blocks, &blocks[..removed]).unwrap()
        })
        .collect()
}

/// A pairwise game with random linear terms in [−1, 1] and pair terms in [−0.5, 0.5].
pub fn random_pairwise_game(num_blocks: usize, seed: u64) -> PairwiseGame {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let linear = (0..num_blocks)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let mut pairs = vec![vec![0.0; num_blocks]; num_blocks];
    for i in 0..num_blocks {
        for j in i + 1..num_blocks {
            let w = rng.random_range(-0.5..0.5);
            pairs[i][j] = w;
            pairs[j][i] = w;
        }
    }
    PairwiseGame {
        linear,
        pairs,
        base: 0.7,
    }
}

/// A smooth utility in (0, 1] that only grows as blocks are kept, shaped like
/// PPL_full / PPL_mask: exp(−Σ_removed cost_i − Σ_removed pairs synergy_ij).
pub struct SmoothUtility {
    pub costs: Vec<f64>,
    pub synergy: Vec<Vec<f64>>,
}

impl SmoothUtility {
    pub fn new(num_blocks: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let costs = (0..num_blocks)
            .map(|_| rng.random_range(0.02..0.25))
            .collect();
        let mut synergy = vec![vec![0.0; num_blocks]; num_blocks];
        for i in 0..num_blocks {
            for j in i + 1..num_blocks {
                let s = rng.random_range(0.0..0.03);
                synergy[i][j] = s;
                synergy[j][i] = s;
            }
        }
        SmoothUtility { costs, synergy }
    }

    pub fn value(&self, mask: &Mask) -> f64 {
        let removed = mask.removed_blocks();
        let mut loss = 0.0;
        for (a, &i) in removed.iter().enumerate() {
            loss += self.costs[i];
            for &j in &removed[a + 1..] {
                loss += self.synergy[i][j];
            }
        }
        (-loss).exp()
    }

    pub fn values(&self, masks: &[Mask]) -> Vec<f64> {
        masks.iter().map(|m| self.value(m)).collect()
    }
}

pub fn game_values(game: &mut dyn Game, masks: &[Mask]) -> Vec<f64> {
    game.values(masks).unwrap()
}
