//! What the pipeline concludes: per-block contribution scores and pruning plans.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field};

use crate::io::{list_of, read_table, to_u32, u32_list_column, write_table, Chunk, TableKind};
use crate::masks::{check_fixed_blocks, encode_fixed_blocks, read_fixed_blocks};
use crate::{Provenance, TableError};

/// One estimator's estimate of one block's contribution. Higher = more important: pruning
/// removes the blocks with the lowest estimates.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRow {
    pub block: u32,
    /// In the units of the game's value (utility, or nats for neg-nll).
    pub estimate: f64,
    pub std_error: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// Estimator name (e.g. `exact`, `permutation`, `kernelshap`, `shortgpt`).
    pub estimator: String,
    /// Distinct masks the estimator had evaluated on the LLM.
    pub llm_evaluations: u64,
}

impl ScoreRow {
    /// A score with no uncertainty attached (the baselines' scores are exact by definition).
    pub fn point(block: usize, estimate: f64, estimator: &str, llm_evaluations: u64) -> Self {
        ScoreRow {
            block: block as u32,
            estimate,
            std_error: None,
            ci_low: None,
            ci_high: None,
            estimator: estimator.to_string(),
            llm_evaluations,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScoreTable {
    pub num_blocks: usize,
    /// Blocks that were not players (always kept): they have no score rows.
    pub fixed_blocks: Vec<usize>,
    /// The model and token table the scores were measured with (empty when unknown, e.g.
    /// random or reverse-order scores); a stage given another model's files refuses them.
    pub model_id: String,
    pub dataset_id: String,
    pub rows: Vec<ScoreRow>,
}

fn score_fields() -> Vec<Field> {
    vec![
        Field::new("block", DataType::UInt32, false),
        Field::new("estimate", DataType::Float64, false),
        Field::new("std_error", DataType::Float64, true),
        Field::new("ci_low", DataType::Float64, true),
        Field::new("ci_high", DataType::Float64, true),
        Field::new("estimator", DataType::Utf8, false),
        Field::new("llm_evaluations", DataType::UInt64, false),
    ]
}

fn check_blocks<'b>(
    path: &Path,
    num_blocks: usize,
    blocks: impl Iterator<Item = &'b u32>,
) -> Result<(), TableError> {
    for (row, &block) in blocks.enumerate() {
        if block as usize >= num_blocks {
            return Err(TableError::bad(
                path,
                format!("row {row}: block {block} is out of range for {num_blocks} blocks"),
            ));
        }
    }
    Ok(())
}

/// A fixed block is not a player: a score for it contradicts the table.
fn check_no_fixed_scores(path: &Path, table: &ScoreTable) -> Result<(), TableError> {
    match table
        .rows
        .iter()
        .position(|r| table.fixed_blocks.contains(&(r.block as usize)))
    {
        Some(row) => Err(TableError::bad(
            path,
            format!(
                "row {row}: block {} is fixed (not a player) but has a score",
                table.rows[row].block
            ),
        )),
        None => Ok(()),
    }
}

pub fn write_scores(
    path: &Path,
    table: &ScoreTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check_blocks(path, table.num_blocks, table.rows.iter().map(|r| &r.block))?;
    check_fixed_blocks(path, table.num_blocks, &table.fixed_blocks)?;
    check_no_fixed_scores(path, table)?;
    let rows = &table.rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.block))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.estimate),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.std_error))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.ci_low))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.ci_high))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.estimator.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.llm_evaluations),
        )),
    ];
    let table_fields = vec![
        ("num_blocks", table.num_blocks.to_string()),
        (
            "fixed_blocks",
            encode_fixed_blocks(path, &table.fixed_blocks)?,
        ),
        ("model_id", table.model_id.clone()),
        ("dataset_id", table.dataset_id.clone()),
    ];
    write_table(
        path,
        TableKind::Scores,
        provenance,
        table_fields,
        score_fields(),
        columns,
    )
}

pub fn read_scores(path: &Path) -> Result<ScoreTable, TableError> {
    let raw = read_table(path, TableKind::Scores, &score_fields())?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let block = chunk.required::<UInt32Array>("block")?;
        let estimate = chunk.required::<Float64Array>("estimate")?;
        let std_error = chunk.nullable::<Float64Array>("std_error")?;
        let ci_low = chunk.nullable::<Float64Array>("ci_low")?;
        let ci_high = chunk.nullable::<Float64Array>("ci_high")?;
        let estimator = chunk.required::<StringArray>("estimator")?;
        let llm_evaluations = chunk.required::<UInt64Array>("llm_evaluations")?;
        for row in 0..chunk.num_rows() {
            rows.push(ScoreRow {
                block: block.value(row),
                estimate: estimate.value(row),
                std_error: Chunk::opt(std_error, row, Float64Array::value),
                ci_low: Chunk::opt(ci_low, row, Float64Array::value),
                ci_high: Chunk::opt(ci_high, row, Float64Array::value),
                estimator: estimator.value(row).to_string(),
                llm_evaluations: llm_evaluations.value(row),
            });
        }
    }
    let num_blocks = raw.meta_parse("num_blocks")?;
    let table = ScoreTable {
        num_blocks,
        fixed_blocks: read_fixed_blocks(&raw, path, num_blocks)?,
        // Files written before the ids were recorded have none.
        model_id: raw
            .meta_optional("model_id")
            .unwrap_or_default()
            .to_string(),
        dataset_id: raw
            .meta_optional("dataset_id")
            .unwrap_or_default()
            .to_string(),
        rows,
    };
    check_blocks(path, table.num_blocks, table.rows.iter().map(|r| &r.block))?;
    check_no_fixed_scores(path, &table)?;
    Ok(table)
}

