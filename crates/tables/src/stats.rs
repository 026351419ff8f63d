//! Tables of measurements that are not mask evaluations: per-block statistics of the full
//! model (for the ShortGPT / angular-distance baselines) and surrogate cross-validation metrics.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int32Array, StringArray, UInt32Array};
use arrow_schema::{DataType, Field};

use crate::io::{read_table, write_table, TableKind};
use crate::{Provenance, TableError};

/// How much a run of consecutive blocks changes the hidden state, measured on the full model.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockStatRow {
    /// First block of the run.
    pub start_block: u32,
    /// Number of consecutive blocks (1 for single-block statistics).
    pub run_length: u32,
    /// Mean cosine similarity between the hidden state entering `start_block` and the one
    /// leaving block `start_block + run_length - 1`, over every position of every window.
    pub mean_cosine: f64,
    /// The mean over the same positions of `arccos(cosine) / pi`, in [0, 1]: the mean of the
    /// angles, not the angle of `mean_cosine`.
    pub angular_distance: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BlockStatsTable {
    pub num_blocks: usize,
    pub model_id: String,
    pub dataset_id: String,
    pub rows: Vec<BlockStatRow>,
}

fn block_stat_fields() -> Vec<Field> {
    vec![
        Field::new("start_block", DataType::UInt32, false),
        Field::new("run_length", DataType::UInt32, false),
        Field::new("mean_cosine", DataType::Float64, false),
        Field::new("angular_distance", DataType::Float64, false),
    ]
}

/// How far a mean of clamped values may lie outside their range by rounding.
const RANGE_TOLERANCE: f64 = 1e-9;

/// What every block-statistics row promises beyond its types (docs/formats.md,
/// "block_stats"): its run fits the model; `mean_cosine` is in [-1, 1] and
/// `angular_distance` in [0, 1] (`evaluate` clamps each token's cosine), or NaN (the
/// statistics of a model whose hidden states are not numbers, refused where a score is drawn
/// from them); and no run is measured twice (two rows for one run would let the baselines
/// pick either). Checked on writing and on reading, naming row and column.
fn check_rows(path: &Path, num_blocks: usize, rows: &[BlockStatRow]) -> Result<(), TableError> {
    let mut seen = std::collections::HashMap::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let end = row.start_block as usize + row.run_length as usize;
        if row.run_length == 0 || end > num_blocks {
            return Err(TableError::bad(
                path,
                format!(
                    "row {index}: run of {} blocks from block {} does not fit in {num_blocks} blocks",
                    row.run_length, row.start_block
                ),
            ));
        }
        for (column, value, low, high) in [
            ("mean_cosine", row.mean_cosine, -1.0, 1.0),
            ("angular_distance", row.angular_distance, 0.0, 1.0),
        ] {
            if !value.is_nan() && !(low - RANGE_TOLERANCE..=high + RANGE_TOLERANCE).contains(&value)
            {
                return Err(TableError::bad(
                    path,
                    format!(
                        "row {index}, column {column:?}: {value} is outside [{low}, {high}] \
                         (run of {} blocks from block {})",
                        row.run_length, row.start_block
                    ),
                ));
            }
        }
        if let Some(first) = seen.insert((row.start_block, row.run_length), index) {
            return Err(TableError::bad(
                path,
                format!(
                    "row {index}: the run of {} blocks from block {} is also row {first}; \
                     each run is measured once",
                    row.run_length, row.start_block
                ),
            ));
        }
    }
    Ok(())
}

pub fn write_block_stats(
    path: &Path,
    table: &BlockStatsTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check_rows(path, table.num_blocks, &table.rows)?;
    let rows = &table.rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.start_block),
        )),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.run_length),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.mean_cosine),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.angular_distance),
        )),
    ];
    let table_fields = vec![
        ("num_blocks", table.num_blocks.to_string()),
        ("model_id", table.model_id.clone()),
        ("dataset_id", table.dataset_id.clone()),
    ];
    write_table(
        path,
        TableKind::BlockStats,
        provenance,
        table_fields,
        block_stat_fields(),
        columns,
    )
}

