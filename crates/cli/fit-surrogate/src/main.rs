//! `fit-surrogate`: fits surrogate models of the pruning game on an evaluation table,
//! cross-validates them, prints and writes the scores, and saves one model fitted on all rows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use layerprune_core::{GameValue, Mask};
use layerprune_surrogate::{
    cross_validate, fit, mean_over_folds, training_data_warnings, FitOptions, FoldMetrics,
    SavedSurrogate, SurrogateKind,
};
use layerprune_tables::{
    read_complete_evaluations, write_surrogate_metrics, EvaluationTable, Provenance,
    SurrogateMetricRow, SurrogateMetricsTable, TableKind,
};

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
    #[arg(long = "kind", alias = "model", default_value = "mlp")]
    kinds: Vec<SurrogateKind>,
    /// Cross-validation folds (0 = no cross-validation).
    #[arg(long, default_value_t = 5, value_parser = layerprune_cli_common::count(0, 100_000))]
    folds: usize,
    /// Seeds the folds, the MLP's initialisation and shuffling, and the forest.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to save the surrogate fitted on all rows (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Which surrogate to save with --out (default: the first --kind).
    #[arg(long)]
    keep: Option<SurrogateKind>,
    /// Where to write the cross-validation scores (Parquet; fold -1 = mean over folds).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Ridge strength of the quadratic model (0 or more; default 1e-4).
    #[arg(long, value_parser = parse_ridge_alpha)]
    ridge_alpha: Option<f64>,
    /// MLP training epochs (default 300, the published number).
    #[arg(long, value_parser = layerprune_cli_common::count(1, 1_000_000))]
    epochs: Option<usize>,
    /// Trees in the forest (default 100).
    #[arg(long, value_parser = layerprune_cli_common::count(1, 100_000))]
    trees: Option<usize>,
    #[command(flatten)]
    incomplete: layerprune_cli_common::IncompleteArgs,
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| fit_surrogate(Args::parse()))
}

/// The training rows: masks and their finite values, and how many rows were dropped because
/// their value was NaN or infinite (as the published pipeline does).
struct TrainingRows {
    masks: Vec<Mask>,
    values: Vec<f64>,
    dropped: usize,
}

fn training_rows(
    table: &EvaluationTable,
    value: GameValue,
    path: &Path,
) -> anyhow::Result<TrainingRows> {
    if table.rows.is_empty() {
        bail!("{}: the evaluation table has no rows", path.display());
    }
    let values = table.values(value).map_err(|e| {
        anyhow::anyhow!(
            "{}: --value {}: {}",
            path.display(),
            value.name(),
            e.message
        )
    })?;
    let mut rows = TrainingRows {
        masks: Vec::with_capacity(table.rows.len()),
        values: Vec::with_capacity(table.rows.len()),
        dropped: 0,
    };
    for (row, row_value) in table.rows.iter().zip(values) {
        if row_value.is_finite() {
            rows.masks.push(row.mask.clone());
            rows.values.push(row_value);
        } else {
            rows.dropped += 1;
        }
    }
    if rows.masks.is_empty() {
        bail!(
            "{}: all {} rows have a NaN or infinite {}",
            path.display(),
            table.rows.len(),
            value.name()
        );
    }
    Ok(rows)
}

fn fit_options(args: &Args) -> FitOptions {
    let defaults = FitOptions::default();
    FitOptions {
        seed: args.seed,
        ridge_alpha: args.ridge_alpha.unwrap_or(defaults.ridge_alpha),
        epochs: args.epochs.unwrap_or(defaults.epochs),
        trees: args.trees.unwrap_or(defaults.trees),
        ..defaults
    }
}

/// The metrics table as printed: a row per fold and surrogate, and their mean.
fn metrics_table(rows: &[SurrogateMetricRow]) -> Result<String, std::fmt::Error> {
    use std::fmt::Write;
    let mut text = String::new();
    writeln!(
        text,
        "{:<10} {:<13} {:>5} {:>9} {:>9} {:>11} {:>8} {:>7}",
        "surrogate", "value", "fold", "r2", "spearman", "mae", "n_train", "n_test"
    )?;
    for row in rows {
        let fold = if row.fold < 0 {
            "mean".to_string()
        } else {
            row.fold.to_string()
        };
        writeln!(
            text,
            "{:<10} {:<13} {:>5} {:>9.4} {:>9.4} {:>11.4e} {:>8} {:>7}",
            row.surrogate, row.value, fold, row.r2, row.spearman, row.mae, row.n_train, row.n_test
        )?;
    }
    Ok(text)
}

