//! The `fit-surrogate` stage as library calls: an evaluation table's rows as training data
//! (the rows whose value is not finite dropped, as the published pipeline does), every kind
//! asked for cross-validated, one kind fitted on all rows ([`SurrogateFit::run`]), and the two
//! outputs written in the order that lets a killed run be redone ([`FittedSurrogates::write`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{GameValue, Mask, StagedFile};
use layerprune_tables::{
    input_role, read_complete_evaluations_hashed, stage_surrogate_metrics, write_surrogate_metrics,
    EvaluationTable, Hashed, Incomplete, Provenance, SurrogateMetricRow, SurrogateMetricsTable,
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
    /// The inputs the fit read, role -> id, recorded by both outputs: the `model` and
    /// `dataset` ids of the evaluation table and, as `evaluations`, the sha256 of its bytes
    /// (`shapley`'s name and id for the same file), which tells apart fits on different mask
    /// tables of one model and token table.
    pub inputs: BTreeMap<String, String>,
}

/// The provenance role of the evaluation table a fit read, by the sha256 of its bytes: the
/// role `shapley` records the same file under.
pub const EVALUATIONS_ROLE: &str = "evaluations";

/// What to say of a surrogate whose cross-validated R² (the mean over the folds) is 0 or less:
/// it predicts the masks it was not fitted on no better than their mean value, so the scores
/// it gives rank blocks by noise. A new user's fit on 61 masks (R² −0.30) was saved and used
/// without a word (new-user audit, 2026-12-08).
fn weak_fit_warning(kind: SurrogateKind, mean: &FoldMetrics) -> Option<String> {
    (mean.r2 <= 0.0).then(|| {
        format!(
            "the {kind} surrogate's cross-validated R² is {:.2} (mean over the folds): it \
             predicts held-out masks no better than their mean, so its scores rank blocks by \
             noise; measure more masks (sample-masks --stratified-masks) or windows, try \
             --kind quadratic, or choose with a method that measures the model (apply-prune \
             --method adaptive --race-se 3, the recommended)",
            mean.r2
        )
    })
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

    /// Whether the run draws anything at random, and so reads `options.seed`: the folds of a
    /// cross-validation, and the fit on all rows of an mlp (its initialisation and shuffling) or
    /// a forest (its bootstraps). A quadratic surrogate's ridge fit draws nothing.
    pub fn reads_seed(&self) -> bool {
        self.folds > 0
            || self
                .saved_kind()
                .is_some_and(|kind| kind != SurrogateKind::Quadratic)
    }

    /// The kind fitted on all rows and saved: `keep`, else the first of `kinds`; `None` where
    /// nothing is saved.
    pub fn saved_kind(&self) -> Option<SurrogateKind> {
        self.keep
            .or_else(|| self.kinds.first().copied())
            .filter(|_| self.save)
    }

    /// Whether the run fits a surrogate of `kind` at all, and so reads its settings in
    /// `options` (an mlp's epochs, a forest's trees, a quadratic's ridge strength): it
    /// cross-validates every kind of `kinds` where there are folds, and fits the saved kind
    /// on all rows. A kind of `kinds` is not fitted where there are no folds and another is
    /// saved.
    pub fn fits(&self, kind: SurrogateKind) -> bool {
        (self.folds > 0 && self.kinds.contains(&kind)) || self.saved_kind() == Some(kind)
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
        // The hash of the bytes parsed: a second read (until 2026-12-07) recorded the hash of
        // another table where one was renamed onto the path in between.
        let Hashed { table, sha256, .. } = read_complete_evaluations_hashed(path, self.incomplete)
            .with_context(|| format!("reading evaluations {}", path.display()))?;
        let rows = TrainingRows::of_table(&table, self.value, path)?;
        let inputs: BTreeMap<String, String> = [
            (input_role::MODEL, table.model_id.clone()),
            (input_role::DATASET, table.dataset_id.clone()),
            (EVALUATIONS_ROLE, sha256),
        ]
        .into_iter()
        .map(|(role, id)| (role.to_string(), id))
        .collect();
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
                let mean = mean_over_folds(&folds);
                metric_rows.extend(mean.as_ref().map(row));
                // Said of the surrogate that is saved, which shapley and apply-prune then use.
                if self.saved_kind() == Some(kind) {
                    if let Some(warning) = mean.as_ref().and_then(|m| weak_fit_warning(kind, m)) {
                        tracing::warn!("{}: {warning}", path.display());
                    }
                }
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
                .with_game(&table.fixed_blocks, &table.model_id, &table.dataset_id)
                .with_inputs(inputs.clone());
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
            inputs,
        })
    }
}

