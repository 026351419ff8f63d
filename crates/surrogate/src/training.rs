//! The `fit-surrogate` stage as library calls: an evaluation table's rows as training data
//! (the rows whose value is not finite dropped, as the published pipeline does), every kind
//! asked for cross-validated, one kind fitted on all rows ([`SurrogateFit::run`]), and the two
//! outputs written in the order that lets a killed run be redone ([`FittedSurrogates::write`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{sibling_name, GameValue, Mask, SiblingInUse};
use layerprune_tables::{
    input_role, read_complete_evaluations, write_surrogate_metrics, EvaluationTable, Incomplete,
    Provenance, SurrogateMetricRow, SurrogateMetricsTable,
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
        let saved = self.keep.or_else(|| self.kinds.first().copied());
        self.folds > 0 || (self.save && saved.is_some_and(|kind| kind != SurrogateKind::Quadratic))
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
        let bytes = layerprune_core::read_input(path)
            .with_context(|| format!("reading evaluations {}", path.display()))?;
        let inputs: BTreeMap<String, String> = [
            (input_role::MODEL, table.model_id.clone()),
            (input_role::DATASET, table.dataset_id.clone()),
            (EVALUATIONS_ROLE, layerprune_core::sha256_hex(&bytes)),
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
    /// 1. each is written in full and flushed to disk under a temporary name beside its target
    ///    (`Staged`). This is the long part, and where a full disk, a quota or a file size
    ///    limit fails: a failure here leaves both earlier files untouched (until 2026-12-07 the
    ///    earlier surrogate was removed before the metrics were written, and such a failure lost
    ///    it).
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
                let new_metrics = Staged::write(metrics, write_metrics)
                    .with_context(|| format!("writing metrics {}", metrics.display()))?;
                let new_surrogate = Staged::write(out, |path| Ok(saved.save(path)?))
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
fn install_pair(metrics: Staged, surrogate: Staged) -> Result<()> {
    let (metrics_path, surrogate_path) = (metrics.target.clone(), surrogate.target.clone());
    // Removed first, so that no moment, a kill's included, has the new metrics beside the
    // earlier surrogate (a folder in its place is refused here, before anything is replaced).
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
        .install()
        .with_context(|| redo(&format!("writing metrics {}", metrics_path.display())))?;
    surrogate.install().with_context(|| {
        redo(&format!(
            "saving the surrogate {} (the new metrics {} are in place)",
            surrogate_path.display(),
            metrics_path.display()
        ))
    })
}

/// An output written in full under a temporary name beside its target, `.NAME.tmp-PID-N` in the
/// same folder (a rename is atomic only within one file system), to be renamed onto the target
/// by [`Staged::install`]; removed if dropped before. One left by a run that was killed is
/// removed by the next write of NAME, as any writer's temporary file
/// (`layerprune_core::atomic::remove_stale_temps`).
struct Staged {
    target: PathBuf,
    temp: PathBuf,
    installed: bool,
    /// Claimed while it lives, so that no write of this process takes it for a dead writer's.
    _in_use: SiblingInUse,
}

impl Staged {
    /// Stages `target`'s new content: `write` writes the temporary file whose path it is given
    /// (atomically, with the writer of the file's kind), which then takes the permission bits
    /// of the file it is to replace, as `layerprune_core::atomic_write` gives them (a private
    /// 0600 output stays private). A target its owner may not write is refused first, as
    /// `atomic_write` refuses it.
    fn write(target: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<Staged> {
        layerprune_core::refuse_read_only(target)?;
        // A folder in its place: its rename would fail after the earlier surrogate was removed.
        if std::fs::symlink_metadata(target).is_ok_and(|meta| meta.is_dir()) {
            bail!("{}: a folder is in the way of the output", target.display());
        }
        // What a killed write of this target left (its temporary files), as atomic_write clears.
        layerprune_core::atomic::remove_stale_temps(target);
        let name = target
            .file_name()
            .with_context(|| format!("{}: the output path has no file name", target.display()))?;
        let free = (0..1000u32)
            .map(|serial| {
                target.with_file_name(sibling_name(
                    name,
                    "tmp",
                    &format!("{}-{serial}", std::process::id()),
                ))
            })
            .find(|temp| std::fs::symlink_metadata(temp).is_err());
        let Some(temp) = free else {
            bail!(
                "{}: no free temporary name beside it (1000 tried)",
                target.display()
            );
        };
        let staged = Staged {
            _in_use: SiblingInUse::claim(&temp),
            target: target.to_path_buf(),
            temp,
            installed: false,
        };
        write(&staged.temp)?;
        if let Ok(meta) = std::fs::symlink_metadata(target) {
            if meta.is_file() {
                std::fs::set_permissions(&staged.temp, file_bits(meta.permissions()))
                    .with_context(|| {
                        format!(
                            "{}: cannot give the new file the mode of the old",
                            target.display()
                        )
                    })?;
            }
        }
        Ok(staged)
    }

    /// Renames the staged file onto its target, and syncs the folder so the rename is durable
    /// (best effort, as `atomic_write` does: the data is on disk already).
    fn install(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "cannot rename {} onto {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        self.installed = true;
        let folder = match self.target.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        if let Ok(handle) = std::fs::File::open(folder) {
            let _ = handle.sync_all();
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// The permission bits of a file (never a set-user-id or sticky bit), as `atomic_write` gives
/// the file that replaces it.
fn file_bits(permissions: std::fs::Permissions) -> std::fs::Permissions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::Permissions::from_mode(permissions.mode() & 0o777)
    }
    #[cfg(not(unix))]
    permissions
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
