//! `apply-prune`: chooses the blocks to delete and writes the plans (one per `--k`), optionally
//! measuring each on the LLM and writing the pruned model folder.
//!
//! Selection: one-shot on a score table (`--scores --estimator`), iterative removal or search
//! through a surrogate (`--method iterative|search --surrogate`), SLEB on the model
//! (`--method sleb`), the best contiguous run by angular distance (`--method angular-run
//! --block-stats`), or plans chosen earlier (`--method from-plan --plans`). The algorithms live
//! in `layerprune-selection`; this binary reads the inputs, checks they describe the same
//! model, runs the LLM where asked, and writes the outputs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use layerprune_cli_common::{check_memory, command_line, count, run, DeviceArgs, Io};
use layerprune_core::{Game, Objective};
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, OnnxGame, RuntimeOptions};
use layerprune_selection::frontier::Budget;
use layerprune_selection::{
    choose_plans, measure_plans, scores_from_table, FittedOn, PlanInputs, PlanMethod, PlanOptions,
};
use layerprune_surrogate::{SavedSurrogate, Surrogate};
use layerprune_tables::{
    read_block_stats, read_plans, read_scores, read_tokens, write_plans, PlanTable, Provenance,
};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Choose the blocks to delete, measure the plans and write the pruned model",
    after_help = "Examples:\n  \
        apply-prune --scores scores.parquet --estimator stratified-semivalue --k 3,6 --plan plans.parquet\n  \
        apply-prune --method adaptive --budget sleb --model model/ --tokens tokens.parquet --k 6 \\\n    \
        --plan plans.parquet --pruned-out pruned/"
)]
struct Args {
    /// Selection method: one-shot (the k lowest scores of --estimator in --scores; the default
    /// with --scores), iterative or search (--surrogate), sleb or adaptive (on --model with
    /// --tokens), angular-run (--block-stats), from-plan (--plans).
    #[arg(long)]
    method: Option<PlanMethod>,
    /// Score table (shapley or score-blocks stage) for one-shot selection.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Which estimator's rows of --scores to use, by the name written in the table (older
    /// spellings of the shapley stage's estimators are accepted with a note).
    #[arg(long, value_parser = parse_estimator)]
    estimator: Option<String>,
    /// Surrogate file (fit-surrogate) for iterative and search; with other methods it only
    /// adds each plan's predicted value.
    #[arg(long)]
    surrogate: Option<PathBuf>,
    /// LLM evaluations the surrogate was fitted on, added to the cost of surrogate plans
    /// (default: the count recorded in the surrogate file by fit-surrogate).
    #[arg(long)]
    surrogate_evaluations: Option<u64>,
    /// Block statistics table (evaluate --block-stats) for angular-run.
    #[arg(long)]
    block_stats: Option<PathBuf>,
    /// Plan table to take plans from (from-plan).
    #[arg(long)]
    plans: Option<PathBuf>,
    /// With from-plan: the method of the plans to take (needed when a k has several).
    #[arg(long)]
    plan_method: Option<String>,
    /// Numbers of blocks to remove, one plan each (e.g. 3,6,9).
    #[arg(long, value_delimiter = ',', required = true, value_parser = count(0, 4096))]
    k: Vec<usize>,
    /// Blocks never removed (e.g. 0), besides the fixed blocks recorded in --scores and
    /// --surrogate.
    #[arg(long, value_delimiter = ',')]
    fixed: Vec<usize>,
    /// Layered model folder: with --tokens, every plan is measured on it.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Calibration token table for measuring (prepare-tokens).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Search: candidates measured on the LLM (the best measured is kept); without a model the
    /// best predicted is kept.
    #[arg(long, default_value_t = 8, value_parser = count(0, 1_000_000))]
    candidates: usize,
    /// Search: random starting sets besides the one-shot and iterative solutions.
    #[arg(long, default_value_t = 16, value_parser = count(0, 1_000_000))]
    random_starts: usize,
    /// Antithetic permutation pairs per Shapley computation of a surrogate without a closed
    /// form (MLP, forest).
    #[arg(long, default_value_t = 512, value_parser = count(1, 100_000_000))]
    permutation_pairs: usize,
    /// Adaptive: LLM evaluations per k, at most: `sleb` (SLEB's cost at that k, the default),
    /// a fraction of it (`0.5sleb`), `least`, or a number.
    #[arg(long, default_value = "sleb")]
    budget: Budget,
    /// Seeds the search's random starts and the permutation sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Plan table to write.
    #[arg(long)]
    plan: PathBuf,
    /// Also write the pruned model folder here (exactly one --k).
    #[arg(long)]
    pruned_out: Option<PathBuf>,
    /// Replace an existing --pruned-out folder.
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    device: DeviceArgs,
    /// Windows per forward pass (0 = all windows together).
    #[arg(long, default_value_t = 0, value_parser = count(0, 100_000_000))]
    batch_windows: usize,
    /// Skip checking the model files' sha256 against the manifest.
    #[arg(long)]
    no_verify: bool,
}

