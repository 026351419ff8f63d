//! The files `apply-prune` plans from, read and checked against each other: every input must
//! describe one model (the same number of blocks, and the model the LLM runs where a file
//! records one), and the fixed blocks recorded in the score table and the surrogate are kept
//! with the ones asked for. [`PlanFiles::load`] reads them; [`LoadedPlanInputs::plans`] runs
//! the method ([`choose_plans`]) and measures the plans on the LLM ([`measure_plans`]).
//!
//! This is the one module of the crate that reads files; the methods themselves never do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use layerprune_core::Game;
use layerprune_sampling::table::InputsAgree;
use layerprune_surrogate::{SavedSurrogate, Surrogate};
use layerprune_tables::input_role;
use layerprune_tables::{
    parse_dataset_ids, read_block_stats, read_input_ids, read_plans, read_provenance, read_scores,
    BlockStatsTable, PlanTable, ScoreTable, TableErrorKind,
};

use crate::{
    choose_plans, estimator_names, measure_plans, scores_from_table, BlockScores, FittedOn, Plan,
    PlanInputs, PlanMethod, PlanOptions, PlanSettings,
};

/// From-plan takes a plan by its k and its method's current name (what `--plan-method` takes):
/// two plans of one k whose methods are one under their current names (`one-shot:angular` and
/// `angular`, written by different versions) could be told apart by neither, and the advice
/// to choose one with --plan-method named the same method again. Refused, naming both rows
/// (the table itself refuses one name twice for a k).
fn plans_told_apart(table: &PlanTable, path: &Path) -> Result<()> {
    let mut plans: BTreeMap<(&str, u32), usize> = BTreeMap::new();
    for (row, plan) in table.rows.iter().enumerate() {
        let method = crate::method_names::current_name(&plan.method);
        if let Some(first) = plans.insert((method, plan.k), row) {
            bail!(
                "{}: rows {first} and {row} are both plans of method {method} for k = {} \
                 (recorded as {} and {}, an earlier name and the current one), so from-plan \
                 cannot choose one, with --plan-method or without; keep one of them",
                path.display(),
                plan.k,
                table.rows[first].method,
                plan.method
            );
        }
    }
    Ok(())
}

/// The files a plan is chosen from, and what to take from them.
#[derive(Clone, Debug, Default)]
pub struct PlanFiles {
    /// Score table, for one-shot selection by `estimator`'s rows.
    pub scores: Option<PathBuf>,
    pub estimator: Option<String>,
    /// Surrogate file: iterative and search; with other methods only each plan's prediction.
    pub surrogate: Option<PathBuf>,
    /// LLM evaluations charged to surrogate plans (`--surrogate-llm-evaluations`; default: the
    /// count the file records).
    pub surrogate_llm_evaluations: Option<u64>,
    /// Block statistics table, for angular-run.
    pub block_stats: Option<PathBuf>,
    /// Earlier plans (from-plan), and the method to take when a k has several.
    pub plans: Option<PathBuf>,
    pub plan_method: Option<String>,
    /// Blocks never removed, besides those recorded in the score table and the surrogate.
    pub fixed: Vec<usize>,
    /// Use files that record different models together, with a warning, instead of refusing.
    pub allow_mixed_inputs: bool,
}

/// Which sampling settings a user gave ([`LoadedPlanInputs::refuse_moot_sampling`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct MootSettings {
    pub permutation_pairs: bool,
    pub seed: bool,
    pub random_starts: bool,
}

/// The model the plans are for, when one is opened: what the files are checked against.
#[derive(Clone, Copy, Debug)]
pub struct ModelFacts<'a> {
    pub dir: &'a Path,
    pub model_id: &'a str,
    pub num_blocks: usize,
}

impl PlanFiles {
    /// The method asked for; without one, one-shot when a score table is given.
    pub fn method(&self, method: Option<PlanMethod>) -> Result<PlanMethod> {
        match (method, &self.scores) {
            (Some(method), _) => Ok(method),
            (None, Some(_)) => Ok(PlanMethod::OneShot),
            (None, None) => bail!("give --scores (one-shot) or --method"),
        }
    }

