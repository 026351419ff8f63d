//! What the pipeline concludes: per-block contribution scores and pruning plans.

use std::path::Path;
use std::sync::Arc;

use arrow_array::types::UInt32Type;
use arrow_array::{
    Array, ArrayRef, Float64Array, ListArray, StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field};
use layerprune_core::{GameValue, Mask};

use crate::io::{
    list_column_opt, list_of, read_table, to_u32, u32_list_column, write_table, Chunk, TableKind,
};
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

/// An estimate ranks its block: a number, or +∞ (a leave-one-out removal that collapsed the
/// model, removed last). NaN orders nothing and −∞ would say removing the block gains without
/// bound: refused on writing and reading, so that `inspect` says what `apply-prune` would
/// (which refused them only for the estimator it was asked for).
fn check_estimates(path: &Path, rows: &[ScoreRow]) -> Result<(), TableError> {
    match rows
        .iter()
        .position(|r| r.estimate.is_nan() || r.estimate == f64::NEG_INFINITY)
    {
        Some(row) => Err(TableError::bad(
            path,
            format!(
                "row {row}, column \"estimate\": {} for block {} by {}: not a number or +inf \
                 (+inf: a block removed last)",
                rows[row].estimate, rows[row].block, rows[row].estimator
            ),
        )),
        None => Ok(()),
    }
}

/// Each estimator of a score table scores every block but the fixed ones exactly once, as
/// `shapley` and `score-blocks` write them (a fixed block has no row): a block scored twice or
/// not at all was refused by `apply-prune` only for the estimator it was asked for, so
/// `inspect` passed the table. Checked after the blocks and the fixed blocks.
fn check_one_score_per_block(path: &Path, table: &ScoreTable) -> Result<(), TableError> {
    use std::collections::HashMap;
    // Per estimator, in order of first row: its first row and its number of rows.
    let mut estimators: Vec<(&str, usize, usize)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut scored: HashMap<(&str, u32), usize> = HashMap::with_capacity(table.rows.len());
    for (row, score) in table.rows.iter().enumerate() {
        let estimator = score.estimator.as_str();
        if let Some(first) = scored.insert((estimator, score.block), row) {
            return Err(TableError::bad(
                path,
                format!(
                    "row {row}, column \"block\": block {} is scored again by {estimator} \
                     (first in row {first}); a score table holds one score per block and \
                     estimator",
                    score.block
                ),
            ));
        }
        let at = *index.entry(estimator).or_insert_with(|| {
            estimators.push((estimator, row, 0));
            estimators.len() - 1
        });
        estimators[at].2 += 1;
    }
    let is_fixed = |block: u32| table.fixed_blocks.contains(&(block as usize));
    // The fixed blocks are in range; a writer's list may repeat one.
    let players = (0..table.num_blocks as u32)
        .filter(|&block| !is_fixed(block))
        .count();
    for (estimator, first, count) in estimators {
        if count == players {
            continue;
        }
        let Some(missing) = (0..table.num_blocks as u32)
            .find(|&block| !is_fixed(block) && !scored.contains_key(&(estimator, block)))
        else {
            continue;
        };
        let fixed = if table.fixed_blocks.is_empty() {
            "none".to_string()
        } else {
            format!("{:?}", table.fixed_blocks)
        };
        return Err(TableError::bad(
            path,
            format!(
                "row {first}, column \"block\": {estimator} (from this row) has no score for \
                 block {missing}; each estimator scores each of the {} blocks but the fixed \
                 ones ({fixed}) exactly once",
                table.num_blocks
            ),
        ));
    }
    Ok(())
}

pub fn write_scores(
    path: &Path,
    table: &ScoreTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check_blocks(path, table.num_blocks, table.rows.iter().map(|r| &r.block))?;
    check_fixed_blocks(path, table.num_blocks, &table.fixed_blocks)?;
    check_no_fixed_scores(path, table)?;
    check_estimates(path, &table.rows)?;
    check_one_score_per_block(path, table)?;
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
    let num_blocks = raw.meta_num_blocks()?;
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
    check_estimates(path, &table.rows)?;
    check_one_score_per_block(path, &table)?;
    Ok(table)
}

