//! The one error type of this crate.

use std::path::{Path, PathBuf};

/// What went wrong, coarsely, so callers and tests can tell a missing file from a wrong table
/// without parsing messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableErrorKind {
    /// The file could not be opened, created, written or renamed.
    Io,
    /// The file exists but is not Parquet (or its Arrow schema cannot be decoded).
    NotParquet,
    /// The file is Parquet but its `layerprune.table` entry names another table (or none).
    WrongTable,
    /// A required column or metadata entry is missing.
    Missing,
    /// A column has another Arrow type than the contract says.
    WrongType,
    /// A value breaks the contract: a null where none is allowed, a mask of the wrong length,
    /// a duplicate mask id, an unparsable metadata entry, ...
    BadValue,
    /// The table is a checkpoint of a run that has not finished (`complete = false`), read by a
    /// stage that draws conclusions from it.
    Incomplete,
    /// An evaluation table of this model and token table whose rows were measured on another
    /// device or arithmetic (`evaluated_on`) than the run resuming it: refused, unless the
    /// caller starts it again (a pipeline's cache across a change of device).
    MeasuredOtherwise,
}

/// Reading or writing a table failed. The message always names the file (`path`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TableError {
    pub path: PathBuf,
    pub kind: TableErrorKind,
    pub message: String,
}

impl TableError {
    pub fn new(path: &Path, kind: TableErrorKind, message: impl Into<String>) -> Self {
        TableError {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &Path, what: &str, error: impl std::fmt::Display) -> Self {
        TableError::new(path, TableErrorKind::Io, format!("{what}: {error}"))
    }

    pub(crate) fn bad(path: &Path, message: impl Into<String>) -> Self {
        TableError::new(path, TableErrorKind::BadValue, message)
    }
}