    /// Refuses a method whose input is not given (`measured`: a model and tokens are given),
    /// and a file or setting that only another method reads.
    pub fn check(&self, method: PlanMethod, measured: bool) -> Result<()> {
        let need = |present: bool, what: &str| {
            if present {
                Ok(())
            } else {
                Err(anyhow!("--method {method} needs {what}"))
            }
        };
        match method {
            PlanMethod::OneShot => {
                need(self.scores.is_some(), "--scores")?;
                match (&self.estimator, &self.scores) {
                    // Name the estimators the table holds: the one to give is among them. (A
                    // table that cannot be read fails when it is read, with its own message.)
                    (None, Some(path)) => match read_scores(path) {
                        Ok(table) => Err(anyhow!(
                            "--method {method} needs --estimator: which of the estimators in \
                             --scores {} to rank the blocks by ({})",
                            path.display(),
                            estimator_names(&table)
                        )),
                        Err(_) => need(false, "--estimator"),
                    },
                    _ => Ok(()),
                }
            }
            PlanMethod::Iterative | PlanMethod::Search => {
                need(self.surrogate.is_some(), "--surrogate")
            }
            PlanMethod::Sleb | PlanMethod::Adaptive => need(measured, "--model and --tokens"),
            PlanMethod::AngularRun => need(self.block_stats.is_some(), "--block-stats"),
            PlanMethod::FromPlan => need(self.plans.is_some(), "--plans"),
        }?;
        // A file (or setting) only another method reads would be ignored, a file's fixed blocks
        // with it: a user who passed it expects it to count.
        let only_for = |given: bool, flag: &str, readers: &[PlanMethod], hint: &str| {
            if given && !readers.contains(&method) {
                let readers: Vec<String> = readers
                    .iter()
                    .map(|reader| format!("--method {reader}"))
                    .collect();
                Err(anyhow!(
                    "{flag} is read only by {}; --method {method} would ignore it ({hint})",
                    readers.join(" or ")
                ))
            } else {
                Ok(())
            }
        };
        // A file with fixed blocks: those may be what the user wanted to count.
        let fixed_hint = "leave it out, or pass its fixed blocks with --fixed";
        only_for(
            self.scores.is_some(),
            "--scores",
            &[PlanMethod::OneShot],
            fixed_hint,
        )?;
        only_for(
            self.estimator.is_some(),
            "--estimator",
            &[PlanMethod::OneShot],
            "leave it out",
        )?;
        only_for(
            self.block_stats.is_some(),
            "--block-stats",
            &[PlanMethod::AngularRun],
            "leave it out",
        )?;
        only_for(
            self.plans.is_some(),
            "--plans",
            &[PlanMethod::FromPlan],
            "leave it out",
        )?;
        // Only the plans chosen through the surrogate are charged its fit; the other methods'
        // plans cost what they measure.
        only_for(
            self.surrogate_llm_evaluations.is_some(),
            "--surrogate-llm-evaluations",
            &[PlanMethod::Iterative, PlanMethod::Search],
            "it is the cost of plans chosen through the surrogate; leave it out",
        )
    }

    /// Every file given, for the check that no output replaces one.
    pub fn paths(&self) -> Vec<&Path> {
        [
            &self.scores,
            &self.surrogate,
            &self.block_stats,
            &self.plans,
        ]
        .into_iter()
        .filter_map(|path| path.as_deref())
        .collect()
    }