fn main() -> ExitCode {
    run(|| apply_prune(Args::parse()))
}

/// An estimator name as written in score tables; an old spelling of the shapley stage's is
/// translated, with a note.
fn parse_estimator(text: &str) -> Result<String, String> {
    Ok(match layerprune_shapley::Estimator::parse(text) {
        Ok((estimator, note)) => {
            if let Some(note) = note {
                eprintln!("{note}");
            }
            estimator.name().to_string()
        }
        // Baseline scores (block-influence, angular, ...) and other tables' names.
        Err(_) => text.to_string(),
    })
}

fn check_args(args: &Args, method: PlanMethod) -> Result<()> {
    if args.pruned_out.is_some() && args.k.len() != 1 {
        bail!(
            "--pruned-out writes one model, so it needs exactly one --k (got {})",
            args.k.len()
        );
    }
    if let Some(dest) = &args.pruned_out {
        if dest.exists() && !args.overwrite {
            bail!(
                "{} already exists; pass --overwrite to replace it",
                dest.display()
            );
        }
    }
    if args.model.is_some() != args.tokens.is_some() {
        bail!("measuring needs both --model and --tokens");
    }
    if args.pruned_out.is_some() && args.model.is_none() {
        bail!("--pruned-out needs --model (the folder to prune) and --tokens");
    }
    let need = |present: bool, what: &str| {
        if present {
            Ok(())
        } else {
            Err(anyhow::anyhow!("--method {method} needs {what}"))
        }
    };
    match method {
        PlanMethod::OneShot => {
            need(args.scores.is_some(), "--scores")?;
            need(args.estimator.is_some(), "--estimator")?;
        }
        PlanMethod::Iterative | PlanMethod::Search => {
            need(args.surrogate.is_some(), "--surrogate")?
        }
        PlanMethod::Sleb | PlanMethod::Adaptive => {
            need(args.model.is_some(), "--model and --tokens")?
        }
        PlanMethod::AngularRun => need(args.block_stats.is_some(), "--block-stats")?,
        PlanMethod::FromPlan => need(args.plans.is_some(), "--plans")?,
    }
    Ok(())
}

/// The block count every input must agree on, with where it came from.
struct BlockCount {
    num_blocks: Option<usize>,
    source: String,
}

impl BlockCount {
    fn agree(&mut self, num_blocks: usize, source: &Path, what: &str) -> Result<()> {
        match self.num_blocks {
            Some(expected) if expected != num_blocks => bail!(
                "{}: the {what} is for a model of {num_blocks} blocks, but {} has {expected}",
                source.display(),
                self.source
            ),
            Some(_) => Ok(()),
            None => {
                self.num_blocks = Some(num_blocks);
                self.source = source.display().to_string();
                Ok(())
            }
        }
    }
}

