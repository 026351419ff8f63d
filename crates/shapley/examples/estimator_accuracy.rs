//! Replay benchmark: how close each estimator gets to the exact Shapley values for a given
//! number of LLM evaluations.
//!
//! Input: an evaluation table holding all 2^n masks over n players (fixed blocks kept), or
//! `--synthetic` for `TripleGame::layer_pruning_like` (a pairwise game plus strong
//! third-order terms; see docs/estimators.md). Every estimator replays its masks from the
//! table (a mask outside the table is an error), for each budget (the most distinct masks it
//! may use) and seed. Output folder: `results.csv` and `summary.md`
//! (`tools/report/plots.py estimator-rmse` draws `results.csv`).
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
    /// Held-out R² of the regression-adjusted estimators' surrogate.
    surrogate_r2: Option<f64>,
}

fn rmse(a: &[f64], b: &[f64]) -> f64 {
    (a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

/// The game over all blocks, and the players (blocks removed in some mask of the table).
fn load(args: &Args) -> Result<(RecordedGame, Players)> {
    if args.synthetic {
        let n = args.players;
        let mut game = TripleGame::layer_pruning_like(n, 2026);
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

    let mut rows = Vec::new();
    for &budget in &args.budgets {
        for seed in 0..args.seeds {
            for kind in Estimator::BUDGETED {
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
                    surrogate_r2,
                });
            }
        }
    }

    let mut csv =
        String::from("estimator,budget,seed,evaluations,rmse,spearman,rmse_own,surrogate_r2\n");
    for r in &rows {
        writeln!(
            csv,
            "{},{},{},{},{:.6e},{:.4},{:.6e},{}",
            r.estimator,
            r.budget,
            r.seed,
            r.evaluations,
            r.rmse,
            r.spearman,
            r.rmse_own,
            r.surrogate_r2
                .map_or(String::new(), |r2| format!("{r2:.5}"))
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
    let header = |title: &str| {
        let mut text = format!("## {title}\n\n| estimator |");
        for b in &args.budgets {
            text += &format!(" {b} |");
        }
        text += "\n|---|";
        text += &"---:|".repeat(args.budgets.len());
        text + "\n"
    };
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
        for kind in Estimator::BUDGETED {
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
    summary += &surrogate_fit_table(&rows, &args.budgets);
    write_atomically(&args.out.join("summary.md"), &summary)?;
    print!("{summary}");

    println!("wrote results.csv and summary.md to {}", args.out.display());
    Ok(())
}

/// Mean held-out R² of the regression-adjusted estimators' surrogates: when it is near 1
/// the residual term's Monte Carlo noise is all that is left.
fn surrogate_fit_table(rows: &[Row], budgets: &[usize]) -> String {
    let mut text = String::from(
        "## Mean held-out R² of the surrogate (regression-adjusted estimators)\n\n| estimator |",
    );
    for b in budgets {
        text += &format!(" {b} |");
    }
    text += "\n|---|";
    text += &"---:|".repeat(budgets.len());
    text += "\n";
    for kind in Estimator::BUDGETED {
        if !rows
            .iter()
            .any(|r| r.estimator == kind.name() && r.surrogate_r2.is_some())
        {
            continue;
        }
        text += &format!("| {} |", kind.name());
        for &b in budgets {
            let fits: Vec<f64> = rows
                .iter()
                .filter(|r| r.estimator == kind.name() && r.budget == b)
                .filter_map(|r| r.surrogate_r2)
                .collect();
            text += &if fits.is_empty() {
                " – |".into()
            } else {
                format!(" {:.4} |", fits.iter().sum::<f64>() / fits.len() as f64)
            };
        }
        text += "\n";
    }
    text + "\n"
}
