//! Replay benchmark: how close each estimator gets to the exact Shapley values for a given
//! number of LLM evaluations.
//!
//! Input: an evaluation table holding all 2^n masks over n players (fixed blocks kept), or
//! `--synthetic` for `TripleGame::layer_pruning_like` (a pairwise game plus strong
//! third-order terms; see docs/estimators.md). Every estimator replays its masks from the
//! table (a mask outside the table is an error), for each budget (the most distinct masks it
//! may use) and seed. Output folder: `results.csv` and `summary.md`
//! (`tools/report/plots.py estimator-rmse` draws `results.csv`). Besides the error, the
//! calibration of the standard errors: the mean of (error/SE)² over the players (1 when the
//! standard errors are right) and the share of 95 % intervals (the score tables' ± t SE,
//! `Estimates::ci95`) that miss the truth (0.05 when they are right), per run and averaged, and
//! pooled over the runs block by block beside the normal intervals' (± 1.96 SE): the pooled
//! share with the worst and the best block's. And the bias the seeds do not average out: the
//! mean error of the block with the largest exact value, and the largest over the blocks.
//!
//! cargo run -p layerprune-shapley --example estimator_accuracy -- --synthetic --out bench/

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Parser;
use layerprune_core::{Game, Mask, RecordedGame};
use layerprune_shapley::exact::exact_values;
use layerprune_shapley::semivalue::{exact_semivalue, published_strata};
use layerprune_shapley::synthetic::TripleGame;
use layerprune_shapley::{run_estimator_with_fit, Estimator, Players};
use layerprune_surrogate::spearman;
use layerprune_tables::{read_evaluations, GameValue};

#[derive(Parser, Debug)]
struct Args {
    /// Evaluation table with every mask over the players.
    #[arg(
        long,
        conflicts_with = "synthetic",
        required_unless_present = "synthetic"
    )]
    evaluations: Option<PathBuf>,
    /// Use the synthetic layer-pruning-like game instead of a table.
    #[arg(long)]
    synthetic: bool,
    /// Players of the synthetic game.
    #[arg(long, default_value_t = 12)]
    players: usize,
    /// Seed of the synthetic game (the tests use 3).
    #[arg(long, default_value_t = 2026)]
    game_seed: u64,
    /// Value column of the evaluation table: utility or neg-nll.
    #[arg(long, default_value = "utility")]
    value: GameValue,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,128,256,512,1024,2048"
    )]
    budgets: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    seeds: u64,
    /// The estimators to run (names as `shapley --estimator` takes them); all budgeted ones by
    /// default.
    #[arg(long, value_delimiter = ',')]
    estimators: Vec<Estimator>,
    #[arg(long)]
    out: PathBuf,
}

struct Row {
    estimator: &'static str,
    budget: usize,
    seed: u64,
    evaluations: usize,
    rmse: f64,
    spearman: f64,
    rmse_own: f64,
    /// Mean (error/SE)² against the estimator's own estimand (`Estimates::mean_z2`).
    z2: Option<f64>,
    /// Share of 95 % intervals that miss it (`Estimates::miss95`).
    miss95: Option<f64>,
    /// Whether each player's 95 % interval misses it (`Estimates::misses95`).
    misses95: Option<Vec<bool>>,
    /// The same of the normal interval, ± 1.96 SE whatever the degrees of freedom.
    misses95_normal: Option<Vec<bool>>,
    /// Held-out R² of the regression-adjusted estimators' surrogate.
    surrogate_r2: Option<f64>,
    /// The estimates minus the estimator's own estimand, player by player.
    errors: Vec<f64>,
}

