//! The blocks that take part in the game.

use layerprune_core::Mask;

use crate::SamplingError;

/// The blocks of a model that are players of the game: all blocks except the ones fixed as
/// always kept. Player `i` is block `blocks()[i]`; masks built here always keep the fixed
/// blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Players {
    num_blocks: usize,
    fixed_blocks: Vec<usize>,
    player_blocks: Vec<usize>,
}

impl Players {
    /// The game over `num_blocks` blocks with `fixed_blocks` always kept (duplicates allowed).
    pub fn new(num_blocks: usize, fixed_blocks: &[usize]) -> Result<Self, SamplingError> {
        let mut fixed = fixed_blocks.to_vec();
        if let Some(&block) = fixed.iter().find(|&&block| block >= num_blocks) {
            return Err(SamplingError::FixedBlockOutOfRange { block, num_blocks });
        }
        fixed.sort_unstable();
        fixed.dedup();
        let player_blocks: Vec<usize> = (0..num_blocks)
            .filter(|block| fixed.binary_search(block).is_err())
            .collect();
        if player_blocks.is_empty() {
            return Err(SamplingError::NoPlayers { num_blocks });
        }
        Ok(Players {
            num_blocks,
            fixed_blocks: fixed,
            player_blocks,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The blocks always kept, ascending.
    pub fn fixed_blocks(&self) -> &[usize] {
        &self.fixed_blocks
    }

    /// The block of each player, ascending.
    pub fn blocks(&self) -> &[usize] {
        &self.player_blocks
    }

    /// Number of players.
    pub fn count(&self) -> usize {
        self.player_blocks.len()
    }

    /// The full model with the given players (indices into [`Players::blocks`]) removed.
    pub fn mask_removing(&self, removed_players: impl IntoIterator<Item = usize>) -> Mask {
        let mut mask = Mask::full(self.num_blocks);
        for player in removed_players {
            mask.set(self.player_blocks[player], false);
        }
        mask
    }

    /// The mask keeping the fixed blocks and only the given players.
    pub fn mask_keeping(&self, kept_players: impl IntoIterator<Item = usize>) -> Mask {
        let mut mask = self.mask_removing(0..self.count());
        for player in kept_players {
            mask.set(self.player_blocks[player], true);
        }
        mask
    }

    /// Number of players a mask removes: its stratum.
    pub fn num_removed_players(&self, mask: &Mask) -> usize {
        self.player_blocks
            .iter()
            .filter(|&&block| !mask.is_kept(block))
            .count()
    }

    /// Whether a mask of this model keeps every fixed block, i.e. is a coalition of this game.
    pub fn keeps_fixed(&self, mask: &Mask) -> bool {
        self.fixed_blocks.iter().all(|&block| mask.is_kept(block))
    }

    /// The complementary coalition: every player flipped, the fixed blocks still kept.
    pub fn complement(&self, mask: &Mask) -> Mask {
        let mut flipped = mask.clone();
        for &block in &self.player_blocks {
            flipped.set(block, !mask.is_kept(block));
        }
        flipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_blocks_stay_kept_in_every_construction() {
        let players = Players::new(6, &[4, 0, 4]).unwrap();
        assert_eq!(players.fixed_blocks(), &[0, 4]);
        assert_eq!(players.blocks(), &[1, 2, 3, 5]);
        assert_eq!(players.mask_removing([0, 3]).id(), "101110");
        assert_eq!(players.mask_keeping([1]).id(), "101010");
        let mask = players.mask_removing([1]);
        assert_eq!(players.num_removed_players(&mask), 1);
        assert_eq!(players.complement(&mask).id(), "101010");
        assert!(players.keeps_fixed(&players.complement(&mask)));
        assert!(!players.keeps_fixed(&Mask::empty(6)));
    }

    #[test]
    fn bad_fixed_blocks_are_reported() {
        assert_eq!(
            Players::new(4, &[1, 4]),
            Err(SamplingError::FixedBlockOutOfRange {
                block: 4,
                num_blocks: 4
            })
        );
        assert_eq!(
            Players::new(2, &[0, 1]),
            Err(SamplingError::NoPlayers { num_blocks: 2 })
        );
        let message = Players::new(4, &[7]).unwrap_err().to_string();
        assert!(message.contains("fixed block 7"), "{message}");
    }
}
