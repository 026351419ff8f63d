//! Task files of one's own (or for tests) in the format the wheel's are read in.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};

use crate::TaskError;

/// Writes `columns` (name, values; every column nullable) as one record batch of an Arrow IPC
/// stream at `path`, creating its folder; atomically (`layerprune_core::atomic_write`).
pub fn write_arrow_stream(path: &Path, columns: Vec<(&str, ArrayRef)>) -> Result<(), TaskError> {
    let io = |source: std::io::Error| TaskError::Io {
        task: "task file".into(),
        path: path.to_path_buf(),
        source,
    };
    let arrow = |source: arrow_schema::ArrowError| TaskError::Arrow {
        task: "task file".into(),
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, array)| array).collect(),
    )
    .map_err(arrow)?;
    layerprune_core::atomic_write(path, |file| {
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(file, &schema)?;
        writer.write(&batch)?;
        writer.finish()?;
        Ok(())
    })
    .map_err(|e| TaskError::Io {
        task: "task file".into(),
        path: path.to_path_buf(),
        source: std::io::Error::other(e.message()),
    })
}
