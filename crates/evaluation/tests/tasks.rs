//! The zero-shot task run as a library on the tiny model with small task files written here:
//! a resumed run and merged shards give the tables of one uninterrupted run.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use layerprune_core::Mask;
use layerprune_evaluation::{run_tasks, Bos, MaskSource, Progress, Shard, TaskConfig, TaskOutcome};
use layerprune_runtime::{ChoiceOptions, GraphOptimization, RuntimeOptions};
use layerprune_tables::{
    read_evaluations, read_task_accuracies, read_task_choices, write_task_choices, Provenance,
    TaskChoiceRow,
};
use layerprune_tasks::{Task, TaskMetric};
use layerprune_tests::{blocks_needed, tiny_model_dir, write_task_files};

// In an order whose checkpoints of 2 (after the full model) share fewer prefixes than the
// same masks' in prefix order do.
const MASKS: [&str; 6] = ["101101", "110111", "011111", "111110", "100001", "111011"];

/// A run of every mask of [`MASKS`] writing `<name>-{evaluations,choices,accuracy}`.
fn config(dir: &Path, name: &str) -> TaskConfig {
    let file = |kind: &str| dir.join(format!("{name}-{kind}.parquet"));
    TaskConfig {
        model: tiny_model_dir(),
        task_data: dir.join("wheel"),
        tasks: vec![Task::Piqa, Task::Boolq],
        subsample: 0,
        seed: 0,
        bos: Bos::Auto,
        metric: TaskMetric::Acc,
        masks: MaskSource {
            table: None,
            inline: MASKS.iter().map(|m| m.parse().unwrap()).collect(),
        },
        shard: None,
        merge: vec![],
        out: file("evaluations"),
        choices_out: file("choices"),
        accuracy_out: file("accuracy"),
        runtime: RuntimeOptions::default(),
        options: ChoiceOptions::default(),
        checkpoint_every: NonZeroUsize::new(2).unwrap(),
        max_new_masks: None,
        overwrite: false,
        provenance: Provenance::new("evaluate", "0.1.0", vec!["evaluate".into()]),
    }
}

fn run(config: &TaskConfig) -> (TaskOutcome, Vec<Progress>) {
    let mut reported = Vec::new();
    let outcome = run_tasks(config, &mut |p| reported.push(p)).unwrap();
    (outcome, reported)
}

fn row_key(r: &TaskChoiceRow) -> (String, String, u32, u32, u64) {
    (
        r.mask.id(),
        r.task.clone(),
        r.question,
        r.choice,
        r.loglik.to_bits(),
    )
}

/// A run's three outputs, but timings: sorted choice rows, evaluation rows in order,
/// accuracy rows in order.
type Tables = (
    Vec<(String, String, u32, u32, u64)>,
    Vec<(String, u64, u64, u64)>,
    Vec<layerprune_tables::TaskAccuracyRow>,
);

fn tables(config: &TaskConfig) -> Tables {
    let choices = read_task_choices(&config.choices_out).unwrap();
    let mut rows: Vec<_> = choices.rows.iter().map(row_key).collect();
    rows.sort();
    let evaluations = read_evaluations(&config.out).unwrap();
    let evaluations = evaluations
        .rows
        .iter()
        .map(|r| {
            (
                r.mask.id(),
                r.nll.to_bits(),
                r.utility.to_bits(),
                r.tokens_scored,
            )
        })
        .collect();
    let accuracies = read_task_accuracies(&config.accuracy_out).unwrap().rows;
    (rows, evaluations, accuracies)
}

