//! The zero-shot task tables round-trip, and are refused as another kind of table.

use layerprune_core::Mask;
use layerprune_tables::{
    read_evaluations, read_table_kind, read_task_accuracies, read_task_choices,
    write_task_accuracies, write_task_choices, Provenance, TableKind, TaskAccuracyRow,
    TaskAccuracyTable, TaskChoiceRow, TaskChoiceTable,
};

fn provenance() -> Provenance {
    Provenance::new("test", "0", vec!["evaluate".into(), "--tasks".into()]).with_seed(7)
}

#[test]
fn task_tables_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let masks = [
        Mask::full(4),
        Mask::from_kept(vec![true, false, true, true]),
    ];
    let choices = TaskChoiceTable {
        num_blocks: 4,
        model_id: "m".into(),
        dataset_id: "d".into(),
        scoring: "logits-f64-log-softmax".into(),
        evaluated_on: Some("cuda, tf32 off, batch tokens 512".into()),
        complete: false,
        rows: masks
            .iter()
            .flat_map(|mask| {
                (0..3u32).map(move |c| TaskChoiceRow {
                    mask: mask.clone(),
                    task: "arc_easy".into(),
                    question: 41,
                    choice: c,
                    gold: 2,
                    loglik: -1.5 - f64::from(c),
                    continuation_tokens: 3 + c,
                    norm_chars: 10 * c,
                })
            })
            .collect(),
    };
    let path = dir.path().join("choices.parquet");
    write_task_choices(&path, &choices, &provenance()).unwrap();
    assert_eq!(read_task_choices(&path).unwrap(), choices);
    assert_eq!(read_table_kind(&path).unwrap(), TableKind::TaskChoices);
    let message = read_evaluations(&path).err().unwrap().to_string();
    assert!(message.contains("task_choices"), "{message}");

    let accuracies = TaskAccuracyTable {
        num_blocks: 4,
        model_id: "m".into(),
        dataset_id: "d".into(),
        complete: false,
        rows: vec![TaskAccuracyRow {
            mask: masks[1].clone(),
            task: "mean".into(),
            questions: 700,
            acc: 0.4,
            acc_low: 0.36,
            acc_high: 0.44,
            acc_norm: 0.45,
            acc_norm_low: 0.41,
            acc_norm_high: 0.49,
            gold_nll: 2.5,
            gold_tokens: 9000,
        }],
    };
    let path = dir.path().join("accuracies.parquet");
    write_task_accuracies(&path, &accuracies, &provenance()).unwrap();
    assert_eq!(read_task_accuracies(&path).unwrap(), accuracies);
    assert!(read_task_choices(&path).is_err());

    // A mask of the wrong length is refused on writing, naming the row.
    let mut bad = choices.clone();
    bad.rows[1].mask = Mask::full(5);
    let message = write_task_choices(&dir.path().join("bad.parquet"), &bad, &provenance())
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("row 1"), "{message}");
    assert!(!dir.path().join("bad.parquet").exists());
}

/// One row per (mask, task, question, choice): a log with a choice twice and another missing
/// has each question's count of rows, which a run counting rows took for a finished mask (left
/// out of its outputs, and not run again by a resume). Refused on writing (and on reading, by
/// the same check), naming the row.
#[test]
fn a_choice_logged_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let row = |choice: u32| TaskChoiceRow {
        mask: Mask::full(3),
        task: "piqa".into(),
        question: 7,
        choice,
        gold: 0,
        loglik: -1.0,
        continuation_tokens: 2,
        norm_chars: 5,
    };
    let table = TaskChoiceTable {
        num_blocks: 3,
        model_id: "m".into(),
        dataset_id: "d".into(),
        scoring: "logits-f64-log-softmax".into(),
        evaluated_on: None,
        complete: false,
        rows: vec![row(0), row(0)],
    };
    let path = dir.path().join("choices.parquet");
    let message = write_task_choices(&path, &table, &provenance())
        .err()
        .unwrap()
        .to_string();
    assert!(
        message.contains("row 1: mask 111, task piqa, question 7, choice 0 is logged twice"),
        "{message}"
    );
    assert!(!path.exists());
    let fine = TaskChoiceTable {
        rows: vec![row(0), row(1)],
        ..table
    };
    write_task_choices(&path, &fine, &provenance()).unwrap();
    assert_eq!(read_task_choices(&path).unwrap(), fine);
}