fn rmse(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

/// The game over all blocks, and the players (blocks removed in some mask of the table).
fn load(args: &Args) -> Result<(RecordedGame, Players)> {
    if args.synthetic {
        let n = args.players;
        let mut game = TripleGame::layer_pruning_like(n, args.game_seed);
        let masks: Vec<Mask> = (0..1usize << n)
            .map(|bits| Mask::from_kept((0..n).map(|i| bits >> i & 1 == 1).collect()))
            .collect();
        let values = game.values(&masks).map_err(|e| anyhow::anyhow!(e))?;
        let recorded =
            RecordedGame::new(n, masks.into_iter().zip(values)).map_err(|e| anyhow::anyhow!(e))?;
        return Ok((recorded, Players::all(n)));
    }
    let Some(path) = &args.evaluations else {
        bail!("give --evaluations FILE or --synthetic");
    };
    let table = read_evaluations(path)?;
    let blocks: Vec<usize> = (0..table.num_blocks)
        .filter(|&b| table.rows.iter().any(|r| !r.mask.is_kept(b)))
        .collect();
    let players = Players::from_blocks(table.num_blocks, blocks)?;
    if table.rows.len() < 1usize << players.len() {
        bail!(
            "{}: {} rows, but the {} players varied in it need all {} masks",
            path.display(),
            table.rows.len(),
            players.len(),
            1usize << players.len()
        );
    }
    Ok((table.to_game(args.value)?, players))
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (mut game, players) = load(&args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (shapley, banzhaf) = exact_values(&mut game, &players)?;
    let semivalue = exact_semivalue(&mut game, &players, &published_strata(players.len()))?;
    println!(
        "{} players; exact Shapley values: {:?}",
        players.len(),
        shapley
            .values
            .iter()
            .map(|v| format!("{v:.4}"))
            .collect::<Vec<_>>()
    );

    let kinds: Vec<Estimator> = if args.estimators.is_empty() {
        Estimator::BUDGETED.to_vec()
    } else {
        args.estimators.clone()
    };
    let mut rows = Vec::new();
    for &budget in &args.budgets {
        for seed in 0..args.seeds {
            for &kind in &kinds {
                let (estimates, surrogate_r2) =
                    match run_estimator_with_fit(kind, &mut game, &players, budget, seed) {
                        Ok(result) => result,
                        Err(error) => {
                            eprintln!("{kind} at budget {budget}, seed {seed}: skipped ({error})");
                            continue;
                        }
                    };
                let own = match kind {
                    Estimator::StratifiedSemivalue => &semivalue.values,
                    Estimator::BanzhafMsr => &banzhaf.values,
                    _ => &shapley.values,
                };
                rows.push(Row {
                    estimator: kind.name(),
                    budget,
                    seed,
                    evaluations: estimates.llm_evaluations,
                    rmse: rmse(&estimates.values, &shapley.values),
                    spearman: spearman(&estimates.values, &shapley.values),
                    rmse_own: rmse(&estimates.values, own),
                    z2: estimates.mean_z2(own),
                    miss95: estimates.miss95(own),
                    misses95: estimates.misses95(own),
                    misses95_normal: estimates.misses95_with(own, |_| 1.96),
                    surrogate_r2,
                    errors: estimates
                        .values
                        .iter()
                        .zip(own)
                        .map(|(e, t)| e - t)
                        .collect(),
                });
            }
        }
    }

    let mut csv = String::from(
        "estimator,budget,seed,evaluations,rmse,spearman,rmse_own,surrogate_r2,z2,miss95\n",
    );
    for r in &rows {
        writeln!(
            csv,
            "{},{},{},{},{:.6e},{:.4},{:.6e},{},{},{}",
            r.estimator,
            r.budget,
            r.seed,
            r.evaluations,
            r.rmse,
            r.spearman,
            r.rmse_own,
            r.surrogate_r2
                .map_or(String::new(), |r2| format!("{r2:.5}")),
            r.z2.map_or(String::new(), |z2| format!("{z2:.4}")),
            r.miss95.map_or(String::new(), |m| format!("{m:.4}"))
        )?;
    }
    write_atomically(&args.out.join("results.csv"), &csv)?;

    // Mean over seeds per (estimator, budget).
    let mut means: BTreeMap<(&str, usize), (f64, f64, f64, f64)> = BTreeMap::new();
    for r in &rows {
        let entry = means.entry((r.estimator, r.budget)).or_default();
        entry.0 += r.rmse;
        entry.1 += r.spearman;
        entry.2 += r.rmse_own;
        entry.3 += 1.0;
    }
    let mean = |name: &str, budget: usize| {
        means
            .get(&(name, budget))
            .map(|&(rmse, rho, own, count)| (rmse / count, rho / count, own / count))
    };
    let mut summary = format!(
        "# Estimator accuracy ({} players, {} seeds, RMSE against the exact Shapley values)\n\n",
        players.len(),
        args.seeds
    );
    let names: Vec<&str> = kinds.iter().map(|kind| kind.name()).collect();
    let header = |title: &str| table_head(title, &args.budgets);
    type Cell = fn(f64, f64, f64, Option<(f64, f64, f64)>) -> String;
    let tables: [(&str, Cell); 4] = [
        ("Mean RMSE", |rmse, _, _, _| format!("{rmse:.2e}")),
        (
            "Ratio of mean RMSE to permutation sampling",
            |rmse, _, _, base| base.map_or("–".into(), |(b, _, _)| format!("{:.2}", rmse / b)),
        ),
        (
            "Mean Spearman correlation with the exact Shapley values",
            |_, rho, _, _| format!("{rho:.3}"),
        ),
        (
            "Mean RMSE against the estimator's own estimand (semivalue / Banzhaf / Shapley)",
            |_, _, own, _| format!("{own:.2e}"),
        ),
    ];
    for (title, cell) in tables {
        summary += &header(title);
        for &kind in &kinds {
            summary += &format!("| {} |", kind.name());
            for &b in &args.budgets {
                let base = mean(Estimator::Permutation.name(), b);
                summary += &match mean(kind.name(), b) {
                    Some((rmse, rho, own)) => format!(" {} |", cell(rmse, rho, own, base)),
                    None => " – |".into(),
                };
            }
            summary += "\n";
        }
        summary += "\n";
    }
    summary += &per_run_mean_table(
        "Mean (error/SE)² over the runs and players (1: calibrated standard errors; \
         against the estimator's own estimand)",
        &names,
        &rows,
        &args.budgets,
        |r| r.z2,
    );
    summary += &per_run_mean_table(
        "Share of 95 % intervals (estimate ± t SE) that miss the estimator's own estimand \
         (0.05: calibrated)",
        &names,
        &rows,
        &args.budgets,
        |r| r.miss95,
    );
    summary += &per_block_miss_table(
        "Share of 95 % intervals (estimate ± t SE, Student's t of the SE's degrees of \
         freedom) that miss, pooled (worst block, best block)",
        &names,
        &rows,
        &args.budgets,
        players.blocks(),
        |r| r.misses95.as_ref(),
    );
    summary += &per_block_miss_table(
        "Share of normal 95 % intervals (estimate ± 1.96 SE) that miss, pooled (worst block, \
         best block)",
        &names,
        &rows,
        &args.budgets,
        players.blocks(),
        |r| r.misses95_normal.as_ref(),
    );
    let top = (0..shapley.values.len())
        .max_by(|&a, &b| shapley.values[a].abs().total_cmp(&shapley.values[b].abs()))
        .unwrap_or(0);
    summary += &bias_table(
        &format!(
            "Mean error over the seeds (bias) of the block with the largest exact Shapley value \
             (b{}), and the largest |mean error| over the blocks (against the own estimand)",
            players.blocks()[top]
        ),
        &names,
        &rows,
        &args.budgets,
        players.blocks(),
        top,
    );
    summary += &per_run_mean_table(
        "Mean held-out R² of the surrogate (regression-adjusted estimators)",
        &names,
        &rows,
        &args.budgets,
        |r| r.surrogate_r2,
    );
    write_atomically(&args.out.join("summary.md"), &summary)?;
    print!("{summary}");

    println!("wrote results.csv and summary.md to {}", args.out.display());
    Ok(())
}

/// The share of 95 % intervals that miss the estimator's own estimand block by block, over the
/// runs that have standard errors: the pooled share and, in brackets, the worst and the best
/// block's (a pooled 5 % can hide blocks at 1 % and 19 %).
fn per_block_miss_table(
    title: &str,
    names: &[&str],
    rows: &[Row],
    budgets: &[usize],
    blocks: &[usize],
    misses: fn(&Row) -> Option<&Vec<bool>>,
) -> String {
    estimator_budget_table(title, names, rows, budgets, misses, |runs| {
        let shares: Vec<f64> = (0..blocks.len())
            .map(|p| runs.iter().filter(|m| m[p]).count() as f64 / runs.len() as f64)
            .collect();
        let pooled = shares.iter().sum::<f64>() / shares.len() as f64;
        let (worst, best) = shares.iter().enumerate().fold((0, 0), |(w, bst), (p, &s)| {
            (
                if s > shares[w] { p } else { w },
                if s < shares[bst] { p } else { bst },
            )
        });
        format!(
            " {:.1} % ({:.0} % b{}, {:.0} % b{}) |",
            100.0 * pooled,
            100.0 * shares[worst],
            blocks[worst],
            100.0 * shares[best],
            blocks[best]
        )
    })
}

/// The mean error over the runs of block `top`, and the largest |mean error| over the blocks:
/// a bias the seeds do not average out (the noise of such a mean is the block's sd / √runs).
fn bias_table(
    title: &str,
    names: &[&str],
    rows: &[Row],
    budgets: &[usize],
    blocks: &[usize],
    top: usize,
) -> String {
    estimator_budget_table(
        title,
        names,
        rows,
        budgets,
        |r| Some(&r.errors),
        |runs| {
            let mean = |p: usize| runs.iter().map(|e| e[p]).sum::<f64>() / runs.len() as f64;
            let worst = (0..blocks.len())
                .max_by(|&a, &b| mean(a).abs().total_cmp(&mean(b).abs()))
                .unwrap_or(0);
            format!(
                " {:+.4} (max {:.4} b{}) |",
                mean(top),
                mean(worst).abs(),
                blocks[worst]
            )
        },
    )
}

/// A table's title and head: an estimator a row, a budget a column.
fn table_head(title: &str, budgets: &[usize]) -> String {
    let mut text = format!("## {title}\n\n| estimator |");
    for b in budgets {
        text += &format!(" {b} |");
    }
    text += "\n|---|";
    text += &"---:|".repeat(budgets.len());
    text + "\n"
}

/// A table of the mean over the runs of a per-run quantity (`cell`, none where the run has
/// none), an estimator a row, a budget a column; the estimators with no such quantity are left
/// out. The held-out R² of the regression-adjusted estimators' surrogates (near 1: the
/// residual term's Monte Carlo noise is all that is left) and the mean z² are such.
fn per_run_mean_table(
    title: &str,
    names: &[&str],
    rows: &[Row],
    budgets: &[usize],
    cell: fn(&Row) -> Option<f64>,
) -> String {
    estimator_budget_table(title, names, rows, budgets, cell, |found| {
        let mean = found.iter().sum::<f64>() / found.len() as f64;
        // A standard error of rounding size gives a huge z²: in exponent form.
        if mean.abs() >= 1e4 {
            format!(" {mean:.2e} |")
        } else {
            format!(" {mean:.4} |")
        }
    })
}

/// An estimator a row, a budget a column: each cell `format` of the runs' `cell` values there
/// (`–` where no run has one); the estimators no run of which has one are left out.
fn estimator_budget_table<'a, T>(
    title: &str,
    names: &[&str],
    rows: &'a [Row],
    budgets: &[usize],
    cell: fn(&'a Row) -> Option<T>,
    format: impl Fn(Vec<T>) -> String,
) -> String {
    let mut text = table_head(title, budgets);
    for &name in names {
        if !rows
            .iter()
            .any(|r| r.estimator == name && cell(r).is_some())
        {
            continue;
        }
        text += &format!("| {name} |");
        for &b in budgets {
            let found: Vec<T> = rows
                .iter()
                .filter(|r| r.estimator == name && r.budget == b)
                .filter_map(cell)
                .collect();
            text += &if found.is_empty() {
                " – |".to_string()
            } else {
                format(found)
            };
        }
        text += "\n";
    }
    text + "\n"
}
