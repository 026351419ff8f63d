//! `apply-prune`: chooses the blocks to delete and writes the plans (one per `--k`), optionally
//! measuring each on the LLM and writing the pruned model folder.
//!
//! Selection: one-shot on a score table (`--scores --estimator`), iterative removal or search
//! through a surrogate (`--method iterative|search --surrogate`), SLEB on the model
//! (`--method sleb`), the best contiguous run by angular distance (`--method angular-run
//! --block-stats`), or plans chosen earlier (`--method from-plan --plans`). The algorithms live
//! in `layerprune-selection`; this binary reads the inputs, checks they describe the same
//! model, runs the LLM where asked, and writes the outputs.

mod pruned;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use layerprune_cli_common::{command_line, run, DeviceArgs};
use layerprune_core::{CachedGame, Mask, Objective};
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, OnnxGame, RuntimeOptions};
use layerprune_selection::frontier::{Budget, RECOMMENDED};
use layerprune_selection::{
    adaptive_removal, best_angular_run, iterative_removal, one_shot, removable_blocks,
    scores_from_table, sleb, surrogate_search, AdaptiveOptions, SearchOptions, SurrogateShapley,
};
use layerprune_surrogate::{SavedSurrogate, Surrogate};
use layerprune_tables::{
    read_block_stats, read_plans, read_scores, read_tokens, write_plans, PlanRow, PlanTable,
    Provenance,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Method {
    /// The k lowest scores of one estimator in --scores (the default with --scores).
    OneShot,
    /// Remove the lowest surrogate-Shapley block, recompute over the rest, repeat.
    Iterative,
    /// Search masks with k removed for the best surrogate prediction.
    Search,
    /// SLEB: greedy removal measured on the model (needs --model and --tokens).
    Sleb,
    /// Budget-aware adaptive removal on the model (needs --model and --tokens; --budget): the
    /// method `make demo` recommends.
    Adaptive,
    /// The run of k consecutive blocks with the smallest angular distance (--block-stats).
    AngularRun,
    /// Plans chosen earlier (--plans), e.g. to measure them or write the pruned model.
    FromPlan,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Choose the blocks to delete, measure the plans and write the pruned model"
)]
struct Args {
    /// Selection method; one-shot when --scores is given, otherwise required.
    #[arg(long, value_enum)]
    method: Option<Method>,
    /// Score table (shapley or score-blocks stage) for one-shot selection.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Which estimator's rows of --scores to use.
    #[arg(long)]
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
    #[arg(long, value_delimiter = ',', required = true)]
    k: Vec<usize>,
    /// Blocks never removed (e.g. 0).
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
    #[arg(long, default_value_t = 8)]
    candidates: usize,
    /// Search: random starting sets besides the one-shot and iterative solutions.
    #[arg(long, default_value_t = 16)]
    random_starts: usize,
    /// Antithetic permutation pairs per Shapley computation of a surrogate without a closed
    /// form (MLP, forest).
    #[arg(long, default_value_t = 512)]
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
    #[arg(long, default_value_t = 0)]
    batch_windows: usize,
    /// Skip checking the model files' sha256 against the manifest.
    #[arg(long)]
    no_verify: bool,
}

fn main() -> ExitCode {
    run(|| apply_prune(Args::parse()))
}

/// A plan before measurement.
struct Draft {
    method: String,
    removed: Vec<usize>,
    predicted: Option<f64>,
    measured_nll: Option<f64>,
    llm_evaluations: u64,
    /// Search: the best candidates by prediction, to be measured; the best measured wins.
    candidates: Vec<Vec<usize>>,
}

impl Draft {
    fn new(method: &str, removed: Vec<usize>, llm_evaluations: u64) -> Self {
        Draft {
            method: method.to_string(),
            removed,
            predicted: None,
            measured_nll: None,
            llm_evaluations,
            candidates: Vec::new(),
        }
    }
}