/// One pruning plan: remove `removed_blocks` (k of them), chosen by `method`.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanRow {
    /// Selection method (e.g. `adaptive`, `sleb`, `block-influence`, `search`: a one-shot plan is named by its
    /// estimator).
    pub method: String,
    /// Number of blocks removed.
    pub k: u32,
    /// Removed blocks, ascending.
    pub removed_blocks: Vec<u32>,
    /// The game value a surrogate predicted for the pruned model, in the units of the value it
    /// was fitted to (its file's `value`); `None` where no surrogate predicted one.
    pub predicted_value: Option<f64>,
    /// Mean NLL of the pruned model (nats per token), if it was measured.
    pub measured_nll: Option<f64>,
    /// Perplexity of the pruned model, if it was measured.
    pub measured_ppl: Option<f64>,
    /// Distinct masks the method had evaluated on the LLM to reach this plan.
    pub llm_evaluations: u64,
    /// The best other plan with k removed the method measured, when it measured one.
    pub runner_up: Option<RunnerUp>,
    /// The full model measured on the same tokens, when it was: what the plan gives away.
    pub full_model: Option<FullModel>,
}

/// The full model on the tokens a plan was measured on: the plan's NLL increase over it
/// (`measured_nll − nll`; its perplexity ratio is the exponential) and how precisely the windows
/// pin that increase down.
#[derive(Clone, Debug, PartialEq)]
pub struct FullModel {
    /// The full model's mean NLL (nats per token).
    pub nll: f64,
    /// The standard error of the plan's NLL increase over the windows (paired: the windows'
    /// increases' standard deviation over √windows); `None` with one window, or when the
    /// windows' NLLs were not kept.
    pub nll_increase_se: Option<f64>,
}

/// The best other set of k removed blocks a plan's method measured on the same tokens: how far
/// the calibration text separates the plan from its closest rival.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerUp {
    /// Its removed blocks, ascending (k of them, not the plan's).
    pub removed_blocks: Vec<u32>,
    /// Its measured mean NLL (nats per token). Minus the plan's: the plan's margin.
    pub nll: f64,
    /// The margin's standard error over the calibration windows (the paired differences'
    /// standard deviation over √windows); `None` with one window, or when the windows' NLLs
    /// were not kept.
    pub margin_se: Option<f64>,
}

impl PlanRow {
    /// The pruned model's mask: every block kept but `removed_blocks`. `None` when a removed
    /// block is out of range for `num_blocks` (a table that passed its checks has none).
    pub fn mask(&self, num_blocks: usize) -> Option<Mask> {
        let removed: Vec<usize> = self.removed_blocks.iter().map(|&b| b as usize).collect();
        Mask::from_removed(num_blocks, &removed).ok()
    }

    /// The plan's `mask_id` column: the id the mask and evaluation tables give the same mask
    /// ([`Mask::id`]), so a plan joins its evaluation row on `mask_id`. Not stored in the row:
    /// it follows from `removed_blocks` and the table's `num_blocks`.
    pub fn mask_id(&self, num_blocks: usize) -> Option<String> {
        self.mask(num_blocks).map(|mask| mask.id())
    }

