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

/// A game measured on `windows` equal parts, like the LLM on its calibration windows: on
/// window w a mask is worth `inner`'s value plus a difficulty shared by every mask on that
/// window (`window_spread`) plus its own deviation there (`mask_spread`); both have mean zero
/// over the windows, so the mean over every window is exactly `inner`'s value. The deviations
/// are a seeded hash of the mask and the window: the same on every call.
#[derive(Clone, Debug)]
pub struct WindowedGame<G> {
    pub inner: G,
    pub windows: usize,
    pub window_spread: f64,
    pub mask_spread: f64,
    pub seed: u64,
}

impl<G: Game> WindowedGame<G> {
    /// Uniform on [−1, 1), from the seed, a salt and the window.
    fn unit(&self, salt: u64, window: usize) -> f64 {
        // splitmix64's finaliser: a cheap, well-mixed, portable hash.
        let mut z = self
            .seed
            .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_add((window as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// `spread` × a deviation per window for `salt`, centred to mean zero over the windows.
    fn deviations(&self, salt: u64, spread: f64) -> Vec<f64> {
        let raw: Vec<f64> = (0..self.windows).map(|w| self.unit(salt, w)).collect();
        let mean = raw.iter().sum::<f64>() / self.windows as f64;
        raw.iter().map(|x| spread * (x - mean)).collect()
    }

    fn mask_salt(mask: &Mask) -> u64 {
        mask.kept_blocks()
            .iter()
            .fold(0x51_7CC1_B727_220A, |h, &b| {
                (h ^ (b as u64 + 1)).wrapping_mul(0x100_0000_01B3)
            })
            .wrapping_add(mask.num_blocks() as u64)
    }
}

impl<G: Game> Game for WindowedGame<G> {
    fn num_players(&self) -> usize {
        self.inner.num_players()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        self.inner.values(masks)
    }
    fn num_windows(&self) -> Option<usize> {
        Some(self.windows)
    }
    fn values_on_windows(
        &mut self,
        masks: &[Mask],
        windows: std::ops::Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        if windows.end > self.windows {
            return Err(format!("windows {windows:?} of {}", self.windows).into());
        }
        let values = self.inner.values(masks)?;
        let shared = self.deviations(0, self.window_spread);
        Ok(masks
            .iter()
            .zip(values)
            .map(|(mask, value)| {
                let own = self.deviations(Self::mask_salt(mask), self.mask_spread);
                windows
                    .clone()
                    .map(|w| value + shared[w] + own[w])
                    .collect()
            })
            .collect())
    }
}

pub use crate::exact::exact_shapley;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_windowed_game_averages_to_its_inner_value() {
        let mut game = WindowedGame {
            inner: AdditiveGame::new(vec![1.0, 2.0, 4.0], 0.5),
            windows: 6,
            window_spread: 3.0,
            mask_spread: 0.5,
            seed: 7,
        };
        let masks: Vec<Mask> = ["101", "011"].iter().map(|s| s.parse().unwrap()).collect();
        let whole = game.values(&masks).unwrap();
        let parts = game.values_on_windows(&masks, 0..6).unwrap();
        for (value, parts) in whole.iter().zip(&parts) {
            let mean = parts.iter().sum::<f64>() / 6.0;
            assert!((mean - value).abs() < 1e-12, "{mean} against {value}");
            // Spread out: the windows are not all the value.
            assert!(parts.iter().any(|p| (p - value).abs() > 0.1), "{parts:?}");
        }
        // The same every time, and a range is a slice of the whole.
        assert_eq!(
            game.values_on_windows(&masks, 2..4).unwrap()[1],
            parts[1][2..4]
        );
        // Two masks differ on a window by their own deviations only: the shared difficulty
        // (spread 3) cancels.
        let own_spread = parts[0]
            .iter()
            .zip(&parts[1])
            .map(|(a, b)| a - b - (whole[0] - whole[1]))
            .fold(0.0f64, |m, d| m.max(d.abs()));
        assert!(own_spread <= 4.0 * 0.5 + 1e-12, "{own_spread}");
        assert!(game.values_on_windows(&masks, 5..7).is_err());
    }

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
