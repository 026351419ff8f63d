//! `apply-prune`: chooses the blocks to delete and writes the plans (one per `--k`, or the one
//! with the most blocks removed within `--max-ppl-ratio`), optionally measuring each on the LLM
//! (`--model` with `--tokens`) and writing the pruned model folder (`--pruned-out`, with or
//! without measuring: without `--tokens` no model runs, so a pipeline writes the folder from the
//! plan as chosen and measures it on other text in a step of its own).
//!
//! Selection: one-shot on a score table (`--scores --estimator`), iterative removal or search
//! through a surrogate (`--method iterative|search --surrogate`), SLEB or adaptive removal on
//! the model (`--method sleb|adaptive --model --tokens`, raced over the calibration windows with
//! `--race-se`), the best contiguous run by angular distance (`--method angular-run
//! --block-stats`), or plans chosen earlier (`--method from-plan --plans`). Checking the
//! settings against the method ([`AskedSettings`]), reading the inputs and checking they
//! describe one model, choosing and measuring the plans live in `layerprune-selection`
//! ([`PlanFiles`]); the run (the inputs checked against the manifest, the tokens and cache
//! before the model is opened, the plan table and pruned folder written as one) is
//! `layerprune_evaluation::prune` ([`PruneRun`], whose `check` refuses what it reads and
//! writes that cannot go together); this binary builds the run from the flags, refusing those
//! the run would ignore, guards the outputs and prints the summary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use layerprune_cli_common::{
    check_memory, command_line, count, run_stopping_between_batches, Io, RuntimeFlags,
    SourceFilesArgs,
};
use layerprune_evaluation::prune::{self, PruneRun, PrunedOut};
use layerprune_evaluation::MeasuredOtherwise;
use layerprune_selection::frontier::Budget;
use layerprune_selection::inputs::{MootSettings, PlanFiles};
use layerprune_selection::method_names;
use layerprune_selection::{AskedSettings, PlanMethod};
use layerprune_tables::{Provenance, TableKind};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Choose the blocks to delete, measure the plans and write the pruned model",
    after_help = "Examples:\n  \
        apply-prune --scores scores.parquet --estimator stratified-semivalue --k 3,6 --out plans.parquet\n  \
        # the recommended method (adaptive-raced), chosen on calibration tokens:\n  \
        apply-prune --method adaptive --race-se 3 --budget sleb --model model/ \\\n    \
        --tokens tokens-calib.parquet --k 6 --out plans.parquet\n  \
        # its plan measured on held-out tokens, and the pruned model written:\n  \
        apply-prune --method from-plan --plans plans.parquet --plan-method adaptive-raced --k 6 \\\n    \
        --model model/ --tokens tokens-heldout.parquet --out plan-heldout.parquet --pruned-out pruned/\n  \
        # the most blocks within 1.5 times the full model's perplexity:\n  \
        apply-prune --method adaptive --race-se 3 --max-ppl-ratio 1.5 --model model/ \\\n    \
        --tokens tokens-calib.parquet --out plans.parquet",
    // The shared --hard-link-source-files links the files of --pruned-out: required with it.
    mut_arg(SourceFilesArgs::ID, |arg| arg.requires("pruned_out"))
)]
struct Args {
    /// Selection method: one-shot (the k lowest scores of --estimator in --scores; the default
    /// with --scores), iterative or search (--surrogate), sleb or adaptive (on --model with
    /// --tokens; recommended: adaptive with --race-se 3, the plan table's adaptive-raced),
    /// angular-run (--block-stats), from-plan (--plans).
    #[arg(long)]
    method: Option<PlanMethod>,
    /// Score table (shapley or score-blocks stage) for one-shot selection.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Which estimator's rows of --scores to use, by the name written in the table (older
    /// spellings of the shapley stage's estimators are accepted with a note).
    #[arg(long, value_parser = parse_estimator)]
    estimator: Option<String>,
    /// Surrogate file (fit-surrogate) for iterative and search, whose plans keep its fixed
    /// blocks; with other methods it only adds each plan's predicted value (none for a plan
    /// removing a block it was fitted with fixed).
    #[arg(long)]
    surrogate: Option<PathBuf>,
    /// LLM evaluations the surrogate was fitted on, added to the cost of surrogate plans
    /// (the plans' `llm_evaluations`; default: the count recorded in the surrogate file by
    /// fit-surrogate). (Called --surrogate-evaluations until 2026-12-04, a count where every
    /// stage's --evaluations is a table; still accepted.)
    #[arg(
        long,
        alias = "surrogate-evaluations",
        value_name = "N",
        requires = "surrogate"
    )]
    surrogate_llm_evaluations: Option<u64>,
    /// Block statistics table (evaluate --block-stats) for angular-run.
    #[arg(long)]
    block_stats: Option<PathBuf>,
    /// Plan table to take plans from (from-plan).
    #[arg(long)]
    plans: Option<PathBuf>,
    /// With from-plan: the method of the plans to take (needed when a k has several), as the
    /// table's `method` column records it (a one-shot plan by its estimator, e.g.
    /// `block-influence`). A table written before the names were made one is read by the names
    /// its methods have now (`search` for its `surrogate-search`).
    #[arg(long, value_parser = not_renamed_method)]
    plan_method: Option<String>,
    /// Numbers of blocks to remove, one plan each (e.g. 3,6,9); with from-plan, every plan of
    /// --plans when not given.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["max_ppl_ratio", "plans"],
          conflicts_with = "max_ppl_ratio", value_parser = count(1, layerprune_core::MAX_BLOCKS as u64))]
    k: Vec<usize>,
    /// Instead of --k: remove as many blocks as possible while the calibration perplexity stays
    /// within this many times the full model's (e.g. 1.5: at most 50 % higher). With --method
    /// adaptive or sleb; each k tried gets --budget, and the plan is charged for every distinct
    /// mask the search measured.
    #[arg(long, value_parser = parse_ppl_ratio)]
    max_ppl_ratio: Option<f64>,
    /// With --max-ppl-ratio: the ratio must be met by this many standard errors of the NLL
    /// increase over the calibration windows (e.g. 2), not only as measured on this draw of the
    /// calibration text; 0, the default, takes the measured ratio.
    // Checked in `config`: clap's `requires` lets it through with --k, which conflicts with
    // --max-ppl-ratio.
    #[arg(long, value_parser = parse_standard_errors)]
    max_ppl_ratio_se: Option<f64>,
    /// SLEB and adaptive: race the masks measured together over the calibration windows,
    /// dropping a mask once its NLL is more than this many standard errors (paired over the
    /// windows measured) behind the best one's, so that clearly worse removals are not measured
    /// on every window (e.g. 3; docs/selection.md, "Racing SLEB"). SLEB chooses among the rest as
    /// without it; adaptive removal spends what it saves on more swaps.
    #[arg(long, value_parser = parse_race_se)]
    race_se: Option<f64>,
    /// With --race-se: the windows every candidate is measured on before any is dropped
    /// (doubled each round after; default 3).
    #[arg(long, value_parser = count(2, 1_000_000))]
    race_windows: Option<usize>,
    /// Blocks never removed (e.g. 0), besides the fixed blocks recorded in --scores (one-shot)
    /// and --surrogate (iterative, search).
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// Layered model folder: with --tokens, every plan is measured on it; with --pruned-out, the
    /// folder pruned (without --tokens it is not run: only its manifest is read and its files'
    /// sha256 checked).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Token table the plans are measured on (prepare-tokens): the calibration tokens when
    /// choosing; held-out ones when `from-plan` measures plans chosen earlier.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Search: candidates measured on the LLM (the best measured is kept); without a model the
    /// best predicted is kept. [default: 8]
    #[arg(long, value_parser = count(1, 1_000_000))]
    candidates: Option<usize>,
    /// Search: random starting sets besides the one-shot and iterative solutions. [default: 16]
    #[arg(long, value_parser = count(0, 1_000_000))]
    random_starts: Option<usize>,
    /// Iterative and search: antithetic permutation pairs per Shapley computation of a
    /// surrogate without a closed form (MLP, forest): 2 (players + 1) surrogate queries each
    /// (shapley sizes the same computation by its --samples, the queries; fewer here, as
    /// iterative runs one computation per block removed). [default: 512]
    #[arg(long, value_parser = count(1, 100_000_000))]
    permutation_pairs: Option<usize>,
    /// Adaptive: LLM evaluations per k, at most: `sleb` (SLEB's cost at that k), a fraction of
    /// it (`0.5sleb`), `least`, or a number. Below P + 1 + 7 (k − 1) for P removable blocks the
    /// greedy is skipped and the swaps start from the leave-one-out plan. [default: sleb; with
    /// --max-ppl-ratio, 0.5sleb for each k tried]
    #[arg(long)]
    budget: Option<Budget>,
    /// Iterative and search: seeds the search's random starts and the permutation sampling.
    /// [default: 0]
    #[arg(long)]
    seed: Option<u64>,
    /// Plan table to write (`--plan`, its name before 2026-12-04, is still accepted); may be
    /// left out with --pruned-out and no --tokens (nothing measured): with it, the plans as
    /// chosen (from-plan: as recorded, without the measurement of the table they are read from).
    #[arg(long, alias = "plan", required_unless_present = "pruned_out")]
    out: Option<PathBuf>,
    /// Also write the pruned model folder here (one plan: exactly one --k, --max-ppl-ratio, or
    /// with from-plan a --plans table of one plan; needs --model, the folder to prune). With
    /// --tokens the plan is measured on them as well; without, no model runs (e.g. from-plan
    /// writing the folder of a plan chosen earlier: the same folder, whatever text measures it).
    #[arg(long)]
    pruned_out: Option<PathBuf>,
    /// Replace an existing --pruned-out folder.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    source_files: SourceFilesArgs,
    #[command(flatten)]
    runtime: RuntimeFlags,
    /// Evaluation table kept of every mask measured on --model with --tokens: read first (only
    /// the masks it lacks are run) and rewritten after every batch (a large one only once the
    /// work since the last write is ten times that write's time), so a run killed part-way, or
    /// a later one with another --k, --budget or --max-ppl-ratio on the same model and tokens,
    /// re-runs nothing already measured. Created when missing; refused when it was made for
    /// another model or token table. One run at a time uses a file: a second run waits (saying
    /// so) until the first ends, then reads what it measured. An `evaluate` run's finished table
    /// given here is a cache once this run adds to it (saved as not complete; give a copy to
    /// keep the table as it is).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// A --cache whose rows were measured on another device or arithmetic (`evaluated_on`:
    /// another kind of device, --tf32, --graph-optimization, on CUDA the batch shapes) is
    /// started again, with a warning, its file replaced once something was measured (refused by
    /// default). For pipelines, which then keep the old measurements through a device request
    /// that fails.
    #[arg(long, requires = "cache")]
    replace_cache_measured_otherwise: bool,
    /// Skip checking the model files' sha256 against the manifest (a --pruned-out folder then
    /// carries the manifest's hashes of files nobody checked: `evaluate` checks them when it
    /// opens the folder, and refuses one that a changed source file made wrong).
    #[arg(long)]
    no_verify: bool,
    /// Use a score table, surrogate or block statistics measured on another model than the
    /// others (or than --model), or with from-plan plans chosen on another model (their
    /// provenance's `model`), with a warning (refused by default).
    #[arg(long)]
    allow_mixed_inputs: bool,
}

