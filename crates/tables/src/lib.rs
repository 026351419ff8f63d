//! The Parquet contract between pipeline stages: one reader and one writer for every table the
//! stages exchange (tokens, masks, evaluations, block statistics, surrogate metrics, scores,
//! plans, zero-shot task results), so no stage hand-rolls its own file handling.
//!
//! Every table is one plain Parquet file (Snappy-compressed, only Utf8, unsigned and signed
//! integers, Float64 and lists of Boolean/UInt32), so pandas, pyarrow and DuckDB read it
//! unchanged. Its key-value file metadata says which table it is (`layerprune.table`), the
//! format version, where it came from ([`Provenance`]) and the table-level fields (number of
//! blocks, model and dataset ids, ...). Readers check all of that and fail with a
//! [`TableError`] naming the file and the problem. Writers write atomically ([`atomic_write`],
//! also used by other crates for their JSON outputs). The layout is documented in
//! docs/formats.md.

mod atomic;
mod error;
mod evaluations;
mod guard;
mod io;
mod masks;
mod provenance;
mod results;
mod stats;
mod tasks;
mod tokens;

use std::path::Path;

pub use atomic::atomic_write;
pub use error::{
    damaged_resumed_table, replace_with_overwrite, resume_refusal, TableError, TableErrorKind,
};
pub use evaluations::{
    read_complete_evaluations, read_complete_evaluations_hashed, read_evaluations,
    read_evaluations_hashed, resume_evaluations, write_evaluations, AppendError, EvaluationRow,
    EvaluationTable, GameValue, Incomplete, PartialWindows,
};
pub use io::{
    key as metadata_key, kind_of, read_head, read_metadata, read_table_kind, Hashed, TableHead,
    TableKind, FORMAT_VERSION, KEY_PREFIX,
};
pub use masks::{read_masks, read_masks_hashed, write_masks, MaskRow, MaskTable};
pub use provenance::{input_role, join_dataset_ids, parse_dataset_ids, Provenance};
pub use results::{
    read_plans, read_scores, write_plans, write_scores, FullModel, PlanRow, PlanTable, RunnerUp,
    ScoreRow, ScoreTable,
};
pub use stats::{
    read_block_stats, read_surrogate_metrics, stage_surrogate_metrics, write_block_stats,
    write_surrogate_metrics, BlockStatRow, BlockStatsTable, SurrogateMetricRow,
    SurrogateMetricsTable,
};
pub use tasks::{
    read_task_accuracies, read_task_choices, write_task_accuracies, write_task_choices,
    TaskAccuracyRow, TaskAccuracyTable, TaskChoiceRow, TaskChoiceTable, LEGACY_SCORING,
};
pub use tokens::{dataset_id, read_tokens, write_tokens, TokenTable};

/// The provenance's `inputs` alone (role -> id), empty when the file records none: for a check
/// of where a table came from that should not need the rest of its provenance.
pub fn read_input_ids(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>, TableError> {
    let metadata = read_metadata(path)?;
    match metadata.get(&format!("{KEY_PREFIX}inputs")) {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| TableError::bad(path, format!("metadata entry {KEY_PREFIX}inputs: {e}"))),
        None => Ok(std::collections::BTreeMap::new()),
    }
}

/// The provenance recorded in any table file written by this crate.
pub fn read_provenance(path: &Path) -> Result<Provenance, TableError> {
    provenance_of(path, &read_metadata(path)?)
}

/// The provenance in a table's metadata (full keys), read from `path` (which errors name).
pub(crate) fn provenance_of(
    path: &Path,
    metadata: &std::collections::BTreeMap<String, String>,
) -> Result<Provenance, TableError> {
    let get = |name: &str| {
        let full = format!("{KEY_PREFIX}{name}");
        metadata.get(&full).ok_or_else(|| {
            TableError::new(
                path,
                TableErrorKind::Missing,
                format!("metadata entry {full} is missing"),
            )
        })
    };
    let json_error = |name: &str, e: serde_json::Error| {
        TableError::bad(path, format!("metadata entry {KEY_PREFIX}{name}: {e}"))
    };
    Ok(Provenance {
        tool: get("tool")?.clone(),
        version: get("version")?.clone(),
        args: serde_json::from_str(get("args")?).map_err(|e| json_error("args", e))?,
        seed: serde_json::from_str(get("seed")?).map_err(|e| json_error("seed", e))?,
        inputs: serde_json::from_str(get("inputs")?).map_err(|e| json_error("inputs", e))?,
    })
}
