//! `fit-surrogate`: fits surrogate models of the pruning game on an evaluation table,
//! cross-validates them, prints and writes their metrics (r2, Spearman, MAE), and saves one
//! model fitted on all rows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use layerprune_core::GameValue;
use layerprune_surrogate::training::{self, SurrogateFit};
use layerprune_surrogate::{FitOptions, SurrogateKind};
use layerprune_tables::{Provenance, TableKind};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Fit surrogate models (mlp, quadratic, forest) of mask value on evaluated masks, \
             cross-validate them, and save one fitted on all rows",
    after_help = "Examples:\n  \
        fit-surrogate --evaluations evaluations.parquet --kind mlp --kind quadratic --keep mlp \\\n    \
        --folds 5 --metrics surrogate-metrics.parquet --out surrogate-mlp.json\n  \
        fit-surrogate --evaluations evaluations.parquet --value nll-increase --kind quadratic \\\n    \
        --ridge-alpha 0.01 --out surrogate-quadratic.json"
)]
struct Args {
    /// Evaluation table written by `evaluate`.
    #[arg(long)]
    evaluations: PathBuf,
    /// The game's value to predict: utility (the published one), nll-increase or neg-nll;
    /// each is higher for better masks. The same values as `shapley --value`. (Called
    /// --target until 2026-12-04; still accepted.)
    #[arg(long, alias = "target", default_value = "utility")]
    value: GameValue,
    /// Kind of surrogate to fit: mlp, quadratic or forest. Repeat to compare several. (Called
    /// --model until 2026-12-03, which every other stage uses for the model folder; still
    /// accepted.)
    #[arg(
        long = "kind",
        alias = "model",
        value_name = "KIND",
        default_value = "mlp",
        value_parser = parse_kind
    )]
    kinds: Vec<SurrogateKind>,
    /// Cross-validation folds (0 = no cross-validation).
    #[arg(long, default_value_t = 5, value_parser = parse_folds)]
    folds: usize,
    /// Seeds the folds, the MLP's initialisation and shuffling, and the forest (default 0). A
    /// run that draws nothing (only a quadratic surrogate, with --folds 0) refuses it.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to save the surrogate fitted on all rows (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which surrogate to save with --out, by its kind (default: the first --kind).
    #[arg(long, value_name = "KIND")]
    keep: Option<SurrogateKind>,
    /// Where to write the cross-validation metrics: a surrogate_metrics table (Parquet) of r2,
    /// spearman and mae for each kind and fold (fold -1 = the mean over folds). Not a score
    /// table: scores are the per-block estimates of shapley and score-blocks.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Ridge strength α of the quadratic model (0 or more; default 0.01, `make demo`'s), on the
    /// mean squared error: it minimises (1/n)·Σ(y − b − wᵀx)² + α·‖w‖², the intercept b not
    /// penalised (scikit-learn's Ridge alpha is n times this α).
    #[arg(long, value_parser = parse_ridge_alpha)]
    ridge_alpha: Option<f64>,
    /// MLP training epochs (default 300, the published number).
    #[arg(long, value_parser = layerprune_cli_common::count(1, 1_000_000))]
    epochs: Option<usize>,
    /// Trees in the forest (default 100).
    #[arg(long, value_parser = layerprune_cli_common::count(1, 100_000))]
    trees: Option<usize>,
    #[command(flatten)]
    threads: layerprune_cli_common::ThreadsArgs,
    #[command(flatten)]
    incomplete: layerprune_cli_common::IncompleteArgs,
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| fit_surrogate(Args::parse()))
}

/// The fitting settings, their defaults where not given.
fn fit_options(args: &Args) -> FitOptions {
    let defaults = FitOptions::default();
    FitOptions {
        seed: args.seed.unwrap_or(defaults.seed),
        ridge_alpha: args.ridge_alpha.unwrap_or(defaults.ridge_alpha),
        epochs: args.epochs.unwrap_or(defaults.epochs),
        trees: args.trees.unwrap_or(defaults.trees),
        ..defaults
    }
}