    /// The pruned model's perplexity over the full model's on the tokens both were measured on
    /// (exp of the NLL increase); `None` when either was not measured.
    pub fn ppl_ratio(&self) -> Option<f64> {
        Some((self.measured_nll? - self.full_model.as_ref()?.nll).exp())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PlanTable {
    pub num_blocks: usize,
    /// The game value the rows' `predicted_value` is in (the surrogate's `value`); `None` when
    /// no row has a prediction, or in files written before 2026-12-04, which did not record it.
    pub value: Option<GameValue>,
    pub rows: Vec<PlanRow>,
}

/// The plans as a text table, one line each (what `apply-prune` prints).
impl std::fmt::Display for PlanTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // As wide as the longest method name ("regression-adjusted-stratified").
        let width = self
            .rows
            .iter()
            .map(|row| row.method.chars().count())
            .max()
            .unwrap_or(0)
            .max(24);
        writeln!(
            f,
            "{:<width$} {:>3} {:>10} {:>10} {:>10} {:>17} {:>8} {:>17}  removed blocks (runner-up)",
            "method", "k", "predicted", "nll", "ppl", "vs full ± se", "llm-evals", "margin ± se"
        )?;
        let show = |value: Option<f64>| value.map_or("-".to_string(), |v| format!("{v:.4}"));
        // A difference of NLLs, with its standard error when there is one.
        let with_se = |difference: f64, se: Option<f64>| match se {
            Some(se) => format!("{difference:.4} ± {se:.4}"),
            None => format!("{difference:.4}"),
        };
        let list = |blocks: &[u32]| {
            let names: Vec<String> = blocks.iter().map(u32::to_string).collect();
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(",")
            }
        };
        for row in &self.rows {
            let (margin, rival) = match (&row.runner_up, row.measured_nll) {
                (Some(up), Some(nll)) => (
                    with_se(up.nll - nll, up.margin_se),
                    format!(" ({})", list(&up.removed_blocks)),
                ),
                _ => ("-".to_string(), String::new()),
            };
            // The NLL the plan adds to the full model's on the same tokens.
            let increase = match (&row.full_model, row.measured_nll) {
                (Some(full), Some(nll)) => with_se(nll - full.nll, full.nll_increase_se),
                _ => "-".to_string(),
            };
            writeln!(
                f,
                "{:<width$} {:>3} {:>10} {:>10} {:>10} {:>17} {:>8} {:>17}  {}{rival}",
                row.method,
                row.k,
                show(row.predicted_value),
                show(row.measured_nll),
                show(row.measured_ppl),
                increase,
                row.llm_evaluations,
                margin,
                list(&row.removed_blocks),
            )?;
        }
        Ok(())
    }
}

/// The columns of `plan_fields`, in their order (`mask_id` is added after them).
fn plan_columns(rows: &[PlanRow]) -> Vec<ArrayRef> {
    vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.method.as_str()),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.k))),
        u32_list_column(rows.iter().map(|r| r.removed_blocks.as_slice())),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| r.predicted_value),
        )),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.measured_nll))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.measured_ppl))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.llm_evaluations),
        )),
    ]
}

fn plan_fields() -> Vec<Field> {
    vec![
        Field::new("method", DataType::Utf8, false),
        Field::new("k", DataType::UInt32, false),
        Field::new("removed_blocks", list_of(DataType::UInt32), false),
        Field::new("predicted_value", DataType::Float64, true),
        Field::new("measured_nll", DataType::Float64, true),
        Field::new("measured_ppl", DataType::Float64, true),
        Field::new("llm_evaluations", DataType::UInt64, false),
    ]
}

/// The plan table's `mask_id` column. Files written before it existed lack it and read
/// unchanged, the ids derived (an added column is a compatible change: the format version
/// stays 1).
const PLAN_MASK_ID: &str = "mask_id";

/// The runner-up's columns, added after `mask_id` (compatibly, as it was): files without them
/// read with no runner-up.
const PLAN_RUNNER_UP_BLOCKS: &str = "runner_up_removed_blocks";
const PLAN_RUNNER_UP_NLL: &str = "runner_up_nll";
const PLAN_RUNNER_UP_SE: &str = "runner_up_margin_se";

/// The full model's columns, added after the runner-up's (compatibly): files without them read
/// with no full model.
const PLAN_FULL_MODEL_NLL: &str = "full_model_nll";
const PLAN_NLL_INCREASE_SE: &str = "nll_increase_se";