impl FittedSurrogates {
    /// The provenance of the outputs: `base` with the inputs the fit read, as the surrogate
    /// file records them too ([`SavedSurrogate::inputs`]).
    pub fn provenance(&self, base: Provenance) -> Provenance {
        self.inputs.iter().fold(base, |provenance, (role, id)| {
            provenance.with_input(role, id)
        })
    }

    /// Writes the metrics table to `metrics` and the surrogate to `out` (each where given), so
    /// that a run that fails, or is killed, leaves the earlier pair as it was or the metrics
    /// without a surrogate, never a surrogate beside metrics of another fit. With both:
    /// 1. each is written in full and flushed to disk under the one temporary name its own
    ///    write gives it, `.NAME.tmp-PID-N` beside its target ([`StagedFile`]: the name the
    ///    stage's check of its output names allows for, removed by the next write of NAME if
    ///    the run is killed; until 2026-12-07 a second name was nested in it, which was longer
    ///    and left behind). This is the long part, and where a full disk, a quota or a file
    ///    size limit fails: a failure here leaves both earlier files untouched (until
    ///    2026-12-07 the earlier surrogate was removed before the metrics were written, and
    ///    such a failure lost it).
    /// 2. The earlier surrogate is removed, the metrics are renamed onto theirs, then the
    ///    surrogate onto its own. Make and Snakemake track the surrogate: a run stopped or
    ///    failing between these steps leaves none, so it is not done and is redone, and the
    ///    error says so.
    ///
    /// With one output alone, its atomic write leaves the earlier file as it was on failure.
    pub fn write(
        &self,
        metrics: Option<&Path>,
        out: Option<&Path>,
        provenance: &Provenance,
    ) -> Result<()> {
        let table = SurrogateMetricsTable {
            rows: self.metric_rows.clone(),
        };
        let write_metrics = |path: &Path| -> Result<()> {
            write_surrogate_metrics(path, &table, provenance)?;
            Ok(())
        };
        let surrogate = out.zip(self.saved.as_ref());
        match (metrics, surrogate) {
            (Some(metrics), Some((out, (kind, saved)))) => {
                let stage_metrics = || -> Result<StagedFile> {
                    refuse_folder(metrics)?;
                    Ok(stage_surrogate_metrics(metrics, &table, provenance)?)
                };
                let new_metrics = stage_metrics()
                    .with_context(|| format!("writing metrics {}", metrics.display()))?;
                let stage_surrogate = || -> Result<StagedFile> {
                    refuse_folder(out)?;
                    Ok(saved.stage(out)?)
                };
                let new_surrogate = stage_surrogate()
                    .with_context(|| format!("saving the {kind} surrogate to {}", out.display()))?;
                install_pair(new_metrics, new_surrogate)?;
            }
            (Some(metrics), None) => write_metrics(metrics)
                .with_context(|| format!("writing metrics {}", metrics.display()))?,
            (None, Some((out, (kind, saved)))) => saved
                .save(out)
                .with_context(|| format!("saving the {kind} surrogate"))?,
            (None, None) => {}
        }
        if let Some(path) = metrics {
            tracing::info!("wrote {} ({} rows)", path.display(), self.metric_rows.len());
        }
        if let Some((path, (kind, saved))) = surrogate {
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

/// Puts the staged pair in place: the earlier surrogate removed, then the metrics renamed onto
/// theirs, then the surrogate onto its own; see [`FittedSurrogates::write`] for why.
fn install_pair(metrics: StagedFile, surrogate: StagedFile) -> Result<()> {
    let (metrics_path, surrogate_path) =
        (metrics.path().to_path_buf(), surrogate.path().to_path_buf());
    // Removed first, so that no moment, a kill's included, has the new metrics beside the
    // earlier surrogate.
    layerprune_core::remove_file_if_there(&surrogate_path).with_context(|| {
        format!(
            "saving the surrogate {}: cannot remove the earlier one",
            surrogate_path.display()
        )
    })?;
    let redo = |what: &str| {
        format!(
            "{what}; the earlier surrogate {} is removed: run again",
            surrogate_path.display()
        )
    };
    metrics
        .commit()
        .with_context(|| redo(&format!("writing metrics {}", metrics_path.display())))?;
    surrogate.commit().with_context(|| {
        redo(&format!(
            "saving the surrogate {} (the new metrics {} are in place)",
            surrogate_path.display(),
            metrics_path.display()
        ))
    })
}

/// Refuses an output of the pair whose place a folder takes, before either is staged: its
/// rename would fail only after the earlier surrogate was removed.
fn refuse_folder(target: &Path) -> Result<()> {
    if std::fs::symlink_metadata(target).is_ok_and(|meta| meta.is_dir()) {
        bail!("{}: a folder is in the way of the output", target.display());
    }
    Ok(())
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

    /// A fit's outputs ready to write: a quadratic surrogate over two players whose intercept is
    /// `intercept` (NaN: one that `save` refuses), and a metrics row whose r2 is `r2`.
    fn fitted(intercept: f64, r2: f64) -> FittedSurrogates {
        let model = crate::QuadraticSurrogate {
            num_players: 2,
            intercept,
            linear: vec![0.1, 0.2],
            pairs: vec![vec![0.0, 0.3], vec![0.3, 0.0]],
        };
        let saved = SavedSurrogate::new(crate::FittedSurrogate::Quadratic(model), "utility", "u");
        FittedSurrogates {
            metric_rows: vec![SurrogateMetricRow {
                kind: "quadratic".into(),
                value: "utility".into(),
                fold: -1,
                r2,
                spearman: 0.5,
                mae: 0.1,
                n_train: 3,
                n_test: 1,
            }],
            saved: Some((SurrogateKind::Quadratic, saved)),
            rows: 4,
            model_id: "m".into(),
            dataset_id: "d".into(),
            inputs: BTreeMap::new(),
        }
    }

    /// The names in `folder` (a temporary file left behind would be among them).
    fn names(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A write of the pair that fails (the metrics' folder missing or a folder in the metrics'
    /// place, found only after the fit; a surrogate that cannot be saved) leaves the earlier
    /// surrogate and metrics byte for byte, and no temporary file. The earlier surrogate was
    /// deleted before the metrics were written, so that no new surrogate would sit beside
    /// stale metrics: a failed run lost it.
    #[test]
    fn a_failed_write_leaves_the_earlier_surrogate_and_metrics_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let (metrics, out) = (dir.path().join("m.parquet"), dir.path().join("s.json"));
        let provenance = Provenance::new("test", "0", vec![]);
        fitted(1.0, 0.9)
            .write(Some(&metrics), Some(&out), &provenance)
            .unwrap();
        let earlier = (
            std::fs::read(&metrics).unwrap(),
            std::fs::read(&out).unwrap(),
        );
        let listed = names(dir.path());
        let unchanged = |error: anyhow::Error, says: &str| {
            let error = format!("{error:#}");
            assert!(error.contains(says), "{error}");
            assert_eq!(std::fs::read(&metrics).unwrap(), earlier.0, "{error}");
            assert_eq!(std::fs::read(&out).unwrap(), earlier.1, "{error}");
            assert_eq!(names(dir.path()), listed, "{error}");
        };
        let missing = dir.path().join("gone").join("m.parquet");
        let error = fitted(2.0, 0.8)
            .write(Some(&missing), Some(&out), &provenance)
            .unwrap_err();
        unchanged(error, "writing metrics");
        let error = fitted(f64::NAN, 0.8)
            .write(Some(&metrics), Some(&out), &provenance)
            .unwrap_err();
        unchanged(error, "cannot save the surrogate");

        // A folder in the metrics' place: refused before anything is replaced.
        let folder = dir.path().join("folder.parquet");
        std::fs::create_dir(&folder).unwrap();
        let listed = names(dir.path());
        let error = fitted(2.0, 0.8)
            .write(Some(&folder), Some(&out), &provenance)
            .unwrap_err();
        let error = format!("{error:#}");
        assert!(error.contains("folder.parquet"), "{error}");
        assert!(folder.is_dir());
        assert_eq!(std::fs::read(&out).unwrap(), earlier.1, "{error}");
        assert_eq!(names(dir.path()), listed, "{error}");
    }

    /// A folder in the surrogate's place is refused before anything is
    /// replaced; a write that succeeds replaces both, keeps the earlier files' permission bits,
    /// and clears what a killed write left beside its targets (it piled up before 2026-12-07).
    #[cfg(unix)]
    #[test]
    fn a_pair_is_replaced_whole_or_not_at_all_and_a_killed_writes_leftovers_go() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (metrics, out) = (dir.path().join("m.parquet"), dir.path().join("s.json"));
        let provenance = Provenance::new("test", "0", vec![]);
        fitted(1.0, 0.9)
            .write(Some(&metrics), Some(&out), &provenance)
            .unwrap();
        std::fs::set_permissions(&metrics, std::fs::Permissions::from_mode(0o600)).unwrap();
        let earlier = std::fs::read(&metrics).unwrap();
        let listed = names(dir.path());

        let blocked = dir.path().join("blocked.json");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("inside"), b"x").unwrap();
        let error = fitted(2.0, 0.8)
            .write(Some(&metrics), Some(&blocked), &provenance)
            .unwrap_err();
        let error = format!("{error:#}");
        assert!(
            error.contains("blocked.json") && error.contains("a folder is in the way"),
            "{error}"
        );
        assert_eq!(std::fs::read(&metrics).unwrap(), earlier, "{error}");
        let mut with_blocked = listed.clone();
        with_blocked.push("blocked.json".into());
        with_blocked.sort();
        assert_eq!(names(dir.path()), with_blocked, "{error}");

        // The temporary files of a write killed before its renames (a process id no process has).
        let dead = 4_194_304 + 17;
        for name in ["m.parquet", "s.json"] {
            std::fs::write(dir.path().join(format!(".{name}.tmp-{dead}-0")), b"left").unwrap();
        }
        let earlier_surrogate = std::fs::read(&out).unwrap();
        fitted(2.0, 0.8)
            .write(Some(&metrics), Some(&out), &provenance)
            .unwrap();
        assert_ne!(std::fs::read(&metrics).unwrap(), earlier);
        assert_ne!(std::fs::read(&out).unwrap(), earlier_surrogate);
        let read = layerprune_tables::read_surrogate_metrics(&metrics).unwrap();
        assert_eq!(read.rows[0].r2, 0.8);
        let mode = std::fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(dir.path()), with_blocked);
    }

    /// The pair is written under the one temporary name each output's own write gives it, the
    /// name the stages' check of output names allows for: a metrics table and a surrogate whose
    /// names are as long as that check passes (255 bytes less what `.NAME.tmp-PID-N` adds) are
    /// written, and replaced, with nothing left beside them. Until 2026-12-07 the staged write
    /// nested a second temporary name in the first, which was too long here ("File name too
    /// long" once the fit was done).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_pair_with_the_longest_names_the_check_allows_is_written() {
        let dir = tempfile::tempdir().unwrap();
        const NAME_MAX: usize = 255;
        let added = layerprune_core::longest_sibling_name("x".as_ref(), 0).len() - 1;
        let probe = dir.path().join(layerprune_core::longest_sibling_name(
            "m".repeat(NAME_MAX - added).as_ref(),
            0,
        ));
        assert_eq!(probe.file_name().unwrap().len(), NAME_MAX);
        std::fs::write(&probe, b"").expect("the file system takes names of 255 bytes");
        std::fs::remove_file(&probe).unwrap();
        let metrics = dir.path().join("m".repeat(NAME_MAX - added));
        let out = dir.path().join("s".repeat(NAME_MAX - added));
        let provenance = Provenance::new("test", "0", vec![]);
        for (intercept, r2) in [(1.0, 0.9), (2.0, 0.8)] {
            fitted(intercept, r2)
                .write(Some(&metrics), Some(&out), &provenance)
                .unwrap();
            let read = layerprune_tables::read_surrogate_metrics(&metrics).unwrap();
            assert_eq!(read.rows[0].r2, r2);
            match SavedSurrogate::load(&out).unwrap().surrogate {
                crate::FittedSurrogate::Quadratic(model) => assert_eq!(model.intercept, intercept),
                other => panic!("{other:?}"),
            }
        }
        let mut expected = vec![
            metrics.file_name().unwrap().to_string_lossy().into_owned(),
            out.file_name().unwrap().to_string_lossy().into_owned(),
        ];
        expected.sort();
        assert_eq!(names(dir.path()), expected);
    }

