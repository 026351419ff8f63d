//! `score-blocks`: the baseline block scores (ShortGPT block influence, angular distance,
//! leave-one-out perplexity, reverse order, random) as one score table, each as an estimator
//! (the table's `estimator` column, as `shapley` writes its own), with its cost in LLM
//! evaluations. `apply-prune --scores --estimator NAME` turns any of them into a plan. The scorers live in `layerprune-selection`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use layerprune_cli_common::{command_line, run, Io};
use layerprune_selection::{
    angular_distance_scores, block_influence_scores, leave_one_out_scores, random_scores,
    reverse_order_scores, BlockScores,
};
use layerprune_tables::{
    read_block_stats, read_complete_evaluations, write_scores, BlockStatsTable, EvaluationTable,
    Provenance, ScoreRow, ScoreTable, TableKind,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Estimator {
    /// ShortGPT: 1 − mean cosine(input, output) of each block (--block-stats; 1 pass).
    BlockInfluence,
    /// Gromov et al.: arccos(cosine)/π of each block (--block-stats; 1 pass).
    Angular,
    /// Shortened-LLaMA: NLL with only that block removed (--evaluations; L passes).
    LeaveOneOut,
    /// The last blocks first: score −i (no pass).
    Reverse,
    /// Seeded uniform random scores (no pass).
    Random,
}

/// An estimator as the command line spells it.
fn estimator_name(estimator: Estimator) -> String {
    estimator
        .to_possible_value()
        .map_or_else(|| format!("{estimator:?}"), |v| v.get_name().to_string())
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Baseline per-block scores (higher = more important) as a score table",
    after_help = "Examples:\n  \
        score-blocks --block-stats block-stats.parquet --evaluations evaluations.parquet \\\n    \
        --estimator block-influence --estimator angular --estimator leave-one-out --out scores-baselines.parquet\n  \
        score-blocks --num-blocks 30 --estimator random --seed 1 --out scores-random.parquet"
)]
struct Args {
    /// Estimator to score the blocks by, the name the score table's `estimator` column gets
    /// (as `shapley --estimator`); repeat for several. (Called --method until 2026-12-04,
    /// which apply-prune uses for the selection method; still accepted.)
    #[arg(long = "estimator", alias = "method", value_enum, required = true)]
    estimators: Vec<Estimator>,
    /// Block statistics of the full model (evaluate --block-stats).
    #[arg(long)]
    block_stats: Option<PathBuf>,
    /// Evaluation table holding every single-block removal (e.g. sample-masks --anchors).
    #[arg(long)]
    evaluations: Option<PathBuf>,
    /// Number of blocks, when only reverse/random are asked for and no table says it.
    #[arg(long, value_parser = layerprune_cli_common::count(1, 4096))]
    num_blocks: Option<usize>,
    /// Blocks never removed (e.g. 0), besides the fixed blocks of the game in --evaluations:
    /// they get no score, and the score table records them as fixed, so `apply-prune` keeps
    /// them.
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// Seed of the random scores.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    incomplete: layerprune_cli_common::IncompleteArgs,
    /// Score table to write.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> ExitCode {
    run(|| score_blocks(Args::parse()))
}