pub fn read_block_stats(path: &Path) -> Result<BlockStatsTable, TableError> {
    let raw = read_table(path, TableKind::BlockStats, &block_stat_fields())?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let start_block = chunk.required::<UInt32Array>("start_block")?;
        let run_length = chunk.required::<UInt32Array>("run_length")?;
        let mean_cosine = chunk.required::<Float64Array>("mean_cosine")?;
        let angular_distance = chunk.required::<Float64Array>("angular_distance")?;
        for row in 0..chunk.num_rows() {
            rows.push(BlockStatRow {
                start_block: start_block.value(row),
                run_length: run_length.value(row),
                mean_cosine: mean_cosine.value(row),
                angular_distance: angular_distance.value(row),
            });
        }
    }
    let table = BlockStatsTable {
        num_blocks: raw.meta_num_blocks()?,
        model_id: raw.meta("model_id")?.to_string(),
        dataset_id: raw.meta("dataset_id")?.to_string(),
        rows,
    };
    check_rows(path, table.num_blocks, &table.rows)?;
    Ok(table)
}

/// How well one surrogate predicts one game value on one cross-validation fold.
#[derive(Clone, Debug, PartialEq)]
pub struct SurrogateMetricRow {
    /// The surrogate's kind, as `fit-surrogate --kind` and the surrogate's file name it: `mlp`,
    /// `quadratic` or `forest` (the column was named `surrogate` before 2026-12-05).
    pub kind: String,
    /// The game value it predicts (`fit-surrogate --value`: `utility`, `neg-nll`, ...).
    pub value: String,
    /// Fold index, or -1 for the mean over all folds.
    pub fold: i32,
    /// Coefficient of determination on the held-out fold.
    pub r2: f64,
    /// Spearman rank correlation on the held-out fold.
    pub spearman: f64,
    /// Mean absolute error, in the value's units.
    pub mae: f64,
    pub n_train: u32,
    pub n_test: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SurrogateMetricsTable {
    pub rows: Vec<SurrogateMetricRow>,
}

fn surrogate_metric_fields() -> Vec<Field> {
    vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("fold", DataType::Int32, false),
        Field::new("r2", DataType::Float64, false),
        Field::new("spearman", DataType::Float64, false),
        Field::new("mae", DataType::Float64, false),
        Field::new("n_train", DataType::UInt32, false),
        Field::new("n_test", DataType::UInt32, false),
    ]
}

pub fn write_surrogate_metrics(
    path: &Path,
    table: &SurrogateMetricsTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    crate::atomic::commit(stage_surrogate_metrics(path, table, provenance)?)
}

/// [`write_surrogate_metrics`] up to the rename: the table written and flushed under the
/// temporary name its write gives it, for `fit-surrogate` to rename together with the surrogate
/// ([`layerprune_core::StagedFile::commit`]).
pub fn stage_surrogate_metrics(
    path: &Path,
    table: &SurrogateMetricsTable,
    provenance: &Provenance,
) -> Result<layerprune_core::StagedFile, TableError> {
    let rows = &table.rows;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.kind.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.value.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.fold))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.r2))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.spearman),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.mae))),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.n_train),
        )),
        Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.n_test))),
    ];
    crate::io::stage_table(
        path,
        TableKind::SurrogateMetrics,
        provenance,
        Vec::new(),
        surrogate_metric_fields(),
        columns,
    )
}

pub fn read_surrogate_metrics(path: &Path) -> Result<SurrogateMetricsTable, TableError> {
    let raw = read_table(
        path,
        TableKind::SurrogateMetrics,
        &surrogate_metric_fields(),
    )?;
    let mut rows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let kind = chunk.required::<StringArray>("kind")?;
        let value = chunk.required::<StringArray>("value")?;
        let fold = chunk.required::<Int32Array>("fold")?;
        let r2 = chunk.required::<Float64Array>("r2")?;
        let spearman = chunk.required::<Float64Array>("spearman")?;
        let mae = chunk.required::<Float64Array>("mae")?;
        let n_train = chunk.required::<UInt32Array>("n_train")?;
        let n_test = chunk.required::<UInt32Array>("n_test")?;
        for row in 0..chunk.num_rows() {
            rows.push(SurrogateMetricRow {
                kind: kind.value(row).to_string(),
                value: value.value(row).to_string(),
                fold: fold.value(row),
                r2: r2.value(row),
                spearman: spearman.value(row),
                mae: mae.value(row),
                n_train: n_train.value(row),
                n_test: n_test.value(row),
            });
        }
    }
    Ok(SurrogateMetricsTable { rows })
}