    /// Reads the files `method` uses (the surrogate and earlier plans whenever given), checking
    /// that they and `model` describe one model.
    pub fn load(
        &self,
        method: PlanMethod,
        model: Option<ModelFacts<'_>>,
    ) -> Result<LoadedPlanInputs> {
        // Every input describes one model: the opened one, else the first a file records.
        let mut one_model = InputsAgree::new(self.allow_mixed_inputs);
        if let Some(model) = &model {
            one_model.blocks(model.num_blocks, model.dir.display(), "model")?;
            one_model.model(model.model_id, model.dir.display(), "")?;
        }
        let mut fixed = self.fixed.clone();
        // The datasets of the files the method chooses by (not those that only predict).
        let mut chosen_on = BTreeSet::new();
        let surrogate = match &self.surrogate {
            Some(path) => {
                let saved = SavedSurrogate::load(path)?;
                one_model.blocks(saved.surrogate.num_players(), path.display(), "surrogate")?;
                one_model.model(
                    &saved.model_id,
                    path.display(),
                    " was fitted on evaluations of another model",
                )?;
                // The methods that choose by the surrogate cannot remove what it never saw
                // removed; the others only take its predictions.
                if matches!(method, PlanMethod::Iterative | PlanMethod::Search) {
                    fixed.extend(&saved.fixed_blocks);
                    chosen_on.insert(saved.dataset_id.clone());
                }
                Some(saved)
            }
            None => None,
        };
        let scores = match (&self.scores, method) {
            (Some(path), PlanMethod::OneShot) => {
                let table = read_scores(path)?;
                one_model.blocks(table.num_blocks, path.display(), "score table")?;
                one_model.model(
                    &table.model_id,
                    path.display(),
                    ": the scores were measured on another model",
                )?;
                fixed.extend(&table.fixed_blocks);
                chosen_on.insert(table.dataset_id.clone());
                Some(self.one_shot_scores(&table, path)?)
            }
            _ => None,
        };
        let block_stats = match (&self.block_stats, method) {
            (Some(path), PlanMethod::AngularRun) => {
                let table = read_block_stats(path)?;
                one_model.blocks(table.num_blocks, path.display(), "block statistics table")?;
                one_model.model(
                    &table.model_id,
                    path.display(),
                    ": the block statistics were measured on another model",
                )?;
                chosen_on.insert(table.dataset_id.clone());
                Some(table)
            }
            _ => None,
        };
        let earlier_plans = match &self.plans {
            Some(path) => {
                let table = read_plans(path)?;
                one_model.blocks(table.num_blocks, path.display(), "plan table")?;
                // The model the plans were chosen on, as their provenance records it (tables
                // written before 2026-12-04 without --model record none).
                let earlier_inputs = read_input_ids(path)?;
                one_model.model(
                    earlier_inputs
                        .get(input_role::MODEL)
                        .map_or("", String::as_str),
                    path.display(),
                    ": the plans were chosen on another model",
                )?;
                if method == PlanMethod::FromPlan {
                    plans_told_apart(&table, path)?;
                    chosen_on.extend(earlier_chosen_on(path, &earlier_inputs)?);
                }
                Some(table)
            }
            None => None,
        };
        let Some(num_blocks) = one_model.num_blocks() else {
            bail!("no input says how many blocks the model has");
        };
        fixed.sort_unstable();
        fixed.dedup();
        // A file that records no dataset (random or reverse scores from `score-blocks
        // --num-blocks` alone, files written before it was recorded) says nothing of what the
        // choice read.
        chosen_on.remove("");
        let surrogate_evaluations = surrogate.as_ref().map_or(0, |saved| {
            self.surrogate_llm_evaluations
                .unwrap_or(saved.fitted_on_evaluations)
        });
        Ok(LoadedPlanInputs {
            method,
            model_id: one_model.model_id().map(str::to_string),
            num_blocks,
            fixed,
            scores,
            surrogate,
            surrogate_evaluations,
            block_stats,
            earlier_plans,
            plans_path: self.plans.clone(),
            plan_method: self.plan_method.clone(),
            chosen_on_files: chosen_on,
        })
    }

    fn one_shot_scores(&self, table: &ScoreTable, path: &Path) -> Result<BlockScores> {
        let estimator = self.estimator.as_deref().unwrap_or_default();
        scores_from_table(table, estimator, table.num_blocks)
            .with_context(|| path.display().to_string())
    }
}

/// What the plans of the plan table at `path` (its provenance inputs `inputs`) were chosen on:
/// its `chosen_on` entry, read as a set. A table written before that entry was recorded has
/// none, and its `dataset` (where its plans were measured) is what they were chosen on only
/// where the method measured them on those tokens while choosing: its command line
/// (`apply-prune --method sleb` or `adaptive`) says so. Any other old table (a one-shot plan measured on tokens it did not choose by, a
/// search, from-plan onto other text) tells nothing of what its choice read: none is known.
fn earlier_chosen_on(path: &Path, inputs: &BTreeMap<String, String>) -> Result<BTreeSet<String>> {
    if let Some(value) = inputs.get(input_role::CHOSEN_ON) {
        return Ok(parse_dataset_ids(value));
    }
    let Some(dataset) = inputs.get(input_role::DATASET).filter(|id| !id.is_empty()) else {
        return Ok(BTreeSet::new());
    };
    let provenance = match read_provenance(path) {
        Ok(provenance) => provenance,
        // A table another tool wrote, without the command line: nothing to tell by.
        Err(error) if error.kind == TableErrorKind::Missing => return Ok(BTreeSet::new()),
        Err(error) => return Err(error.into()),
    };
    let chose_on_its_tokens = provenance.tool == "apply-prune"
        && recorded_method(&provenance.args).is_some_and(PlanMethod::measures_while_choosing);
    Ok(if chose_on_its_tokens {
        BTreeSet::from([dataset.clone()])
    } else {
        BTreeSet::new()
    })
}

