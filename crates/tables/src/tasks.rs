//! Zero-shot task results: the log-likelihood of every choice of every question under each
//! mask (`task_choices`, also the checkpoint a task evaluation resumes from), and the
//! accuracies derived from them (`task_accuracies`).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field};
use layerprune_core::Mask;

use crate::io::{read_table, write_table, TableKind};
use crate::masks::{mask_columns, mask_fields, read_mask_column};
use crate::{Provenance, TableError};

/// The log-likelihood of one choice of one question under one mask.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskChoiceRow {
    pub mask: Mask,
    pub task: String,
    /// The question's row in the task file.
    pub question: u32,
    pub choice: u32,
    /// The right choice of this question.
    pub gold: u32,
    /// Σ log p of the continuation's tokens, nats.
    pub loglik: f64,
    pub continuation_tokens: u32,
    /// The length acc_norm divides by: the continuation's characters (Unicode scalar values,
    /// as lm-eval's `len(continuation)` counts them).
    pub norm_chars: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskChoiceTable {
    pub num_blocks: usize,
    pub model_id: String,
    /// Id of the encoded questions (tasks, subsample, token ids).
    pub dataset_id: String,
    /// How the log-likelihoods were computed (the runtime's `Scoring` name); a run resumes
    /// only from rows computed the same way.
    pub scoring: String,
    /// The device the log-likelihoods were computed on, with the settings that may change its
    /// arithmetic (as an evaluation table's `evaluated_on`): a CPU's and a GPU's differ in the
    /// last digits, enough to change a close choice, so a run resumes, and a merge joins
    /// shards, only of rows computed alike. `None` in tables written before the entry existed.
    pub evaluated_on: Option<String>,
    /// False while the run writing it is still going (a checkpoint).
    pub complete: bool,
    pub rows: Vec<TaskChoiceRow>,
}

/// The scoring of tables written before the field existed: the head graph's fp32 NLL.
pub const LEGACY_SCORING: &str = "head-graph-nll";

/// The metadata entry of [`TaskChoiceTable::evaluated_on`], named as evaluation tables name it.
const EVALUATED_ON: &str = "evaluated_on";

fn choice_fields() -> Vec<Field> {
    let mut fields = mask_fields();
    fields.extend([
        Field::new("task", DataType::Utf8, false),
        Field::new("question", DataType::UInt32, false),
        Field::new("choice", DataType::UInt32, false),
        Field::new("gold", DataType::UInt32, false),
        Field::new("loglik", DataType::Float64, false),
        Field::new("continuation_tokens", DataType::UInt32, false),
        Field::new("norm_chars", DataType::UInt32, false),
    ]);
    fields
}

/// Refuses a choice logged twice for one mask: a log with one choice twice and another
/// missing has a question's count of rows, so a run counting rows took its mask for done and
/// left it out of its outputs, and a resume did not run it again.
fn check_one_row_per_choice(path: &Path, rows: &[TaskChoiceRow]) -> Result<(), TableError> {
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        if !seen.insert((&row.mask, row.task.as_str(), row.question, row.choice)) {
            return Err(TableError::bad(
                path,
                format!(
                    "row {index}: mask {}, task {}, question {}, choice {} is logged twice",
                    row.mask, row.task, row.question, row.choice
                ),
            ));
        }
    }
    Ok(())
}

pub fn write_task_choices(
    path: &Path,
    table: &TaskChoiceTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    let rows = &table.rows;
    check_one_row_per_choice(path, rows)?;
    let mut columns = mask_columns(path, table.num_blocks, rows.iter().map(|r| &r.mask))?;
    let u32s = |get: fn(&TaskChoiceRow) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(get)))
    };
    columns.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.task.as_str()),
    )));
    columns.push(u32s(|r| r.question));
    columns.push(u32s(|r| r.choice));
    columns.push(u32s(|r| r.gold));
    columns.push(Arc::new(Float64Array::from_iter_values(
        rows.iter().map(|r| r.loglik),
    )));
    columns.push(u32s(|r| r.continuation_tokens));
    columns.push(u32s(|r| r.norm_chars));
    let mut table_fields = vec![
        ("num_blocks", table.num_blocks.to_string()),
        ("model_id", table.model_id.clone()),
        ("dataset_id", table.dataset_id.clone()),
        ("scoring", table.scoring.clone()),
        ("complete", table.complete.to_string()),
    ];
    if let Some(evaluated_on) = &table.evaluated_on {
        table_fields.push((EVALUATED_ON, evaluated_on.clone()));
    }
    write_table(
        path,
        TableKind::TaskChoices,
        provenance,
        table_fields,
        choice_fields(),
        columns,
    )
}

