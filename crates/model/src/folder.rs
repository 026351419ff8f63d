//! Writing a model folder: built beside its destination, then renamed into place.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use layerprune_core::SiblingInUse;

use crate::ModelError;

/// Distinguishes temporary folders of concurrent writers in one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// A hidden sibling of `dest` named after it, unique to this process and call, claimed as this
/// process's while the claim lives (the clean-up of a later write of `dest` in this process,
/// which holds `dest`'s lock, takes every sibling not claimed for a dead writer's).
fn sibling(dest: &Path, tag: &str) -> Result<(PathBuf, SiblingInUse), ModelError> {
    let name = dest.file_name().ok_or_else(|| ModelError::Destination {
        path: dest.to_path_buf(),
        problem: "has no folder name".into(),
    })?;
    let serial = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    let sibling = dest.with_file_name(layerprune_core::sibling_name(
        name,
        tag,
        &format!("{}-{serial}", std::process::id()),
    ));
    let in_use = SiblingInUse::claim(&sibling);
    Ok((sibling, in_use))
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Best effort: makes renames in `folder` durable.
fn sync_folder(folder: Option<&Path>) {
    let folder = match folder {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    if let Ok(handle) = fs::File::open(folder) {
        let _ = handle.sync_all();
    }
}

/// Writes the folder `dest`: `fill` writes the new folder's contents into an empty temporary
/// folder beside `dest` (same parent, so the rename stays on one file system), which is then
/// renamed into place. `dest` is therefore either absent, the old folder, or complete; on
/// failure the temporary folder is removed and `dest` is untouched.
///
/// An existing `dest` is refused ([`ModelError::Destination`], "already exists; pass
/// --overwrite to replace it") unless `overwrite`, in which case the old folder is moved aside
/// and deleted once the new one is in place; the new folder gets the old one's permission bits
/// (a private 0700 folder stays private), and an old folder its owner may not write (made
/// read-only) is refused, not replaced. The parent of `dest` is created if need be.
pub fn write_folder<T, E: From<ModelError>>(
    dest: &Path,
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    write_folder_with(dest, overwrite, None, fill)
}

/// [`write_folder`], the new folder given `aside`'s permission bits before it is renamed into
/// place where `dest` is missing (`aside`: the earlier folder at `dest`, set aside by
/// [`set_folder_aside`]; otherwise those of the folder at `dest`, as [`write_folder`] gives).
fn write_folder_with<T, E: From<ModelError>>(
    dest: &Path,
    overwrite: bool,
    aside: Option<&FolderAside>,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    recover_from_dead_writers(dest);
    if dest.exists() && !overwrite {
        return Err(already_exists(dest).into());
    }
    refuse_foreign_folder(dest)?;
    let replaced =
        replaced_permissions(dest)?.or_else(|| aside.and_then(|aside| aside.permissions.clone()));
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(ModelError::io(parent))?;
    }
    let (temp, _temp_in_use) = sibling(dest, "tmp")?;
    if temp.exists() {
        fs::remove_dir_all(&temp).map_err(ModelError::io(&temp))?;
    }
    fs::create_dir(&temp).map_err(ModelError::io(&temp))?;
    let result = fill(&temp).and_then(|value| {
        if let Some(permissions) = replaced {
            fs::set_permissions(&temp, permissions).map_err(ModelError::io(&temp))?;
        }
        move_into_place(&temp, dest)?;
        Ok(value)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp);
    }
    result
}

/// [`write_folder`] of a folder made from the folder `source` (a pruned or quantized copy):
/// first refuses a `dest` that is `source`, lies inside it, or contains it
/// ([`refuse_overlap`](crate::refuse_overlap)), so no file of the source is written over or
/// deleted.
pub fn write_folder_from<T, E: From<ModelError>>(
    source: &Path,
    dest: &Path,
    overwrite: bool,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    write_folder_from_in_place_of(source, dest, overwrite, None, fill)
}

/// [`write_folder_from`] of the folder that replaces `aside` (the earlier folder at `dest`,
/// set aside by [`set_folder_aside`]; `None`: none was): the new folder has the earlier one's
/// permission bits before it is renamed into place (a private 0700 folder is never listed by
/// others, not even between the rename and a later chmod, or for good after a kill there).
pub fn write_folder_from_in_place_of<T, E: From<ModelError>>(
    source: &Path,
    dest: &Path,
    overwrite: bool,
    aside: Option<&FolderAside>,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    crate::refuse_overlap(source, dest)?;
    write_folder_with(dest, overwrite, aside, fill)
}

/// An earlier model folder moved out of the way of a stage that writes a file and then this
/// folder ([`set_folder_aside`]): put back if the stage fails, deleted once the new folder is
/// in place. Dropped without either, it is deleted.
#[derive(Debug)]
pub struct FolderAside {
    dest: PathBuf,
    /// The folder moved aside, claimed as this process's; `None` where there was none.
    aside: Option<(PathBuf, SiblingInUse)>,
    /// Its permission bits, which the folder written in its place gets
    /// ([`write_folder_from_in_place_of`]).
    permissions: Option<fs::Permissions>,
}

/// Moves the folder `dest` out of the way (after clearing what killed writers left beside it),
/// to a temporary sibling `.NAME.tmp-PID-N`: for a stage that writes a file and then this
/// folder (`apply-prune --out … --pruned-out …`), so that a run stopped between the two (a
/// kill) leaves the folder missing rather than one that disagrees with the new file: the next
/// write of `dest` removes a temporary sibling, never puts it back. A run that fails (not a
/// kill) puts it back ([`FolderAside::put_back`]) with the file it replaced. A missing `dest`
/// is not an error: there is nothing to set aside.
///
/// An existing `dest` is refused as [`write_folder`] refuses it: without `overwrite` ("already
/// exists; pass --overwrite to replace it"), and with it a folder of something else or one made
/// read-only. Checked here, after the clean-up, because that may put back a folder a killed
/// writer had moved aside, and something may have appeared at `dest` since the stage's checks
/// of its outputs.
pub fn set_folder_aside(dest: &Path, overwrite: bool) -> Result<FolderAside, ModelError> {
    recover_from_dead_writers(dest);
    if fs::symlink_metadata(dest).is_err() {
        return Ok(FolderAside {
            dest: dest.to_path_buf(),
            aside: None,
            permissions: None,
        });
    }
    if !overwrite {
        return Err(already_exists(dest));
    }
    refuse_foreign_folder(dest)?;
    let permissions = replaced_permissions(dest)?;
    let (aside, aside_in_use) = sibling(dest, "tmp")?;
    fs::rename(dest, &aside).map_err(ModelError::io(dest))?;
    sync_folder(dest.parent());
    Ok(FolderAside {
        dest: dest.to_path_buf(),
        aside: Some((aside, aside_in_use)),
        permissions,
    })
}

impl FolderAside {
    /// After a failure: the earlier folder back at its path (where nothing has been written
    /// there since). Returns whether there was one to put back; the error says where it is
    /// still kept.
    pub fn put_back(mut self) -> Result<bool, ModelError> {
        let Some((aside, _in_use)) = self.aside.take() else {
            return Ok(false);
        };
        if !holds_nothing(&self.dest) {
            let _ = remove_any(&aside);
            return Err(ModelError::Destination {
                path: self.dest.clone(),
                problem: "was written again meanwhile; the earlier folder is removed, not put \
                          back"
                    .into(),
            });
        }
        // Kept where it is, named: the next write of `dest` removes such a sibling as a dead
        // writer's, so the user is told to move it now.
        fs::rename(&aside, &self.dest).map_err(|source| ModelError::Io {
            path: self.dest.clone(),
            source: std::io::Error::new(
                source.kind(),
                format!(
                    "cannot put back the earlier folder ({source}); it is kept as {}, which the \
                     next write of {} deletes: move it elsewhere now to keep it (mv {} ...)",
                    aside.display(),
                    self.dest.display(),
                    aside.display()
                ),
            ),
        })?;
        sync_folder(self.dest.parent());
        Ok(true)
    }

    /// After success: the earlier folder is deleted (the new one at its path got its
    /// permission bits when written, [`write_folder_from_in_place_of`]).
    pub fn discard(mut self) {
        if let Some((aside, _in_use)) = self.aside.take() {
            // `dest` no longer needs it; failing to delete it loses nothing the next write
            // needs (which removes it).
            let _ = remove_any(&aside);
        }
    }
}

impl Drop for FolderAside {
    fn drop(&mut self) {
        if let Some((aside, _in_use)) = self.aside.take() {
            let _ = remove_any(&aside);
        }
    }
}

/// The permission bits an existing folder `dest` passes to the folder that replaces it (`None`
/// where there is none), or the refusal of a folder its owner may not write (no `u+w`: made
/// read-only), which a replacement would go round (and whose files it could not delete).
fn replaced_permissions(dest: &Path) -> Result<Option<fs::Permissions>, ModelError> {
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return Ok(None);
    };
    if !meta.is_dir() {
        return Ok(None);
    }
    if let Some(problem) = layerprune_core::read_only_refusal(&meta) {
        return Err(ModelError::Destination {
            path: dest.to_path_buf(),
            problem,
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // With its set-group-id bit: a group's shared folder stays one.
        Ok(Some(fs::Permissions::from_mode(
            meta.permissions().mode() & 0o7777,
        )))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// Refuses an existing `dest` that is neither an empty folder nor a model folder (its
/// `manifest.json` says this format): `--overwrite` replaces an earlier run's model, never a
/// folder of something else that a slip of the path named, with its files. A missing `dest`
/// passes. The writers check it themselves; a stage checks it before its work too.
pub fn refuse_foreign_folder(dest: &Path) -> Result<(), ModelError> {
    let refuse = |problem: String| ModelError::Destination {
        path: dest.to_path_buf(),
        problem: format!("{problem}; --overwrite replaces only a model folder (or an empty one)"),
    };
    let Ok(meta) = fs::symlink_metadata(dest) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Err(refuse(format!(
            "exists and is {}, not a folder",
            layerprune_core::file_kind(&meta)
        )));
    }
    let mut entries = fs::read_dir(dest).map_err(ModelError::io(dest))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let manifest = dest.join(crate::manifest::MANIFEST_FILE);
    // Only the "format" field is read; a manifest is small, so a large file is no model's.
    let format = match fs::symlink_metadata(&manifest) {
        Ok(meta) if meta.is_file() && meta.len() <= crate::manifest::MAX_MANIFEST_BYTES => {
            fs::read(&manifest)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                .and_then(|value| value.get("format")?.as_str().map(str::to_string))
        }
        _ => None,
    };
    match format.as_deref() {
        Some(crate::manifest::FORMAT) => Ok(()),
        Some(other) => Err(refuse(format!(
            "holds a manifest.json of format {other:?}, not a model folder of this tool"
        ))),
        None => Err(refuse(format!(
            "is a folder with files but no readable {} of a model folder",
            crate::manifest::MANIFEST_FILE
        ))),
    }
}

/// The refusal of an existing `dest` without `overwrite`, by every write or removal of a
/// model folder.
fn already_exists(dest: &Path) -> ModelError {
    ModelError::Destination {
        path: dest.to_path_buf(),
        problem: "already exists; pass --overwrite to replace it".into(),
    }
}

/// Undoes what writers of `dest` killed part-way left beside it: their temporary folders are
/// removed, and an old folder one had moved aside is put back where `dest` is missing or an
/// empty folder (killed between its two renames: `dest` is then as before that run, as after
/// any failed write; an empty folder there is no model, such as one a `mkdir -p` made) or
/// removed where `dest` holds something (killed before deleting it). Where several were moved
/// aside (runs killed one after another, a write without the lock), the one moved last is put
/// back, the others removed, with a warning naming them. Best effort, like the writes' own
/// clean-up: what cannot be moved or removed stays; where the put-back fails, nothing is removed.
///
/// Which writers are dead is [`layerprune_core::dead_writers_siblings`]'s to say: while this
/// process holds `dest`'s lock (a stage's `Io::check` locks its output folders), every writer
/// but this process is, whatever the process id its leftovers are named by (in a container the
/// killed run was PID 1 as this one is); without the lock, those whose process has ended.
/// Only this crate's own old folders are taken ([`set_aside_serial`]): the Python exporter's
/// (`tools/export/outputs.py`) stay for it.
fn recover_from_dead_writers(dest: &Path) {
    let mut set_aside: Vec<(PathBuf, (i128, u64))> =
        layerprune_core::dead_writers_siblings(dest, "old")
            .into_iter()
            .filter_map(|old| {
                let serial = set_aside_serial(dest, &old)?;
                Some((old.clone(), (set_aside_at(&old), serial)))
            })
            .collect();
    // Newest first: by when it was moved aside (a rename sets a folder's change time), then,
    // for moves in the same clock tick, by the writer's serial (its later write, where the same
    // process made both; between processes such a tie is a guess either way).
    set_aside.sort_by_key(|(_, moved)| std::cmp::Reverse(*moved));
    let mut set_aside = set_aside.into_iter().map(|(old, _)| old);
    if let Some(newest) = set_aside.next() {
        if holds_nothing(dest) {
            if fs::rename(&newest, dest).is_err() {
                return;
            }
            let removed: Vec<String> = set_aside
                .filter(|older| remove_any(older).is_ok())
                .map(|older| older.display().to_string())
                .collect();
            if removed.is_empty() {
                tracing::warn!(
                    "{}: put back from {}, where a run killed while replacing it had left it",
                    dest.display(),
                    newest.display()
                );
            } else {
                tracing::warn!(
                    "{}: put back from {}, where a run killed while replacing it had left it; \
                     removed older copies that killed runs had left beside it: {}",
                    dest.display(),
                    newest.display(),
                    removed.join(", ")
                );
            }
        } else {
            for old in std::iter::once(newest).chain(set_aside) {
                let _ = remove_any(&old);
            }
        }
    }
    for temp in layerprune_core::dead_writers_siblings(dest, "tmp") {
        let _ = remove_any(&temp);
    }
}

/// Whether `dest` is missing or an empty folder: where a folder moved aside can be renamed back
/// (a rename onto an empty folder replaces it on Unix), and where nothing would be lost.
fn holds_nothing(dest: &Path) -> bool {
    match fs::symlink_metadata(dest) {
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
        Ok(meta) if meta.is_dir() => {
            fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_none())
        }
        Ok(_) => false,
    }
}

/// The serial `N` of an old folder `.NAME.old-PID-N` as this crate's writer names it
/// ([`sibling`]: `N` from a per-process counter, in decimal without leading zeros), `None` for
/// any other name. The Python exporter moves an old folder aside as `.NAME.old-PID-HEX`, eight
/// hex digits (`tools/export/outputs.py`), all of them digits one time in 43: those are told
/// apart by their eight digits (or a leading zero), which this process's counter never reaches
/// (ten million folder writes in one process).
fn set_aside_serial(dest: &Path, old: &Path) -> Option<u64> {
    let prefix = layerprune_core::sibling_name(dest.file_name()?, "old", "");
    let name = old.file_name()?;
    let tail = name
        .as_encoded_bytes()
        .strip_prefix(prefix.as_encoded_bytes())?;
    let (_pid, serial) = std::str::from_utf8(tail).ok()?.split_once('-')?;
    let canonical = serial == "0" || !serial.starts_with('0');
    if !canonical || serial.len() >= OTHER_WRITERS_SERIAL_DIGITS {
        return None;
    }
    serial.parse().ok()
}

/// The length of the Python exporter's serial (`secrets.token_hex(4)`), which this crate's
/// serials never reach.
const OTHER_WRITERS_SERIAL_DIGITS: usize = 8;

/// When `old` was moved aside, in nanoseconds: the change time of the folder, which its rename
/// sets (0 where it cannot be read, or elsewhere than Unix: then the serial decides).
fn set_aside_at(old: &Path) -> i128 {
    let Ok(meta) = fs::symlink_metadata(old) else {
        return 0;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

fn move_into_place(temp: &Path, dest: &Path) -> Result<(), ModelError> {
    if dest.exists() {
        let (old, _old_in_use) = sibling(dest, "old")?;
        fs::rename(dest, &old).map_err(ModelError::io(dest))?;
        if let Err(source) = fs::rename(temp, dest) {
            // Put the old folder back: a failed write leaves `dest` as it was.
            let _ = fs::rename(&old, dest);
            return Err(ModelError::Io {
                path: dest.to_path_buf(),
                source,
            });
        }
        // The new folder is in place; failing to delete the old one loses nothing.
        let _ = remove_any(&old);
    } else {
        fs::rename(temp, dest).map_err(ModelError::io(dest))?;
    }
    sync_folder(dest.parent());
    Ok(())
}

/// Writes `bytes` to `path` (creating its folder) with `layerprune_core::atomic_write`: mode
/// 0644, flushed to disk, never half-written.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(ModelError::io(parent))?;
    }
    layerprune_core::atomic_write_bytes(path, bytes)?;
    Ok(())
}

/// How a folder written from another (pruned, quantized) gets the files it takes unchanged
/// from its source folder: the graphs and, above all, the weight files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceFiles {
    /// Copied: the new folder's files are its own, and both folders stay loadable by any
    /// reader. `std::fs::copy` uses `copy_file_range` on Linux, which shares the blocks
    /// copy-on-write where the file system has reflinks (btrfs, XFS made with them), so the
    /// copy costs little disk there; elsewhere (ext4) it takes as much disk as the files.
    #[default]
    Copy,
    /// Hard-linked where both folders share a file system (else copied): no disk, but each
    /// file then has several links, and the onnx Python package (1.23.2, the exporter's, among
    /// others) refuses to `onnx.load` a graph whose external-data file has more than one link
    /// (as a possible hard-link attack): in the source folder as in the new one. A tool that
    /// rewrites a linked file in place changes it in both folders.
    HardLink,
}

impl SourceFiles {
    /// Hard links where `asked` (a stage's `--hard-link-source-files`), else copies.
    pub fn hard_links_if(asked: bool) -> Self {
        if asked {
            SourceFiles::HardLink
        } else {
            SourceFiles::Copy
        }
    }
}

/// Puts the file `from` at `to` (creating its folder), copied or hard-linked as `how` says.
/// `from` is resolved first, so a symlink is linked or copied as the file it points to. An
/// existing `to` is refused, and so is a `to` that is `from` itself (same device and inode): a
/// copy never truncates its own source. A copy is flushed to disk, as every file the folder
/// writer writes is, before the folder is renamed into place.
pub fn take_source_file(from: &Path, to: &Path, how: SourceFiles) -> Result<(), ModelError> {
    let refuse = |problem: String| ModelError::Destination {
        path: to.to_path_buf(),
        problem,
    };
    if crate::same_file(from, to) {
        return Err(refuse(format!(
            "is the same file as its source {}; a file is never copied onto itself",
            from.display()
        )));
    }
    if fs::symlink_metadata(to).is_ok() {
        return Err(refuse(format!(
            "already exists; refusing to replace it with {}",
            from.display()
        )));
    }
    let from = fs::canonicalize(from).map_err(ModelError::io(from))?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(ModelError::io(parent))?;
    }
    // Across file systems, or on one without hard links, the file is copied instead: the
    // link only saves disk, and the folder is the same either way.
    if how == SourceFiles::HardLink && fs::hard_link(&from, to).is_ok() {
        return Ok(());
    }
    fs::copy(&from, to).map_err(|error| ModelError::Io {
        path: from.clone(),
        source: std::io::Error::new(
            error.kind(),
            format!("copying to {}: {error}", to.display()),
        ),
    })?;
    fs::File::open(to)
        .and_then(|copy| copy.sync_all())
        .map_err(ModelError::io(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folder `dest` removed (one about to be written again), after clearing what killed
    /// writers left beside it: [`set_folder_aside`], then the folder set aside deleted.
    fn remove_folder(dest: &Path, overwrite: bool) -> Result<(), ModelError> {
        set_folder_aside(dest, overwrite).map(FolderAside::discard)
    }

    /// The id of a process that has finished: what a killed writer's leftovers are named by.
    #[cfg(target_os = "linux")]
    fn finished_process_id() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = child.id();
        child.wait().unwrap();
        id
    }

    /// `remove_folder` without overwrite refuses the existing `dest`.
    fn assert_removal_refused(dest: &Path) {
        let refused = remove_folder(dest, false).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("already exists; pass --overwrite"),
            "{refused}"
        );
    }

    /// What marks a folder as a model's, to `--overwrite`: its manifest's format.
    const MODEL_MANIFEST: &[u8] = br#"{"format": "layerprune-layered-onnx"}"#;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_folder_is_renamed_into_place_and_replaced_only_when_asked() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("nested").join("model");
        write_folder(&dest, false, |temp| {
            assert_eq!(temp.parent(), dest.parent());
            assert!(!dest.exists());
            write_file(&temp.join("manifest.json"), MODEL_MANIFEST)?;
            write_file(&temp.join("weights").join("a.bin"), b"a")
        })
        .unwrap();
        assert_eq!(fs::read(dest.join("weights/a.bin")).unwrap(), b"a");

        let refused = write_folder(&dest, false, |_| -> Result<(), ModelError> {
            panic!("an existing folder is not refilled without overwrite")
        })
        .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("already exists; pass --overwrite"),
            "{refused}"
        );

        let value = write_folder(&dest, true, |temp| {
            write_file(&temp.join("b.bin"), b"b")?;
            Ok::<_, ModelError>(7)
        })
        .unwrap();
        assert_eq!(value, 7);
        assert_eq!(names(&dest), vec!["b.bin"]);
        assert_eq!(names(dest.parent().unwrap()), vec!["model"]);
    }

    #[test]
    fn a_failed_fill_leaves_the_old_folder_and_no_temporary_folder() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("manifest.json"), MODEL_MANIFEST).unwrap();
        fs::write(dest.join("old.bin"), b"old").unwrap();
        #[derive(Debug)]
        struct Failed;
        impl From<ModelError> for Failed {
            fn from(_: ModelError) -> Self {
                Failed
            }
        }
        let result = write_folder(&dest, true, |temp| {
            fs::write(temp.join("half.bin"), b"half").unwrap();
            Err::<(), _>(Failed)
        });
        assert!(result.is_err());
        assert_eq!(names(parent.path()), vec!["model"]);
        assert_eq!(names(&dest), vec!["manifest.json", "old.bin"]);
    }

    /// What a writer killed part-way left (its id a finished process's): its temporary folder
    /// is removed, and the old folder it had moved aside is put back where `dest` is missing,
    /// or removed where a later run had written `dest`.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_killed_writers_folders_are_cleaned_up_and_the_old_one_put_back() {
        let dead = finished_process_id();
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let left = |tag: &str, file: &str| {
            let folder = parent.path().join(format!(".model.{tag}-{dead}-0"));
            fs::create_dir(&folder).unwrap();
            fs::write(folder.join("manifest.json"), MODEL_MANIFEST).unwrap();
            fs::write(folder.join(file), file).unwrap();
        };
        // Killed between its two renames: the old model aside, the new one complete in temp.
        left("old", "old.bin");
        left("tmp", "new.bin");
        let refused = write_folder(&dest, false, |_| -> Result<(), ModelError> {
            panic!("the old folder is back: not refilled without overwrite")
        })
        .unwrap_err();
        assert!(refused.to_string().contains("already exists"), "{refused}");
        assert_eq!(names(parent.path()), vec!["model"]);
        assert_eq!(names(&dest), vec!["manifest.json", "old.bin"]);
        // Killed after the new folder was in place, before deleting the old one.
        left("old", "older.bin");
        write_folder(&dest, true, |temp| write_file(&temp.join("b.bin"), b"b")).unwrap();
        assert_eq!(names(parent.path()), vec!["model"]);
        assert_eq!(names(&dest), vec!["b.bin"]);
    }

    /// In a container a stage is often PID 1 on every run, so what a killed run left is named
    /// by a live process's id: this process's own, or another's. Without `dest`'s lock the ids
    /// decide and the leftovers stay (their writer may be alive); while this process holds the
    /// lock (as every stage does, `Io::check`) no other writer is, so the folder moved aside is
    /// put back and the half-built ones removed, and a later replacement removes the old one.
    #[cfg(target_os = "linux")]
    #[test]
    fn under_the_lock_a_killed_writers_folders_are_recovered_whatever_their_process_id() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let own = std::process::id();
        let left = |name: &str, file: &str| {
            let folder = parent.path().join(name);
            fs::create_dir(&folder).unwrap();
            fs::write(folder.join("manifest.json"), MODEL_MANIFEST).unwrap();
            fs::write(folder.join(file), file).unwrap();
        };
        // Killed between its two renames, as PID 1, and another run of this id half-built one.
        left(".model.old-1-0", "old.bin");
        left(".model.tmp-1-1", "new.bin");
        left(&format!(".model.tmp-{own}-900"), "half.bin");
        let before = names(parent.path());
        remove_folder(&dest, false).expect("nothing at dest to remove");
        assert_eq!(names(parent.path()), before, "recovered without the lock");

        let lock = layerprune_core::FileLock::try_acquire(&dest).unwrap();
        let refused = write_folder(&dest, false, |_| -> Result<(), ModelError> {
            panic!("the old folder is back: not refilled without overwrite")
        })
        .unwrap_err();
        assert!(refused.to_string().contains("already exists"), "{refused}");
        assert_eq!(names(parent.path()), vec![".model.lock", "model"]);
        assert_eq!(names(&dest), vec!["manifest.json", "old.bin"]);
        // Killed after its new folder was in place, before deleting the old one (this id's).
        left(&format!(".model.old-{own}-901"), "older.bin");
        write_folder(&dest, true, |temp| write_file(&temp.join("b.bin"), b"b")).unwrap();
        assert_eq!(names(parent.path()), vec![".model.lock", "model"]);
        assert_eq!(names(&dest), vec!["b.bin"]);
        drop(lock);
        assert_eq!(names(parent.path()), vec!["model"]);
    }

    /// A model folder moved aside as `name` now (its rename sets the change time that orders
    /// the old folders), holding `file`.
    #[cfg(target_os = "linux")]
    fn moved_aside(parent: &Path, name: &str, file: &str) {
        let building = parent.join("building");
        fs::create_dir(&building).unwrap();
        fs::write(building.join("manifest.json"), MODEL_MANIFEST).unwrap();
        fs::write(building.join(file), file).unwrap();
        fs::rename(&building, parent.join(name)).unwrap();
        // Change times a clock tick apart on any file system.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    /// Runs killed one after another each left the folder moved aside: the one moved last is
    /// put back, whatever the names' order (`.model.old-100-0` sorts before
    /// `.model.old-20-0`, and `.model.old-1-10` before `.model.old-1-2`), and the older ones are
    /// removed. Until 2026-12-07 the first name was put back and the newer copy deleted.
    #[cfg(target_os = "linux")]
    #[test]
    fn of_several_folders_moved_aside_the_last_moved_is_put_back() {
        for (older, newer) in [
            (".model.old-100-0", ".model.old-20-0"),
            (".model.old-1-10", ".model.old-1-2"),
        ] {
            let parent = tempfile::tempdir().unwrap();
            let dest = parent.path().join("model");
            moved_aside(parent.path(), older, "older.bin");
            moved_aside(parent.path(), newer, "newer.bin");
            let lock = layerprune_core::FileLock::try_acquire(&dest).unwrap();
            assert_removal_refused(&dest);
            assert_eq!(
                names(&dest),
                vec!["manifest.json", "newer.bin"],
                "{older} {newer}"
            );
            assert_eq!(names(parent.path()), vec![".model.lock", "model"]);
            drop(lock);
        }
    }

    /// An empty folder at `dest` (a `mkdir -p` of it) is no model: the folder a killed run had
    /// moved aside is put back in its place, not deleted as if `dest` were newer.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_folder_moved_aside_is_put_back_over_an_empty_folder() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        moved_aside(parent.path(), ".model.old-1-0", "old.bin");
        fs::create_dir(&dest).unwrap();
        let lock = layerprune_core::FileLock::try_acquire(&dest).unwrap();
        assert_removal_refused(&dest);
        assert_eq!(names(&dest), vec!["manifest.json", "old.bin"]);
        assert_eq!(names(parent.path()), vec![".model.lock", "model"]);
        drop(lock);
    }

    /// The Python exporter moves an old folder aside as `.NAME.old-PID-HEX` (eight hex digits,
    /// `tools/export/outputs.py`), sometimes all digits: never taken for this crate's, neither
    /// put back nor removed, even under the lock, where this crate's own are recovered.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_python_exporters_old_folders_are_left_alone() {
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let exporters = [".model.old-1-12345678", ".model.old-1-01234567"];
        for name in exporters {
            moved_aside(parent.path(), name, "exported.bin");
        }
        let lock = layerprune_core::FileLock::try_acquire(&dest).unwrap();
        remove_folder(&dest, false).expect("nothing of this crate's to put back");
        assert!(!dest.exists());
        moved_aside(parent.path(), ".model.old-1-3", "ours.bin");
        assert_removal_refused(&dest);
        assert_eq!(names(&dest), vec!["manifest.json", "ours.bin"]);
        let mut expected = vec![".model.lock", "model"];
        expected.extend(exporters);
        expected.sort();
        assert_eq!(names(parent.path()), expected);
        drop(lock);
    }

    /// A folder set aside while a stage writes a file before it is put back when the stage
    /// fails, or deleted once the new one is in place (which gets its permission bits); one
    /// dropped without either is deleted, and one a kill left aside is removed by the next write
    /// of the folder, never put back beside a newer file.
    #[cfg(unix)]
    #[test]
    fn a_folder_set_aside_is_put_back_on_failure_and_deleted_on_success() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let earlier = || {
            fs::create_dir(&dest).unwrap();
            fs::write(dest.join("manifest.json"), MODEL_MANIFEST).unwrap();
            fs::write(dest.join("old.bin"), b"old").unwrap();
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o750)).unwrap();
        };
        earlier();
        assert!(set_folder_aside(&dest, false).is_err());
        let aside = set_folder_aside(&dest, true).unwrap();
        assert!(!dest.exists());
        assert_eq!(names(parent.path()).len(), 1, "{:?}", names(parent.path()));
        assert!(aside.put_back().unwrap());
        assert_eq!(names(parent.path()), vec!["model"]);
        assert_eq!(names(&dest), vec!["manifest.json", "old.bin"]);

        // The new folder has the earlier one's mode once in place, before the earlier is
        // deleted (until 2026-12-07 it had the umask's until then).
        let aside = set_folder_aside(&dest, true).unwrap();
        let source = parent.path().join("source");
        fs::create_dir(&source).unwrap();
        write_folder_from_in_place_of(&source, &dest, false, Some(&aside), |temp| {
            write_file(&temp.join("manifest.json"), MODEL_MANIFEST)?;
            write_file(&temp.join("new.bin"), b"new")
        })
        .unwrap();
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);
        aside.discard();
        fs::remove_dir(&source).unwrap();
        assert_eq!(names(parent.path()), vec!["model"]);
        assert_eq!(names(&dest), vec!["manifest.json", "new.bin"]);
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750);

        // Nothing there: nothing to put back.
        let missing = parent.path().join("missing");
        assert!(!set_folder_aside(&missing, false)
            .unwrap()
            .put_back()
            .unwrap());
        // Dropped: deleted.
        drop(set_folder_aside(&dest, true).unwrap());
        assert!(names(parent.path()).is_empty());
        fs::remove_dir(&missing).ok();
        // Set aside as a temporary folder `.NAME.tmp-PID-N`: what a kill leaves is removed by
        // the next write (a_killed_writers_folders_are_cleaned_up_and_the_old_one_put_back).
        earlier();
        let aside = set_folder_aside(&dest, true).unwrap();
        let left = names(parent.path());
        assert_eq!(left.len(), 1);
        assert!(
            left[0].starts_with(&format!(".model.tmp-{}-", std::process::id())),
            "{left:?}"
        );
        drop(aside);
        assert!(names(parent.path()).is_empty());
    }

    /// A replaced folder keeps its permission bits (a private 0700 one stays private), and one
    /// its owner may not write (made read-only) is refused, not replaced nor set aside: as root
    /// too, judged by the mode bits.
    #[cfg(unix)]
    #[test]
    fn a_replaced_folder_keeps_its_mode_and_a_read_only_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let fill = |temp: &Path| write_file(&temp.join("manifest.json"), MODEL_MANIFEST);
        write_folder(&dest, false, fill).unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o700)).unwrap();
        write_folder(&dest, true, fill).unwrap();
        let mode = || fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(), 0o700);
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o555)).unwrap();
        for error in [
            write_folder(&dest, true, |_| -> Result<(), ModelError> {
                panic!("a read-only folder is not replaced")
            })
            .unwrap_err(),
            set_folder_aside(&dest, true).unwrap_err(),
        ] {
            let error = error.to_string();
            assert!(
                error.contains("is a read-only folder (mode 0555)") && error.contains("chmod u+w"),
                "{error}"
            );
        }
        assert_eq!(mode(), 0o555);
        assert_eq!(names(parent.path()), vec!["model"]);
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_removed_folder_is_gone_with_nothing_left_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model");
        remove_folder(&dest, false).expect("a missing folder is not an error");
        fs::create_dir_all(dest.join("weights")).unwrap();
        fs::write(dest.join("weights/a.bin"), b"a").unwrap();
        fs::write(dest.join("manifest.json"), MODEL_MANIFEST).unwrap();
        assert_removal_refused(&dest);
        assert_eq!(names(&dest), vec!["manifest.json", "weights"]);
        remove_folder(&dest, true).unwrap();
        assert!(!dest.exists());
        assert!(names(dir.path()).is_empty(), "left {:?}", names(dir.path()));
    }

    /// `--overwrite` replaces a model folder or an empty one, never a folder of anything else
    /// (a slip of the path): that is refused, naming it, and left as it was.
    #[test]
    fn overwrite_replaces_only_a_model_folder() {
        let parent = tempfile::tempdir().unwrap();
        let fill = |temp: &Path| write_file(&temp.join("manifest.json"), MODEL_MANIFEST);
        let notes = parent.path().join("notes");
        fs::create_dir(&notes).unwrap();
        fs::write(notes.join("notes.txt"), b"important").unwrap();
        let other = parent.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(
            other.join("manifest.json"),
            br#"{"format": "something-else"}"#,
        )
        .unwrap();
        for (dest, problem) in [
            (&notes, "no readable manifest.json"),
            (&other, "\"something-else\""),
        ] {
            let before = names(dest);
            for error in [
                write_folder(dest, true, fill).unwrap_err(),
                remove_folder(dest, true).unwrap_err(),
                refuse_foreign_folder(dest).unwrap_err(),
            ] {
                let error = error.to_string();
                assert!(error.contains(problem), "{error}");
                assert!(error.contains("replaces only a model folder"), "{error}");
                assert!(error.contains(&dest.display().to_string()), "{error}");
            }
            assert_eq!(names(dest), before);
        }
        assert_eq!(fs::read(notes.join("notes.txt")).unwrap(), b"important");
        let empty = parent.path().join("empty");
        fs::create_dir(&empty).unwrap();
        write_folder(&empty, true, fill).unwrap();
        write_folder(&empty, true, fill).expect("a model folder is replaced");
        assert_eq!(names(&empty), vec!["manifest.json"]);
        #[cfg(unix)]
        {
            let link = parent.path().join("link");
            std::os::unix::fs::symlink(&empty, &link).unwrap();
            let error = refuse_foreign_folder(&link).unwrap_err().to_string();
            assert!(error.contains("symbolic link"), "{error}");
        }
    }

    /// A folder a killed writer had moved aside is put back, and then, without overwrite,
    /// refused like any existing folder: never deleted by a run not asked to replace it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_folder_put_back_is_not_removed_without_overwrite() {
        let dead = finished_process_id();
        let parent = tempfile::tempdir().unwrap();
        let dest = parent.path().join("model");
        let aside = parent.path().join(format!(".model.old-{dead}-0"));
        fs::create_dir(&aside).unwrap();
        fs::write(aside.join("old.bin"), b"old").unwrap();
        assert_removal_refused(&dest);
        assert_eq!(names(&dest), vec!["old.bin"]);
        assert_eq!(names(parent.path()), vec!["model"]);
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("manifest.json");
        write_file(&path, b"{}").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // 0644 less the umask: readable by the group and others unless the umask forbids it.
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
    }

    /// Both ways of taking a source file: the bytes arrive, a missing source is named.
    #[test]
    fn links_or_copies_into_new_folders() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.bin");
        fs::write(&from, b"weights").unwrap();
        for (how, folder) in [(SourceFiles::Copy, "copy"), (SourceFiles::HardLink, "link")] {
            let to = dir.path().join(folder).join("weights").join("a.bin");
            take_source_file(&from, &to, how).unwrap();
            assert_eq!(fs::read(&to).unwrap(), b"weights");
            let missing = dir.path().join("missing.bin");
            let error = take_source_file(&missing, &to.with_file_name("b.bin"), how).unwrap_err();
            assert!(error.to_string().contains("missing.bin"), "{error}");
        }
    }

    /// A copy is a file of its own (one link, another inode): `onnx.load` refuses an external
    /// data file with several links, so hard links made both folders unreadable to it. A hard
    /// link is asked for, and then given where the file system allows (here: one folder).
    #[cfg(unix)]
    #[test]
    fn a_source_file_is_copied_unless_a_hard_link_is_asked_for() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a.bin");
        fs::write(&from, b"weights").unwrap();
        let copy = dir.path().join("copy/a.bin");
        take_source_file(&from, &copy, SourceFiles::default()).unwrap();
        let (source, copied) = (fs::metadata(&from).unwrap(), fs::metadata(&copy).unwrap());
        assert_ne!(copied.ino(), source.ino());
        assert_eq!((source.nlink(), copied.nlink()), (1, 1));
        let link = dir.path().join("link/a.bin");
        take_source_file(&from, &link, SourceFiles::HardLink).unwrap();
        let (source, linked) = (fs::metadata(&from).unwrap(), fs::metadata(&link).unwrap());
        assert_eq!((linked.dev(), linked.ino()), (source.dev(), source.ino()));
        assert_eq!(source.nlink(), 2);
    }

    #[test]
    fn a_copy_never_lands_on_its_source_or_an_existing_file() {
        for how in [SourceFiles::Copy, SourceFiles::HardLink] {
            let dir = tempfile::tempdir().unwrap();
            let from = dir.path().join("a.bin");
            fs::write(&from, b"weights").unwrap();
            let error = take_source_file(&from, &from, how).unwrap_err().to_string();
            assert!(error.contains("is the same file as its source"), "{error}");
            let other = dir.path().join("b.bin");
            fs::write(&other, b"other").unwrap();
            let error = take_source_file(&from, &other, how)
                .unwrap_err()
                .to_string();
            assert!(error.contains("already exists"), "{error}");
            #[cfg(unix)]
            {
                // A symlink to the source at the destination is the same file too.
                let link = dir.path().join("link.bin");
                std::os::unix::fs::symlink(&from, &link).unwrap();
                let error = take_source_file(&from, &link, how).unwrap_err().to_string();
                assert!(error.contains("is the same file as its source"), "{error}");
                // A symlink as the source is copied (or linked) as the file it points to.
                let to = dir.path().join("copy/link.bin");
                take_source_file(&link, &to, how).unwrap();
                assert!(!fs::symlink_metadata(&to).unwrap().file_type().is_symlink());
                assert_eq!(fs::read(&to).unwrap(), b"weights");
            }
            assert_eq!(fs::read(&from).unwrap(), b"weights");
            assert_eq!(fs::read(&other).unwrap(), b"other");
        }
    }

    #[test]
    fn a_folder_is_never_written_over_its_source() {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("model");
        fs::create_dir(&source).unwrap();
        fs::write(source.join("a.bin"), b"a").unwrap();
        for dest in [
            source.clone(),
            source.join("inner"),
            root.path().to_path_buf(),
        ] {
            let error = write_folder_from(&source, &dest, true, |_| -> Result<(), ModelError> {
                panic!("an overlapping destination is refused before it is filled")
            })
            .unwrap_err();
            assert!(error.to_string().contains("source folder"), "{error}");
        }
        assert_eq!(names(&source), vec!["a.bin"]);
        assert_eq!(fs::read(source.join("a.bin")).unwrap(), b"a");
    }
}
