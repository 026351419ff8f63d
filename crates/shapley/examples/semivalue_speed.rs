//! Times the published estimate through a quadratic surrogate: 80,000 base masks over 32
//! blocks (2.64 million surrogate queries). Target: under 1 s in the release profile.
//!
//! cargo run -p layerprune-shapley --example semivalue_speed

use std::time::Instant;

use layerprune_core::Game;
use layerprune_shapley::semivalue::{published_strata, semivalue_through, MaskDistribution};
use layerprune_shapley::synthetic::TripleGame;
use layerprune_shapley::{rng_from_seed, semivalue::semivalue_design, EstimatorOptions};
use layerprune_surrogate::{fit, FitOptions, SurrogateGame, SurrogateKind};

fn main() -> anyhow::Result<()> {
    let blocks = 32;
    // A quadratic surrogate fitted on 2,000 stratified masks of a layer-pruning-like game.
    let mut truth = TripleGame::layer_pruning_like(blocks, 1);
    let strata = MaskDistribution::Strata(published_strata(blocks));
    let training = semivalue_design(blocks, &strata, 2000, &mut rng_from_seed(7))?.base_masks;
    let targets = truth.values(&training).map_err(|e| anyhow::anyhow!(e))?;
    let surrogate = fit(
        SurrogateKind::Quadratic,
        &training,
        &targets,
        &FitOptions::default(),
    )?;
    let mut game = SurrogateGame(&surrogate);
    let start = Instant::now();
    // The published estimate's settings: its base masks and seed.
    let published = EstimatorOptions::default();
    let estimates = semivalue_through(
        &mut game,
        blocks,
        &strata,
        published.samples,
        published.seed,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "stratified-semivalue: {} base masks x {} queries over {blocks} blocks through a quadratic surrogate in {seconds:.3} s",
        published.samples,
        blocks + 1
    );
    println!(
        "largest estimate {:.4}",
        estimates.values.iter().copied().fold(f64::MIN, f64::max)
    );
    Ok(())
}
