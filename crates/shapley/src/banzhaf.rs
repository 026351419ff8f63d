//! The Banzhaf value β_i = 2^{−(n−1)} Σ_{S∌i} (v(S ∪ i) − v(S)) by maximum sample reuse:
//! masks uniform on {0,1}^n, and β_i estimated as the mean value of the masks keeping i
//! minus the mean value of those removing i, so every evaluation serves every player.

use layerprune_core::{Game, Mask};
use rand::Rng;

use crate::values::distinct_sorted;
use crate::{evaluate_masks_for, rng_from_seed, Estimates, Players, ShapleyError, ValueTable};

pub const BANZHAF_MSR: &str = "banzhaf-msr";

/// Uniform masks (drawn with replacement, so the distinct count can be below `budget`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniformDesign {
    pub num_players: usize,
    pub masks: Vec<Mask>,
}

pub fn uniform_design(num_players: usize, budget: usize, rng: &mut impl Rng) -> UniformDesign {
    UniformDesign {
        num_players,
        masks: (0..budget)
            .map(|_| Mask::from_kept((0..num_players).map(|_| rng.random_bool(0.5)).collect()))
            .collect(),
    }
}

impl UniformDesign {
    pub fn queries(&self) -> Vec<Mask> {
        distinct_sorted(self.masks.iter().cloned())
    }
}

/// MSR estimate; standard error sqrt(var_in/n_in + var_out/n_out) per player.
pub fn banzhaf_msr_estimate(
    design: &UniformDesign,
    rows: &[(Mask, f64)],
) -> Result<Estimates, ShapleyError> {
    let n = design.num_players;
    let table = ValueTable::from_rows(rows);
    let values = design
        .masks
        .iter()
        .map(|m| table.get(m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut estimates = vec![0.0; n];
    let mut std_errors = Some(vec![0.0; n]);
    for i in 0..n {
        let (inside, outside): (Vec<f64>, Vec<f64>) = {
            let (kept, removed): (Vec<_>, Vec<_>) = design
                .masks
                .iter()
                .zip(&values)
                .partition(|(m, _)| m.is_kept(i));
            (
                kept.into_iter().map(|(_, &v)| v).collect(),
                removed.into_iter().map(|(_, &v)| v).collect(),
            )
        };
        let moments = |group: &[f64]| {
            let count = group.len() as f64;
            let mean = group.iter().sum::<f64>() / count;
            let var = group.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0);
            (mean, var / count)
        };
        if inside.is_empty() || outside.is_empty() {
            return Err(ShapleyError::NeverVaries { player: i });
        }
        let (mean_in, var_in) = moments(&inside);
        let (mean_out, var_out) = moments(&outside);
        estimates[i] = mean_in - mean_out;
        if inside.len() < 2 || outside.len() < 2 {
            std_errors = None;
        } else if let Some(se) = std_errors.as_mut() {
            se[i] = (var_in + var_out).sqrt();
        }
    }
    Ok(Estimates::new(BANZHAF_MSR, estimates, std_errors))
}

/// Design, evaluation through `game` (fixed blocks kept) and estimate in one call.
pub fn run_banzhaf_msr(
    game: &mut dyn Game,
    players: &Players,
    budget: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let design = uniform_design(players.len(), budget, &mut rng_from_seed(seed));
    let (rows, evaluations) = evaluate_masks_for(BANZHAF_MSR, game, players, &design.queries())?;
    Ok(banzhaf_msr_estimate(&design, &rows)?
        .for_players(players)
        .with_evaluations(evaluations))
}