/// One pruning plan: remove `removed_blocks` (k of them), chosen by `method`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    /// Selection method (e.g. `shapley-topk`, `search`, `sleb`, `shortgpt`).
    pub method: String,
    /// Number of blocks removed.
    pub k: u32,
    /// Removed blocks, ascending.
    pub removed_blocks: Vec<u32>,
    /// Utility the method predicted for the pruned model, if it predicts one.
    pub predicted_utility: Option<f64>,
    /// Mean NLL of the pruned model (nats per token), if it was measured.
    pub measured_nll: Option<f64>,
    /// Perplexity of the pruned model, if it was measured.
    pub measured_ppl: Option<f64>,
    /// Distinct masks the method had evaluated on the LLM to reach this plan.
    pub llm_evaluations: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanTable {
    pub num_blocks: usize,
    pub rows: Vec<PlanRow>,
}

fn plan_fields() -> Vec<Field> {
    vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("k", DataType::UInt32, false),
        Field::new("removed_blocks", list_of(DataType::UInt32), false),
        Field::new("predicted_utility", DataType::Float64, true),
        Field::new("measured_nll", DataType::Float64, true),
        Field::new("measured_ppl", DataType::Float64, true),
        Field::new("llm_evaluations", DataType::UInt64, false),
    ]
}

fn check_plans(path: &Path, num_blocks: usize, rows: &[PlanRow]) -> Result<(), TableError> {
    for (index, row) in rows.iter().enumerate() {
        let k = to_u32(path, "number of removed blocks", row.removed_blocks.len())?;
        if k != row.k {
            return Err(TableError::bad(
                path,
                format!("row {index}: k = {} but {k} blocks are removed", row.k),
            ));
        }
        check_blocks(path, num_blocks, row.removed_blocks.iter()).map_err(|e| {
            TableError::bad(path, format!("row {index}: removed_blocks: {}", e.message))
        })?;
        // Ascending without repeats: a repeated block would make a plan for k remove fewer.
        if let Some(pair) = row.removed_blocks.windows(2).find(|p| p[0] >= p[1]) {
            return Err(TableError::bad(
                path,
                format!(
                    "row {index}: removed_blocks must be ascending without repeats, found {} then {}",
                    pair[0], pair[1]
                ),
            ));
        }
    }
    Ok(())
}

pub fn write_plans(
    path: &Path,
    table: &PlanTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check_plans(path, table.num_blocks, &table.rows)?;
    let rows = &table.rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.method.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.k))),
        u32_list_column(rows.iter().map(|r| r.removed_blocks.as_slice())),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.predicted_utility),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.measured_nll))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.measured_ppl))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.llm_evaluations),
        )),
    ];
    let table_fields = vec![("num_blocks", table.num_blocks.to_string())];
    write_table(
        path,
        TableKind::Plans,
        provenance,
        table_fields,
        plan_fields(),
        columns,
    )
}

pub fn read_plans(path: &Path) -> Result<PlanTable, TableError> {
    let raw = read_table(path, TableKind::Plans, &plan_fields())?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let method = chunk.required::<StringArray>("method")?;
        let k = chunk.required::<UInt32Array>("k")?;
        let removed_blocks = chunk.required_list("removed_blocks")?;
        let predicted_utility = chunk.nullable::<Float64Array>("predicted_utility")?;
        let measured_nll = chunk.nullable::<Float64Array>("measured_nll")?;
        let measured_ppl = chunk.nullable::<Float64Array>("measured_ppl")?;
        let llm_evaluations = chunk.required::<UInt64Array>("llm_evaluations")?;
        for row in 0..chunk.num_rows() {
            rows.push(PlanRow {
                method: method.value(row).to_string(),
                k: k.value(row),
                removed_blocks: chunk.u32s(removed_blocks, "removed_blocks", row)?,
                predicted_utility: Chunk::opt(predicted_utility, row, Float64Array::value),
                measured_nll: Chunk::opt(measured_nll, row, Float64Array::value),
                measured_ppl: Chunk::opt(measured_ppl, row, Float64Array::value),
                llm_evaluations: llm_evaluations.value(row),
            });
        }
    }
    let table = PlanTable {
        num_blocks: raw.meta_parse("num_blocks")?,
        rows,
    };
    check_plans(path, table.num_blocks, &table.rows)?;
    Ok(table)
}
