//! `shapley`: per-block contribution scores from LLM evaluations and/or a fitted surrogate,
//! written as a score table (one row per player block per estimator; the fixed blocks listed
//! in its metadata) and printed ranked.
//!
//! The estimators, their names (the names written in the table) and what each reads are the
//! registry of `layerprune-shapley` ([`Estimator`]); reading the files, taking the player set
//! from them and running the estimators is its [`ScoreFiles`]; this binary writes the table
//! and prints it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use layerprune_shapley::inputs::ScoreFiles;
use layerprune_shapley::{Estimates, Estimator, EstimatorOptions, NonuniformMasks};
use layerprune_tables::{write_scores, GameValue, Provenance, TableKind};

/// Per-block contribution scores.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Estimators and what they read:\n  \
        stratified-semivalue (the published estimate), banzhaf-marginal, surrogate-shapley: --surrogate\n  \
        permutation-shapley, regression-adjusted-exp-chains: --evaluations and --masks with permutation chains\n  \
        kernelshap-paired, regression-adjusted, regression-adjusted-exp: --evaluations and --masks with complement pairs\n  \
        stratified-shapley, regression-adjusted-stratified: --evaluations (masks of every size)\n  \
        banzhaf-msr: --evaluations (uniform masks: every stratum, proportional allocation;\n    \
        --allow-nonuniform-masks estimates from others, with a warning)\n  \
        exact-shapley (also writes exact-banzhaf): --evaluations holding every mask over the players\n\
        Older spellings (semivalue, shapley-surrogate, permutation, kernelshap, stratified, exact,\n\
        banzhaf) are accepted with a note.\n\n\
        Example:\n  shapley --surrogate surrogate.json --estimator stratified-semivalue --out scores.parquet"
)]
struct Args {
    /// Evaluation table (masks valued on the LLM).
    #[arg(long)]
    evaluations: Option<PathBuf>,
    /// Fitted surrogate (JSON written by fit-surrogate).
    #[arg(long)]
    surrogate: Option<PathBuf>,
    /// Mask table with the design structure (permutation chains, complement pairs) and the
    /// fixed blocks.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Estimators to run (repeatable), by the name written in score tables.
    #[arg(long = "estimator", value_name = "ESTIMATOR", required = true, value_parser = parse_estimator)]
    estimators: Vec<Estimator>,
    /// Base masks of the semivalue / Banzhaf estimate through the surrogate (published:
    /// 80,000); surrogate queries of surrogate-shapley when it has no closed form, which are
    /// samples / (2 (players + 1)) antithetic permutation pairs (apply-prune sizes the same
    /// computation by its --permutation-pairs).
    /// [default: 80000]
    #[arg(long, value_parser = layerprune_cli_common::count(1, 1_000_000_000))]
    samples: Option<usize>,
    /// Strata of the semivalue: numbers of removed players, comma separated, taken ascending
    /// and each once as sample-masks --strata takes them (default: the published 2,5,8,11,14
    /// of 32 scaled to the number of players).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        value_parser = layerprune_sampling::parse_stratum
    )]
    strata: Option<Vec<usize>>,
    /// Seeds the estimates that draw at random (the masks through the surrogate, the folds of
    /// the regression-adjusted estimators) [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Value of a mask of --evaluations: utility, neg-nll or nll-increase (docs/estimators.md).
    /// Default: the value --surrogate was fitted to predict (fit-surrogate --value), which
    /// the estimators through it use; without one, utility. A --value other than the
    /// surrogate's is refused: the estimates of one run are of one game.
    #[arg(long)]
    value: Option<GameValue>,
    /// Blocks that are not players (always kept), comma separated. Default: the fixed blocks
    /// recorded in the input files, which this list may only repeat: unlike the selection
    /// stages, where --fixed adds blocks to keep, the players here are those of the game
    /// sample-masks sampled (keep more blocks in the plan with apply-prune --fixed).
    // `--fixed` as in every other stage; `--fixed-blocks`, its old name, still works.
    #[arg(long, value_delimiter = ',', alias = "fixed-blocks")]
    fixed: Option<Vec<usize>>,
    /// Use a surrogate fitted on another model's or token table's evaluations with
    /// --evaluations, with a warning (refused by default).
    #[arg(long)]
    allow_mixed_inputs: bool,
    /// banzhaf-msr: estimate from evaluated masks that are not a uniform sample of the
    /// coalitions (a table of another design, or one the check misreads), with a warning that
    /// the estimate may be biased (refused by default: every mask weighs alike in its means).
    #[arg(long)]
    allow_nonuniform_masks: bool,
    #[command(flatten)]
    threads: layerprune_cli_common::ThreadsArgs,
    #[command(flatten)]
    incomplete: layerprune_cli_common::IncompleteArgs,
    /// Score table to write.
    #[arg(long)]
    out: PathBuf,
}

