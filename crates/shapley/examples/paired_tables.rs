//! Bias, noise and standard-error calibration of the paired estimators (kernelshap-paired,
//! regression-adjusted, regression-adjusted-exp) on the complement-pair tables
//! `sample-masks --strata 1,…,n−1 --complement-pairs` draws, each table read both ways: as
//! drawn with replacement (`PairedDesign::without_replacement` false: the plain MSR residual
//! and the iid standard errors, what every table got before 2026-12-06) and as drawn without
//! replacement (the finite-population residual means and per-class standard errors). The
//! figures of docs/estimators.md ("Measured, before and after 2026-12-06").
//!
//! cargo run -p layerprune-shapley --example paired_tables -- GAME PAIRS SEEDS [k,q,e]
//!
//! GAME: an evaluation table with every mask over its players (utility), or `syntheticN` for
//! `TripleGame::layer_pruning_like(N, 3)`. The last argument picks the estimators (k kernelshap,
//! q regression-adjusted, e regression-adjusted-exp; all by default). One line per estimator and
//! reading: RMSE against the exact Shapley values, bias (rms over players of the mean error over
//! the seeds), noise (rms of that mean's standard deviation), mean z² = (error / SE)² and the
//! share of 95 % intervals that hold the truth.

// Index loops read like the formulas they print.
#![allow(clippy::needless_range_loop)]

use anyhow::{bail, Context, Result};
use layerprune_core::{Game, Mask, RecordedGame};
use layerprune_shapley::exact::exact_values;
use layerprune_shapley::kernelshap::{kernelshap_estimate, PairedDesign};
use layerprune_shapley::regression::{regression_adjusted_kernel_estimate, SurrogateTarget};
use layerprune_shapley::synthetic::TripleGame;
use layerprune_shapley::{evaluate_masks, Estimates, Players};
use layerprune_tables::{read_evaluations, GameValue};

const ESTIMATORS: [(&str, &str); 3] = [
    ("k", "kernelshap-paired"),
    ("q", "regression-adjusted"),
    ("e", "regression-adjusted-exp"),
];

fn load(source: &str) -> Result<(RecordedGame, Players)> {
    if let Some(n) = source.strip_prefix("synthetic") {
        let n: usize = n.parse().context("syntheticN: N players")?;
        let mut game = TripleGame::layer_pruning_like(n, 3);
        let masks: Vec<Mask> = (0..1usize << n)
            .map(|bits| Mask::from_kept((0..n).map(|i| bits >> i & 1 == 1).collect()))
            .collect();
        let values = game.values(&masks).map_err(|e| anyhow::anyhow!(e))?;
        return Ok((
            RecordedGame::new(n, masks.into_iter().zip(values)).map_err(|e| anyhow::anyhow!(e))?,
            Players::all(n),
        ));
    }
    let table = read_evaluations(std::path::Path::new(source))?;
    let blocks: Vec<usize> = (0..table.num_blocks)
        .filter(|&b| table.rows.iter().any(|r| !r.mask.is_kept(b)))
        .collect();
    let players = Players::from_blocks(table.num_blocks, blocks)?;
    Ok((table.to_game(GameValue::Utility)?, players))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: paired_tables GAME PAIRS SEEDS [k,q,e]");
    }
    let source = &args[0];
    let pairs: usize = args[1].parse().context("PAIRS")?;
    let seeds: u64 = args[2].parse().context("SEEDS")?;
    let chosen: Vec<&str> = args
        .get(3)
        .map_or("k,q,e", String::as_str)
        .split(',')
        .collect();
    let (mut game, players) = load(source)?;
    let n = players.len();
    let truth = exact_values(&mut game, &players)?.0.values;
    // [estimator][reading]: per-seed errors and z scores
    let mut errors = vec![vec![Vec::<Vec<f64>>::new(); 2]; ESTIMATORS.len()];
    let mut z_scores = vec![vec![Vec::<f64>::new(); 2]; ESTIMATORS.len()];
    for seed in 0..seeds {
        let design = PairedDesign::sampled_complement_pairs(n, pairs, seed)?;
        let (rows, _) = evaluate_masks(&mut game, &players, &design.queries())?;
        for reading in 0..2 {
            let design = PairedDesign {
                without_replacement: reading == 1,
                ..design.clone()
            };
            for (k, (key, _)) in ESTIMATORS.iter().enumerate() {
                if !chosen.contains(key) {
                    continue;
                }
                let estimates: Estimates = match *key {
                    "k" => kernelshap_estimate(&design, &rows)?,
                    "q" => {
                        regression_adjusted_kernel_estimate(
                            &design,
                            &rows,
                            SurrogateTarget::Value,
                            seed,
                        )?
                        .estimates
                    }
                    _ => {
                        regression_adjusted_kernel_estimate(
                            &design,
                            &rows,
                            SurrogateTarget::LogValue,
                            seed,
                        )?
                        .estimates
                    }
                };
                let error: Vec<f64> = (0..n).map(|i| estimates.values[i] - truth[i]).collect();
                if let Some(se) = &estimates.std_errors {
                    z_scores[k][reading].extend((0..n).map(|i| error[i] / se[i]));
                }
                errors[k][reading].push(error);
            }
        }
    }
    for (k, (_, name)) in ESTIMATORS.iter().enumerate() {
        for reading in 0..2 {
            let runs = &errors[k][reading];
            if runs.is_empty() {
                continue;
            }
            let count = runs.len() as f64;
            let (mut mean, mut square) = (vec![0.0; n], vec![0.0; n]);
            for run in runs {
                for i in 0..n {
                    mean[i] += run[i] / count;
                    square[i] += run[i] * run[i] / count;
                }
            }
            let rms = |terms: Vec<f64>| (terms.iter().sum::<f64>() / n as f64).sqrt();
            let rmse = rms(square.clone());
            let bias = rms(mean.iter().map(|m| m * m).collect());
            let noise = rms((0..n)
                .map(|i| (square[i] - mean[i] * mean[i]) / (count - 1.0))
                .collect());
            let z: Vec<f64> = z_scores[k][reading]
                .iter()
                .copied()
                .filter(|z| z.is_finite())
                .collect();
            let z2 = z.iter().map(|z| z * z).sum::<f64>() / z.len() as f64;
            let cover = z.iter().filter(|z| z.abs() < 1.96).count() as f64 / z.len() as f64;
            println!(
                "{source} pairs {pairs} {name:24} {:22} runs {} rmse {rmse:.3e} bias {bias:.3e} \
                 noise {noise:.3e} mean-z2 {z2:.2} cover95 {cover:.2}",
                if reading == 0 {
                    "with replacement (old)"
                } else {
                    "without replacement"
                },
                runs.len(),
            );
        }
    }
    Ok(())
}