    /// A saved surrogate that predicts held-out masks no better than their mean is warned of;
    /// one that explains something is not.
    #[test]
    fn a_surrogate_worse_than_the_mean_is_warned_of() {
        let mean = |r2: f64| FoldMetrics {
            fold: -1,
            r2,
            spearman: 0.1,
            mae: 0.2,
            n_train: 48,
            n_test: 12,
        };
        let warning = weak_fit_warning(SurrogateKind::Quadratic, &mean(-0.3044)).unwrap();
        assert!(
            warning.starts_with("the quadratic surrogate's cross-validated R² is -0.30"),
            "{warning}"
        );
        assert!(warning.contains("--race-se 3"), "{warning}");
        assert!(weak_fit_warning(SurrogateKind::Quadratic, &mean(0.0)).is_some());
        assert_eq!(
            weak_fit_warning(SurrogateKind::Quadratic, &mean(0.05)),
            None
        );
        // No variance to explain (R² undefined): nothing said.
        assert_eq!(
            weak_fit_warning(SurrogateKind::Quadratic, &mean(f64::NAN)),
            None
        );
    }

    /// The seed is read where the run draws: folds, or an mlp or a forest fitted on all rows.
    #[test]
    fn only_a_run_that_draws_reads_the_seed() {
        let quadratic = SurrogateFit {
            evaluations: "e.parquet".into(),
            incomplete: Incomplete::Refuse,
            value: GameValue::Utility,
            kinds: vec![SurrogateKind::Quadratic, SurrogateKind::Forest],
            folds: 0,
            keep: None,
            save: true,
            metrics: false,
            options: FitOptions::default(),
        };
        assert!(!quadratic.reads_seed());
        assert!(SurrogateFit {
            folds: 2,
            ..quadratic.clone()
        }
        .reads_seed());
        assert!(SurrogateFit {
            keep: Some(SurrogateKind::Forest),
            ..quadratic.clone()
        }
        .reads_seed());
        assert!(SurrogateFit {
            kinds: vec![SurrogateKind::PublishedMlp],
            ..quadratic
        }
        .reads_seed());
    }

