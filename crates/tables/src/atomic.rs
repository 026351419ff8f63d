//! Atomic file output: a reader never sees a half-written file, and a failed writer leaves
//! the previous file (or no file) in place.

use std::error::Error;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{TableError, TableErrorKind};

/// Distinguishes temporary files of concurrent writers in one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// The temporary file `atomic_write` writes before renaming it onto `path`: hidden, in the same
/// folder (a rename is only atomic within one file system), and unique per process and call.
fn temp_path(path: &Path) -> Result<PathBuf, TableError> {
    let name = path
        .file_name()
        .ok_or_else(|| TableError::new(path, TableErrorKind::Io, "output path has no file name"))?;
    let serial = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!(
        ".{}.tmp-{}-{serial}",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(path.with_file_name(temp_name))
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is then
/// flushed to disk (fsync) and renamed onto `path`. If `write` or any step fails, the temporary
/// file is removed and `path` is untouched. Used for every output of every stage, Parquet or
/// not (JSON manifests, surrogate files).
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
    let temp = temp_path(path)?;
    let result = write_then_rename(path, &temp, write);
    if result.is_err() {
        // The temporary file may or may not exist, depending on where the failure happened.
        let _ = fs::remove_file(&temp);
    }
    result
}

fn write_then_rename<T>(
    path: &Path,
    temp: &Path,
    write: impl FnOnce(&mut File) -> Result<T, Box<dyn Error + Send + Sync>>,
) -> Result<T, TableError> {
    let mut file = File::create(temp)
        .map_err(|e| TableError::io(path, &format!("cannot create {}", temp.display()), e))?;
    let value = write(&mut file)
        .map_err(|e| TableError::new(path, TableErrorKind::Io, format!("writing failed: {e}")))?;
    file.sync_all()
        .map_err(|e| TableError::io(path, "cannot flush to disk", e))?;
    drop(file);
    fs::rename(temp, path).map_err(|e| {
        TableError::io(
            path,
            &format!("cannot rename {} onto it", temp.display()),
            e,
        )
    })?;
    // Make the rename itself durable; not every platform lets a folder be opened for this,
    // and the data is already safe, so a failure here is not an error.
    if let Some(folder) = path.parent() {
        let folder = if folder.as_os_str().is_empty() {
            Path::new(".")
        } else {
            folder
        };
        if let Ok(handle) = File::open(folder) {
            let _ = handle.sync_all();
        }
    }
    Ok(value)
}