/// A surrogate kind; a path given for one (`--model DIR`, `--kind`'s old name, which every
/// other stage uses for the model folder) is told as such, not only as an unknown kind.
fn parse_kind(text: &str) -> Result<SurrogateKind, String> {
    text.parse().map_err(|error: String| {
        if text.contains('/') || Path::new(text).exists() {
            format!(
                "{error}: --kind (once called --model, still accepted) is the kind of \
                 surrogate; fit-surrogate reads no model folder, only --evaluations"
            )
        } else {
            error
        }
    })
}

/// Refuses a setting the run would not read, naming why: one of a kind the run does not fit
/// (not asked for with --kind; or asked for, but with no cross-validation and another kind
/// saved: until 2026-12-07 `--kind quadratic --kind mlp --folds 0 --keep quadratic --epochs 5`
/// was taken and the epochs ignored), and a seed where nothing is drawn.
fn refuse_unread_settings(args: &Args, request: &SurrogateFit) -> anyhow::Result<()> {
    for (flag, given, kind) in [
        (
            "--ridge-alpha",
            args.ridge_alpha.is_some(),
            SurrogateKind::Quadratic,
        ),
        (
            "--epochs",
            args.epochs.is_some(),
            SurrogateKind::PublishedMlp,
        ),
        ("--trees", args.trees.is_some(), SurrogateKind::Forest),
    ] {
        if !given || request.fits(kind) {
            continue;
        }
        if !request.kinds.contains(&kind) {
            anyhow::bail!(
                "{flag} is a setting of the {kind} surrogate, which is not fitted (add --kind \
                 {kind}, or leave {flag} out)"
            );
        }
        let saved = request
            .saved_kind()
            .map_or_else(|| "no".to_string(), |kind| format!("the {kind}"));
        anyhow::bail!(
            "{flag} is a setting of the {kind} surrogate, and this run fits none ({saved} \
             surrogate's fit, with no cross-validation: --folds 0); leave it out"
        );
    }
    if args.seed.is_some() && !request.reads_seed() {
        anyhow::bail!(
            "--seed seeds the cross-validation folds and the mlp's and forest's fits, and this run \
             draws nothing (a quadratic surrogate's fit, with no cross-validation: --folds 0); \
             leave it out"
        );
    }
    Ok(())
}

/// Cross-validation folds: 0 (none), or 2 to 100,000 (one fold has nothing to train on).
fn parse_folds(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(folds) if folds == 0 || (2..=100_000).contains(&folds) => Ok(folds),
        _ => Err(format!(
            "{text:?} is not a number of folds: 0 (no cross-validation) or 2 to 100000"
        )),
    }
}

/// A ridge strength: a finite number, 0 or more (refused as a usage error, before any input is
/// read).
fn parse_ridge_alpha(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(alpha) if alpha.is_finite() && alpha >= 0.0 => Ok(alpha),
        _ => Err(format!(
            "{text:?} is not a ridge strength: a number, 0 or more"
        )),
    }
}

fn fit_surrogate(args: Args) -> anyhow::Result<()> {
    args.threads.set_thread_budget();
    let request = SurrogateFit {
        evaluations: args.evaluations.clone(),
        incomplete: args.incomplete.incomplete(),
        value: args.value,
        kinds: args.kinds.clone(),
        folds: args.folds,
        keep: args.keep,
        save: args.out.is_some(),
        metrics: args.metrics.is_some(),
        options: fit_options(&args),
    };
    request.check()?;
    refuse_unread_settings(&args, &request)?;
    let _outputs = layerprune_cli_common::Io::new()
        .input(&args.evaluations)
        .output_surrogate_opt("--out", args.out.as_deref())
        .output_table_opt(
            "--metrics",
            args.metrics.as_deref(),
            TableKind::SurrogateMetrics,
        )
        .check()?;
    let fitted = request
        .run(&mut |scores| layerprune_cli_common::print_summary(&training::metrics_text(scores)))?;
    // The seed recorded is the one the fit used: its default (0) where none was given.
    let provenance = fitted.provenance(
        Provenance::new(
            "fit-surrogate",
            env!("CARGO_PKG_VERSION"),
            layerprune_cli_common::command_line(),
        )
        .with_seed(request.options.seed),
    );
    fitted.write(args.metrics.as_deref(), args.out.as_deref(), &provenance)
}
