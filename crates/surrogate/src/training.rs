//! The `fit-surrogate` stage as library calls: an evaluation table's rows as training data
//! (the rows whose value is not finite dropped, as the published pipeline does), every kind
//! asked for cross-validated, one kind fitted on all rows ([`SurrogateFit::run`]), and the two
//! outputs written in the order that lets a killed run be redone ([`FittedSurrogates::write`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{GameValue, Mask};
use layerprune_tables::{
    read_complete_evaluations, write_surrogate_metrics, EvaluationTable, Incomplete, Provenance,
    SurrogateMetricRow, SurrogateMetricsTable,
};

use crate::{
    cross_validate, fit, mean_over_folds, training_data_warnings, FitOptions, FoldMetrics,
    SavedSurrogate, SurrogateKind,
};

/// An evaluation table's masks and their finite values of one game value, and how many rows
/// were dropped because their value was NaN or infinite.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingRows {
    pub masks: Vec<Mask>,
    pub values: Vec<f64>,
    pub dropped: usize,
    /// The blocks whose removal alone gave a dropped row (a model that collapses without
    /// them): no fit sees them removed alone, so a surrogate's score may rank such a block
    /// among the least important, when it is the most.
    pub collapsed_alone: Vec<usize>,
}

impl TrainingRows {
    /// The rows of `table` (read from `path`, named in errors) with their `value`. Fails when
    /// the table has no rows, the value cannot be computed from it, or no row's value is finite.
    pub fn of_table(table: &EvaluationTable, value: GameValue, path: &Path) -> Result<Self> {
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
            collapsed_alone: Vec::new(),
        };
        for (index, (row, row_value)) in table.rows.iter().zip(values).enumerate() {
            if row_value.abs() > crate::MAX_TARGET_MAGNITUDE && row_value.is_finite() {
                bail!(
                    "{}: row {index} (mask {}) has the {} {row_value:e}, beyond ±{:e}: too large \
                     for a surrogate's arithmetic, and for any game value of a model",
                    path.display(),
                    row.mask,
                    value.name(),
                    crate::MAX_TARGET_MAGNITUDE
                );
            }
            if row_value.is_finite() {
                rows.masks.push(row.mask.clone());
                rows.values.push(row_value);
            } else {
                rows.dropped += 1;
                if row.mask.num_removed() == 1 {
                    rows.collapsed_alone.extend(row.mask.removed_blocks());
                }
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
}

/// What to fit, on what, and what to produce.
#[derive(Clone, Debug)]
pub struct SurrogateFit {
    /// The evaluation table to fit on.
    pub evaluations: PathBuf,
    pub incomplete: Incomplete,
    /// The game value to predict.
    pub value: GameValue,
    /// The kinds to cross-validate; the first (or `keep`) is the one saved.
    pub kinds: Vec<SurrogateKind>,
    /// Cross-validation folds (0: none).
    pub folds: usize,
    /// The kind fitted on all rows and saved (default: the first of `kinds`).
    pub keep: Option<SurrogateKind>,
    /// Whether a surrogate is fitted on all rows (to be saved).
    pub save: bool,
    /// Whether the cross-validation metrics are wanted as a table.
    pub metrics: bool,
    pub options: FitOptions,
}

/// What [`SurrogateFit::run`] produced: the cross-validation metrics (a row per fold and kind,
/// and their mean as fold −1) and the surrogate fitted on all rows, ready to save.
pub struct FittedSurrogates {
    pub metric_rows: Vec<SurrogateMetricRow>,
    pub saved: Option<(SurrogateKind, SavedSurrogate)>,
    /// The rows fitted on.
    pub rows: usize,
    pub model_id: String,
    pub dataset_id: String,
}

impl SurrogateFit {
    /// Refuses settings that ask for nothing or contradict each other, before any input is
    /// read.
    pub fn check(&self) -> Result<()> {
        if self.kinds.is_empty() {
            bail!("no surrogate kind to fit; give --kind");
        }
        if self.metrics && self.folds == 0 {
            bail!("--metrics needs cross-validation; give --folds 2 or more");
        }
        if self.folds == 0 && !self.save {
            bail!(
                "nothing to do: give --out to save a surrogate, or --folds 2 or more to \
                 cross-validate"
            );
        }
        if let Some(keep) = self.keep {
            if !self.save {
                bail!("--keep {keep} names the surrogate --out saves; give --out");
            }
            if !self.kinds.contains(&keep) {
                let names: Vec<String> = self.kinds.iter().map(ToString::to_string).collect();
                bail!(
                    "--keep {keep} is not among the surrogates fitted (--kind {}); add --kind \
                     {keep}",
                    names.join(", --kind ")
                );
            }
        }
        Ok(())
    }

    /// Reads the table, cross-validates every kind (each once), hands the metrics to
    /// `on_metrics` (to be shown before the longer fit on all rows, and even if it fails), and
    /// fits the kept kind on all rows. Nothing is written: a failed fit replaces no file.
    pub fn run(
        &self,
        on_metrics: &mut dyn FnMut(&[SurrogateMetricRow]) -> Result<()>,
    ) -> Result<FittedSurrogates> {
        self.check()?;
        let path = &self.evaluations;
        let table = read_complete_evaluations(path, self.incomplete)
            .with_context(|| format!("reading evaluations {}", path.display()))?;
        let rows = TrainingRows::of_table(&table, self.value, path)?;
        if rows.dropped > 0 {
            tracing::warn!(
                "dropped {} of {} rows of {} whose {} is NaN or infinite",
                rows.dropped,
                table.rows.len(),
                path.display(),
                self.value.name()
            );
        }
        if !rows.collapsed_alone.is_empty() {
            tracing::warn!(
                "{}: without block(s) {:?} alone the model collapses (a NaN or infinite {}): \
                 no surrogate sees them removed and may score them among the least important; \
                 keep them (apply-prune --fixed) or choose with a method that measures the \
                 model (sleb, adaptive)",
                path.display(),
                rows.collapsed_alone,
                self.value.name()
            );
        }
        for warning in training_data_warnings(&rows.masks, &table.fixed_blocks, &rows.values) {
            tracing::warn!("{}: {warning}", path.display());
        }
        let kinds = layerprune_core::distinct(&self.kinds);
        let mut metric_rows = Vec::new();
        if self.folds > 0 {
            for &kind in &kinds {
                let folds =
                    cross_validate(kind, &rows.masks, &rows.values, self.folds, &self.options)
                        .with_context(|| {
                            format!(
                                "{}-fold cross-validation of the {kind} surrogate on {} rows \
                                 of {}",
                                self.folds,
                                rows.masks.len(),
                                path.display()
                            )
                        })?;
                let row = |fold: &FoldMetrics| metric_row(kind, self.value, fold);
                metric_rows.extend(folds.iter().map(row));
                metric_rows.extend(mean_over_folds(&folds).as_ref().map(row));
            }
            on_metrics(&metric_rows)?;
        }
        let saved = if self.save {
            let kind = self.keep.unwrap_or(kinds[0]);
            let model = fit(kind, &rows.masks, &rows.values, &self.options).with_context(|| {
                format!(
                    "fitting the {kind} surrogate on all {} rows of {}",
                    rows.masks.len(),
                    path.display()
                )
            })?;
            let saved = SavedSurrogate::new(model, self.value.name(), self.value.description())
                .with_fitted_on_evaluations(rows.masks.len() as u64)
                .with_game(&table.fixed_blocks, &table.model_id, &table.dataset_id);
            Some((kind, saved))
        } else {
            None
        };
        Ok(FittedSurrogates {
            metric_rows,
            saved,
            rows: rows.masks.len(),
            model_id: table.model_id,
            dataset_id: table.dataset_id,
        })
    }
}

impl FittedSurrogates {
    /// Writes the metrics table to `metrics` and the surrogate to `out` (each where given).
    /// The order is what makes a killed run safe to redo: an earlier surrogate is removed
    /// first, then the metrics are written, then the surrogate, so that Make, which tracks the
    /// surrogate file, sees a run stopped between the writes as not done and writes both
    /// again, and no surrogate ever sits beside metrics of another fit. (With the surrogate
    /// alone, its atomic save leaves the old file as it was if it fails.)
    pub fn write(
        &self,
        metrics: Option<&Path>,
        out: Option<&Path>,
        provenance: &Provenance,
    ) -> Result<()> {
        let surrogate = out.zip(self.saved.as_ref());
        if let (Some((path, _)), Some(_)) = (surrogate, metrics) {
            layerprune_core::remove_file_if_there(path)
                .with_context(|| format!("removing the earlier surrogate {}", path.display()))?;
        }
        if let Some(path) = metrics {
            let table = SurrogateMetricsTable {
                rows: self.metric_rows.clone(),
            };
            write_surrogate_metrics(path, &table, provenance)
                .with_context(|| format!("writing metrics {}", path.display()))?;
            tracing::info!("wrote {} ({} rows)", path.display(), self.metric_rows.len());
        }
        if let Some((path, (kind, saved))) = surrogate {
            saved
                .save(path)
                .with_context(|| format!("saving the {kind} surrogate"))?;
            tracing::info!(
                "saved the {kind} surrogate ({}, fitted on {} rows) to {}",
                saved.value,
                self.rows,
                path.display()
            );
        }
        Ok(())
    }
}

/// Cross-validation metrics as printed: a row per fold and surrogate, and their mean.
pub fn metrics_text(rows: &[SurrogateMetricRow]) -> String {
    use std::fmt::Write;
    let mut text = format!(
        "{:<10} {:<13} {:>5} {:>9} {:>9} {:>11} {:>8} {:>7}\n",
        "kind", "value", "fold", "r2", "spearman", "mae", "n_train", "n_test"
    );
    for row in rows {
        let fold = if row.fold < 0 {
            "mean".to_string()
        } else {
            row.fold.to_string()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "{:<10} {:<13} {:>5} {:>9.4} {:>9.4} {:>11.4e} {:>8} {:>7}",
            row.kind, row.value, fold, row.r2, row.spearman, row.mae, row.n_train, row.n_test
        );
    }
    text
}

fn metric_row(kind: SurrogateKind, value: GameValue, fold: &FoldMetrics) -> SurrogateMetricRow {
    SurrogateMetricRow {
        kind: kind.name().to_string(),
        value: value.name().to_string(),
        fold: fold.fold,
        r2: fold.r2,
        spearman: fold.spearman,
        mae: fold.mae,
        n_train: u32::try_from(fold.n_train).unwrap_or(u32::MAX),
        n_test: u32::try_from(fold.n_test).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(nlls: &[(&str, f64)]) -> EvaluationTable {
        layerprune_tests::evaluation_table(3, nlls)
    }

    #[test]
    fn rows_whose_value_is_not_finite_are_dropped_and_counted() {
        let path = Path::new("e.parquet");
        let rows = TrainingRows::of_table(
            &table(&[("111", 2.0), ("011", f64::NAN), ("101", 2.5)]),
            GameValue::NegNll,
            path,
        )
        .unwrap();
        assert_eq!(rows.values, vec![-2.0, -2.5]);
        assert_eq!(rows.masks.len(), 2);
        assert_eq!(rows.dropped, 1);
        assert_eq!(rows.collapsed_alone, vec![0]);
        let pair = TrainingRows::of_table(
            &table(&[("111", 2.0), ("001", f64::INFINITY), ("101", 2.5)]),
            GameValue::NegNll,
            path,
        )
        .unwrap();
        // A pair's collapse says nothing of either block alone.
        assert_eq!((pair.dropped, pair.collapsed_alone.len()), (1, 0));
        let err =
            TrainingRows::of_table(&table(&[("011", f64::INFINITY)]), GameValue::NegNll, path)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("e.parquet") && err.contains("all 1 rows"),
            "{err}"
        );
        let err = TrainingRows::of_table(&table(&[]), GameValue::NegNll, path).unwrap_err();
        assert!(err.to_string().contains("no rows"), "{err}");
    }

    /// A value too large for the fits (see [`crate::MAX_TARGET_MAGNITUDE`]) is refused with the
    /// table's own row and mask, not the row number among the rows kept after dropping the
    /// non-finite ones.
    #[test]
    fn a_value_too_large_to_fit_names_the_tables_row() {
        let err = TrainingRows::of_table(
            &table(&[("111", f64::NAN), ("011", 1e200), ("101", 2.5)]),
            GameValue::NegNll,
            Path::new("e.parquet"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("e.parquet")
                && err.contains("row 1 (mask 011)")
                && err.contains("neg-nll -1e200"),
            "{err}"
        );
    }

    #[test]
    fn settings_that_ask_for_nothing_or_contradict_are_refused() {
        let fit = SurrogateFit {
            evaluations: "e.parquet".into(),
            incomplete: Incomplete::Refuse,
            value: GameValue::Utility,
            kinds: vec![SurrogateKind::Quadratic],
            folds: 0,
            keep: None,
            save: true,
            metrics: false,
            options: FitOptions::default(),
        };
        assert!(fit.check().is_ok());
        let refused = |fit: SurrogateFit, says: &str| {
            let err = fit.check().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        };
        refused(
            SurrogateFit {
                save: false,
                ..fit.clone()
            },
            "nothing to do",
        );
        refused(
            SurrogateFit {
                metrics: true,
                ..fit.clone()
            },
            "--metrics needs",
        );
        refused(
            SurrogateFit {
                keep: Some(SurrogateKind::Forest),
                ..fit.clone()
            },
            "not among the surrogates fitted",
        );
        refused(
            SurrogateFit {
                kinds: Vec::new(),
                ..fit
            },
            "no surrogate kind",
        );
    }
}