fn parse_estimator(text: &str) -> Result<Estimator, String> {
    let (estimator, note) = Estimator::parse(text)?;
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    Ok(estimator)
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| body(Args::parse()))
}

fn body(args: Args) -> Result<()> {
    args.threads.set_thread_budget();
    let files = ScoreFiles {
        evaluations: args.evaluations.clone(),
        surrogate: args.surrogate.clone(),
        masks: args.masks.clone(),
        value: args.value,
        fixed_blocks: args.fixed.clone(),
        allow_mixed_inputs: args.allow_mixed_inputs,
        incomplete: args.incomplete.incomplete(),
    };
    // The estimators' settings: each flag, whether it was given, and which estimators read it.
    let settings = [
        (
            "--samples",
            args.samples.is_some(),
            Estimator::reads_samples as fn(Estimator) -> bool,
        ),
        ("--strata", args.strata.is_some(), Estimator::reads_strata),
        ("--seed", args.seed.is_some(), Estimator::draws),
        (
            "--allow-nonuniform-masks",
            args.allow_nonuniform_masks,
            Estimator::reads_nonuniform_masks,
        ),
    ];
    // A setting no estimator asked for reads would be ignored: refused, naming who reads it.
    for (flag, given, reads) in settings {
        if given && !args.estimators.iter().any(|&e| reads(e)) {
            let readers: Vec<&str> = Estimator::ALL
                .into_iter()
                .filter(|&e| reads(e))
                .map(Estimator::name)
                .collect();
            bail!(
                "{flag} is read only by {}; the estimators asked for would ignore it (leave it \
                 out)",
                readers.join(", ")
            );
        }
    }
    if args.incomplete.allow_incomplete && args.evaluations.is_none() {
        bail!("--allow-incomplete is for the --evaluations table; leave it out");
    }
    // The published defaults (`EstimatorOptions::default`) where a flag is not given.
    let defaults = EstimatorOptions::default();
    let options = EstimatorOptions {
        samples: args.samples.unwrap_or(defaults.samples),
        strata: args.strata.clone(),
        seed: args.seed.unwrap_or(defaults.seed),
        nonuniform_masks: if args.allow_nonuniform_masks {
            NonuniformMasks::Allowed
        } else {
            defaults.nonuniform_masks
        },
    };
    let _outputs = layerprune_cli_common::Io::new()
        .inputs(files.paths())
        .output_table("--out", &args.out, TableKind::Scores)
        .check()?;
    let inputs = files.load()?;
    // Through a surrogate with a closed form (quadratic) surrogate-shapley samples nothing: a
    // --samples or --seed only it would read is ignored, so refused as the others are.
    inputs.refuse_sampling_a_closed_form_ignores(&args.estimators, &settings)?;
    // The sampled coalitions (a flag per player and some bookkeeping each) and their values.
    layerprune_cli_common::check_memory(
        "--samples x the number of players",
        &[options.samples, inputs.players.len() + 64],
        2,
    )?;
    // The estimators' notes are timings and fit diagnostics (information), and now and then a
    // warning, which says so.
    let all = inputs.estimate(&args.estimators, &options, &mut |note| match note
        .strip_prefix("warning: ")
    {
        Some(warning) => tracing::warn!("{warning}"),
        None => tracing::info!("{note}"),
    })?;
    let provenance = inputs.provenance(
        Provenance::new(
            "shapley",
            env!("CARGO_PKG_VERSION"),
            layerprune_cli_common::command_line(),
        )
        .with_seed(options.seed),
    );
    let table = inputs.table(&all);
    write_scores(&args.out, &table, &provenance)?;
    let mut summary: String = all.iter().map(ranked).collect();
    summary += &format!(
        "wrote {} rows to {}\n",
        table.rows.len(),
        args.out.display()
    );
    layerprune_cli_common::print_summary(&summary)
}

/// The estimates ranked from most to least important (pruning removes from the bottom).
fn ranked(estimates: &Estimates) -> String {
    let mut order: Vec<usize> = (0..estimates.values.len()).collect();
    order.sort_by(|&a, &b| estimates.values[b].total_cmp(&estimates.values[a]));
    let mut text = format!(
        "\n{} ({} LLM evaluations)\n rank  block     estimate   std.error\n",
        estimates.estimator, estimates.llm_evaluations
    );
    for (rank, &index) in order.iter().enumerate() {
        let se = estimates
            .std_errors
            .as_ref()
            .map_or("-".to_string(), |se| format!("{:.3e}", se[index]));
        text += &format!(
            "{:>5}  {:>5}  {:>11.4e}  {:>10}\n",
            rank + 1,
            estimates.blocks[index],
            estimates.values[index],
            se
        );
    }
    text
}
