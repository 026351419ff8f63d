//! SLEB (Song et al., 2024): greedy block removal measured on the LLM itself.

use layerprune_core::{CountingGame, Game, Mask};

use crate::race::{race_values, Race};
use crate::{removable_blocks, SelectionError};

/// The result of [`sleb`].
#[derive(Clone, Debug, PartialEq)]
pub struct SlebResult {
    /// Blocks in the order they were removed; its first j entries are SLEB's plan for k = j.
    pub removal_order: Vec<usize>,
    /// The game's value of the model after each removal.
    pub values_after: Vec<f64>,
    /// Distinct masks valued by the game up to and including each removal step: the LLM
    /// evaluations the plan for k = j cost is `evaluations_after[j - 1]`.
    pub evaluations_after: Vec<usize>,
}

impl SlebResult {
    /// The first `k` removed blocks, ascending.
    pub fn removed_blocks(&self, k: usize) -> Vec<usize> {
        let mut removed = self.removal_order[..k.min(self.removal_order.len())].to_vec();
        removed.sort_unstable();
        removed
    }

    /// Distinct evaluations the whole run used (≈ k·L − k(k−1)/2).
    pub fn llm_evaluations(&self) -> usize {
        self.evaluations_after.last().copied().unwrap_or(0)
    }
}

/// Removes `k` blocks one at a time: at each step every remaining removable block is removed
/// tentatively (on top of those already removed), the game values all those masks in one
/// batch, and the block whose removal leaves the highest value (hurts least) is removed for
/// good. Ties go to the lower block index. `game` is the LLM in practice (e.g. minus the NLL),
/// so this costs Σ_{t<k} (P − t) evaluations for P removable blocks. With a `race`, each step's
/// candidates are raced over the calibration windows ([`crate::race`]): the clearly worse are
/// dropped after a few windows, and the block is chosen among the rest by the same rule.
pub fn sleb(
    game: &mut dyn Game,
    k: usize,
    fixed: &[usize],
    race: Option<&Race>,
) -> Result<SlebResult, SelectionError> {
    let num_blocks = game.num_players();
    let mut remaining = removable_blocks(num_blocks, fixed, k)?;
    let mut game = CountingGame::new(game);
    let mut current = Mask::full(num_blocks);
    let mut result = SlebResult {
        removal_order: Vec::with_capacity(k),
        values_after: Vec::with_capacity(k),
        evaluations_after: Vec::with_capacity(k),
    };
    for step in 0..k {
        let masks: Vec<Mask> = remaining
            .iter()
            .map(|&block| current.with(block, false))
            .collect();
        let values = race_values(&mut game, &masks, race)?;
        // A NaN value (a diverged model) or a candidate dropped by the race never wins; among
        // equals the lower block goes first.
        let values: Vec<f64> = values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect();
        let best = (0..remaining.len())
            .filter(|&i| !values[i].is_nan())
            .max_by(|&a, &b| values[a].total_cmp(&values[b]).then(b.cmp(&a)))
            .ok_or_else(|| {
                SelectionError::Game("every candidate removal has a NaN value".into())
            })?;
        let block = remaining.remove(best);
        current.set(block, false);
        result.removal_order.push(block);
        result.values_after.push(values[best]);
        result.evaluations_after.push(game.evaluations());
        tracing::info!(
            "sleb: k={k}, {}/{k} blocks removed (block {block}, value {:.6}), {} evaluations",
            step + 1,
            values[best],
            game.evaluations()
        );
    }
    Ok(result)
}