fn check_plans(path: &Path, num_blocks: usize, rows: &[PlanRow]) -> Result<(), TableError> {
    // From-plan takes a plan by its k and method: a second with both the same could be told
    // apart by neither (its refusal asked for --plan-method, which named both again).
    let mut plans: std::collections::HashMap<(&str, u32), usize> =
        std::collections::HashMap::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        if let Some(first) = plans.insert((row.method.as_str(), row.k), index) {
            return Err(TableError::bad(
                path,
                format!(
                    "row {index}, column \"k\": a second plan of method {} for k = {} (the \
                     first is row {first}); a plan table holds one plan per method and k",
                    row.method, row.k
                ),
            ));
        }
        let k = to_u32(path, "number of removed blocks", row.removed_blocks.len())?;
        if k != row.k {
            return Err(TableError::bad(
                path,
                format!("row {index}: k = {} but {k} blocks are removed", row.k),
            ));
        }
        check_removed_set(
            path,
            num_blocks,
            index,
            "removed_blocks",
            &row.removed_blocks,
        )?;
        if let Some(up) = &row.runner_up {
            check_runner_up(path, num_blocks, index, row, up)?;
        }
        if let Some(full) = &row.full_model {
            check_full_model(path, index, full)?;
        }
    }
    Ok(())
}

/// A set of removed blocks (`column` of row `index`): in range, ascending without repeats (a
/// repeated block would make a plan for k remove fewer).
fn check_removed_set(
    path: &Path,
    num_blocks: usize,
    index: usize,
    column: &str,
    blocks: &[u32],
) -> Result<(), TableError> {
    check_blocks(path, num_blocks, blocks.iter())
        .map_err(|e| TableError::bad(path, format!("row {index}: {column}: {}", e.message)))?;
    if let Some(pair) = blocks.windows(2).find(|p| p[0] >= p[1]) {
        return Err(TableError::bad(
            path,
            format!(
                "row {index}: {column} must be ascending without repeats, found {} then {}",
                pair[0], pair[1]
            ),
        ));
    }
    Ok(())
}

/// A runner-up is another ascending set of k blocks in range, with a finite NLL and a
/// non-negative standard error.
fn check_runner_up(
    path: &Path,
    num_blocks: usize,
    index: usize,
    row: &PlanRow,
    up: &RunnerUp,
) -> Result<(), TableError> {
    let bad = |message: String| Err(TableError::bad(path, format!("row {index}: {message}")));
    if up.removed_blocks.len() != row.removed_blocks.len() {
        return bad(format!(
            "runner_up_removed_blocks has {} blocks, the plan {}",
            up.removed_blocks.len(),
            row.removed_blocks.len()
        ));
    }
    check_removed_set(
        path,
        num_blocks,
        index,
        "runner_up_removed_blocks",
        &up.removed_blocks,
    )?;
    if up.removed_blocks == row.removed_blocks {
        return bad("runner_up_removed_blocks is the plan itself".into());
    }
    if !up.nll.is_finite() {
        return bad(format!("runner_up_nll is {}", up.nll));
    }
    if let Some(se) = up.margin_se.filter(|se| !(se.is_finite() && *se >= 0.0)) {
        return bad(format!("runner_up_margin_se is {se}"));
    }
    Ok(())
}

