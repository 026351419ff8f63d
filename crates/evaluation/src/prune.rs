//! The `apply-prune` run, as a library call with a validated config: the inputs read and
//! checked against the model's manifest before anything heavy ([`PruneRun::prepare`]), then
//! ([`PreparedPrune::run`]) the tokens and the cache read and checked before the model is
//! opened (opening hashes every weight file and, on CUDA, takes the device's memory), the
//! plans chosen (and measured, on `tokens`) through `layerprune-selection`, and the outputs
//! written as one: the plan table, the summary, the pruned folder, in that order, a failure
//! part-way putting back what the run found.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use layerprune_core::{Game, KeptAside, LockError, PutBack};
use layerprune_model::{FolderAside, Manifest, PrunedLayout, SourceFiles};
use layerprune_runtime::{EvalOptions, LayeredModel, RuntimeOptions};
use layerprune_selection::inputs::{LoadedPlanInputs, ModelFacts, MootSettings, PlanFiles};
use layerprune_selection::margin::depth_warning;
use layerprune_selection::{PlanMethod, PlanSettings};
use layerprune_tables::{
    input_role, join_dataset_ids, read_tokens, resume_refusal, write_plans, PlanTable, Provenance,
    TableError,
};

use crate::{attach_comparisons, tokens_with_model, CachedLlm, EvaluationCache, MeasuredOtherwise};

/// The pruned model folder to write (`--pruned-out`).
#[derive(Clone, Debug)]
pub struct PrunedOut {
    pub dir: PathBuf,
    /// Replace an earlier run's folder there (`--overwrite`).
    pub overwrite: bool,
    /// How the kept files get there (`--hard-link-source-files`).
    pub source_files: SourceFiles,
}

/// One `apply-prune` run: what to read, how to choose, what to write. The command line has
/// checked the settings against each other and guarded the outputs.
pub struct PruneRun {
    pub method: PlanMethod,
    pub files: PlanFiles,
    pub settings: PlanSettings,
    /// The sampling settings given, refused where the method draws nothing.
    pub moot: MootSettings,
    /// The layered model folder: measured on `tokens`, or pruned into `pruned_out`.
    pub model: Option<PathBuf>,
    /// The token table the plans are measured on (with `model`).
    pub tokens: Option<PathBuf>,
    /// The evaluation cache the model's answers are kept in (with `tokens`).
    pub cache: Option<PathBuf>,
    pub cache_measured_otherwise: MeasuredOtherwise,
    pub runtime: RuntimeOptions,
    /// How masks are evaluated (read with `tokens`).
    pub evaluation: EvalOptions,
    /// The plan table (required with `tokens`).
    pub out: Option<PathBuf>,
    pub pruned_out: Option<PrunedOut>,
    /// The plan table's provenance, before the run adds the model and token ids.
    pub provenance: Provenance,
}

/// The stage's name, as its tables record it (their provenance's `tool`).
pub const STAGE: &str = "apply-prune";

/// A run whose inputs are read and checked, before the tokens, the cache and the model.
pub struct PreparedPrune {
    run: PruneRun,
    manifest: Option<(Manifest, String)>,
    inputs: LoadedPlanInputs,
}

/// What to say of a `cache` that [`EvaluationCache::open_before_model`] refused. Only a file
/// this run cannot use (another model's, tokens', settings'; not an evaluation table) is worth
/// removing; a lock that could not be taken is no fault of the file, which holds what this or
/// another run measured, so that advice is never given there. (A lock another run holds is
/// waited for, not refused; the lock's own error says which it was.) A cache that cannot be
/// read at all (cut short) gets the words every stage gives a damaged checkpoint or cache
/// ([`resume_refusal`]).
fn cache_refusal(path: &Path, error: &anyhow::Error) -> String {
    resume_refusal(
        error.downcast_ref::<TableError>(),
        &format!("--cache {}", path.display()),
        "give another --cache",
        || match error.downcast_ref::<LockError>() {
            Some(LockError::Busy { lock_path, .. } | LockError::Io { lock_path, .. }) => format!(
                "--cache {}: its lock ({}) could not be taken, so the cache was neither read nor \
                 changed",
                path.display(),
                lock_path.display()
            ),
            Some(LockError::Interrupted { .. }) => format!(
                "--cache {}: stopped while waiting for another run's lock; the cache was \
                 neither read nor changed",
                path.display()
            ),
            None => format!(
                "--cache {}: not an evaluation cache this run can use; give another --cache, or \
                 remove the file to measure afresh",
                path.display()
            ),
        },
    )
}

