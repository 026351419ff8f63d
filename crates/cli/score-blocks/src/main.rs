//! `score-blocks`: the baseline block scores (ShortGPT block influence, angular distance,
//! leave-one-out perplexity, reverse order, random) as one score table, each as an estimator
//! (the table's `estimator` column, as `shapley` writes its own), with its cost in LLM
//! evaluations. `apply-prune --scores --estimator NAME` turns any of them into a plan. The scorers live in `layerprune-selection`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, ValueEnum};
use layerprune_cli_common::{command_line, run, Io};
use layerprune_selection::score_blocks::{BaselineEstimator, BaselineFiles};
use layerprune_tables::{write_scores, Provenance, TableKind};

/// [`BaselineEstimator`] as the command line offers it, with its help.
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

impl From<Estimator> for BaselineEstimator {
    fn from(estimator: Estimator) -> Self {
        match estimator {
            Estimator::BlockInfluence => BaselineEstimator::BlockInfluence,
            Estimator::Angular => BaselineEstimator::Angular,
            Estimator::LeaveOneOut => BaselineEstimator::LeaveOneOut,
            Estimator::Reverse => BaselineEstimator::Reverse,
            Estimator::Random => BaselineEstimator::Random,
        }
    }
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
    #[arg(
        long = "estimator",
        alias = "method",
        value_name = "ESTIMATOR",
        value_enum,
        required = true
    )]
    estimators: Vec<Estimator>,
    /// Block statistics of the full model (evaluate --block-stats).
    #[arg(long)]
    block_stats: Option<PathBuf>,
    /// Evaluation table holding every single-block removal (e.g. sample-masks --anchors).
    #[arg(long)]
    evaluations: Option<PathBuf>,
    /// Number of blocks, when only reverse/random are asked for and no table says it.
    #[arg(long, value_parser = layerprune_cli_common::count(1, layerprune_core::MAX_BLOCKS as u64))]
    num_blocks: Option<usize>,
    /// Blocks never removed (e.g. 0), besides the fixed blocks of the game in --evaluations:
    /// they get no score, and the score table records them as fixed, so `apply-prune` keeps
    /// them.
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// Seed of the random scores [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Use --block-stats and --evaluations measured on another model or token table than each
    /// other, with a warning (refused by default; and where not both are given, since it would
    /// allow nothing). The score table records the --block-stats' model and token table.
    #[arg(long)]
    allow_mixed_inputs: bool,
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
    if args.seed.is_some() && !args.estimators.contains(&Estimator::Random) {
        anyhow::bail!(
            "--seed seeds the random scores, and --estimator random is not asked for; leave it out"
        );
    }
    if args.incomplete.allow_incomplete && args.evaluations.is_none() {
        anyhow::bail!("--allow-incomplete is for the --evaluations table; leave it out");
    }
    let seed = args.seed.unwrap_or(0);
    let files = BaselineFiles {
        block_stats: args.block_stats,
        evaluations: args.evaluations,
        incomplete: args.incomplete.incomplete(),
        num_blocks: args.num_blocks,
        fixed: args.fixed,
        seed,
        allow_mixed_inputs: args.allow_mixed_inputs,
    };
    let estimators: Vec<BaselineEstimator> = args.estimators.into_iter().map(Into::into).collect();
    let table = files.score(&estimators)?;
    let mut provenance =
        Provenance::new("score-blocks", env!("CARGO_PKG_VERSION"), command_line()).with_seed(seed);
    // The model and token table the scores were measured on, where an input records them.
    if !table.model_id.is_empty() {
        provenance = provenance.with_game(&table.model_id, &table.dataset_id);
    }
    write_scores(&args.out, &table, &provenance)?;
    tracing::info!("wrote {} ({} rows)", args.out.display(), table.rows.len());
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