/// A full model's NLL is finite and its increase's standard error non-negative.
fn check_full_model(path: &Path, index: usize, full: &FullModel) -> Result<(), TableError> {
    let bad = |message: String| Err(TableError::bad(path, format!("row {index}: {message}")));
    if !full.nll.is_finite() {
        return bad(format!("full_model_nll is {}", full.nll));
    }
    if let Some(se) = full
        .nll_increase_se
        .filter(|se| !(se.is_finite() && *se >= 0.0))
    {
        return bad(format!("nll_increase_se is {se}"));
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
    // check_plans has checked every removed block against num_blocks.
    let mask_ids = rows
        .iter()
        .map(|r| r.mask_id(table.num_blocks).unwrap_or_default());
    let mut columns = plan_columns(rows);
    let mut fields = plan_fields();
    // After removed_blocks, the mask it stands for.
    fields.insert(3, Field::new(PLAN_MASK_ID, DataType::Utf8, false));
    columns.insert(3, Arc::new(StringArray::from_iter_values(mask_ids)));
    // Last, the runner-up (null where the method measured none).
    fn up(row: &PlanRow) -> Option<&RunnerUp> {
        row.runner_up.as_ref()
    }
    fields.push(Field::new(
        PLAN_RUNNER_UP_BLOCKS,
        list_of(DataType::UInt32),
        true,
    ));
    columns.push(list_column_opt::<UInt32Type>(
        rows.iter()
            .map(|r| up(r).map(|u| u.removed_blocks.as_slice())),
    ));
    fields.push(Field::new(PLAN_RUNNER_UP_NLL, DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|r| up(r).map(|u| u.nll)),
    )));
    fields.push(Field::new(PLAN_RUNNER_UP_SE, DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|r| up(r).and_then(|u| u.margin_se)),
    )));
    // Then the full model on the same tokens (null where it was not measured).
    fields.push(Field::new(PLAN_FULL_MODEL_NLL, DataType::Float64, true));
    columns.push(Arc::new(Float64Array::from_iter(
        rows.iter().map(|r| r.full_model.as_ref().map(|f| f.nll)),
    )));
    fields.push(Field::new(PLAN_NLL_INCREASE_SE, DataType::Float64, true));
    columns
        .push(Arc::new(Float64Array::from_iter(rows.iter().map(|r| {
            r.full_model.as_ref().and_then(|f| f.nll_increase_se)
        }))));
    let mut table_fields = vec![("num_blocks", table.num_blocks.to_string())];
    if let Some(value) = table.value {
        table_fields.push(("value", value.name().to_string()));
    }
    write_table(
        path,
        TableKind::Plans,
        provenance,
        table_fields,
        fields,
        columns,
    )
}

/// A stored `mask_id` must be the mask of `removed_blocks`, so a file edited by hand cannot
/// join the wrong evaluation row.
fn check_plan_mask_id(
    chunk: &Chunk<'_>,
    row: usize,
    num_blocks: usize,
    plan: &PlanRow,
    stored: &str,
) -> Result<(), TableError> {
    match plan.mask_id(num_blocks) {
        Some(id) if id == stored => Ok(()),
        Some(id) => Err(chunk.row_error(
            row,
            format!(
                "mask_id {stored:?} does not match removed_blocks {:?} (expected {id:?})",
                plan.removed_blocks
            ),
        )),
        None => Err(chunk.row_error(
            row,
            format!(
                "removed_blocks {:?} is out of range for {num_blocks} blocks",
                plan.removed_blocks
            ),
        )),
    }
}