fn check_args(args: &Args, method: Method) -> Result<()> {
    if args.k.is_empty() {
        bail!("--k needs at least one number of blocks to remove");
    }
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
            Err(anyhow::anyhow!("--method {method:?} needs {what}"))
        }
    };
    match method {
        Method::OneShot => {
            need(args.scores.is_some(), "--scores")?;
            need(args.estimator.is_some(), "--estimator")?;
        }
        Method::Iterative | Method::Search => need(args.surrogate.is_some(), "--surrogate")?,
        Method::Sleb | Method::Adaptive => need(args.model.is_some(), "--model and --tokens")?,
        Method::AngularRun => need(args.block_stats.is_some(), "--block-stats")?,
        Method::FromPlan => need(args.plans.is_some(), "--plans")?,
    }
    if method == Method::Search && args.candidates == 0 {
        bail!("--candidates must be at least 1");
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
        (None, Some(_)) => Method::OneShot,
        (None, None) => bail!("give --scores (one-shot) or --method"),
    };
    check_args(&args, method)?;

    let mut count = BlockCount {
        num_blocks: None,
        source: String::new(),
    };
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
            Some(saved)
        }
        None => None,
    };
    let scores = match (&args.scores, method) {
        (Some(path), Method::OneShot) => {
            let table = read_scores(path)?;
            count.agree(table.num_blocks, path, "score table")?;
            let estimator = args.estimator.as_deref().unwrap_or_default();
            Some(
                scores_from_table(&table, estimator, table.num_blocks)
                    .with_context(|| path.display().to_string())?,
            )
        }
        _ => None,
    };
    let stats = match (&args.block_stats, method) {
        (Some(path), Method::AngularRun) => {
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
    for &k in &args.k {
        removable_blocks(num_blocks, &args.fixed, k).with_context(|| format!("--k {k}"))?;
    }
    let k_max = args.k.iter().copied().max().unwrap_or(0);

    let (mut evaluator, dataset_id) = match (model, &args.tokens) {
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
            (Some(evaluator), Some(tokens.dataset_id))
        }
        _ => (None, None),
    };
    // SLEB and adaptive play the model as a game, which owns the evaluator from then on.
    let mut sleb_game: Option<OnnxGame> = None;

    let mut drafts: Vec<Draft> = Vec::new();
    match method {
        Method::OneShot => {
            let scores = scores.context("one-shot needs --scores")?;
            let name = format!("one-shot:{}", scores.method);
            for &k in &args.k {
                let removed = one_shot(&scores.scores, k, &args.fixed)?;
                drafts.push(Draft::new(&name, removed, scores.llm_evaluations));
            }
        }
        Method::Iterative => {
            let saved = surrogate.as_ref().context("iterative needs --surrogate")?;
            let shapley =
                SurrogateShapley::for_fitted(&saved.surrogate, args.permutation_pairs, args.seed);
            let removal = iterative_removal(&shapley, k_max, &args.fixed)?;
            for &k in &args.k {
                drafts.push(Draft::new(
                    "iterative-surrogate",
                    removal.removed_blocks(k),
                    args.surrogate_evaluations
                        .unwrap_or(saved.fitted_on_evaluations),
                ));
            }
        }
        Method::Search => {
            let saved = surrogate.as_ref().context("search needs --surrogate")?;
            let shapley =
                SurrogateShapley::for_fitted(&saved.surrogate, args.permutation_pairs, args.seed);
            let full_game_shapley = match saved.surrogate.exact_shapley() {
                Some(values) => values,
                None => {
                    let everyone: Vec<usize> = (0..num_blocks).collect();
                    shapley.restricted(&Mask::full(num_blocks), &everyone, 0)?
                }
            };
            let removal = iterative_removal(&shapley, k_max, &args.fixed)?;
            let options = SearchOptions {
                random_starts: args.random_starts,
                top_n: args.candidates,
                seed: args.seed,
                ..SearchOptions::default()
            };
            for &k in &args.k {
                let starts = vec![
                    one_shot(&full_game_shapley, k, &args.fixed)?,
                    removal.removed_blocks(k),
                ];
                let found = surrogate_search(&saved.surrogate, k, &args.fixed, &starts, &options)?;
                let mut draft = Draft::new(
                    "surrogate-search",
                    found[0].removed_blocks.clone(),
                    args.surrogate_evaluations
                        .unwrap_or(saved.fitted_on_evaluations),
                );
                draft.candidates = found.into_iter().map(|c| c.removed_blocks).collect();
                drafts.push(draft);
            }
        }
        Method::Sleb => {
            let inner = evaluator.take().context("sleb needs --model")?;
            let game = sleb_game.insert(OnnxGame::new(inner, Objective::NegNll)?);
            let result = sleb(game, k_max, &args.fixed)?;
            for &k in &args.k {
                let mut draft = Draft::new("sleb", result.removed_blocks(k), 0);
                // SLEB ran the plan's mask in its last step, and its value there is −NLL.
                if k > 0 {
                    draft.llm_evaluations = result.evaluations_after[k - 1] as u64;
                    draft.measured_nll = Some(-result.values_after[k - 1]);
                }
                drafts.push(draft);
            }
        }
        Method::Adaptive => {
            let inner = evaluator.take().context("adaptive needs --model")?;
            // One cache for every k: the singles and the greedy's first steps are shared.
            let mut game = CachedGame::new(OnnxGame::new(inner, Objective::NegNll)?);
            let players = removable_blocks(num_blocks, &args.fixed, k_max)?.len();
            for &k in &args.k {
                let options = AdaptiveOptions::with_budget(args.budget.resolve(players, k));
                let result = adaptive_removal(&mut game, k, &args.fixed, &options)?;
                let mut draft = Draft::new(
                    RECOMMENDED,
                    result.removed_blocks,
                    result.llm_evaluations as u64,
                );
                // The plan is a measured mask: its value is −NLL.
                draft.measured_nll = Some(-result.value);
                drafts.push(draft);
            }
            sleb_game = Some(game.into_inner());
        }
        Method::AngularRun => {
            let stats = stats.as_ref().context("angular-run needs --block-stats")?;
            for &k in &args.k {
                let run = best_angular_run(stats, k, &args.fixed)?;
                drafts.push(Draft::new("angular-run", run.removed_blocks, 1));
            }
        }
        Method::FromPlan => {
            let table = earlier_plans.as_ref().context("from-plan needs --plans")?;
            for &k in &args.k {
                let rows: Vec<&PlanRow> = table
                    .rows
                    .iter()
                    .filter(|row| row.k as usize == k)
                    .filter(|row| args.plan_method.as_ref().is_none_or(|m| &row.method == m))
                    .collect();
                let row = match rows.as_slice() {
                    [row] => *row,
                    [] => bail!(
                        "{}: no plan removes {k} blocks{}",
                        args.plans.as_deref().unwrap_or(Path::new("")).display(),
                        args.plan_method
                            .as_ref()
                            .map(|m| format!(" with method {m}"))
                            .unwrap_or_default()
                    ),
                    _ => bail!(
                        "{}: {} plans remove {k} blocks (methods {}); choose one with --plan-method",
                        args.plans.as_deref().unwrap_or(Path::new("")).display(),
                        rows.len(),
                        rows.iter().map(|r| r.method.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                };
                let removed: Vec<usize> = row.removed_blocks.iter().map(|&b| b as usize).collect();
                if let Some(block) = removed.iter().find(|b| args.fixed.contains(b)) {
                    bail!(
                        "the {} plan for k = {k} removes fixed block {block}",
                        row.method
                    );
                }
                let mut draft = Draft::new(&row.method, removed, row.llm_evaluations);
                draft.predicted = row.predicted_utility;
                drafts.push(draft);
            }
        }
    }

    if let Some(saved) = &surrogate {
        for draft in &mut drafts {
            let mask = Mask::from_removed(num_blocks, &draft.removed)?;
            draft.predicted = saved.surrogate.predict(&[mask]).first().copied();
        }
    }

    let mut provenance = Provenance::new("apply-prune", env!("CARGO_PKG_VERSION"), command_line())
        .with_seed(args.seed);
    let evaluator = match sleb_game.as_mut() {
        Some(game) => Some(game.evaluator()),
        None => evaluator.as_mut(),
    };
    if let (Some(evaluator), Some(dataset_id)) = (evaluator, &dataset_id) {
        measure(evaluator, &mut drafts, num_blocks)?;
        provenance = provenance
            .with_input("model", evaluator.model().model_id())
            .with_input("dataset", dataset_id);
    }

    let table = PlanTable {
        num_blocks,
        rows: drafts
            .iter()
            .map(|draft| {
                Ok(PlanRow {
                    method: draft.method.clone(),
                    k: u32::try_from(draft.removed.len())?,
                    removed_blocks: draft
                        .removed
                        .iter()
                        .map(|&b| u32::try_from(b))
                        .collect::<Result<_, _>>()?,
                    predicted_utility: draft.predicted,
                    measured_nll: draft.measured_nll,
                    measured_ppl: draft.measured_nll.map(f64::exp),
                    llm_evaluations: draft.llm_evaluations,
                })
            })
            .collect::<Result<_>>()?,
    };

    // The pruned folder is planned (and checked) before anything is written.
    let layout = match (&args.pruned_out, &args.model) {
        (Some(_), Some(source)) => Some(pruned::pruned_layout(
            source,
            &drafts[0].removed,
            &drafts[0].method,
        )?),
        _ => None,
    };
    write_plans(&args.plan, &table, &provenance)?;
    print_plans(&table);
    if let (Some(dest), Some(source), Some(layout)) = (&args.pruned_out, &args.model, &layout) {
        pruned::write_pruned_model(source, dest, layout, args.overwrite)?;
        eprintln!(
            "wrote {} ({} blocks; left out {})",
            dest.display(),
            layout.manifest.num_blocks,
            layout.dropped.join(", ")
        );
    }
    Ok(())
}

/// Runs every plan not measured yet on the LLM (one batch, so masks share prefixes). A search
/// plan measures its candidates and keeps the best measured.
fn measure(evaluator: &mut Evaluator, drafts: &mut [Draft], num_blocks: usize) -> Result<()> {
    let mut masks: Vec<Mask> = Vec::new();
    for draft in drafts.iter().filter(|d| d.measured_nll.is_none()) {
        if draft.candidates.is_empty() {
            masks.push(Mask::from_removed(num_blocks, &draft.removed)?);
        } else {
            for candidate in &draft.candidates {
                masks.push(Mask::from_removed(num_blocks, candidate)?);
            }
        }
    }
    masks.sort();
    masks.dedup();
    if masks.is_empty() {
        return Ok(());
    }
    let results = evaluator.evaluate(&masks, &mut |_, _| {})?;
    let nll_of = |removed: &[usize]| -> Result<f64> {
        let mask = Mask::from_removed(num_blocks, removed)?;
        let position = masks
            .binary_search(&mask)
            .map_err(|_| anyhow::anyhow!("mask {mask} was not measured"))?;
        Ok(results[position].nll())
    };
    for draft in drafts.iter_mut().filter(|d| d.measured_nll.is_none()) {
        if draft.candidates.is_empty() {
            draft.measured_nll = Some(nll_of(&draft.removed)?);
            draft.llm_evaluations += 1;
        } else {
            let mut best: Option<(f64, &Vec<usize>)> = None;
            for candidate in &draft.candidates {
                let nll = nll_of(candidate)?;
                if best.is_none_or(|(b, _)| nll < b) {
                    best = Some((nll, candidate));
                }
            }
            if let Some((nll, candidate)) = best {
                draft.removed = candidate.clone();
                draft.measured_nll = Some(nll);
            }
            draft.llm_evaluations += draft.candidates.len() as u64;
        }
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