fn metric_row(kind: SurrogateKind, value: GameValue, fold: &FoldMetrics) -> SurrogateMetricRow {
    SurrogateMetricRow {
        surrogate: kind.name().to_string(),
        value: value.name().to_string(),
        fold: fold.fold,
        r2: fold.r2,
        spearman: fold.spearman,
        mae: fold.mae,
        n_train: u32::try_from(fold.n_train).unwrap_or(u32::MAX),
        n_test: u32::try_from(fold.n_test).unwrap_or(u32::MAX),
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
    let models = layerprune_core::distinct(&args.kinds);
    if args.metrics.is_some() && args.folds == 0 {
        bail!("--metrics needs cross-validation; give --folds 2 or more");
    }
    if args.folds == 0 && args.out.is_none() {
        bail!(
            "nothing to do: give --out to save a surrogate, or --folds 2 or more to cross-validate"
        );
    }
    if let Some(keep) = args.keep {
        if args.out.is_none() {
            bail!("--keep {keep} names the surrogate --out saves; give --out");
        }
        if !models.contains(&keep) {
            let names: Vec<String> = models.iter().map(ToString::to_string).collect();
            bail!(
                "--keep {keep} is not among the surrogates fitted (--kind {}); add --kind {keep}",
                names.join(", --kind ")
            );
        }
    }
    let _outputs = layerprune_cli_common::Io::new()
        .input(&args.evaluations)
        .output_opt("--out", args.out.as_deref())
        .output_table_opt(
            "--metrics",
            args.metrics.as_deref(),
            TableKind::SurrogateMetrics,
        )
        .check()?;
    let table = read_complete_evaluations(&args.evaluations, args.incomplete.incomplete())
        .with_context(|| format!("reading evaluations {}", args.evaluations.display()))?;
    let rows = training_rows(&table, args.value, &args.evaluations)?;
    if rows.dropped > 0 {
        tracing::warn!(
            "dropped {} of {} rows of {} whose {} is NaN or infinite",
            rows.dropped,
            table.rows.len(),
            args.evaluations.display(),
            args.value.name()
        );
    }
    // The players: the blocks that were not fixed in the game the table records.
    let num_players = table.num_blocks - table.fixed_blocks.len();
    for warning in training_data_warnings(num_players, &rows.values) {
        tracing::warn!("{}: {warning}", args.evaluations.display());
    }
    let options = fit_options(&args);

    let mut metric_rows = Vec::new();
    if args.folds > 0 {
        for &kind in &models {
            let folds = cross_validate(kind, &rows.masks, &rows.values, args.folds, &options)
                .with_context(|| {
                    format!(
                        "{}-fold cross-validation of the {kind} surrogate on {} rows of {}",
                        args.folds,
                        rows.masks.len(),
                        args.evaluations.display()
                    )
                })?;
            metric_rows.extend(folds.iter().map(|f| metric_row(kind, args.value, f)));
            if let Some(mean) = mean_over_folds(&folds) {
                metric_rows.push(metric_row(kind, args.value, &mean));
            }
        }
        layerprune_cli_common::print_summary(&metrics_table(&metric_rows)?)?;
    }

    let provenance = Provenance::new(
        "fit-surrogate",
        env!("CARGO_PKG_VERSION"),
        layerprune_cli_common::command_line(),
    )
    .with_seed(args.seed)
    .with_input("model", &table.model_id)
    .with_input("dataset", &table.dataset_id);

    // Fitted before anything is written, so a failed fit replaces neither file.
    let surrogate = match &args.out {
        Some(path) => {
            let kind = args.keep.unwrap_or(models[0]);
            let model = fit(kind, &rows.masks, &rows.values, &options).with_context(|| {
                format!(
                    "fitting the {kind} surrogate on all {} rows of {}",
                    rows.masks.len(),
                    args.evaluations.display()
                )
            })?;
            // An earlier run's surrogate goes first: a run stopped between the two writes
            // then leaves no surrogate rather than one that disagrees with the new metrics.
            // (Without --metrics there is one write, and the save replaces the old file
            // atomically: a failed save then leaves it as it was.)
            if args.metrics.is_some() {
                layerprune_core::remove_file_if_there(path).with_context(|| {
                    format!("removing the earlier surrogate {}", path.display())
                })?;
            }
            Some((path, kind, model))
        }
        None => None,
    };
    // The metrics before the surrogate: Make tracks the surrogate file, written last, so a run
    // killed between the two leaves that target missing and the next make writes both again.
    if let Some(path) = &args.metrics {
        write_surrogate_metrics(
            path,
            &SurrogateMetricsTable {
                rows: metric_rows.clone(),
            },
            &provenance,
        )
        .with_context(|| format!("writing metrics {}", path.display()))?;
    }
    if let Some((path, kind, model)) = surrogate {
        SavedSurrogate::new(model, args.value.name(), args.value.description())
            .with_fitted_on_evaluations(rows.masks.len() as u64)
            .with_game(&table.fixed_blocks, &table.model_id, &table.dataset_id)
            .save(path)
            .with_context(|| format!("saving the {kind} surrogate"))?;
        tracing::info!(
            "saved the {kind} surrogate ({}, fitted on {} rows) to {}",
            args.value.name(),
            rows.masks.len(),
            path.display()
        );
    }
    Ok(())
}
