//! Which blocks take part in the game, and the lift between player masks and block masks.
//!
//! A user may fix some blocks as always kept (the first block of most LLMs, say): the game is
//! then played over the other blocks, the players. Samplers, estimators and selection rules
//! work in *player space* (a mask with one entry per player); the LLM and every table work in
//! *block space* (one entry per block of the model). [`Players::lift`] and [`Players::lower`]
//! are the one place the two meet, and [`PlayerGame`] plays a block game over its players.

use crate::{Game, GameError, Mask};

/// Why a player set, or a mask against it, is not valid.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PlayersError {
    #[error("fixed block {block} is out of range: {}", numbered(*num_blocks))]
    OutOfRange { block: usize, num_blocks: usize },
    /// A block listed as a player ([`Players::from_blocks`]) that the model does not have.
    #[error("player block {block} is out of range: {}", numbered(*num_blocks))]
    PlayerOutOfRange { block: usize, num_blocks: usize },
    #[error("block {block} is listed twice")]
    Repeated { block: usize },
    #[error(
        "no players: {}",
        if *num_blocks == 0 {
            "the model has no blocks".to_string()
        } else {
            format!("all {num_blocks} blocks of the model are fixed as kept")
        }
    )]
    NoPlayers { num_blocks: usize },
    #[error(
        "a model of {num_blocks} blocks: at most {} are supported",
        crate::MAX_BLOCKS
    )]
    TooManyBlocks { num_blocks: usize },
    #[error("mask {mask} has {found} entries; this game has {expected}")]
    WrongLength {
        mask: String,
        found: usize,
        expected: usize,
    },
    #[error("mask {mask} removes block {block}, which is fixed (not a player)")]
    RemovesFixed { mask: String, block: usize },
    #[error(
        "cannot remove {k} blocks: only {players} of the {num_blocks} blocks are players \
         ({fixed} fixed), and at least one must stay"
    )]
    TooManyRemoved {
        k: usize,
        players: usize,
        num_blocks: usize,
        fixed: usize,
    },
}

/// The blocks a model of `num_blocks` blocks has, for an out-of-range message.
fn numbered(num_blocks: usize) -> String {
    match num_blocks {
        0 => "the model has no blocks".to_string(),
        n => format!("a model of {n} blocks has blocks 0 to {}", n - 1),
    }
}

/// The blocks of a model that are players of the game; every other block is fixed and kept in
/// every mask. Player `p` is block `blocks()[p]`; both lists are ascending, so a player set has
/// one spelling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Players {
    num_blocks: usize,
    fixed_blocks: Vec<usize>,
    blocks: Vec<usize>,
}

impl Players {
    /// Every block is a player.
    pub fn all(num_blocks: usize) -> Self {
        Players {
            num_blocks,
            fixed_blocks: Vec::new(),
            blocks: (0..num_blocks).collect(),
        }
    }

    /// The game over `num_blocks` blocks with `fixed_blocks` always kept (a block listed twice
    /// is fixed once). Fails when a fixed block is out of range or no player is left.
    pub fn new(num_blocks: usize, fixed_blocks: &[usize]) -> Result<Self, PlayersError> {
        check_num_blocks(num_blocks)?;
        if let Some(&block) = fixed_blocks.iter().find(|&&b| b >= num_blocks) {
            return Err(PlayersError::OutOfRange { block, num_blocks });
        }
        let mut fixed = fixed_blocks.to_vec();
        fixed.sort_unstable();
        fixed.dedup();
        let blocks: Vec<usize> = (0..num_blocks)
            .filter(|b| fixed.binary_search(b).is_err())
            .collect();
        if blocks.is_empty() {
            return Err(PlayersError::NoPlayers { num_blocks });
        }
        Ok(Players {
            num_blocks,
            fixed_blocks: fixed,
            blocks,
        })
    }

    /// The listed blocks are the players (each once); the rest are fixed.
    pub fn from_blocks(num_blocks: usize, mut blocks: Vec<usize>) -> Result<Self, PlayersError> {
        check_num_blocks(num_blocks)?;
        blocks.sort_unstable();
        if let Some(&block) = blocks.iter().find(|&&b| b >= num_blocks) {
            return Err(PlayersError::PlayerOutOfRange { block, num_blocks });
        }
        if let Some(w) = blocks.windows(2).find(|w| w[0] == w[1]) {
            return Err(PlayersError::Repeated { block: w[0] });
        }
        if blocks.is_empty() {
            return Err(PlayersError::NoPlayers { num_blocks });
        }
        let fixed_blocks = (0..num_blocks)
            .filter(|b| blocks.binary_search(b).is_err())
            .collect();
        Ok(Players {
            num_blocks,
            fixed_blocks,
            blocks,
        })
    }

    /// Number of players.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Always false for a constructed set (a game needs a player); here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// The block of each player, ascending.
    pub fn blocks(&self) -> &[usize] {
        &self.blocks
    }

    /// The blocks always kept, ascending.
    pub fn fixed_blocks(&self) -> &[usize] {
        &self.fixed_blocks
    }