impl PruneRun {
    /// Refuses what the run reads and writes that cannot go together (in the words of
    /// `apply-prune`'s flags): a pruned folder of several plans or without its model, tokens
    /// without the model to run or the table that keeps their measurement, a cache without
    /// tokens, a model that would not be used. [`PruneRun::prepare`] checks it again.
    pub fn check(&self) -> Result<()> {
        let (model, tokens) = (self.model.is_some(), self.tokens.is_some());
        if self.pruned_out.is_some() && self.settings.ks.len() > 1 {
            bail!(
                "--pruned-out writes one model, so it needs exactly one --k (got {})",
                self.settings.ks.len()
            );
        }
        if tokens && !model {
            bail!("measuring needs both --model and --tokens");
        }
        // --model without --tokens is the folder --pruned-out prunes, and nothing else.
        if model && !tokens && self.pruned_out.is_none() {
            bail!(
                "--model without --tokens would not be used: give --tokens to measure the plans \
                 on it, or --pruned-out to write it pruned"
            );
        }
        if self.cache.is_some() && !tokens {
            bail!("--cache keeps the evaluations of --model on --tokens; it needs both");
        }
        if self.pruned_out.is_some() && !model {
            bail!("--pruned-out needs --model (the folder to prune)");
        }
        if tokens && self.out.is_none() {
            // Measured and not written: the run would be wasted.
            bail!(
                "--tokens measures the plans, and only --out keeps the measurement: give --out, \
                 or leave --tokens out to write --pruned-out from the plan as chosen without \
                 running the model"
            );
        }
        Ok(())
    }

    /// Reads the inputs and checks them against the model's manifest alone (its block count
    /// and id), so that the inputs, the fixed blocks and each k are checked before the model's
    /// files are hashed or its graphs opened (seconds to minutes on a large model).
    pub fn prepare(self) -> Result<PreparedPrune> {
        self.check()?;
        if let Some(pruned_out) = self.pruned_out.as_ref().filter(|p| p.overwrite) {
            layerprune_model::refuse_foreign_folder(&pruned_out.dir)?;
        }
        let manifest = self
            .model
            .as_deref()
            .map(Manifest::load_with_id)
            .transpose()?;
        let facts =
            manifest
                .as_ref()
                .zip(self.model.as_deref())
                .map(|((manifest, model_id), dir)| ModelFacts {
                    dir,
                    model_id,
                    num_blocks: manifest.num_blocks,
                });
        let inputs = self.files.load(self.method, facts)?;
        inputs.refuse_moot_sampling(&self.settings, self.moot)?;
        // What the plans would refuse, before the model is opened or the cache is written
        // (again in `run` with the number of windows, once the tokens are read).
        inputs.check(&self.settings, None, self.pruned_out.is_some())?;
        Ok(PreparedPrune {
            run: self,
            manifest,
            inputs,
        })
    }
}

impl PreparedPrune {
    /// The model's blocks (of the inputs, or of the model where one is given).
    pub fn num_blocks(&self) -> usize {
        self.inputs.num_blocks
    }

    /// The settings the plans are chosen with.
    pub fn settings(&self) -> &PlanSettings {
        &self.run.settings
    }