pub fn read_plans(path: &Path) -> Result<PlanTable, TableError> {
    let raw = read_table(path, TableKind::Plans, &plan_fields())?;
    let num_blocks: usize = raw.meta_num_blocks()?;
    // Files written before 2026-12-04 do not say which value their predictions are in.
    let value = match raw.meta_optional("value") {
        Some(_) => Some(raw.meta_parse::<GameValue>("value")?),
        None => None,
    };
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        // Files written before the column was added have none: their ids are derived.
        let mask_ids = match chunk.batch.column_by_name(PLAN_MASK_ID) {
            Some(_) => Some(chunk.required::<StringArray>(PLAN_MASK_ID)?),
            None => None,
        };
        let method = chunk.required::<StringArray>("method")?;
        let k = chunk.required::<UInt32Array>("k")?;
        let removed_blocks = chunk.required_list("removed_blocks")?;
        let predicted_value = chunk.nullable::<Float64Array>("predicted_value")?;
        let measured_nll = chunk.nullable::<Float64Array>("measured_nll")?;
        let measured_ppl = chunk.nullable::<Float64Array>("measured_ppl")?;
        let llm_evaluations = chunk.required::<UInt64Array>("llm_evaluations")?;
        let runner_up = match chunk.batch.column_by_name(PLAN_RUNNER_UP_BLOCKS) {
            Some(_) => Some((
                chunk.nullable::<ListArray>(PLAN_RUNNER_UP_BLOCKS)?,
                chunk.nullable::<Float64Array>(PLAN_RUNNER_UP_NLL)?,
                chunk.nullable::<Float64Array>(PLAN_RUNNER_UP_SE)?,
            )),
            None => None,
        };
        let full_model = match chunk.batch.column_by_name(PLAN_FULL_MODEL_NLL) {
            Some(_) => Some((
                chunk.nullable::<Float64Array>(PLAN_FULL_MODEL_NLL)?,
                chunk.nullable::<Float64Array>(PLAN_NLL_INCREASE_SE)?,
            )),
            None => None,
        };
        for row in 0..chunk.num_rows() {
            let runner_up = match runner_up {
                Some((blocks, nll, se)) if !blocks.is_null(row) => Some(RunnerUp {
                    removed_blocks: chunk.u32s(blocks, PLAN_RUNNER_UP_BLOCKS, row)?,
                    nll: Chunk::opt(nll, row, Float64Array::value).ok_or_else(|| {
                        chunk.row_error(row, "runner_up_removed_blocks without runner_up_nll")
                    })?,
                    margin_se: Chunk::opt(se, row, Float64Array::value),
                }),
                _ => None,
            };
            let full_model = match full_model {
                Some((nll, se)) => match Chunk::opt(nll, row, Float64Array::value) {
                    Some(nll) => Some(FullModel {
                        nll,
                        nll_increase_se: Chunk::opt(se, row, Float64Array::value),
                    }),
                    None if Chunk::opt(se, row, Float64Array::value).is_some() => {
                        return Err(chunk.row_error(row, "nll_increase_se without full_model_nll"));
                    }
                    None => None,
                },
                None => None,
            };
            rows.push(PlanRow {
                method: method.value(row).to_string(),
                k: k.value(row),
                removed_blocks: chunk.u32s(removed_blocks, "removed_blocks", row)?,
                predicted_value: Chunk::opt(predicted_value, row, Float64Array::value),
                measured_nll: Chunk::opt(measured_nll, row, Float64Array::value),
                measured_ppl: Chunk::opt(measured_ppl, row, Float64Array::value),
                llm_evaluations: llm_evaluations.value(row),
                runner_up,
                full_model,
            });
            let plan = rows.last().expect("just pushed");
            if let Some(ids) = mask_ids {
                check_plan_mask_id(&chunk, row, num_blocks, plan, ids.value(row))?;
            }
        }
    }
    let table = PlanTable {
        num_blocks,
        value,
        rows,
    };
    check_plans(path, table.num_blocks, &table.rows)?;
    Ok(table)
}

#[cfg(test)]
mod tests {
    use arrow_array::Array;

    use super::*;
    use crate::{read_evaluations, write_evaluations, EvaluationRow, EvaluationTable};

    fn plan(removed: Vec<u32>) -> PlanRow {
        PlanRow {
            method: "sleb".into(),
            k: removed.len() as u32,
            removed_blocks: removed,
            predicted_value: None,
            measured_nll: Some(2.0),
            measured_ppl: Some(2f64.exp()),
            llm_evaluations: 7,
            runner_up: None,
            full_model: None,
        }
    }

    fn provenance() -> Provenance {
        Provenance::new("test", "1", vec![])
    }