    /// Checks that `k` players can be removed: at least one player must stay.
    pub fn check_removal(&self, k: usize) -> Result<(), PlayersError> {
        if k >= self.len() {
            return Err(PlayersError::TooManyRemoved {
                k,
                players: self.len(),
                num_blocks: self.num_blocks,
                fixed: self.fixed_blocks.len(),
            });
        }
        Ok(())
    }

    /// The block mask of a player mask: fixed blocks kept.
    pub fn lift(&self, player_mask: &Mask) -> Mask {
        self.lift_onto(&Mask::full(self.num_blocks), player_mask)
    }

    /// The block mask of a player mask with the non-players as in `base` (kept, or already
    /// removed, as in iterative removal's later rounds).
    pub fn lift_onto(&self, base: &Mask, player_mask: &Mask) -> Mask {
        let mut block_mask = base.clone();
        for (player, &block) in self.blocks.iter().enumerate() {
            block_mask.set(block, player_mask.is_kept(player));
        }
        block_mask
    }

    /// The player mask of a block mask; fails when the mask has the wrong length or removes a
    /// fixed block (such a mask is outside this game).
    pub fn lower(&self, block_mask: &Mask) -> Result<Mask, PlayersError> {
        if block_mask.num_blocks() != self.num_blocks {
            return Err(PlayersError::WrongLength {
                mask: block_mask.id(),
                found: block_mask.num_blocks(),
                expected: self.num_blocks,
            });
        }
        if let Some(&block) = self.fixed_blocks.iter().find(|&&b| !block_mask.is_kept(b)) {
            return Err(PlayersError::RemovesFixed {
                mask: block_mask.id(),
                block,
            });
        }
        Ok(Mask::from_kept(
            self.blocks.iter().map(|&b| block_mask.is_kept(b)).collect(),
        ))
    }

    /// The full model with the given players (indices into [`Players::blocks`]) removed.
    pub fn mask_removing(&self, removed_players: impl IntoIterator<Item = usize>) -> Mask {
        let mut mask = Mask::full(self.num_blocks);
        for player in removed_players {
            mask.set(self.blocks[player], false);
        }
        mask
    }

    /// The mask keeping the fixed blocks and only the given players.
    pub fn mask_keeping(&self, kept_players: impl IntoIterator<Item = usize>) -> Mask {
        let mut mask = self.mask_removing(0..self.len());
        for player in kept_players {
            mask.set(self.blocks[player], true);
        }
        mask
    }

    /// Number of players a block mask removes: its stratum.
    pub fn num_removed_players(&self, mask: &Mask) -> usize {
        self.blocks.iter().filter(|&&b| !mask.is_kept(b)).count()
    }

    /// Whether a block mask keeps every fixed block, i.e. is a coalition of this game.
    pub fn keeps_fixed(&self, mask: &Mask) -> bool {
        self.fixed_blocks.iter().all(|&b| mask.is_kept(b))
    }

    /// The complementary coalition of a block mask: every player flipped, fixed blocks kept.
    pub fn complement(&self, mask: &Mask) -> Mask {
        let mut flipped = mask.clone();
        for &block in &self.blocks {
            flipped.set(block, !mask.is_kept(block));
        }
        flipped
    }
}

/// Refuses a model of more than [`MAX_BLOCKS`](crate::MAX_BLOCKS) blocks: a count read from a
/// file or a flag, which a player set of that many blocks (every block listed) would otherwise
/// exhaust memory on, or abort the process with.
fn check_num_blocks(num_blocks: usize) -> Result<(), PlayersError> {
    if num_blocks > crate::MAX_BLOCKS {
        return Err(PlayersError::TooManyBlocks { num_blocks });
    }
    Ok(())
}

/// A game over the players of a block game: player masks are lifted to block masks (fixed
/// blocks kept) before the inner game values them.
pub struct PlayerGame<G> {
    inner: G,
    players: Players,
    /// What the non-players are: kept (the full mask) unless built [`PlayerGame::on_base`].
    base: Mask,
}

impl<G: Game> PlayerGame<G> {
    /// Fails when the inner game is not over the player set's blocks.
    pub fn new(inner: G, players: Players) -> Result<Self, PlayersError> {
        if inner.num_players() != players.num_blocks() {
            return Err(PlayersError::WrongLength {
                mask: "(the game)".into(),
                found: inner.num_players(),
                expected: players.num_blocks(),
            });
        }
        let base = Mask::full(players.num_blocks());
        Ok(PlayerGame {
            inner,
            players,
            base,
        })
    }

    /// The game over `players` with every other block as in `base`.
    pub fn on_base(inner: G, players: Players, base: Mask) -> Result<Self, PlayersError> {
        if base.num_blocks() != players.num_blocks() {
            return Err(PlayersError::WrongLength {
                mask: base.id(),
                found: base.num_blocks(),
                expected: players.num_blocks(),
            });
        }
        let mut game = PlayerGame::new(inner, players)?;
        game.base = base;
        Ok(game)
    }

    /// Each player mask as the inner game's block mask.
    fn lift_all(&self, masks: &[Mask]) -> Result<Vec<Mask>, GameError> {
        masks
            .iter()
            .map(|m| {
                m.check_len(self.players.len())?;
                Ok(self.players.lift_onto(&self.base, m))
            })
            .collect()
    }
}