    /// Chooses (and measures) the plans and writes the outputs; `print_summary` prints the plan
    /// table's summary, after the table is written and before the pruned folder is.
    pub fn run(self, print_summary: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        let PreparedPrune {
            run,
            manifest,
            inputs,
        } = self;
        let settings = &run.settings;
        let pruned = run.pruned_out.is_some();
        // The tokens, then the cache, are read and checked against the manifest before the
        // model is opened: a missing or wrong --tokens or an unusable --cache should not cost
        // the hashing of every weight file, or the device's memory.
        let tokens = match (&run.model, &manifest, &run.tokens) {
            (Some(dir), Some((manifest, _)), Some(path)) => {
                let tokens = read_tokens(path)?;
                // Windows longer than the model takes too, in the same words as evaluate's.
                layerprune_runtime::check_tokens(
                    manifest,
                    dir,
                    &tokens.windows,
                    &tokens.tokenizer_sha256,
                )
                .with_context(|| {
                    tokens_with_model(format_args!("--tokens {}", path.display()), dir)
                })?;
                Some((path, tokens))
            }
            _ => None,
        };
        if let Some((_, tokens)) = &tokens {
            // A margin of standard errors needs windows enough; before the model runs.
            inputs.check(settings, Some(tokens.windows.len()), pruned)?;
            // Measuring plans again on the text they were chosen on is legitimate (e.g. on
            // another device or runtime), but it is not a held-out measurement: said, so that
            // no one reads the table as one.
            if run.method == PlanMethod::FromPlan
                && inputs.chosen_on(None).contains(&tokens.dataset_id)
            {
                tracing::warn!(
                    "--tokens {}: the plans of --plans {} were chosen on these tokens (its \
                     chosen_on), so they are measured on the tokens they were chosen on: the \
                     measurement is not held out",
                    run.tokens.as_deref().unwrap_or(Path::new("")).display(),
                    run.files
                        .plans
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                );
            }
        }
        // The cache is opened on its own, so that what is wrong with it (measured on another
        // model, token table, device or settings; not an evaluation table) is said of --cache,
        // and only what fails running the model on the tokens of --tokens.
        let cache = match (&manifest, &tokens, &run.cache) {
            (Some((manifest, model_id)), Some((_, tokens)), Some(path)) => {
                let evaluated_on = run
                    .runtime
                    .evaluated_on(&run.evaluation.for_windows(&tokens.windows, manifest));
                let cache = EvaluationCache::open_before_model(
                    path,
                    manifest.num_blocks,
                    model_id,
                    tokens,
                    &evaluated_on,
                    run.cache_measured_otherwise,
                )
                .map_err(|error| {
                    let context = cache_refusal(path, &error);
                    error.context(context)
                })?;
                Some(cache)
            }
            _ => None,
        };
        let model = match (&run.model, &manifest, &tokens) {
            (Some(dir), Some((_, model_id)), Some(_)) => {
                Some(LayeredModel::open_as_read(dir, &run.runtime, model_id)?)
            }
            // Pruned without a run: the files the pruned folder takes are checked as opening
            // the model would check them.
            (Some(dir), Some((manifest, _)), None) => {
                manifest.check_folder(dir, run.runtime.verify_hashes)?;
                None
            }
            _ => None,
        };
        let mut provenance = run.provenance.clone();
        let (mut game, dataset_id) = match (model, tokens, &run.model) {
            (Some(model), Some((tokens_path, tokens)), Some(dir)) => {
                let game = CachedLlm::open_with(
                    model,
                    &tokens,
                    run.evaluation.clone(),
                    cache,
                    provenance.clone(),
                )
                .with_context(|| {
                    tokens_with_model(format_args!("--tokens {}", tokens_path.display()), dir)
                })?;
                (Some(game), Some(tokens.dataset_id))
            }
            _ => (None, None),
        };

        let mut plans = inputs.plans(settings, game.as_mut().map(|g| g as &mut dyn Game))?;
        if let Some(game) = game.as_mut() {
            // What a skipped save left (a large cache is saved less often), before the plans
            // are written: a cache that cannot be written stops the stage.
            game.flush()?;
            // Each plan's runner-up and margin, and its increase over the full model, come from
            // the windows' NLLs of what was asked for.
            attach_comparisons(game, &mut plans);
            if let Some(cache) = &run.cache {
                let partly = game.partly_measured();
                tracing::info!(
                    "{}: {} of the {} masks asked for were read from it, {} run now{} ({} masks \
                     kept){}",
                    cache.display(),
                    game.answered_from_cache(),
                    game.asked_masks(),
                    game.ran,
                    game.windows_ran_note(),
                    game.cached_masks(),
                    if partly > 0 {
                        format!(
                            "; {partly} more measured on some windows only (a race dropped \
                             them; kept with their windows)"
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
        // Checked before the work too (LoadedPlanInputs::check): one plan to write as a model.
        debug_assert!(!pruned || plans.len() == 1);
        if let (Some(game), Some(dataset_id)) = (game.as_mut(), &dataset_id) {
            provenance = provenance
                .with_input(input_role::MODEL, game.evaluator().model().model_id())
                .with_input(input_role::DATASET, dataset_id);
        } else if let Some(model_id) = &inputs.model_id {
            // Chosen without the model: the model its inputs were measured on (what from-plan
            // checks a model against).
            provenance = provenance.with_input(input_role::MODEL, model_id);
        }
        // What the choice read, beside where the plans were measured (`dataset`), so that a
        // table measured on held-out text shows it was not chosen on that text.
        let chosen_on = inputs.chosen_on(dataset_id.as_deref());
        if let Some(value) = join_dataset_ids(chosen_on.iter().map(String::as_str)) {
            provenance = provenance.with_input(input_role::CHOSEN_ON, &value);
        }
        let table = inputs.table(&plans)?;
        for warning in table.rows.iter().filter_map(depth_warning) {
            tracing::warn!("{warning}");
        }
        Outputs {
            run: &run,
            table: &table,
            provenance: &provenance,
            removed: plans
                .first()
                .map(|plan| (&plan.removed[..], &plan.method[..])),
        }
        .write(print_summary)
    }
}

/// What a run writes, and where.
struct Outputs<'a> {
    run: &'a PruneRun,
    table: &'a PlanTable,
    provenance: &'a Provenance,
    /// The blocks and method of the plan written as a model (the one plan with `pruned_out`).
    removed: Option<(&'a [usize], &'a str)>,
}

impl Outputs<'_> {
    /// The plan table, the summary and the pruned folder, as one: a failure part-way puts back
    /// what the run found.
    fn write(self, print_summary: &mut dyn FnMut(&str) -> Result<()>) -> Result<()> {
        let run = self.run;
        // The pruned folder is planned (and checked) before anything is written.
        let pruned = match (&run.pruned_out, &run.model, self.removed) {
            (Some(pruned_out), Some(source), Some((removed, method))) => Some((
                pruned_out,
                source,
                layerprune_model::pruned_layout(source, removed, method)?,
            )),
            _ => None,
        };
        // The plan first, the pruned folder last: Make tracks the folder's manifest, so a run
        // killed between the two leaves that target stale and the next make writes both again.
        if let Some((pruned_out, source, _)) = &pruned {
            layerprune_model::refuse_overlap(source, &pruned_out.dir)?;
        }
        // With both: a run that fails writing the folder (a full disk) leaves the outputs as
        // it found them: the plan table it replaced is kept aside until then and put back (one
        // written where there was none is removed), so that no script or rule takes the plan
        // of a failed run for done, and the earlier folder is moved aside before the plan is
        // written and put back with it. A run killed between the two writes leaves no folder
        // rather than one that disagrees with the new plan: the folder aside is a temporary
        // sibling, which the next write of the folder removes. (An earlier run's folder is
        // replaced under --overwrite only: checked before, and again when it is moved aside,
        // where a killed writer's folder may have been put back or another run may have
        // written one.) With --pruned-out alone the folder writer replaces the folder itself,
        // the old one kept until the new one is in place, as quantize's.
        let earlier_plan = match (&run.out, &pruned) {
            (Some(out), Some(_)) => Some((
                out,
                KeptAside::keep(out).with_context(|| {
                    format!(
                        "--out {}: cannot keep the earlier plan table aside",
                        out.display()
                    )
                })?,
            )),
            _ => None,
        };
        let earlier_folder = match (&run.out, &pruned) {
            (Some(_), Some((pruned_out, _, _))) => {
                match layerprune_model::set_folder_aside(&pruned_out.dir, pruned_out.overwrite) {
                    Ok(aside) => Some((&pruned_out.dir, aside)),
                    Err(error) => {
                        if let Some((_, earlier)) = earlier_plan {
                            earlier.discard();
                        }
                        return Err(error.into());
                    }
                }
            }
            _ => None,
        };
        let written = self.write_in_order(
            pruned
                .as_ref()
                .map(|(pruned_out, source, layout)| (*pruned_out, *source, layout)),
            earlier_folder.as_ref().map(|(_, aside)| aside),
            print_summary,
        );
        let put_back_folder = |earlier_folder: Option<(&PathBuf, FolderAside)>| {
            if let Some((dest, aside)) = earlier_folder {
                match aside.put_back() {
                    Ok(true) => tracing::info!(
                        "{}: the earlier pruned folder is back (this one was not written)",
                        dest.display()
                    ),
                    Ok(false) => {}
                    Err(error) => tracing::warn!("{error}"),
                }
            }
        };
        match (earlier_plan, &written) {
            (Some((out, earlier)), Err(failed)) => {
                let failed = failed.what();
                match earlier.put_back() {
                    Ok(PutBack::Restored) => {
                        tracing::info!(
                            "{}: the earlier plan table is back ({failed})",
                            out.display()
                        );
                        put_back_folder(earlier_folder);
                    }
                    Ok(PutBack::Untouched) => {
                        tracing::info!(
                            "{}: the earlier plan table is left as it was ({failed})",
                            out.display()
                        );
                        put_back_folder(earlier_folder);
                    }
                    Ok(PutBack::Removed) => {
                        tracing::info!(
                            "{}: the plan table this run wrote is removed ({failed})",
                            out.display()
                        );
                        put_back_folder(earlier_folder);
                    }
                    // The earlier folder is not put back beside the new plan: it is deleted
                    // with `earlier_folder`, and said so.
                    Err(error) => {
                        tracing::warn!(
                            "{}: left as this run wrote it ({failed}): {error}",
                            out.display()
                        );
                        if let Some((dest, _)) = &earlier_folder {
                            tracing::warn!(
                                "{}: the earlier pruned folder is removed, since the plan table \
                                 it was written with could not be put back",
                                dest.display()
                            );
                        }
                    }
                }
            }
            (Some((_, earlier)), Ok(())) => {
                earlier.discard();
                if let Some((_, aside)) = earlier_folder {
                    aside.discard();
                }
            }
            (None, _) => {}
        }
        written.map_err(WriteFailure::into_error)
    }

    /// Writes the plan table (--out), the summary and the pruned folder (`pruned`: where, from
    /// which folder, as its layout plans it, with the permission bits of the earlier folder
    /// set aside, `in_place_of`), in that order.
    fn write_in_order(
        &self,
        pruned: Option<(&PrunedOut, &PathBuf, &PrunedLayout)>,
        in_place_of: Option<&FolderAside>,
        print_summary: &mut dyn FnMut(&str) -> Result<()>,
    ) -> Result<(), WriteFailure> {
        let run = self.run;
        if let Some(out) = &run.out {
            write_plans(out, self.table, self.provenance)
                .map_err(|error| WriteFailure::Plan(error.into()))?;
            tracing::info!("wrote {} ({} plans)", out.display(), self.table.rows.len());
        }
        print_summary(&self.table.to_string()).map_err(WriteFailure::Summary)?;
        if let Some((pruned_out, source, layout)) = pruned {
            let dest = &pruned_out.dir;
            layerprune_model::write_pruned_model(
                source,
                dest,
                layout,
                pruned_out.source_files,
                pruned_out.overwrite,
                in_place_of,
            )
            .map_err(|error| WriteFailure::Folder(error.into()))?;
            // The graphs by name; the weight files (content-hashed names, one per tensor:
            // dozens a block on a real model) by their count.
            let (weights, graphs): (Vec<&str>, Vec<&str>) = layout
                .dropped
                .iter()
                .map(String::as_str)
                .partition(|file| file.starts_with("weights/"));
            let weights = match weights.len() {
                0 => String::new(),
                count => format!(" and {count} weight files"),
            };
            if !run.runtime.verify_hashes {
                tracing::warn!(
                    "{}: written from files not checked against {}'s manifest (--no-verify); \
                     evaluate checks their sha256 when it opens the folder",
                    dest.display(),
                    source.display()
                );
            }
            let blocks = layout.manifest.num_blocks;
            tracing::info!(
                "wrote {} ({blocks} block{}; left out {}{weights})",
                dest.display(),
                if blocks == 1 { "" } else { "s" },
                graphs.join(", ")
            );
            if pruned_out.source_files == SourceFiles::HardLink {
                tracing::info!(
                    "{}: its files are hard links to those of {} where the file system allowed \
                     (--hard-link-source-files): onnx.load refuses the graphs of both folders",
                    dest.display(),
                    source.display()
                );
            }
        }
        Ok(())
    }
}

/// Where [`Outputs::write_in_order`] failed, which the put-back of the earlier outputs says.
#[derive(Debug)]
enum WriteFailure {
    /// The plan table itself (it was never replaced).
    Plan(anyhow::Error),
    /// The summary on stdout, after the plan was written.
    Summary(anyhow::Error),
    /// The pruned folder, after the plan was written.
    Folder(anyhow::Error),
}

impl WriteFailure {
    /// What failed, in the log of what was put back.
    fn what(&self) -> &'static str {
        match self {
            WriteFailure::Plan(_) => "this run could not write its plan table",
            WriteFailure::Summary(_) => {
                "the summary could not be printed, so the pruned folder was not written"
            }
            WriteFailure::Folder(_) => "the pruned folder was not written",
        }
    }

    fn into_error(self) -> anyhow::Error {
        match self {
            WriteFailure::Plan(error)
            | WriteFailure::Summary(error)
            | WriteFailure::Folder(error) => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> PruneRun {
        PruneRun {
            method: PlanMethod::OneShot,
            files: PlanFiles::default(),
            settings: PlanSettings::default(),
            moot: MootSettings::default(),
            model: None,
            tokens: None,
            cache: None,
            cache_measured_otherwise: MeasuredOtherwise::Refuse,
            runtime: RuntimeOptions::default(),
            evaluation: EvalOptions::default(),
            out: Some("plans.parquet".into()),
            pruned_out: None,
            provenance: Provenance::new("apply-prune", "0", vec![]),
        }
    }

    fn pruned_out() -> Option<PrunedOut> {
        Some(PrunedOut {
            dir: "pruned".into(),
            overwrite: false,
            source_files: SourceFiles::Copy,
        })
    }

    /// What a run reads and writes that cannot go together is refused by the library itself
    /// (before 2026-12-07 only apply-prune's front checked it: a library caller's pruned folder
    /// without a model was silently not written).
    #[test]
    fn what_cannot_go_together_is_refused_and_prepare_checks_it_first() {
        assert!(run().check().is_ok());
        let refused = |run: PruneRun, expected: &str| {
            let message = run.check().unwrap_err().to_string();
            assert!(message.contains(expected), "{message}");
            let message = run.prepare().err().unwrap().to_string();
            assert!(message.contains(expected), "{message}");
        };
        refused(
            PruneRun {
                pruned_out: pruned_out(),
                ..run()
            },
            "--pruned-out needs --model",
        );
        refused(
            PruneRun {
                tokens: Some("t.parquet".into()),
                ..run()
            },
            "measuring needs both --model and --tokens",
        );
        refused(
            PruneRun {
                model: Some("model".into()),
                ..run()
            },
            "--model without --tokens would not be used",
        );
        refused(
            PruneRun {
                model: Some("model".into()),
                tokens: Some("t.parquet".into()),
                out: None,
                ..run()
            },
            "only --out keeps the measurement",
        );
        refused(
            PruneRun {
                model: Some("model".into()),
                pruned_out: pruned_out(),
                settings: PlanSettings {
                    ks: vec![2, 3],
                    ..PlanSettings::default()
                },
                ..run()
            },
            "needs exactly one --k (got 2)",
        );
        refused(
            PruneRun {
                cache: Some("c.parquet".into()),
                ..run()
            },
            "--cache keeps the evaluations",
        );
    }
}
