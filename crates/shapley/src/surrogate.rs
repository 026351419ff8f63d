//! The Shapley value of a surrogate model: exact when the surrogate has a closed form
//! (linear, quadratic), otherwise antithetic permutation sampling through the surrogate,
//! which is free to query, in large batches.

use layerprune_core::Game;

use crate::permutation::permutation_design_pairs;
use crate::progress::Progress;
use crate::values::{rounding_of, StandardErrors, ValueRange, CHUNK};
use crate::{rng_from_seed, Estimates, ShapleyError};

pub const SURROGATE_SHAPLEY: &str = "surrogate-shapley";

/// `closed_form` is the surrogate's exact Shapley values where it has them; otherwise
/// `pairs` antithetic permutation pairs are valued through `surrogate` (a game over the
/// players). `llm_evaluations` is left 0 for the caller to set (the evaluations the
/// surrogate was fitted on).
pub fn surrogate_shapley(
    surrogate: &mut dyn Game,
    closed_form: Option<Vec<f64>>,
    pairs: usize,
    seed: u64,
) -> Result<Estimates, ShapleyError> {
    let n = surrogate.num_players();
    if let Some(values) = closed_form {
        if values.len() != n {
            return Err(ShapleyError::Players(format!(
                "the surrogate's closed form has {} values for {n} players",
                values.len()
            )));
        }
        return Ok(Estimates::new(SURROGATE_SHAPLEY, values, None));
    }
    let (values, std_errors) = sampled_shapley(SURROGATE_SHAPLEY, surrogate, pairs, seed)?;
    Ok(Estimates::new(SURROGATE_SHAPLEY, values, std_errors))
}

/// The sampled half of [`surrogate_shapley`]: the values of `pairs` antithetic permutation
/// pairs through `surrogate`, and their standard errors; progress lines are labelled `name`.
pub(crate) fn sampled_shapley(
    name: &str,
    surrogate: &mut dyn Game,
    pairs: usize,
    seed: u64,
) -> Result<(Vec<f64>, Option<StandardErrors>), ShapleyError> {
    let n = surrogate.num_players();
    if pairs == 0 {
        return Err(ShapleyError::Design(
            "at least one permutation pair is needed".into(),
        ));
    }
    let design = permutation_design_pairs(n, pairs, &mut rng_from_seed(seed));
    let mut units = Vec::with_capacity(design.units.len());
    // The values of f met, for what counts as rounding in the units' spread.
    let mut value_range = ValueRange::default();
    // Batches of whole units: the chains' prefixes go to the surrogate in one call per batch.
    let units_per_batch = (CHUNK / (2 * (n + 1))).max(1);
    let mut progress = Progress::new(
        name,
        "permutation pairs valued",
        design.units.len(),
        units_per_batch,
    );
    for batch in design.units.chunks(units_per_batch) {
        let chains: Vec<usize> = batch.iter().flatten().copied().collect();
        let masks: Vec<_> = chains.iter().flat_map(|&c| design.chain_masks(c)).collect();
        let values = surrogate.values(&masks)?;
        value_range.include(&values);
        let first_chain = chains[0];
        units.extend(design.unit_marginals(batch, &mut |chain| {
            let offset = (chain - first_chain) * (n + 1);
            Ok(values[offset..offset + n + 1].to_vec())
        })?);
        progress.advance(batch.len());
    }
    let rounding = value_range
        .rounding()
        .max(rounding_of(units.iter().flatten()));
    Ok(design.mean_and_se(&units, None, rounding))
}