#[test]
fn a_resumed_and_a_merged_task_run_equal_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    write_task_files(&dir.path().join("wheel"), &[0, 1, 1, 0]);
    let whole = config(dir.path(), "whole");
    let (outcome, reported) = run(&whole);
    assert!(outcome.complete);
    // The full model (the reference, not listed) and the 6 masks.
    assert_eq!((outcome.scored, outcome.finished), (7, 7));
    assert_eq!((outcome.masks, outcome.masks_finished), (6, 6));
    let work = reported.iter().find_map(|p| match p {
        Progress::TaskWork {
            questions,
            choices,
            scoring,
            masks,
            ..
        } => Some((*questions, *choices, *scoring, *masks)),
        _ => None,
    });
    assert_eq!(work, Some((7, 14, "logits-f64-log-softmax", 7)));
    // Checkpointed 2 masks at a time: the full model first, then the masks in prefix order, so
    // that a checkpoint's masks share prefixes; every request batch runs each checkpoint's masks.
    let batches = reported
        .iter()
        .find_map(|p| match p {
            Progress::TaskWork { batches, .. } => Some(*batches as u64),
            _ => None,
        })
        .unwrap();
    let parse = |ids: &[&str]| -> Vec<Mask> { ids.iter().map(|m| m.parse().unwrap()).collect() };
    let mut sorted = MASKS.to_vec();
    sorted.sort();
    let in_prefix_order = parse(&[&["111111"], sorted.as_slice()].concat());
    let in_table_order = parse(&[&["111111"], MASKS.as_slice()].concat());
    assert_eq!(
        outcome.blocks_run,
        batches * blocks_needed(&in_prefix_order, 2)
    );
    assert!(blocks_needed(&in_table_order, 2) > blocks_needed(&in_prefix_order, 2));
    let expected = tables(&whole);
    assert_eq!(expected.0.len(), 7 * 14);
    assert_eq!(expected.1.len(), 6);
    assert_eq!(expected.2.len(), 7 * 3, "two tasks and the mean per mask");
    assert_eq!(outcome.accuracies.rows, expected.2);
    let order: Vec<String> = expected.1.iter().map(|r| r.0.clone()).collect();
    assert_eq!(order, MASKS, "evaluation rows in the masks' order");

    // Stopped after the full model and one mask, then after two more, then finished.
    let mut parts = config(dir.path(), "parts");
    for (limit, finished) in [(2, 2), (2, 4)] {
        parts.max_new_masks = Some(limit);
        let (outcome, _) = run(&parts);
        assert!(!outcome.complete);
        assert_eq!(outcome.finished, finished);
        assert!(!read_task_choices(&parts.choices_out).unwrap().complete);
    }
    parts.max_new_masks = None;
    let (outcome, reported) = run(&parts);
    assert!(outcome.complete);
    assert_eq!(outcome.scored, 3);
    assert!(reported.contains(&Progress::TasksResumed {
        finished: 4,
        partly: 0
    }));
    assert_eq!(tables(&parts), expected);

    // Three shards, then merged; a missing, a repeated and a foreign shard are refused.
    let shards: Vec<TaskConfig> = (0..3)
        .map(|i| {
            let mut shard = config(dir.path(), &format!("s{i}"));
            shard.shard = Some(Shard::new(i, 3).unwrap());
            run(&shard);
            shard
        })
        .collect();
    let paths: Vec<PathBuf> = shards.iter().map(|s| s.choices_out.clone()).collect();
    let mut merged = config(dir.path(), "merged");
    merged.merge = paths.clone();
    let (outcome, _) = run(&merged);
    assert_eq!(outcome.scored, 0);
    assert!(outcome.complete);
    assert_eq!(tables(&merged), expected);

    let refused = |merge: Vec<PathBuf>, needle: &str| {
        let mut bad = config(dir.path(), "bad");
        bad.merge = merge;
        let message = format!("{:#}", run_tasks(&bad, &mut |_| {}).unwrap_err());
        assert!(
            message.contains(needle),
            "expected {needle:?} in: {message}"
        );
        assert!(!bad.choices_out.exists() && !bad.out.exists());
    };
    refused(paths[..2].to_vec(), "in none of the shards");
    let owning = (0..3)
        .find(|&i| {
            read_task_choices(&paths[i])
                .unwrap()
                .rows
                .iter()
                .any(|r| r.mask.num_removed() > 0)
        })
        .unwrap();
    let mut twice = paths.clone();
    twice.push(paths[owning].clone());
    refused(twice, "in more than one shard");
    let mut other = config(dir.path(), "other");
    other.subsample = 2;
    other.shard = Some(Shard::new(0, 3).unwrap());
    run(&other);
    refused(
        vec![
            other.choices_out.clone(),
            paths[1].clone(),
            paths[2].clone(),
        ],
        "computed for model",
    );
    let full: Mask = "111111".parse().unwrap();
    assert!(read_task_choices(&other.choices_out)
        .unwrap()
        .rows
        .iter()
        .any(|r| r.mask == full));
}

/// Rewrites the choice log at `path` as recorded computed on `evaluated_on`, rows unchanged.
fn record_evaluated_on(path: &Path, evaluated_on: Option<&str>) {
    let mut table = read_task_choices(path).unwrap();
    table.evaluated_on = evaluated_on.map(String::from);
    let provenance = layerprune_tables::read_provenance(path).unwrap();
    write_task_choices(path, &table, &provenance).unwrap();
}