/// What a run stopped by a signal says: only a --cache keeps what was measured.
const RESUME_ADVICE: &str = "run the same command again to go on: a --cache keeps what was \
                             measured (without one, the run starts over)";

fn main() -> ExitCode {
    run_stopping_between_batches(RESUME_ADVICE, || apply_prune(Args::parse()))
}

/// A perplexity ratio: a finite number above 1 (the full model's own ratio).
fn parse_ppl_ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ratio) if ratio.is_finite() && ratio > 1.0 => Ok(ratio),
        _ => Err(format!(
            "{text:?} is not a perplexity ratio: a number above 1 (1.5 = at most 50 % above the \
             full model's perplexity)"
        )),
    }
}

fn parse_standard_errors(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(z) if z.is_finite() && z >= 0.0 => Ok(z),
        _ => Err(format!(
            "{text:?} is not a number of standard errors: a number, 0 or more (2: the ratio met \
             by two standard errors of the calibration windows)"
        )),
    }
}

fn parse_race_se(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(z) if z.is_finite() && z > 0.0 => Ok(z),
        _ => Err(format!(
            "{text:?} is not a number of standard errors: a positive number (3: a candidate is \
             dropped once it is three standard errors behind the best)"
        )),
    }
}

/// `--plan-method`: a method's name, an old one refused naming the new.
fn not_renamed_method(name: &str) -> Result<String, String> {
    method_names::renamed(name).map_or(Ok(name.to_string()), Err)
}

