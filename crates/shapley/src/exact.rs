//! Exact Shapley and Banzhaf values from all 2^n masks over the players (fixed blocks kept),
//! e.g. a fully enumerated evaluation table replayed as a game.

use layerprune_core::exact::exact_shapley;
use layerprune_core::{Game, Mask, RecordedGame};

use crate::{evaluate_masks_for, Estimates, Players, ShapleyError};

pub const EXACT_SHAPLEY: &str = "exact-shapley";
pub const EXACT_BANZHAF: &str = "exact-banzhaf";

/// Most players enumerated (2^20 masks).
pub const MAX_EXACT_PLAYERS: usize = 20;

/// Both exact values from one enumeration of the 2^n player masks: (Shapley, Banzhaf).
pub fn exact_values(
    game: &mut dyn Game,
    players: &Players,
) -> Result<(Estimates, Estimates), ShapleyError> {
    let n = players.len();
    if n > MAX_EXACT_PLAYERS {
        return Err(ShapleyError::Players(format!(
            "exact values enumerate 2^{n} masks; at most {MAX_EXACT_PLAYERS} players"
        )));
    }
    let masks = all_masks(n);
    let (rows, evaluations) = evaluate_masks_for(EXACT_SHAPLEY, game, players, &masks)?;
    let mut recorded = RecordedGame::new(n, rows)?;
    let shapley = exact_shapley(&mut recorded)?;
    let values = recorded.values(&masks)?;
    let banzhaf = exact_banzhaf_from_values(n, &values);
    Ok((
        Estimates::new(EXACT_SHAPLEY, shapley, None)
            .for_players(players)
            .with_evaluations(evaluations),
        Estimates::new(EXACT_BANZHAF, banzhaf, None)
            .for_players(players)
            .with_evaluations(evaluations),
    ))
}

/// Bit `i` of `bits` set = player `i` kept (the enumeration order of `exact_shapley`).
/// The 2^n masks over `num_players` players, mask `bits` keeping player i when bit i is set.
pub(crate) fn all_masks(num_players: usize) -> Vec<Mask> {
    (0..1usize << num_players)
        .map(|bits| mask_of_bits(num_players, bits))
        .collect()
}

fn mask_of_bits(num_players: usize, bits: usize) -> Mask {
    Mask::from_kept((0..num_players).map(|i| bits >> i & 1 == 1).collect())
}

/// β_i = 2^{−(n−1)} Σ_{S∌i} (v(S ∪ i) − v(S)) with `values[bits]` = v of [`mask_of_bits`].
fn exact_banzhaf_from_values(num_players: usize, values: &[f64]) -> Vec<f64> {
    let scale = 0.5f64.powi(num_players as i32 - 1);
    (0..num_players)
        .map(|i| {
            (0..values.len())
                .filter(|bits| bits >> i & 1 == 0)
                .map(|bits| values[bits | 1 << i] - values[bits])
                .sum::<f64>()
                * scale
        })
        .collect()
}