    /// A kind is fitted where it is cross-validated (folds, and among `kinds`) or saved; with
    /// no folds, a kind of `kinds` that is not the one saved is never fitted (its settings were
    /// taken and ignored).
    #[test]
    fn a_kind_is_fitted_where_it_is_cross_validated_or_saved() {
        let fit = SurrogateFit {
            evaluations: "e.parquet".into(),
            incomplete: Incomplete::Refuse,
            value: GameValue::Utility,
            kinds: vec![SurrogateKind::Quadratic, SurrogateKind::PublishedMlp],
            folds: 0,
            keep: Some(SurrogateKind::Quadratic),
            save: true,
            metrics: false,
            options: FitOptions::default(),
        };
        let fitted = |fit: &SurrogateFit| -> Vec<SurrogateKind> {
            SurrogateKind::ALL
                .into_iter()
                .filter(|&kind| fit.fits(kind))
                .collect()
        };
        assert_eq!(fit.saved_kind(), Some(SurrogateKind::Quadratic));
        assert_eq!(fitted(&fit), vec![SurrogateKind::Quadratic]);
        let cross_validated = SurrogateFit {
            folds: 2,
            ..fit.clone()
        };
        assert_eq!(
            fitted(&cross_validated),
            vec![SurrogateKind::PublishedMlp, SurrogateKind::Quadratic]
        );
        let mlp_kept = SurrogateFit {
            keep: Some(SurrogateKind::PublishedMlp),
            ..fit.clone()
        };
        assert_eq!(fitted(&mlp_kept), vec![SurrogateKind::PublishedMlp]);
        let first_kept = SurrogateFit { keep: None, ..fit };
        assert_eq!(fitted(&first_kept), vec![SurrogateKind::Quadratic]);
        let unsaved = SurrogateFit {
            save: false,
            keep: None,
            ..cross_validated
        };
        assert_eq!(unsaved.saved_kind(), None);
        assert_eq!(
            fitted(&unsaved),
            vec![SurrogateKind::PublishedMlp, SurrogateKind::Quadratic]
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