pub fn read_task_choices(path: &Path) -> Result<TaskChoiceTable, TableError> {
    let raw = read_table(path, TableKind::TaskChoices, &choice_fields())?;
    let num_blocks: usize = raw.meta_num_blocks()?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let masks = read_mask_column(&chunk, num_blocks)?;
        let task = chunk.required::<StringArray>("task")?;
        let question = chunk.required::<UInt32Array>("question")?;
        let choice = chunk.required::<UInt32Array>("choice")?;
        let gold = chunk.required::<UInt32Array>("gold")?;
        let loglik = chunk.required::<Float64Array>("loglik")?;
        let tokens = chunk.required::<UInt32Array>("continuation_tokens")?;
        let norm_chars = chunk.required::<UInt32Array>("norm_chars")?;
        for (row, mask) in masks.into_iter().enumerate() {
            rows.push(TaskChoiceRow {
                mask,
                task: task.value(row).to_string(),
                question: question.value(row),
                choice: choice.value(row),
                gold: gold.value(row),
                loglik: loglik.value(row),
                continuation_tokens: tokens.value(row),
                norm_chars: norm_chars.value(row),
            });
        }
    }
    check_one_row_per_choice(path, &rows)?;
    Ok(TaskChoiceTable {
        num_blocks,
        model_id: raw.meta("model_id")?.to_string(),
        dataset_id: raw.meta("dataset_id")?.to_string(),
        scoring: raw
            .meta_optional("scoring")
            .unwrap_or(LEGACY_SCORING)
            .to_string(),
        evaluated_on: raw.meta_optional(EVALUATED_ON).map(str::to_string),
        complete: raw.meta_parse("complete")?,
        rows,
    })
}

/// One task's accuracies under one mask (task `mean`: the unweighted mean over the tasks).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskAccuracyRow {
    pub mask: Mask,
    pub task: String,
    pub questions: u32,
    pub acc: f64,
    pub acc_low: f64,
    pub acc_high: f64,
    pub acc_norm: f64,
    pub acc_norm_low: f64,
    pub acc_norm_high: f64,
    /// Mean NLL per token of the right choices' continuations, nats.
    pub gold_nll: f64,
    pub gold_tokens: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaskAccuracyTable {
    pub num_blocks: usize,
    pub model_id: String,
    pub dataset_id: String,
    /// False while the run writing it is still going: its masks are those finished so far.
    /// Tables written before the field existed read as complete.
    pub complete: bool,
    pub rows: Vec<TaskAccuracyRow>,
}

fn accuracy_fields() -> Vec<Field> {
    let mut fields = mask_fields();
    fields.push(Field::new("task", DataType::Utf8, false));
    fields.push(Field::new("questions", DataType::UInt32, false));
    for name in [
        "acc",
        "acc_low",
        "acc_high",
        "acc_norm",
        "acc_norm_low",
        "acc_norm_high",
        "gold_nll",
    ] {
        fields.push(Field::new(name, DataType::Float64, false));
    }
    fields.push(Field::new("gold_tokens", DataType::UInt64, false));
    fields
}

pub fn write_task_accuracies(
    path: &Path,
    table: &TaskAccuracyTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    let rows = &table.rows;
    let mut columns = mask_columns(path, table.num_blocks, rows.iter().map(|r| &r.mask))?;
    let floats = |get: fn(&TaskAccuracyRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(get)))
    };
    columns.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.task.as_str()),
    )));
    columns.push(Arc::new(UInt32Array::from_iter_values(
        rows.iter().map(|r| r.questions),
    )));
    columns.push(floats(|r| r.acc));
    columns.push(floats(|r| r.acc_low));
    columns.push(floats(|r| r.acc_high));
    columns.push(floats(|r| r.acc_norm));
    columns.push(floats(|r| r.acc_norm_low));
    columns.push(floats(|r| r.acc_norm_high));
    columns.push(floats(|r| r.gold_nll));
    columns.push(Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.gold_tokens),
    )));
    let table_fields = vec![
        ("num_blocks", table.num_blocks.to_string()),
        ("model_id", table.model_id.clone()),
        ("dataset_id", table.dataset_id.clone()),
        ("complete", table.complete.to_string()),
    ];
    write_table(
        path,
        TableKind::TaskAccuracies,
        provenance,
        table_fields,
        accuracy_fields(),
        columns,
    )
}

pub fn read_task_accuracies(path: &Path) -> Result<TaskAccuracyTable, TableError> {
    let raw = read_table(path, TableKind::TaskAccuracies, &accuracy_fields())?;
    let num_blocks: usize = raw.meta_num_blocks()?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let masks = read_mask_column(&chunk, num_blocks)?;
        let task = chunk.required::<StringArray>("task")?;
        let questions = chunk.required::<UInt32Array>("questions")?;
        let float = |name: &str| chunk.required::<Float64Array>(name);
        let (acc, acc_low, acc_high) = (float("acc")?, float("acc_low")?, float("acc_high")?);
        let (acc_norm, acc_norm_low, acc_norm_high) = (
            float("acc_norm")?,
            float("acc_norm_low")?,
            float("acc_norm_high")?,
        );
        let gold_nll = float("gold_nll")?;
        let gold_tokens = chunk.required::<UInt64Array>("gold_tokens")?;
        for (row, mask) in masks.into_iter().enumerate() {
            rows.push(TaskAccuracyRow {
                mask,
                task: task.value(row).to_string(),
                questions: questions.value(row),
                acc: acc.value(row),
                acc_low: acc_low.value(row),
                acc_high: acc_high.value(row),
                acc_norm: acc_norm.value(row),
                acc_norm_low: acc_norm_low.value(row),
                acc_norm_high: acc_norm_high.value(row),
                gold_nll: gold_nll.value(row),
                gold_tokens: gold_tokens.value(row),
            });
        }
    }
    Ok(TaskAccuracyTable {
        num_blocks,
        model_id: raw.meta("model_id")?.to_string(),
        dataset_id: raw.meta("dataset_id")?.to_string(),
        complete: match raw.meta_optional("complete") {
            Some(_) => raw.meta_parse("complete")?,
            None => true,
        },
        rows,
    })
}