fn score_blocks(args: Args) -> Result<()> {
    let _outputs = Io::new()
        .input_opt(args.block_stats.as_deref())
        .input_opt(args.evaluations.as_deref())
        .output_table("--out", &args.out, TableKind::Scores)
        .check()?;
    let stats: Option<BlockStatsTable> = args
        .block_stats
        .as_deref()
        .map(read_block_stats)
        .transpose()?;
    let evaluations: Option<EvaluationTable> = args
        .evaluations
        .as_deref()
        .map(|path| read_complete_evaluations(path, args.incomplete.incomplete()))
        .transpose()?;
    let mut num_blocks = args.num_blocks;
    let mut agree = |count: usize, source: String| -> Result<()> {
        match num_blocks {
            Some(expected) if expected != count => bail!(
                "{source} is for a model of {count} blocks, but another input says {expected}"
            ),
            _ => {
                num_blocks = Some(count);
                Ok(())
            }
        }
    };
    if let (Some(table), Some(path)) = (&stats, &args.block_stats) {
        agree(table.num_blocks, path.display().to_string())?;
    }
    if let (Some(table), Some(path)) = (&evaluations, &args.evaluations) {
        agree(table.num_blocks, path.display().to_string())?;
    }
    if let (Some(s), Some(e)) = (&stats, &evaluations) {
        if s.model_id != e.model_id {
            bail!(
                "--block-stats is of model {} but --evaluations of model {}",
                s.model_id,
                e.model_id
            );
        }
        // The score table records one token table for all its scores.
        if s.dataset_id != e.dataset_id {
            bail!(
                "--block-stats was measured on token table {} but --evaluations on {}: score \
                 them into separate tables",
                s.dataset_id,
                e.dataset_id
            );
        }
    }
    // An estimator asked for twice is scored once.
    let estimators = layerprune_core::distinct(&args.estimators);
    // Each estimator's own input first: a missing one is what the user has to add (the block
    // count below would otherwise ask for --num-blocks, which these estimators cannot use).
    for &estimator in &estimators {
        match estimator {
            Estimator::BlockInfluence | Estimator::Angular if stats.is_none() => bail!(
                "--estimator {} needs --block-stats (evaluate --block-stats)",
                estimator_name(estimator)
            ),
            Estimator::LeaveOneOut if evaluations.is_none() => bail!(
                "--estimator leave-one-out needs --evaluations with every single-block removal \
                 (sample-masks --anchors)"
            ),
            _ => {}
        }
    }
    let Some(num_blocks) = num_blocks else {
        bail!("no input says how many blocks the model has; give --block-stats, --evaluations or --num-blocks");
    };
    // The blocks that are not players: the game's (a leave-one-out score needs its single
    // removals, which never remove them) and those given; none of them gets a score.
    let mut fixed = args.fixed.clone();
    if let Some(table) = &evaluations {
        fixed.extend(&table.fixed_blocks);
    }
    fixed.sort_unstable();
    fixed.dedup();
    if let Some(&block) = fixed.iter().find(|&&b| b >= num_blocks) {
        bail!("--fixed {block} is not a block of this {num_blocks}-block model (blocks 0..{num_blocks})");
    }
    if fixed.len() == num_blocks {
        bail!("every block is fixed (--fixed and the fixed blocks of --evaluations): none is left to score");
    }

    let mut rows = Vec::new();
    for estimator in estimators {
        let scores: BlockScores = match estimator {
            Estimator::BlockInfluence | Estimator::Angular => {
                let Some((table, path)) = stats.as_ref().zip(args.block_stats.as_ref()) else {
                    unreachable!("each estimator's input is checked before the block count")
                };
                let scores = if estimator == Estimator::Angular {
                    angular_distance_scores(table)
                } else {
                    block_influence_scores(table)
                };
                scores.with_context(|| path.display().to_string())?
            }
            Estimator::LeaveOneOut => {
                let Some((table, path)) = evaluations.as_ref().zip(args.evaluations.as_ref())
                else {
                    unreachable!("each estimator's input is checked before the block count")
                };
                leave_one_out_scores(table).with_context(|| {
                    format!(
                        "--evaluations {}: leave-one-out needs the evaluation of every \
                         single-block removal (sample-masks --anchors, then evaluate)",
                        path.display()
                    )
                })?
            }
            Estimator::Reverse => reverse_order_scores(num_blocks),
            Estimator::Random => random_scores(num_blocks, args.seed),
        };
        scores.check(num_blocks, &fixed)?;
        rows.extend(
            scores
                .scores
                .iter()
                .enumerate()
                .filter(|(block, _)| !fixed.contains(block))
                .map(|(block, &estimate)| {
                    ScoreRow::point(block, estimate, &scores.method, scores.llm_evaluations)
                }),
        );
    }
    let mut provenance = Provenance::new("score-blocks", env!("CARGO_PKG_VERSION"), command_line())
        .with_seed(args.seed);
    if let Some(table) = &stats {
        provenance = provenance
            .with_input("model", &table.model_id)
            .with_input("dataset", &table.dataset_id);
    } else if let Some(table) = &evaluations {
        provenance = provenance
            .with_input("model", &table.model_id)
            .with_input("dataset", &table.dataset_id);
    }
    let (model_id, dataset_id) = stats
        .as_ref()
        .map(|t| (t.model_id.clone(), t.dataset_id.clone()))
        .or_else(|| {
            evaluations
                .as_ref()
                .map(|t| (t.model_id.clone(), t.dataset_id.clone()))
        })
        .unwrap_or_default();
    let table = ScoreTable {
        num_blocks,
        fixed_blocks: fixed,
        model_id,
        dataset_id,
        rows,
    };
    write_scores(&args.out, &table, &provenance)?;
    use std::fmt::Write;
    let mut summary = format!("{:<16} {:>5} {:>12}\n", "estimator", "block", "estimate");
    for row in &table.rows {
        writeln!(
            summary,
            "{:<16} {:>5} {:>12.6}",
            row.estimator, row.block, row.estimate
        )?;
    }
    layerprune_cli_common::print_summary(&summary)
}
