//! Atomic file output: a reader never sees a half-written file, and a failed writer leaves
//! the previous file (or no file) in place. The writer is `layerprune_core::atomic_write` (the
//! one atomic writer of the workspace, files mode 0644); this is it with a [`TableError`].

use std::error::Error;
use std::fs::File;
use std::path::Path;

use layerprune_core::StagedFile;

use crate::{TableError, TableErrorKind};

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is then
/// flushed to disk (fsync) and renamed onto `path`. If `write` or any step fails, the temporary
/// file is removed and `path` is untouched. Used for every output of every stage, Parquet or
/// not (JSON manifests, surrogate files). [`layerprune_core::atomic_write`] with the error
/// as a [`TableError`] of kind [`TableErrorKind::Io`].
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("out.json");
/// use std::io::Write;
/// layerprune_tables::atomic_write(&path, |file| {
///     file.write_all(b"{\"ok\": true}")?;
///     Ok(())
/// })
/// .unwrap();
/// ```
pub fn atomic_write<T>(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<T, Box<dyn Error + Send + Sync>>,
) -> Result<T, TableError> {
    layerprune_core::atomic_write(path, write).map_err(table_error)
}

/// [`layerprune_core::atomic_write_staged`] with the error as a [`TableError`]: the file written
/// and flushed under its temporary name, to be renamed onto `path` by [`commit`].
pub(crate) fn atomic_write_staged<T>(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<T, Box<dyn Error + Send + Sync>>,
) -> Result<(T, StagedFile), TableError> {
    layerprune_core::atomic_write_staged(path, write).map_err(table_error)
}

/// [`StagedFile::commit`] with the error as a [`TableError`].
pub(crate) fn commit(staged: StagedFile) -> Result<(), TableError> {
    staged.commit().map_err(table_error)
}

fn table_error(error: layerprune_core::AtomicWriteError) -> TableError {
    TableError::new(&error.path, TableErrorKind::Io, error.message())
}