/// The `--method` of a recorded `apply-prune` command line (`--method M` or `--method=M`; the
/// program's name first); `None` where it names none, several, or one this version does not
/// know.
fn recorded_method(args: &[String]) -> Option<PlanMethod> {
    let mut named = BTreeSet::new();
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--method" {
            named.insert(words.next()?.as_str());
        } else if let Some(value) = word.strip_prefix("--method=") {
            named.insert(value);
        }
    }
    match named.len() {
        1 => named.pop_first()?.parse().ok(),
        _ => None,
    }
}

/// The inputs of one `apply-prune` run, read and checked.
#[derive(Debug)]
pub struct LoadedPlanInputs {
    pub method: PlanMethod,
    /// The model the inputs are of (the opened model's, else the first id a file records).
    pub model_id: Option<String>,
    /// The model's number of blocks, as every input says.
    pub num_blocks: usize,
    /// The blocks never removed: those asked for and those recorded in the files, ascending.
    pub fixed: Vec<usize>,
    pub scores: Option<BlockScores>,
    pub surrogate: Option<SavedSurrogate>,
    /// LLM evaluations charged to the surrogate's plans.
    pub surrogate_evaluations: u64,
    pub block_stats: Option<BlockStatsTable>,
    pub earlier_plans: Option<PlanTable>,
    plans_path: Option<PathBuf>,
    plan_method: Option<String>,
    /// The dataset ids of the files the method chooses by ([`LoadedPlanInputs::chosen_on`]).
    chosen_on_files: BTreeSet<String>,
}

impl LoadedPlanInputs {
    /// The dataset ids the choice of the plans read (the plan table's `chosen_on`), given the
    /// id of the token table the plans are measured on, if any: a score table's (one-shot), a
    /// surrogate's (iterative; search, which with tokens also measures its candidates on them
    /// to pick the best), the block statistics' (angular-run), the tokens' (SLEB and adaptive,
    /// raced or not, which measure masks on them to choose), or what an earlier plan table
    /// records (from-plan, which only measures the plans it copies: its tokens are never part
    /// of the choice). A score table, surrogate or statistics table that records no dataset
    /// adds none.
    pub fn chosen_on(&self, tokens_dataset_id: Option<&str>) -> BTreeSet<String> {
        let mut ids = self.chosen_on_files.clone();
        let measures_to_choose =
            self.method.measures_while_choosing() || self.method == PlanMethod::Search;
        if let Some(id) = tokens_dataset_id.filter(|id| measures_to_choose && !id.is_empty()) {
            ids.insert(id.to_string());
        }
        ids
    }

    /// One plan per k by the method, and with `game` (the LLM valuing masks as −NLL) every
    /// plan measured.
    pub fn plans(
        &self,
        settings: &PlanSettings,
        mut game: Option<&mut dyn Game>,
    ) -> Result<Vec<Plan>> {
        let windows = game.as_deref().and_then(|g| g.num_windows());
        self.check(settings, windows, false)?;
        let mut settings = settings.clone();
        if let (Some(race), Some(windows)) = (&settings.race, windows) {
            // A race drops candidates only after its first windows: with as many as the tokens
            // have, every candidate is measured whole, as without a race, and the plan is named
            // as that (not raced).
            if race.first_windows >= windows {
                tracing::warn!(
                    "--race-windows {} is not below the calibration tokens' {windows} windows: \
                     nothing is raced; the plan is the unraced method's, at its cost",
                    race.first_windows
                );
                settings.race = None;
            }
        }
        let mut plans = self.chosen(settings, game.as_mut().map(|g| &mut **g as &mut dyn Game))?;
        if let Some(game) = game {
            measure_plans(game, &mut plans, self.num_blocks)?;
        }
        Ok(plans)
    }