impl<G: Game> Game for PlayerGame<G> {
    fn num_players(&self) -> usize {
        self.players.len()
    }

    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, GameError> {
        let block_masks = self.lift_all(masks)?;
        self.inner.values(&block_masks)
    }

    fn window_values(&self, mask: &Mask) -> Option<Vec<f64>> {
        mask.check_len(self.players.len()).ok()?;
        self.inner
            .window_values(&self.players.lift_onto(&self.base, mask))
    }

    fn num_windows(&self) -> Option<usize> {
        self.inner.num_windows()
    }

    fn values_on_windows(
        &mut self,
        masks: &[Mask],
        windows: std::ops::Range<usize>,
    ) -> Result<Vec<Vec<f64>>, GameError> {
        let block_masks = self.lift_all(masks)?;
        self.inner.values_on_windows(&block_masks, windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lift_and_lower_keep_the_fixed_blocks() {
        let players = Players::new(5, &[4, 0, 2, 4]).unwrap();
        assert_eq!(players.blocks(), &[1, 3]);
        assert_eq!(players.fixed_blocks(), &[0, 2, 4]);
        assert_eq!(Players::from_blocks(5, vec![3, 1]).unwrap(), players);
        let player_mask: Mask = "01".parse().unwrap();
        let block_mask = players.lift(&player_mask);
        assert_eq!(block_mask.id(), "10111");
        assert_eq!(players.lower(&block_mask).unwrap(), player_mask);
        let err = players.lower(&"01111".parse().unwrap()).unwrap_err();
        assert_eq!(
            err,
            PlayersError::RemovesFixed {
                mask: "01111".into(),
                block: 0
            }
        );
        assert!(matches!(
            players.lower(&"0111".parse().unwrap()),
            Err(PlayersError::WrongLength { found: 4, .. })
        ));
    }

    #[test]
    fn masks_built_here_keep_the_fixed_blocks() {
        let players = Players::new(6, &[4, 0]).unwrap();
        assert_eq!(players.mask_removing([0, 3]).id(), "101110");
        assert_eq!(players.mask_keeping([1]).id(), "101010");
        let mask = players.mask_removing([1]);
        assert_eq!(players.num_removed_players(&mask), 1);
        assert_eq!(players.complement(&mask).id(), "101010");
        assert!(players.keeps_fixed(&players.complement(&mask)));
        assert!(!players.keeps_fixed(&Mask::empty(6)));
    }

    #[test]
    fn bad_player_sets_are_refused() {
        assert_eq!(
            Players::new(4, &[1, 4]),
            Err(PlayersError::OutOfRange {
                block: 4,
                num_blocks: 4
            })
        );
        assert_eq!(
            Players::new(2, &[0, 1]),
            Err(PlayersError::NoPlayers { num_blocks: 2 })
        );
        assert_eq!(
            Players::from_blocks(3, vec![1, 1]),
            Err(PlayersError::Repeated { block: 1 })
        );
        assert!(Players::from_blocks(3, vec![3]).is_err());
        let players = Players::new(5, &[0, 4]).unwrap();
        assert!(players.check_removal(2).is_ok());
        let err = players.check_removal(3).unwrap_err();
        assert!(err.to_string().contains("2 fixed"), "{err}");
    }

    /// Counts and blocks from a flag or a file: each refused with a message that says what
    /// is wrong, and a count no model has is refused before anything is allocated for it.
    #[test]
    fn hostile_counts_and_blocks_get_clear_errors() {
        for huge in [crate::MAX_BLOCKS + 1, usize::MAX] {
            assert_eq!(
                Players::new(huge, &[0]),
                Err(PlayersError::TooManyBlocks { num_blocks: huge })
            );
            assert_eq!(
                Players::from_blocks(huge, vec![usize::MAX - 1]),
                Err(PlayersError::TooManyBlocks { num_blocks: huge })
            );
        }
        assert!(Players::new(crate::MAX_BLOCKS, &[]).is_ok());
        assert_eq!(
            Players::new(4, &[usize::MAX]).unwrap_err().to_string(),
            format!(
                "fixed block {} is out of range: a model of 4 blocks has blocks 0 to 3",
                usize::MAX
            )
        );
        // Blocks listed as players are called players, not fixed blocks.
        assert_eq!(
            Players::from_blocks(4, vec![1, 4]).unwrap_err().to_string(),
            "player block 4 is out of range: a model of 4 blocks has blocks 0 to 3"
        );
        // A model without blocks is said to be one, not numbered "0 to 0".
        assert_eq!(
            Players::new(0, &[0]).unwrap_err().to_string(),
            "fixed block 0 is out of range: the model has no blocks"
        );
        assert_eq!(
            Players::new(0, &[]).unwrap_err().to_string(),
            "no players: the model has no blocks"
        );
        assert_eq!(
            Players::new(2, &[1, 0, 1]).unwrap_err().to_string(),
            "no players: all 2 blocks of the model are fixed as kept"
        );
    }
}
