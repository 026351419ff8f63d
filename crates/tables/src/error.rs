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
    /// A whole table that a run cannot resume: measured on another model, token table or
    /// number of blocks than the run's ([`crate::resume_evaluations`]), or, by the caller's own
    /// checks, of another shard, other fixed blocks, or a selection's cache. Not damaged: it
    /// holds another run's rows, which replacing it would lose.
    NotResumable,
}

/// Reading or writing a table failed. The message always names the file (`path`).
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TableError {
    pub path: PathBuf,
    pub kind: TableErrorKind,
    pub message: String,
}

/// What every stage says of a table it resumes (an `evaluate` checkpoint or `--choices-out`,
/// an `apply-prune --cache`, a `frontier` cache) that cannot be read ([`TableError::is_damaged`]:
/// a copy cut short, a disk that filled): one wording across the stages, which names the file
/// (`file`: as the stage knows it, `--out FILE`) and the way out a pipeline can take, removing
/// it, with what that costs; `otherwise` is the way round for a file that is no checkpoint at
/// all (`choose another --out`).
pub fn damaged_resumed_table(file: &str, otherwise: &str) -> String {
    format!(
        "{file}: cannot be read, so it cannot be resumed; remove it (the rows it held are \
         measured again), or {otherwise}"
    )
}

impl TableError {
    /// Whether the file could not be read as a table at all: not Parquet (cut short: its end
    /// is gone), or Parquet whose columns or values break the contract (damaged pages). Not a
    /// file that could not be opened, a whole table of another kind, one that is incomplete,
    /// one measured otherwise, or one another run's rows make [`TableErrorKind::NotResumable`].
    pub fn is_damaged(&self) -> bool {
        matches!(
            self.kind,
            TableErrorKind::NotParquet
                | TableErrorKind::Missing
                | TableErrorKind::WrongType
                | TableErrorKind::BadValue
        )
    }

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