    /// The plans by the method, chosen (with `game` where the method measures masks to
    /// choose), not measured.
    fn chosen<'a>(
        &'a self,
        settings: PlanSettings,
        game: Option<&'a mut dyn Game>,
    ) -> Result<Vec<Plan>> {
        let method = self.method;
        let options = PlanOptions {
            num_blocks: self.num_blocks,
            fixed: self.fixed.clone(),
            settings,
        };
        let mut inputs = PlanInputs {
            scores: self.scores.as_ref(),
            surrogate: self.surrogate.as_ref().map(|saved| FittedOn {
                surrogate: &saved.surrogate,
                llm_evaluations: self.surrogate_evaluations,
                fixed_blocks: &saved.fixed_blocks,
            }),
            block_stats: self.block_stats.as_ref(),
            earlier_plans: self.earlier_plans.as_ref(),
            plan_method: self.plan_method.as_deref(),
            game,
        };
        choose_plans(method, &mut inputs, &options).with_context(|| {
            match (method, &self.plans_path, &options.settings.ratio_target) {
                (PlanMethod::FromPlan, Some(path), _) => path.display().to_string(),
                (_, _, Some(target)) => format!(
                    "--max-ppl-ratio {} (--method {method})",
                    target.max_ppl_ratio
                ),
                _ => format!("--method {method}"),
            }
        })
    }

    /// Refuses sampling settings that would be ignored: with a surrogate of closed form
    /// (quadratic) its Shapley values are exact, no permutation is sampled, so
    /// `--permutation-pairs` (iterative, search) and `--seed` (iterative) play no part. A
    /// search that predicts every subset at each k of `settings`
    /// ([`crate::SearchOptions::is_exhaustive`]) draws no random start, so `--random-starts`
    /// and `--seed` play none there either: that is said with a warning.
    pub fn refuse_moot_sampling(&self, settings: &PlanSettings, given: MootSettings) -> Result<()> {
        let method = self.method;
        if let Some(saved) = &self.surrogate {
            let moot: Vec<&str> = [
                (given.permutation_pairs, "--permutation-pairs"),
                (given.seed && method == PlanMethod::Iterative, "--seed"),
            ]
            .into_iter()
            .filter_map(|(given, flag)| given.then_some(flag))
            .collect();
            layerprune_shapley::refuse_sampling_a_closed_form_ignores(
                &saved.surrogate,
                &format!("--method {method}"),
                &moot,
            )?;
        }
        if method == PlanMethod::Search && (given.random_starts || given.seed) {
            let search = crate::SearchOptions::default();
            let exhaustive = settings.ks.iter().all(|&k| {
                crate::removable_blocks(self.num_blocks, &self.fixed, k)
                    .is_ok_and(|players| search.is_exhaustive(players.len(), k))
            });
            // Said, not refused: a pipeline passes its seed whatever the ks (Gemma 3's k = 2,
            // 4, 6 are all small enough), and the plans are right either way.
            if exhaustive && !settings.ks.is_empty() {
                tracing::warn!(
                    "--random-starts and --seed play no part: the search predicts every set of \
                     k removable blocks at each --k (at most {} sets) and draws no random start",
                    search.exhaustive_limit
                );
            }
        }
        Ok(())
    }

    /// What [`LoadedPlanInputs::plans`] would refuse, checked before a model runs (the stage
    /// calls this first, so a request it cannot meet costs no LLM evaluation and writes no
    /// cache): the fixed blocks, each k and adaptive removal's budget
    /// ([`crate::check_plan_request`]); a perplexity-ratio margin on fewer than two calibration
    /// `windows` (where the tokens are read); and, with `one_plan` (a pruned model to write),
    /// a request of more or fewer than one plan.
    pub fn check(
        &self,
        settings: &PlanSettings,
        windows: Option<usize>,
        one_plan: bool,
    ) -> Result<()> {
        let adaptive = self.method == PlanMethod::Adaptive && settings.ratio_target.is_none();
        crate::check_plan_request(
            self.num_blocks,
            &self.fixed,
            &settings.ks,
            if adaptive {
                std::slice::from_ref(&settings.budget)
            } else {
                &[]
            },
            "--budget",
        )?;
        if let (Some(target), Some(windows)) = (&settings.ratio_target, windows) {
            if target.standard_errors > 0.0 && windows < 2 {
                bail!(
                    "--max-ppl-ratio-se needs the standard error of a plan's NLL increase over \
                     the calibration windows, so at least 2 windows; the tokens have {windows}"
                );
            }
        }
        if one_plan {
            let ks = match (&settings.ratio_target, &self.earlier_plans) {
                (Some(_), _) => None,
                (None, Some(table)) if settings.ks.is_empty() => {
                    Some(crate::plans::earlier_ks(table, self.plan_method.as_deref()))
                }
                (None, _) => Some(settings.ks.clone()),
            };
            if let Some(ks) = ks.filter(|ks| ks.len() > 1) {
                bail!(
                    "--pruned-out writes one model, but {} plans would be chosen (k = {}); \
                     choose one with --k",
                    ks.len(),
                    ks.iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if self.method == PlanMethod::FromPlan {
            self.chosen(settings.clone(), None)?;
        }
        Ok(())
    }

    /// The plans as a plan table, recording which game value their predictions are in: the
    /// surrogate's, which predicts every plan when given, else the earlier plans' they were
    /// copied from.
    pub fn table(&self, plans: &[Plan]) -> Result<PlanTable> {
        let value = match (&self.surrogate, &self.earlier_plans) {
            _ if plans.iter().all(|plan| plan.predicted.is_none()) => None,
            (Some(saved), _) => Some(
                saved
                    .game_value()
                    .map_err(|e| anyhow!("the surrogate: {e}"))?,
            ),
            (None, Some(earlier)) => earlier.value,
            (None, None) => None,
        };
        Ok(PlanTable {
            num_blocks: self.num_blocks,
            value,
            rows: plans
                .iter()
                .map(|plan| plan.to_row())
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontier::Budget;
    use layerprune_tables::{write_scores, Provenance, ScoreRow};

    /// A score table of 6 blocks for estimator `e` (block b scores b, so the lowest are
    /// removed first), fixing block 0, measured on `model_id`.
    fn score_file(dir: &Path, name: &str, num_blocks: usize, model_id: &str) -> PathBuf {
        let path = dir.join(name);
        let rows = (1..num_blocks)
            .map(|block| ScoreRow {
                block: block as u32,
                estimate: block as f64,
                std_error: None,
                ci_low: None,
                ci_high: None,
                estimator: "e".into(),
                llm_evaluations: 10,
            })
            .collect();
        let table = ScoreTable {
            num_blocks,
            fixed_blocks: vec![0],
            model_id: model_id.into(),
            dataset_id: String::new(),
            rows,
        };
        write_scores(&path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
        path
    }

    /// A quadratic surrogate of 6 blocks saved as `name`, fitted with `fixed` on model
    /// `model_id` (dataset "d").
    fn surrogate_file(dir: &Path, name: &str, fixed: &[usize], model_id: &str) -> PathBuf {
        use layerprune_core::Mask;
        use layerprune_surrogate::{fit, FitOptions, SurrogateKind};

        let masks: Vec<Mask> = (0..6)
            .map(|b| Mask::from_removed(6, &[b]).unwrap())
            .chain([Mask::full(6)])
            .collect();
        let targets: Vec<f64> = (0..7).map(|i| f64::from(i) / 7.0).collect();
        let fitted = fit(
            SurrogateKind::Quadratic,
            &masks,
            &targets,
            &FitOptions::default(),
        )
        .unwrap();
        let path = dir.join(name);
        SavedSurrogate::new(fitted, "utility", "test")
            .with_game(fixed, model_id, "d")
            .save(&path)
            .unwrap();
        path
    }

    fn one_shot(scores: PathBuf, fixed: Vec<usize>) -> PlanFiles {
        PlanFiles {
            scores: Some(scores),
            estimator: Some("e".into()),
            fixed,
            ..PlanFiles::default()
        }
    }

    fn settings(ks: Vec<usize>) -> PlanSettings {
        PlanSettings {
            ks,
            candidates: 8,
            random_starts: 16,
            permutation_pairs: 512,
            budget: Budget::OfSleb(1.0),
            ratio_target: None,
            race: None,
            seed: 0,
        }
    }

    #[test]
    fn one_shot_plans_from_a_score_table_keep_its_fixed_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let files = one_shot(score_file(dir.path(), "s.parquet", 6, "m"), vec![1]);
        let method = files.method(None).unwrap();
        assert_eq!(method, PlanMethod::OneShot);
        files.check(method, false).unwrap();
        let loaded = files.load(method, None).unwrap();
        assert_eq!(loaded.num_blocks, 6);
        // --fixed 1 and the table's block 0.
        assert_eq!(loaded.fixed, vec![0, 1]);
        let plans = loaded.plans(&settings(vec![1, 2]), None).unwrap();
        let removed: Vec<Vec<usize>> = plans.iter().map(|p| p.removed.clone()).collect();
        assert_eq!(removed, vec![vec![2], vec![2, 3]]);
        assert!(plans.iter().all(|p| p.measured_nll.is_none()));
        let table = loaded.table(&plans).unwrap();
        assert_eq!((table.num_blocks, table.rows.len()), (6, 2));
    }

    /// A surrogate given to a method that does not choose by it only predicts: its fixed blocks
    /// do not bind the plan (until 2026-12-07 they did, and a --surrogate given for predictions
    /// changed a one-shot, SLEB or adaptive plan without a word), and a plan removing one gets
    /// no prediction. Iterative and search, which choose by it, keep them.
    #[test]
    fn a_surrogate_binds_only_the_methods_that_choose_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let surrogate = surrogate_file(dir.path(), "fixed-2.json", &[2], "m");
        let files = PlanFiles {
            surrogate: Some(surrogate),
            ..one_shot(score_file(dir.path(), "s.parquet", 6, "m"), vec![])
        };
        let loaded = files.load(PlanMethod::OneShot, None).unwrap();
        assert_eq!(loaded.fixed, vec![0]);
        let plans = loaded.plans(&settings(vec![1, 3]), None).unwrap();
        let removed: Vec<Vec<usize>> = plans.iter().map(|p| p.removed.clone()).collect();
        // The scores' plans, block 2 among them at k = 3: predicted where the surrogate knows.
        assert_eq!(removed, vec![vec![1], vec![1, 2, 3]]);
        assert!(plans[0].predicted.is_some() && plans[1].predicted.is_none());
        let loaded = files.load(PlanMethod::Iterative, None).unwrap();
        assert_eq!(loaded.fixed, vec![2]);
    }

    #[test]
    fn inputs_of_another_model_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = one_shot(score_file(dir.path(), "s.parquet", 6, "m"), vec![]);
        let model_dir = dir.path().join("model");
        let model = |num_blocks, model_id| ModelFacts {
            dir: &model_dir,
            model_id,
            num_blocks,
        };
        let message = files
            .load(PlanMethod::OneShot, Some(model(8, "m")))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("the score table is for a model of 6 blocks")
                && message.contains(&format!("{} says 8", model_dir.display())),
            "{message}"
        );
        let message = files
            .load(PlanMethod::OneShot, Some(model(6, "other")))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("the scores were measured on another model (m) than"),
            "{message}"
        );
        files
            .load(PlanMethod::OneShot, Some(model(6, "m")))
            .unwrap();
    }

    /// Files recording different models are refused together, with or without a model
    /// opened, unless mixtures are allowed (then they are used).
    #[test]
    fn mixed_inputs_are_refused_unless_allowed() {
        use layerprune_tables::{write_block_stats, BlockStatRow};

        let dir = tempfile::tempdir().unwrap();
        let scores = score_file(dir.path(), "s.parquet", 6, "m");
        let surrogate = surrogate_file(dir.path(), "other.json", &[], "other");
        let mut files = PlanFiles {
            surrogate: Some(surrogate.clone()),
            ..one_shot(scores.clone(), vec![])
        };
        let message = files
            .load(PlanMethod::OneShot, None)
            .unwrap_err()
            .to_string();
        assert!(
            // The surrogate is read first, so the scores are the odd ones out.
            message.contains("s.parquet: the scores were measured on another model (m) than")
                && message.contains("other.json (other)")
                && message.contains("--allow-mixed-inputs"),
            "{message}"
        );
        files.allow_mixed_inputs = true;
        let loaded = files.load(PlanMethod::OneShot, None).unwrap();
        assert!(loaded.scores.is_some() && loaded.surrogate.is_some());
        // One-shot chooses by the scores, which record no dataset: the surrogate only predicts
        // and tokens would only measure, so nothing is known of what the choice read.
        assert!(loaded.chosen_on(Some("t")).is_empty());
        // Through the surrogate, its dataset; a search also measures its candidates on tokens.
        let loaded = files.load(PlanMethod::Iterative, None).unwrap();
        assert_eq!(
            loaded.chosen_on(Some("t")),
            BTreeSet::from(["d".to_string()])
        );
        let loaded = files.load(PlanMethod::Search, None).unwrap();
        assert_eq!(
            loaded.chosen_on(Some("t")),
            BTreeSet::from(["d".to_string(), "t".to_string()])
        );
        assert_eq!(loaded.chosen_on(None), BTreeSet::from(["d".to_string()]));

        // Block statistics of another model than the one opened.
        let stats = dir.path().join("stats.parquet");
        let table = BlockStatsTable {
            num_blocks: 6,
            model_id: "m".into(),
            dataset_id: "d".into(),
            rows: (0..6)
                .map(|b| BlockStatRow {
                    start_block: b,
                    run_length: 1,
                    mean_cosine: 0.9,
                    angular_distance: 0.9f64.acos() / std::f64::consts::PI,
                })
                .collect(),
        };
        write_block_stats(&stats, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
        let mut files = PlanFiles {
            block_stats: Some(stats),
            ..PlanFiles::default()
        };
        let model_dir = dir.path().join("model");
        let model = ModelFacts {
            dir: &model_dir,
            model_id: "other",
            num_blocks: 6,
        };
        let message = files
            .load(PlanMethod::AngularRun, Some(model))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("the block statistics were measured on another model (m) than"),
            "{message}"
        );
        files.allow_mixed_inputs = true;
        files.load(PlanMethod::AngularRun, Some(model)).unwrap();
    }

    #[test]
    fn a_method_without_its_input_is_refused() {
        let files = PlanFiles::default();
        assert!(files
            .method(None)
            .unwrap_err()
            .to_string()
            .contains("give --scores (one-shot) or --method"));
        for (method, needle) in [
            (PlanMethod::Search, "--surrogate"),
            (PlanMethod::Sleb, "--model and --tokens"),
            (PlanMethod::AngularRun, "--block-stats"),
            (PlanMethod::FromPlan, "--plans"),
        ] {
            let message = files.check(method, false).unwrap_err().to_string();
            assert_eq!(message, format!("--method {method} needs {needle}"));
        }
        files.check(PlanMethod::Sleb, true).unwrap();
        assert!(files
            .load(PlanMethod::Sleb, None)
            .unwrap_err()
            .to_string()
            .contains("no input says how many blocks"));
    }

    /// Two plans of one k whose methods are one under their current names (an old table's
    /// `one-shot:angular` beside `angular`): from-plan asked for --plan-method angular, which
    /// matched both again. Refused as the table is read, naming both rows; two methods for
    /// one k are read (--plan-method tells them apart).
    #[test]
    fn from_plan_refuses_two_plans_it_cannot_tell_apart() {
        use layerprune_tables::{write_plans, PlanRow};
        let dir = tempfile::tempdir().unwrap();
        let plan = |method: &str, removed: u32| PlanRow {
            method: method.into(),
            k: 1,
            removed_blocks: vec![removed],
            predicted_value: None,
            measured_nll: None,
            measured_ppl: None,
            llm_evaluations: 1,
            runner_up: None,
            full_model: None,
        };
        let from_plan = |rows: Vec<PlanRow>| {
            let path = dir.path().join("plans.parquet");
            let table = PlanTable {
                num_blocks: 6,
                value: None,
                rows,
            };
            write_plans(&path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
            PlanFiles {
                plans: Some(path),
                ..PlanFiles::default()
            }
            .load(PlanMethod::FromPlan, None)
        };
        let error = from_plan(vec![plan("one-shot:angular", 2), plan("angular", 3)])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error
                .contains("plans.parquet: rows 0 and 1 are both plans of method angular for k = 1")
                && error.contains("(recorded as one-shot:angular and angular"),
            "{error}"
        );
        assert!(from_plan(vec![plan("sleb", 2), plan("angular", 3)]).is_ok());
    }
}