/// An estimator name as written in score tables; an old spelling of the shapley stage's is
/// translated, with a note.
fn parse_estimator(text: &str) -> Result<String, String> {
    Ok(match layerprune_shapley::Estimator::parse(text) {
        Ok((estimator, note)) => {
            if let Some(note) = note {
                tracing::warn!("{note}");
            }
            estimator.name().to_string()
        }
        // Baseline scores (block-influence, angular, ...) and other tables' names.
        Err(_) => text.to_string(),
    })
}

/// The arguments, checked: what to read, how to choose, and what to write.
fn config(args: &Args) -> Result<PruneRun> {
    let files = PlanFiles {
        scores: args.scores.clone(),
        estimator: args.estimator.clone(),
        surrogate: args.surrogate.clone(),
        surrogate_llm_evaluations: args.surrogate_llm_evaluations,
        block_stats: args.block_stats.clone(),
        plans: args.plans.clone(),
        plan_method: args.plan_method.clone(),
        fixed: args.fixed.clone(),
        allow_mixed_inputs: args.allow_mixed_inputs,
    };
    let method = files.method(args.method)?;
    let settings = AskedSettings {
        ks: args.k.clone(),
        candidates: args.candidates,
        random_starts: args.random_starts,
        permutation_pairs: args.permutation_pairs,
        budget: args.budget,
        max_ppl_ratio: args.max_ppl_ratio,
        max_ppl_ratio_se: args.max_ppl_ratio_se,
        race_se: args.race_se,
        race_windows: args.race_windows,
        seed: args.seed,
        plan_method: args.plan_method.is_some(),
    }
    .resolve(method)?;
    let provenance = Provenance::new(prune::STAGE, env!("CARGO_PKG_VERSION"), command_line())
        .with_seed(settings.seed);
    let run = PruneRun {
        method,
        files,
        settings,
        moot: MootSettings {
            permutation_pairs: args.permutation_pairs.is_some(),
            seed: args.seed.is_some(),
            random_starts: args.random_starts.is_some(),
        },
        model: args.model.clone(),
        tokens: args.tokens.clone(),
        cache: args.cache.clone(),
        cache_measured_otherwise: MeasuredOtherwise::replace_if(
            args.replace_cache_measured_otherwise,
        ),
        runtime: args.runtime.runtime_options(!args.no_verify),
        evaluation: args.runtime.eval_options()?,
        out: args.out.clone(),
        pruned_out: args.pruned_out.clone().map(|dir| PrunedOut {
            dir,
            overwrite: args.overwrite,
            source_files: args.source_files.source_files(),
        }),
        provenance,
    };
    // What the run reads and writes, together (the library's rules).
    run.check()?;
    if args.overwrite && args.pruned_out.is_none() {
        bail!("--overwrite replaces an existing --pruned-out folder; it needs --pruned-out");
    }
    if args.tokens.is_none() {
        // Nothing runs the model: a setting of a run of it would be ignored. A folder pruned
        // without a run still has its files hashed, on --threads, unless --no-verify.
        let mut ignored = args.runtime.given();
        if args.model.is_some() {
            ignored.retain(|flag| *flag != "--threads");
        } else if args.no_verify {
            ignored.push("--no-verify");
        }
        if !ignored.is_empty() {
            let why = if args.model.is_some() {
                "no --tokens is given (--model is then only the folder --pruned-out prunes, \
                 and does not run)"
            } else {
                "no --model is given (with --tokens it measures every plan)"
            };
            bail!(
                "{} {} for running the model, and {why}; leave {} out",
                ignored.join(", "),
                if ignored.len() == 1 { "is" } else { "are" },
                if ignored.len() == 1 { "it" } else { "them" }
            );
        }
    }
    run.files.check(method, args.tokens.is_some())?;
    Ok(run)
}

