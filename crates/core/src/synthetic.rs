//! Games with known Shapley values, for testing estimators without a model.

use crate::{Game, GameError, Mask};

/// v(S) = base + Σ_{i∈S} weight_i. Shapley value of i = weight_i.
#[derive(Clone, Debug)]
pub struct AdditiveGame {
    pub weights: Vec<f64>,
    pub base: f64,
}

impl AdditiveGame {
    pub fn new(weights: Vec<f64>, base: f64) -> Self {
        AdditiveGame { weights, base }
    }
}

impl Game for AdditiveGame {
    fn num_players(&self) -> usize {
        self.weights.len()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        masks
            .iter()
            .map(|m| {
                m.check_len(self.weights.len())?;
                Ok(self.base
                    + m.kept_blocks()
                        .iter()
                        .map(|&i| self.weights[i])
                        .sum::<f64>())
            })
            .collect()
    }
}

/// v(S) = base + Σ_{i∈S} w_i + Σ_{i<j, i,j∈S} w_ij. Shapley value of i = w_i + ½ Σ_j w_ij.
#[derive(Clone, Debug)]
pub struct PairwiseGame {
    pub linear: Vec<f64>,
    /// Symmetric, zero diagonal; `pairs[i][j]` is the interaction of blocks i and j.
    pub pairs: Vec<Vec<f64>>,
    pub base: f64,
}

impl PairwiseGame {
    pub fn shapley_values(&self) -> Vec<f64> {
        (0..self.linear.len())
            .map(|i| self.linear[i] + 0.5 * self.pairs[i].iter().sum::<f64>())
            .collect()
    }
}

impl Game for PairwiseGame {
    fn num_players(&self) -> usize {
        self.linear.len()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        masks
            .iter()
            .map(|m| {
                m.check_len(self.linear.len())?;
                let kept = m.kept_blocks();
                let mut v = self.base;
                for (a, &i) in kept.iter().enumerate() {
                    v += self.linear[i];
                    for &j in &kept[a + 1..] {
                        v += self.pairs[i][j];
                    }
                }
                Ok(v)
            })
            .collect()
    }
}

/// v(S) = 1 when the veto block is in S and at least `quorum` of the other blocks are,
/// else 0. Shapley values: the veto block takes the lion's share, the rest split the remainder
/// equally; computed exactly by [`VetoGame::shapley_values`].
#[derive(Clone, Debug)]
pub struct VetoGame {
    pub num_players: usize,
    pub veto_block: usize,
    pub quorum: usize,
}

impl VetoGame {
    /// Exact Shapley values by the permutation definition, counted combinatorially.
    pub fn shapley_values(&self) -> Vec<f64> {
        let n = self.num_players;
        let others = n - 1;
        // The veto block is pivotal when it arrives after at least `quorum` others: with it
        // at position p (0-based, uniform), p others precede it.
        let veto_share = (self.quorum..=others).count() as f64 / n as f64;
        let rest = if others == 0 {
            0.0
        } else {
            (1.0 - veto_share) / others as f64
        };
        (0..n)
            .map(|i| {
                if i == self.veto_block {
                    veto_share
                } else {
                    rest
                }
            })
            .collect()
    }
}

impl Game for VetoGame {
    fn num_players(&self) -> usize {
        self.num_players
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        masks
            .iter()
            .map(|m| {
                m.check_len(self.num_players)?;
                let others = m.num_kept() - usize::from(m.is_kept(self.veto_block));
                Ok(f64::from(u8::from(
                    m.is_kept(self.veto_block) && others >= self.quorum,
                )))
            })
            .collect()
    }
}

pub use crate::exact::exact_shapley;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_shapley_matches_closed_forms() {
        let mut pairs = vec![vec![0.0; 4]; 4];
        pairs[0][2] = 1.5;
        pairs[2][0] = 1.5;
        pairs[1][3] = -0.7;
        pairs[3][1] = -0.7;
        let mut game = PairwiseGame {
            linear: vec![0.3, -0.2, 1.0, 0.1],
            pairs,
            base: 2.0,
        };
        let exact = exact_shapley(&mut game).unwrap();
        for (a, b) in exact.iter().zip(game.shapley_values()) {
            assert!((a - b).abs() < 1e-12, "{exact:?}");
        }
        let mut veto = VetoGame {
            num_players: 5,
            veto_block: 2,
            quorum: 2,
        };
        let exact = exact_shapley(&mut veto).unwrap();
        for (a, b) in exact.iter().zip(veto.shapley_values()) {
            assert!((a - b).abs() < 1e-12, "{exact:?}");
        }
        assert!((exact.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