    /// A table of the one plan `bad` is refused on writing with a message holding `says`, and
    /// nothing is written.
    fn assert_refused(dir: &Path, bad: PlanRow, says: &str) {
        let table = PlanTable {
            num_blocks: 4,
            value: None,
            rows: vec![bad],
        };
        let path = dir.join("bad.parquet");
        let error = write_plans(&path, &table, &provenance()).unwrap_err();
        assert!(error.to_string().contains(says), "{error}");
        assert!(!path.exists());
    }

    /// The plan columns as a writer before `mask_id` wrote them, or with a `mask_id` of choice.
    fn write_raw(path: &Path, rows: &[PlanRow], mask_ids: Option<Vec<&str>>) {
        let mut fields = plan_fields();
        let mut columns = plan_columns(rows);
        if let Some(ids) = mask_ids {
            fields.push(Field::new(PLAN_MASK_ID, DataType::Utf8, false));
            columns.push(Arc::new(StringArray::from(ids)));
        }
        write_table(
            path,
            TableKind::Plans,
            &provenance(),
            vec![("num_blocks", "4".to_string())],
            fields,
            columns,
        )
        .unwrap();
    }

    #[test]
    fn a_runner_up_round_trips_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.parquet");
        let with = |removed: Vec<u32>, se: Option<f64>| PlanRow {
            runner_up: Some(RunnerUp {
                removed_blocks: removed,
                nll: 2.5,
                margin_se: se,
            }),
            ..plan(vec![0, 3])
        };
        let plans = PlanTable {
            num_blocks: 4,
            value: None,
            rows: vec![with(vec![1, 3], Some(0.02)), plan(vec![1])],
        };
        write_plans(&path, &plans, &provenance()).unwrap();
        assert_eq!(read_plans(&path).unwrap(), plans);
        for (bad, says) in [
            (with(vec![0, 3], None), "is the plan itself"),
            (with(vec![3], None), "has 1 blocks, the plan 2"),
            (with(vec![3, 1], None), "ascending"),
            (with(vec![1, 4], None), "runner_up_removed_blocks"),
            (with(vec![1, 3], Some(-1.0)), "runner_up_margin_se is -1"),
        ] {
            assert_refused(dir.path(), bad, says);
        }
    }

    #[test]
    fn the_full_model_round_trips_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.parquet");
        let with = |nll: f64, se: Option<f64>| PlanRow {
            full_model: Some(FullModel {
                nll,
                nll_increase_se: se,
            }),
            ..plan(vec![0, 3])
        };
        let plans = PlanTable {
            num_blocks: 4,
            value: None,
            rows: vec![
                with(1.5, Some(0.03)),
                PlanRow {
                    method: "adaptive".into(),
                    ..with(1.6, None)
                },
                plan(vec![1]),
            ],
        };
        write_plans(&path, &plans, &provenance()).unwrap();
        assert_eq!(read_plans(&path).unwrap(), plans);
        // Printed as the plan's increase over it, with its standard error.
        assert!(plans.to_string().contains("0.5000 ± 0.0300"), "{plans}");
        for (bad, says) in [
            (with(f64::NAN, None), "full_model_nll is NaN"),
            (with(1.5, Some(-0.1)), "nll_increase_se is -0.1"),
            (with(1.5, Some(f64::INFINITY)), "nll_increase_se is inf"),
        ] {
            assert_refused(dir.path(), bad, says);
        }
        // Files written before the columns were added read with no full model.
        let old = dir.path().join("old.parquet");
        write_raw(&old, &plans.rows, None);
        assert!(read_plans(&old)
            .unwrap()
            .rows
            .iter()
            .all(|r| r.full_model.is_none()));
    }

    #[test]
    fn the_value_of_the_predictions_round_trips_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.parquet");
        let predicted = PlanRow {
            predicted_value: Some(-0.04),
            ..plan(vec![1])
        };
        let plans = PlanTable {
            num_blocks: 4,
            value: Some(GameValue::NllIncrease),
            rows: vec![predicted.clone()],
        };
        write_plans(&path, &plans, &provenance()).unwrap();
        let read = read_plans(&path).unwrap();
        assert_eq!(read.value, Some(GameValue::NllIncrease));
        assert_eq!(read, plans);

        // A file written before the entry existed reads with the value unknown.
        let old = dir.path().join("old.parquet");
        write_raw(&old, std::slice::from_ref(&predicted), None);
        assert_eq!(read_plans(&old).unwrap().value, None);

        // An entry naming no game value is refused, naming it.
        let unknown = dir.path().join("unknown.parquet");
        write_table(
            &unknown,
            TableKind::Plans,
            &provenance(),
            vec![
                ("num_blocks", "4".to_string()),
                ("value", "accuracy".to_string()),
            ],
            plan_fields(),
            plan_columns(&[predicted]),
        )
        .unwrap();
        let error = read_plans(&unknown).unwrap_err().to_string();
        assert!(
            error.contains("layerprune.value") && error.contains("accuracy"),
            "{error}"
        );
    }

    #[test]
    fn a_plan_carries_the_mask_id_of_its_evaluation_row() {
        let dir = tempfile::tempdir().unwrap();
        let plans = PlanTable {
            num_blocks: 4,
            value: None,
            rows: vec![plan(vec![1]), plan(vec![0, 3]), plan(vec![])],
        };
        let path = dir.path().join("plans.parquet");
        write_plans(&path, &plans, &provenance()).unwrap();
        assert_eq!(read_plans(&path).unwrap(), plans);

        // The stored column, read as any reader sees it.
        let raw = read_table(&path, TableKind::Plans, &plan_fields()).unwrap();
        let chunk = raw.chunks().next().unwrap();
        let stored = chunk.required::<StringArray>(PLAN_MASK_ID).unwrap();
        let stored: Vec<&str> = (0..stored.len()).map(|i| stored.value(i)).collect();
        assert_eq!(stored, ["1011", "0110", "1111"]);

        // The evaluation table names the same masks with the same ids (one definition).
        let evaluations = EvaluationTable {
            num_blocks: 4,
            model_id: "m".into(),
            dataset_id: "d".into(),
            fixed_blocks: vec![],
            full_model_nll: Some(2.0),
            complete: true,
            evaluated_on: None,
            rows: plans
                .rows
                .iter()
                .map(|r| EvaluationRow {
                    mask: r.mask(4).unwrap(),
                    nll: 2.0,
                    ppl: 2f64.exp(),
                    utility: 1.0,
                    tokens_scored: 10,
                    seconds: 0.1,
                    window_nlls: None,
                })
                .collect(),
            partial_windows: Vec::new(),
        };
        let eval_path = dir.path().join("evaluations.parquet");
        write_evaluations(&eval_path, &evaluations, &provenance()).unwrap();
        let eval_ids: Vec<String> = read_evaluations(&eval_path)
            .unwrap()
            .rows
            .iter()
            .map(|r| r.mask.id())
            .collect();
        assert_eq!(eval_ids, stored);
    }

    #[test]
    fn a_plan_table_written_before_mask_id_reads_and_derives_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.parquet");
        let rows = vec![plan(vec![2]), plan(vec![0, 1])];
        write_raw(&path, &rows, None);
        let table = read_plans(&path).unwrap();
        assert_eq!(table.rows, rows);
        let ids: Vec<_> = table.rows.iter().map(|r| r.mask_id(4).unwrap()).collect();
        assert_eq!(ids, ["1101", "0011"]);
    }

    #[test]
    fn a_mask_id_that_disagrees_with_removed_blocks_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edited.parquet");
        write_raw(
            &path,
            &[plan(vec![2]), plan(vec![0, 1])],
            Some(vec!["1101", "1100"]),
        );
        let err = read_plans(&path).unwrap_err().to_string();
        assert!(
            err.contains("row 1") && err.contains("does not match removed_blocks"),
            "{err}"
        );
    }
}