#[test]
fn a_choice_log_computed_on_another_device_is_neither_resumed_nor_merged() {
    // Before, the log recorded no device: a run resumed on a GPU a log begun on the CPU (or
    // with other arithmetic), and a merge joined such shards, mixing log-likelihoods that
    // differ in the last digits without a trace.
    let dir = tempfile::tempdir().unwrap();
    write_task_files(&dir.path().join("wheel"), &[0, 1, 1, 0]);
    let mut begun = config(dir.path(), "begun");
    begun.max_new_masks = Some(2);
    run(&begun);
    let log = read_task_choices(&begun.choices_out).unwrap();
    assert_eq!(log.evaluated_on.as_deref(), Some("cpu"));
    assert_eq!(
        read_evaluations(&begun.out)
            .unwrap()
            .evaluated_on
            .as_deref(),
        Some("cpu")
    );

    // The CPU with another graph optimization runs other kernels: refused, nothing written.
    let before = layerprune_tests::snapshot(dir.path());
    let mut elsewhere = begun.clone();
    elsewhere.max_new_masks = None;
    elsewhere.runtime = RuntimeOptions {
        graph_optimization: GraphOptimization::Basic,
        ..RuntimeOptions::default()
    };
    let message = format!("{:#}", run_tasks(&elsewhere, &mut |_| {}).unwrap_err());
    assert!(
        message.contains(&format!(
            "{}: cannot resume: its log-likelihoods were computed on cpu, this run computes on \
             cpu, graph optimization basic",
            begun.choices_out.display()
        )),
        "{message}"
    );
    assert!(message.contains("--overwrite"), "{message}");
    assert_eq!(layerprune_tests::snapshot(dir.path()), before);

    // A log from before the entry existed is resumed, and recorded as this run's from then on.
    record_evaluated_on(&begun.choices_out, None);
    let mut resumed = begun.clone();
    resumed.max_new_masks = Some(1);
    let (outcome, reported) = run(&resumed);
    assert!(reported.contains(&Progress::TasksResumed {
        finished: 2,
        partly: 0
    }));
    assert_eq!(outcome.finished, 3);
    let log = read_task_choices(&begun.choices_out).unwrap();
    assert_eq!(log.evaluated_on.as_deref(), Some("cpu"));

    // With --overwrite the other arithmetic starts the log afresh, and records itself.
    elsewhere.overwrite = true;
    elsewhere.max_new_masks = Some(1);
    let (outcome, reported) = run(&elsewhere);
    assert_eq!(outcome.finished, 1, "the full model alone, scored again");
    assert!(!reported
        .iter()
        .any(|p| matches!(p, Progress::TasksResumed { .. })));
    assert_eq!(
        read_task_choices(&begun.choices_out)
            .unwrap()
            .evaluated_on
            .as_deref(),
        Some("cpu, graph optimization basic")
    );

    // Shards computed on different devices are not merged; a shard from before the entry is.
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let mut shard = config(dir.path(), &format!("shard{i}"));
            shard.shard = Some(Shard::new(i, 2).unwrap());
            run(&shard);
            shard.choices_out
        })
        .collect();
    record_evaluated_on(&shards[1], Some("cuda, tf32 on, batch tokens 2048"));
    let mut merged = config(dir.path(), "merged");
    merged.merge = shards.clone();
    let message = format!("{:#}", run_tasks(&merged, &mut |_| {}).unwrap_err());
    assert!(
        message.contains(&format!(
            "{}: computed on cuda, tf32 on, batch tokens 2048, {} on cpu",
            shards[1].display(),
            shards[0].display()
        )),
        "{message}"
    );
    assert!(!merged.choices_out.exists() && !merged.out.exists());
    record_evaluated_on(&shards[1], None);
    let (outcome, _) = run(&merged);
    assert!(outcome.complete);
    assert_eq!(
        read_task_choices(&merged.choices_out)
            .unwrap()
            .evaluated_on
            .as_deref(),
        Some("cpu")
    );
}

#[test]
fn a_merge_replaces_no_choice_log_of_another_run() {
    // Before, a merge checked the evaluation and accuracy tables it replaces but wrote its
    // choice log over whatever --choices-out held: another model's or other questions' log
    // (hours of scoring on the full splits) was replaced without a word.
    let dir = tempfile::tempdir().unwrap();
    write_task_files(&dir.path().join("wheel"), &[0, 1, 1, 0]);
    let shards: Vec<PathBuf> = (0..2)
        .map(|i| {
            let mut shard = config(dir.path(), &format!("shard{i}"));
            shard.shard = Some(Shard::new(i, 2).unwrap());
            run(&shard);
            shard.choices_out
        })
        .collect();
    let mut other = config(dir.path(), "other");
    other.subsample = 2;
    other.max_new_masks = Some(1);
    run(&other);

    let mut merged = config(dir.path(), "merged");
    merged.merge = shards;
    merged.choices_out = other.choices_out.clone();
    let before = layerprune_tests::snapshot(dir.path());
    let message = format!("{:#}", run_tasks(&merged, &mut |_| {}).unwrap_err());
    assert!(
        message.contains(&format!(
            "{} (--choices-out): a choice log of model",
            other.choices_out.display()
        )) && message.contains("--overwrite"),
        "{message}"
    );
    assert_eq!(layerprune_tests::snapshot(dir.path()), before);

    // An earlier merge of these shards (the same model, questions, scoring and device) is
    // replaced, as is another run's log with --overwrite.
    merged.overwrite = true;
    run(&merged);
    merged.overwrite = false;
    let (outcome, _) = run(&merged);
    assert!(outcome.complete);
    let log = read_task_choices(&merged.choices_out).unwrap();
    assert_eq!(log.evaluated_on.as_deref(), Some("cpu"));
    assert!(log.complete);
}
