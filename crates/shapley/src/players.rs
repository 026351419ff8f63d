//! Which blocks are players, and the lift between player masks and block masks.

use layerprune_core::{Game, GameError, Mask};

use crate::ShapleyError;

/// The blocks that take part in the game; every other block of the model is fixed and
/// always kept. Player `p` is block `blocks()[p]`; blocks are stored in increasing order so a
/// player set has one spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Players {
    num_blocks: usize,
    blocks: Vec<usize>,
}

impl Players {
    /// Every block is a player.
    pub fn all(num_blocks: usize) -> Self {
        Players {
            num_blocks,
            blocks: (0..num_blocks).collect(),
        }
    }

    /// The listed blocks are players; the rest are kept in every mask.
    pub fn new(num_blocks: usize, mut blocks: Vec<usize>) -> Result<Self, ShapleyError> {
        blocks.sort_unstable();
        if let Some(&block) = blocks.iter().find(|&&b| b >= num_blocks) {
            return Err(ShapleyError::Players(format!(
                "block {block} is out of range for a model of {num_blocks} blocks"
            )));
        }
        if blocks.windows(2).any(|w| w[0] == w[1]) {
            return Err(ShapleyError::Players("a block is listed twice".into()));
        }
        Ok(Players { num_blocks, blocks })
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The block of each player.
    pub fn blocks(&self) -> &[usize] {
        &self.blocks
    }

    /// Blocks that are not players (always kept).
    pub fn fixed_blocks(&self) -> Vec<usize> {
        (0..self.num_blocks)
            .filter(|b| self.blocks.binary_search(b).is_err())
            .collect()
    }

    /// The block mask of a player mask: fixed blocks kept.
    pub fn to_block_mask(&self, player_mask: &Mask) -> Mask {
        let mut block_mask = Mask::full(self.num_blocks);
        for (player, &block) in self.blocks.iter().enumerate() {
            block_mask.set(block, player_mask.is_kept(player));
        }
        block_mask
    }

    /// The player mask of a block mask; fails when a fixed block is removed (such a mask is
    /// outside this game).
    pub fn to_player_mask(&self, block_mask: &Mask) -> Result<Mask, ShapleyError> {
        block_mask
            .check_len(self.num_blocks)
            .map_err(|e| ShapleyError::Players(format!("mask {block_mask}: {e}")))?;
        if let Some(block) = self
            .fixed_blocks()
            .into_iter()
            .find(|&b| !block_mask.is_kept(b))
        {
            return Err(ShapleyError::Players(format!(
                "mask {block_mask} removes block {block}, which is fixed (not a player)"
            )));
        }
        Ok(Mask::from_kept(
            self.blocks.iter().map(|&b| block_mask.is_kept(b)).collect(),
        ))
    }
}

/// A game over the players of a block game: player masks are lifted to block masks (fixed
/// blocks kept) before the inner game values them.
pub struct PlayerGame<G> {
    inner: G,
    players: Players,
}

impl<G: Game> PlayerGame<G> {
    pub fn new(inner: G, players: Players) -> Result<Self, ShapleyError> {
        if inner.num_players() != players.num_blocks() {
            return Err(ShapleyError::Players(format!(
                "the game has {} blocks but the player set is over {} blocks",
                inner.num_players(),
                players.num_blocks()
            )));
        }
        Ok(PlayerGame { inner, players })
    }
}

impl<G: Game> Game for PlayerGame<G> {
    fn num_players(&self) -> usize {
        self.players.len()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let block_masks = masks
            .iter()
            .map(|m| {
                m.check_len(self.players.len())?;
                Ok(self.players.to_block_mask(m))
            })
            .collect::<Result<Vec<_>, GameError>>()?;
        self.inner.values(&block_masks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifts_and_projects_with_fixed_blocks_kept() {
        let players = Players::new(5, vec![3, 1]).unwrap();
        assert_eq!(players.blocks(), &[1, 3]);
        assert_eq!(players.fixed_blocks(), vec![0, 2, 4]);
        let player_mask: Mask = "01".parse().unwrap();
        let block_mask = players.to_block_mask(&player_mask);
        assert_eq!(block_mask.id(), "10111");
        assert_eq!(players.to_player_mask(&block_mask).unwrap(), player_mask);
        let err = players
            .to_player_mask(&"01111".parse().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("block 0"), "{err}");
        assert!(Players::new(3, vec![3]).is_err());
        assert!(Players::new(3, vec![1, 1]).is_err());
    }
}