fn apply_prune(args: Args) -> Result<()> {
    let method = match (args.method, &args.scores) {
        (Some(method), _) => method,
        (None, Some(_)) => PlanMethod::OneShot,
        (None, None) => bail!("give --scores (one-shot) or --method"),
    };
    check_args(&args, method)?;
    // Before any work: the plan table and the pruned folder may not replace (or hold) an input.
    Io::new()
        .input_opt(args.scores.as_deref())
        .input_opt(args.surrogate.as_deref())
        .input_opt(args.block_stats.as_deref())
        .input_opt(args.plans.as_deref())
        .input_opt(args.model.as_deref())
        .input_opt(args.tokens.as_deref())
        .output("--plan", &args.plan)
        .output_folder_opt("--pruned-out", args.pruned_out.as_deref())
        .check()?;

    // Read every input, checking they describe one model; the fixed blocks recorded in the
    // score table and the surrogate are kept, with --fixed.
    let mut count = BlockCount {
        num_blocks: None,
        source: String::new(),
    };
    let mut fixed = args.fixed.clone();
    let model = match &args.model {
        Some(dir) => {
            let options = RuntimeOptions {
                device: args.device.device,
                threads: args.device.threads,
                verify_hashes: !args.no_verify,
            };
            let model = LayeredModel::open(dir, &options)?;
            count.agree(model.num_blocks(), dir, "model")?;
            Some(model)
        }
        None => None,
    };
    let surrogate = match &args.surrogate {
        Some(path) => {
            let saved = SavedSurrogate::load(path)?;
            count.agree(saved.surrogate.num_players(), path, "surrogate")?;
            if let Some(model) = &model {
                if !saved.model_id.is_empty() && saved.model_id != model.model_id() {
                    bail!(
                        "{} was fitted on evaluations of another model ({}) than {} ({})",
                        path.display(),
                        saved.model_id,
                        args.model.as_deref().unwrap_or(Path::new("")).display(),
                        model.model_id()
                    );
                }
            }
            fixed.extend(&saved.fixed_blocks);
            Some(saved)
        }
        None => None,
    };
    let scores = match (&args.scores, method) {
        (Some(path), PlanMethod::OneShot) => {
            let table = read_scores(path)?;
            count.agree(table.num_blocks, path, "score table")?;
            if let Some(model) = &model {
                if !table.model_id.is_empty() && table.model_id != model.model_id() {
                    bail!(
                        "{}: the scores were measured on another model ({}) than {} ({})",
                        path.display(),
                        table.model_id,
                        args.model.as_deref().unwrap_or(Path::new("")).display(),
                        model.model_id()
                    );
                }
            }
            fixed.extend(&table.fixed_blocks);
            let estimator = args.estimator.as_deref().unwrap_or_default();
            Some(
                scores_from_table(&table, estimator, table.num_blocks)
                    .with_context(|| path.display().to_string())?,
            )
        }
        _ => None,
    };
    let stats = match (&args.block_stats, method) {
        (Some(path), PlanMethod::AngularRun) => {
            let table = read_block_stats(path)?;
            count.agree(table.num_blocks, path, "block statistics table")?;
            Some(table)
        }
        _ => None,
    };
    let earlier_plans = match &args.plans {
        Some(path) => {
            let table = read_plans(path)?;
            count.agree(table.num_blocks, path, "plan table")?;
            Some(table)
        }
        None => None,
    };
    let Some(num_blocks) = count.num_blocks else {
        bail!("no input says how many blocks the model has");
    };
    fixed.sort_unstable();
    fixed.dedup();
    // One Shapley computation through a surrogate holds `--permutation-pairs` pairs of player
    // orders and a marginal per player for each (about 32 bytes per pair and block).
    check_memory(
        "--permutation-pairs x the number of blocks",
        &[args.permutation_pairs, num_blocks + 1],
        32,
    )?;

    let (mut game, dataset_id) = match (model, &args.tokens) {
        (Some(model), Some(path)) => {
            let tokens = read_tokens(path)?;
            let options = EvalOptions {
                batch_windows: args.batch_windows,
                ..EvalOptions::default()
            };
            let evaluator = Evaluator::new(model, &tokens.windows, options).with_context(|| {
                format!(
                    "{} with {}",
                    path.display(),
                    args.model.as_deref().unwrap_or(Path::new("")).display()
                )
            })?;
            (
                Some(OnnxGame::new(evaluator, Objective::NegNll)?),
                Some(tokens.dataset_id),
            )
        }
        _ => (None, None),
    };

    let options = PlanOptions {
        num_blocks,
        ks: args.k.clone(),
        fixed,
        candidates: args.candidates,
        random_starts: args.random_starts,
        permutation_pairs: args.permutation_pairs,
        budget: args.budget,
        seed: args.seed,
    };
    let mut inputs = PlanInputs {
        scores: scores.as_ref(),
        surrogate: surrogate.as_ref().map(|saved| FittedOn {
            surrogate: &saved.surrogate,
            llm_evaluations: args
                .surrogate_evaluations
                .unwrap_or(saved.fitted_on_evaluations),
        }),
        block_stats: stats.as_ref(),
        earlier_plans: earlier_plans.as_ref(),
        plan_method: args.plan_method.as_deref(),
        game: game.as_mut().map(|g| g as &mut dyn Game),
    };
    let mut plans = choose_plans(method, &mut inputs, &options).with_context(|| {
        match (method, &args.plans) {
            (PlanMethod::FromPlan, Some(path)) => path.display().to_string(),
            _ => format!("--method {method}"),
        }
    })?;

    let mut provenance = Provenance::new("apply-prune", env!("CARGO_PKG_VERSION"), command_line())
        .with_seed(args.seed);
    if let (Some(game), Some(dataset_id)) = (game.as_mut(), &dataset_id) {
        measure_plans(game, &mut plans, num_blocks)?;
        provenance = provenance
            .with_input("model", game.evaluator().model().model_id())
            .with_input("dataset", dataset_id);
    }
    let table = PlanTable {
        num_blocks,
        rows: plans
            .iter()
            .map(|plan| plan.to_row())
            .collect::<Result<_, _>>()?,
    };

    // The pruned folder is planned (and checked) before anything is written.
    let layout = match (&args.pruned_out, &args.model) {
        (Some(_), Some(source)) => Some(layerprune_model::pruned_layout(
            source,
            &plans[0].removed,
            &plans[0].method,
        )?),
        _ => None,
    };
    write_plans(&args.plan, &table, &provenance)?;
    print_plans(&table);
    if let (Some(dest), Some(source), Some(layout)) = (&args.pruned_out, &args.model, &layout) {
        layerprune_model::write_pruned_model(source, dest, layout, args.overwrite)?;
        eprintln!(
            "wrote {} ({} blocks; left out {})",
            dest.display(),
            layout.manifest.num_blocks,
            layout.dropped.join(", ")
        );
    }
    Ok(())
}

fn print_plans(table: &PlanTable) {
    println!(
        "{:<24} {:>3} {:>10} {:>10} {:>10} {:>8}  removed blocks",
        "method", "k", "predicted", "nll", "ppl", "llm-evals"
    );
    let show = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.4}"));
    for row in &table.rows {
        let removed: Vec<String> = row.removed_blocks.iter().map(u32::to_string).collect();
        println!(
            "{:<24} {:>3} {:>10} {:>10} {:>10} {:>8}  {}",
            row.method,
            row.k,
            show(row.predicted_utility),
            show(row.measured_nll),
            show(row.measured_ppl),
            row.llm_evaluations,
            if removed.is_empty() {
                "-".to_string()
            } else {
                removed.join(",")
            }
        );
    }
}