fn apply_prune(args: Args) -> Result<()> {
    args.runtime.device.set_thread_budget();
    let run = config(&args)?;
    args.runtime.check()?;
    // Before any work: the plan table and the pruned folder may not replace (or hold) an input,
    // and stay locked while this run writes them.
    let _outputs = Io::new()
        .inputs(run.files.paths())
        .input_opt(args.model.as_deref())
        .input_opt(args.tokens.as_deref())
        .output_table_opt("--out", args.out.as_deref(), TableKind::Plans)
        .output_table_opt("--cache", args.cache.as_deref(), TableKind::Evaluations)
        .output_folder_opt("--pruned-out", args.pruned_out.as_deref())
        .existing_refused_unless_opt(args.overwrite, "--pruned-out", args.pruned_out.as_deref())
        // Runs sharing a cache wait for each other there (layerprune_evaluation's cache).
        .locked_by_stage_opt(args.cache.as_deref())
        .check()?;
    let prepared = run.prepare()?;
    // One Shapley computation through a surrogate holds `--permutation-pairs` pairs of player
    // orders and a marginal per player for each (about 32 bytes per pair and block).
    check_memory(
        "--permutation-pairs x the number of blocks",
        &[
            prepared.settings().permutation_pairs,
            prepared.num_blocks() + 1,
        ],
        32,
    )?;
    prepared.run(&mut |summary| layerprune_cli_common::print_summary(summary))
}
