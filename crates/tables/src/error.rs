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
/// all (`choose another --out`). Given by [`resume_refusal`].
pub fn damaged_resumed_table(file: &str, otherwise: &str) -> String {
    format!(
        "{file}: cannot be read, so it cannot be resumed; remove it (the rows it held are \
         measured again), or {otherwise}"
    )
}

/// What a stage says of a table it was to resume and cannot use (the context of the error,
/// `error` where a table's reader or check gave it): the one decision every stage takes there.
/// A table that cannot be read ([`TableError::is_damaged`]) holds nothing to keep, and is to be
/// removed ([`damaged_resumed_table`], naming `file` and `otherwise`). Anything else, a whole
/// table of another run (another model, tokens, shard, device), a table of another kind or
/// tool, a file that is no Parquet file at all, holds what replacing it would lose:
/// `not_usable` says what to do, the stage's own advice that keeps it
/// ([`replace_with_overwrite`] for a stage with `--overwrite`).
pub fn resume_refusal(
    error: Option<&TableError>,
    file: &str,
    otherwise: &str,
    not_usable: impl FnOnce() -> String,
) -> String {
    if error.is_some_and(TableError::is_damaged) {
        damaged_resumed_table(file, otherwise)
    } else {
        not_usable()
    }
}

/// The advice of a stage with `--overwrite` for a table it cannot resume that is not damaged
/// (for [`resume_refusal`]): `--out FILE: pass --overwrite to replace it, or choose another
/// --out`.
pub fn replace_with_overwrite(file: &str, otherwise: &str) -> String {
    format!("{file}: pass --overwrite to replace it, or {otherwise}")
}

impl TableError {
    /// Whether the file could not be read as a table at all: a Parquet file that is not whole
    /// (cut short: its end is gone; an empty file), or Parquet whose columns or values break the
    /// contract (damaged pages). Not a file that could not be opened, a file that is no Parquet
    /// file at all (it does not start as one: a user's file, kept), a whole table of another
    /// kind, one that is incomplete, one measured otherwise, or one another run's rows make
    /// [`TableErrorKind::NotResumable`].
    pub fn is_damaged(&self) -> bool {
        match self.kind {
            TableErrorKind::NotParquet => starts_as_parquet(&self.path),
            TableErrorKind::Missing | TableErrorKind::WrongType | TableErrorKind::BadValue => true,
            _ => false,
        }
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

/// Whether `path` starts as a Parquet file: with its magic `PAR1`, or a part of it (a copy cut
/// short within its first bytes, an empty file); one that cannot be read to tell counts too.
fn starts_as_parquet(path: &Path) -> bool {
    use std::io::Read;
    let mut head = Vec::with_capacity(4);
    match std::fs::File::open(path).and_then(|file| file.take(4).read_to_end(&mut head)) {
        Ok(_) => b"PAR1".starts_with(&head),
        Err(_) => true,
    }
}
