//! The one atomic file writer of the workspace: a reader never sees a half-written file, and a
//! failed writer leaves the previous file (or no file) in place.
//!
//! Every stage writes its outputs through [`atomic_write`] (tables re-exports it with its own
//! error type, the surrogate file, the model folders' manifests and graphs, the CLI's JSON
//! and CSV outputs), so all of them get the same guarantees and the same file mode: a new file
//! 0644 (less the umask), never the 0600 of a `tempfile` temporary; a file replaced keeps its
//! permission bits (a private 0600 output stays private), and one its owner may not write (made
//! read-only) is refused, not replaced ([`refuse_read_only`]), as `File::create` keeps the one
//! and refuses the other.

use std::error::Error;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The mode of every new file written by [`atomic_write`], before the umask (a file it replaces
/// keeps its own permission bits).
pub const FILE_MODE: u32 = 0o644;

/// Distinguishes temporary files of concurrent writers in one process.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// Why [`atomic_write`] failed: the file it was writing, the step that failed and the cause.
/// `path` is untouched and no temporary file is left behind.
#[derive(Debug)]
pub struct AtomicWriteError {
    /// The file being written (not the temporary file).
    pub path: PathBuf,
    /// What failed: `cannot create <temp>`, `writing failed`, `cannot flush to disk`,
    /// `cannot rename <temp> onto it`; empty when the path itself is unusable.
    pub step: String,
    /// The writer's or the file system's error.
    pub source: Box<dyn Error + Send + Sync>,
}

impl AtomicWriteError {
    fn new(
        path: &Path,
        step: impl Into<String>,
        source: impl Into<Box<dyn Error + Send + Sync>>,
    ) -> Self {
        AtomicWriteError {
            path: path.to_path_buf(),
            step: step.into(),
            source: source.into(),
        }
    }

    /// `<step>: <cause>`, without the path (for error types that hold the path apart).
    pub fn message(&self) -> String {
        if self.step.is_empty() {
            self.source.to_string()
        } else {
            format!("{}: {}", self.step, self.source)
        }
    }
}

impl std::fmt::Display for AtomicWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message())
    }
}

impl Error for AtomicWriteError {}

/// The temporary file `atomic_write` writes before renaming it onto `path`: hidden, in the same
/// folder (a rename is only atomic within one file system), and unique per process and call.
fn temp_path(path: &Path) -> Result<PathBuf, AtomicWriteError> {
    let name = path
        .file_name()
        .ok_or_else(|| AtomicWriteError::new(path, "", "output path has no file name"))?;
    let serial = NEXT_TEMP.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(sibling_name(
        name,
        "tmp",
        &format!("{}-{serial}", std::process::id()),
    )))
}

/// `.NAME.TAG-TAIL`: the hidden name of a file or folder written beside `name` (a temporary
/// file, a folder set aside), with `name`'s bytes as they are, so that two names which differ
/// only in bytes that are not UTF-8 get siblings of their own (a lossy conversion gave them one,
/// and a run cleaning up after one could remove the other's).
pub fn sibling_name(name: &OsStr, tag: &str, tail: &str) -> OsString {
    let mut sibling = OsString::from(".");
    sibling.push(name);
    sibling.push(format!(".{tag}-{tail}"));
    sibling
}

/// The digits of a serial `N` in [`longest_sibling_name`]: a process's writers count their
/// temporary files and folders from 0, and none writes a million.
const LONGEST_SERIAL_DIGITS: usize = 6;

/// The digits of a process id `PID` in [`longest_sibling_name`]: the most a `u32` has, so that
/// the probe is as long as the temporary name of any run, whatever its process id (one padded
/// to this run's own id passed a name that a later run, with a longer id, could not write).
const LONGEST_PID_DIGITS: usize = 10;

/// The longest name a writer puts beside `name` (`.NAME.tmp-PID-N`, as long as
/// `.NAME.old-PID-N` and longer than the lock `.NAME.lock`): this process's id padded with 0s
/// to `LONGEST_PID_DIGITS` (10) digits (still naming this process to
/// [`dead_writers_siblings`]) and a serial of `LONGEST_SERIAL_DIGITS` (6) digits ending in
/// `tail` (padded with 9s, cut to its last digits). Created in the output's folder before the work, it shows whether the file
/// system takes the names of the run's temporary files, where the output's own name fits and
/// a temporary one would not (an output name within 13 bytes of the 255 a name may have failed
/// only once the work was done); its length is the same on every run.
pub fn longest_sibling_name(name: &OsStr, tail: u64) -> OsString {
    let serial = format!("{:9>width$}", tail, width = LONGEST_SERIAL_DIGITS);
    let serial = &serial[serial.len() - LONGEST_SERIAL_DIGITS..];
    let pid = format!(
        "{:0>width$}",
        std::process::id(),
        width = LONGEST_PID_DIGITS
    );
    sibling_name(name, "tmp", &format!("{pid}-{serial}"))
}

/// The names of the siblings this process is using now ([`SiblingInUse`]).
static IN_USE: Mutex<Vec<OsString>> = Mutex::new(Vec::new());

fn in_use() -> MutexGuard<'static, Vec<OsString>> {
    // A list of names is whole even if a thread panicked holding it.
    IN_USE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A sibling `.NAME.TAG-PID-N` this process is using (a temporary file or folder it is
/// writing, a file or folder it keeps aside): while this lives, [`dead_writers_siblings`] never
/// lists it, even where this process holds `NAME`'s lock and so takes every other sibling for a
/// dead writer's, its own process id's included. Claimed before the sibling is created, dropped
/// once it is renamed or removed. Names are matched without their folder, so a claim may spare
/// another folder's sibling of the same name (left for a later run), never the reverse.
#[derive(Debug)]
pub struct SiblingInUse {
    name: OsString,
}

impl SiblingInUse {
    /// Claims `sibling` (a path whose file name is the sibling's name).
    pub fn claim(sibling: &Path) -> SiblingInUse {
        let name = sibling.file_name().unwrap_or_default().to_os_string();
        in_use().push(name.clone());
        SiblingInUse { name }
    }
}

impl Drop for SiblingInUse {
    fn drop(&mut self) {
        let mut names = in_use();
        if let Some(at) = names.iter().position(|n| *n == self.name) {
            names.swap_remove(at);
        }
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder (created with
/// mode [`FILE_MODE`], less the umask, or given the permission bits of the file at `path` it
/// replaces), which is then flushed to disk (fsync) and renamed onto `path`, and the folder is
/// synced so the rename is durable. A file at `path` that its owner may not write is refused
/// before anything is written ([`refuse_read_only`]). Temporary files of `path` left by a
/// writer that was killed ([`remove_stale_temps`]) are removed first. If `write` or any step
/// fails, the temporary file is removed and `path` is untouched. The folder must exist.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("atomic-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("out.json");
/// use std::io::Write;
/// layerprune_core::atomic_write(&path, |file| {
///     file.write_all(b"{\"ok\": true}")?;
///     Ok(())
/// })
/// .unwrap();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn atomic_write<T>(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<T, Box<dyn Error + Send + Sync>>,
) -> Result<T, AtomicWriteError> {
    let (value, staged) = atomic_write_staged(path, write)?;
    staged.commit()?;
    Ok(value)
}

/// [`atomic_write`] up to its rename: the temporary file `.NAME.tmp-PID-N` is written, given
/// its mode and flushed to disk, and handed back unrenamed, to be put in place by
/// [`StagedFile::commit`] (or removed if dropped before). For a stage that writes several files
/// and renames them only once all are written (fit-surrogate's metrics and surrogate): each
/// output has one temporary name, the one [`atomic_write`] gives it, whose length the stages'
/// check of their output names allows for ([`longest_sibling_name`]), and which the next
/// write of the output removes if the run was killed ([`remove_stale_temps`]). Until
/// 2026-12-07 such a stage ran `atomic_write` on a temporary path of its own, which nested a
/// second name, `..NAME.tmp-PID-0.tmp-PID-N`, longer than the check allowed and never
/// removed.
pub fn atomic_write_staged<T>(
    path: &Path,
    write: impl FnOnce(&mut File) -> Result<T, Box<dyn Error + Send + Sync>>,
) -> Result<(T, StagedFile), AtomicWriteError> {
    let replaced = replaced_permissions(path)?;
    remove_stale_temps(path);
    let (temp, file, in_use) = create_temp(path)?;
    // Dropped on a failure below, it removes the temporary file (closed by then).
    let staged = StagedFile {
        path: path.to_path_buf(),
        temp,
        renamed: false,
        _in_use: in_use,
    };
    let value = fill(path, file, replaced, write)?;
    Ok((value, staged))
}

/// Gives the new temporary `file` of `path` its mode, has `write` fill it, flushes it to disk
/// and closes it.
fn fill<T>(
    path: &Path,
    mut file: File,
    replaced: Option<fs::Permissions>,
    write: impl FnOnce(&mut File) -> Result<T, Box<dyn Error + Send + Sync>>,
) -> Result<T, AtomicWriteError> {
    keep_permissions(path, &file, replaced)?;
    let value = write(&mut file).map_err(|e| AtomicWriteError::new(path, "writing failed", e))?;
    file.sync_all()
        .map_err(|e| AtomicWriteError::new(path, "cannot flush to disk", e))?;
    Ok(value)
}

/// A file written in full and flushed to disk under its temporary name beside its target
/// ([`atomic_write_staged`]), not yet renamed onto it. Dropped before [`StagedFile::commit`],
/// the temporary file is removed and the target is untouched. While it lives its name is
/// claimed ([`SiblingInUse`]), so that no write of this process takes it for a dead writer's.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    temp: PathBuf,
    renamed: bool,
    _in_use: SiblingInUse,
}

impl StagedFile {
    /// The file this one is to replace.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary file, `.NAME.tmp-PID-N` beside [`StagedFile::path`].
    pub fn temp(&self) -> &Path {
        &self.temp
    }

    /// Renames the temporary file onto its target, then syncs the folder so that the rename
    /// is durable. On failure the temporary file is removed and the target is untouched.
    pub fn commit(mut self) -> Result<(), AtomicWriteError> {
        fs::rename(&self.temp, &self.path).map_err(|e| {
            AtomicWriteError::new(
                &self.path,
                format!("cannot rename {} onto it", self.temp.display()),
                e,
            )
        })?;
        self.renamed = true;
        // Make the rename itself durable; not every platform lets a folder be opened for this,
        // and the data is already safe, so a failure here is not an error.
        let folder = match self.path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        if let Ok(handle) = File::open(folder) {
            let _ = handle.sync_all();
        }
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.renamed {
            // Ours (created new by `create_temp`), never renamed onto the target.
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Refuses to replace `path` where it is a regular file that its owner may not write (no `u+w`
/// bit: made read-only, `chmod a-w`): replacing it by a rename would go round the mode the
/// user set, where `File::create`, `cp` or a shell redirect stop. Judged by the mode bits, not
/// by who runs, so root is refused too. Anything else (a missing file, a folder, a link) passes.
/// A stage checks its outputs with this before its work, and [`atomic_write`] again.
pub fn refuse_read_only(path: &Path) -> Result<(), AtomicWriteError> {
    replaced_permissions(path).map(|_| ())
}

/// The permission bits of the regular file at `path` that a write replaces (`None` where there
/// is none), or the refusal of one its owner may not write ([`refuse_read_only`]).
fn replaced_permissions(path: &Path) -> Result<Option<fs::Permissions>, AtomicWriteError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(None);
    };
    if !meta.is_file() {
        return Ok(None);
    }
    if let Some(problem) = read_only_refusal(&meta) {
        return Err(AtomicWriteError::new(path, "", problem));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The bits of a file's permissions, never a set-user-id or sticky bit on a new file.
        Ok(Some(fs::Permissions::from_mode(
            meta.permissions().mode() & 0o777,
        )))
    }
    #[cfg(not(unix))]
    Ok(None)
}

/// The refusal (the text after "PATH: ") to replace the file or folder `meta` describes where
/// its owner may not write it (no `u+w` bit: made read-only, `chmod a-w`), `None` where it may:
/// replacing it by a rename, or moving a folder aside and deleting it, would go round the mode
/// the user set, where `File::create`, `cp` or a shell redirect stop. Judged by the mode bits,
/// not by who runs, so root is refused too. The one check and text of every writer of a file
/// ([`atomic_write`]) or a model folder, and of a stage's check of its outputs.
pub fn read_only_refusal(meta: &fs::Metadata) -> Option<String> {
    let what = if meta.is_dir() {
        "a read-only folder"
    } else {
        "read-only"
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        (mode & 0o200 == 0).then(|| {
            format!(
                "is {what} (mode {mode:04o}), so it is not replaced; make it writable (chmod \
                 u+w) or choose another path"
            )
        })
    }
    #[cfg(not(unix))]
    meta.permissions().readonly().then(|| {
        format!("is {what}, so it is not replaced; make it writable or choose another path")
    })
}

/// Gives the new temporary `file` of `path` the permission bits of the file it replaces
/// (`fchmod`, which the umask does not touch).
fn keep_permissions(
    path: &Path,
    file: &File,
    replaced: Option<fs::Permissions>,
) -> Result<(), AtomicWriteError> {
    match replaced {
        Some(permissions) => file.set_permissions(permissions).map_err(|e| {
            AtomicWriteError::new(path, "cannot give the new file the mode of the old", e)
        }),
        None => Ok(()),
    }
}

/// A new temporary file beside `path`, created exclusively: a name that exists — whatever it
/// is, a symbolic link planted at a predictable name included — is never opened (which would
/// truncate the file a link points to, outside the output), but skipped for the next serial.
fn create_temp(path: &Path) -> Result<(PathBuf, File, SiblingInUse), AtomicWriteError> {
    const TRIES: usize = 1000;
    let mut last = None;
    for _ in 0..TRIES {
        let temp = temp_path(path)?;
        let in_use = SiblingInUse::claim(&temp);
        match create(&temp) {
            Ok(file) => return Ok((temp, file, in_use)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some((temp, e)),
            Err(e) => {
                return Err(AtomicWriteError::new(
                    path,
                    format!("cannot create {}", temp.display()),
                    e,
                ))
            }
        }
    }
    let (temp, e) = last.expect("TRIES > 0");
    Err(AtomicWriteError::new(
        path,
        format!(
            "cannot create a temporary file beside it ({TRIES} names taken, the last {})",
            temp.display()
        ),
        e,
    ))
}

/// Removes the temporary files of `path` left by writers that died before renaming them (a
/// kill during a write): `.NAME.tmp-PID-N` in `path`'s folder that [`dead_writers_siblings`]
/// lists (while this process holds `path`'s lock, all but its own in use; else those whose
/// process `PID` is no longer alive). No other file is touched, and no folder or link.
/// Best effort: a file that cannot be removed is left in place. Returns the files removed.
pub fn remove_stale_temps(path: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for entry in dead_writers_siblings(path, "tmp") {
        // Only plain files (a link is not followed): a temporary file is never anything else.
        let plain = fs::symlink_metadata(&entry).is_ok_and(|m| m.file_type().is_file());
        if plain && fs::remove_file(&entry).is_ok() {
            removed.push(entry);
        }
    }
    removed
}

/// The siblings `.NAME.TAG-PID-N` of `path` (NAME its file name) that a writer killed part-way
/// left beside `path` (a temporary file or folder, or the old folder it had moved aside). Those
/// this process is using ([`SiblingInUse`]) are never listed. Of the others:
/// - while this process holds `path`'s lock ([`crate::FileLock::held_here`]), every one: each
///   writer of `path` holds that lock while it writes, so no other is writing now, and a
///   writer's process id tells nothing where ids repeat (a container's stage is PID 1 on every
///   run: the id of a killed writer's leftovers is then this process's, or another live
///   process's);
/// - else those whose process `PID` is no longer alive (Unix: `kill(PID, 0)`), this process's
///   never; elsewhere than Unix, none.
pub fn dead_writers_siblings(path: &Path, tag: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let locked_here = crate::FileLock::held_here(path);
    if !locked_here && !cfg!(unix) {
        return found;
    }
    let Some(name) = path.file_name() else {
        return found;
    };
    let prefix = sibling_name(name, tag, "");
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    let Ok(entries) = fs::read_dir(folder) else {
        return found;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let entry_name = entry.file_name();
        let Some(rest) = entry_name
            .as_encoded_bytes()
            .strip_prefix(prefix.as_encoded_bytes())
        else {
            continue;
        };
        let Some(pid) = std::str::from_utf8(rest).ok().and_then(temp_pid) else {
            continue;
        };
        if in_use().contains(&entry_name) {
            continue;
        }
        if !locked_here && (pid == own || process_alive(pid)) {
            continue;
        }
        found.push(entry.path());
    }
    found.sort();
    found
}

/// Whether process `pid` is alive: `kill(pid, 0)` succeeds, or is refused for permission (a
/// process of another user is alive all the same, though a `/proc` mounted with `hidepid`
/// hides it: looked up there, its temporary file was taken for a dead writer's and removed
/// under it). A number no process can have is no live writer.
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 (and negative numbers) name process groups to kill(), not a process.
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Elsewhere no process is looked up, and [`dead_writers_siblings`] lists none.
#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// The process id in the `PID-N` tail of a temporary file's name, when it is exactly that.
fn temp_pid(tail: &str) -> Option<u32> {
    let (pid, serial) = tail.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(serial) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the file `path` if it is there (a missing file is not an error). For a stage that
/// writes two files: removing the earlier run's last file before writing the first means that
/// a run stopped between the two leaves one file missing, never two that disagree.
pub fn remove_file_if_there(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// [`atomic_write`] of a byte string.
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    atomic_write(path, |file| {
        std::io::Write::write_all(file, bytes)?;
        Ok(())
    })
}

fn create(temp: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    // O_CREAT | O_EXCL: fails on any existing name, and follows no symbolic link.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options.open(temp)
}

#[cfg(test)]
mod tests {
    /// A process is alive by `kill(pid, 0)`, a process of another user too (EPERM; `/proc`
    /// with `hidepid` hides it), and a reaped child is not.
    #[cfg(unix)]
    #[test]
    fn live_processes_are_told_from_dead_ones() {
        assert!(super::process_alive(std::process::id()));
        // init, another user's process for anyone but root: alive either way.
        assert!(super::process_alive(1));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!super::process_alive(pid));
        assert!(!super::process_alive(0));
        assert!(!super::process_alive(u32::MAX));
    }
    use super::*;

    #[test]
    fn a_file_is_removed_if_there_and_a_missing_one_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        remove_file_if_there(&path).expect("a missing file is not an error");
        fs::write(&path, b"{}").unwrap();
        remove_file_if_there(&path).unwrap();
        assert!(!path.exists());
        fs::create_dir(&path).unwrap();
        assert!(
            remove_file_if_there(&path).is_err(),
            "a folder is not removed"
        );
        assert!(path.is_dir());
    }

    /// The probe of an output's temporary names is as long on every run, and at least as long
    /// as the name of any writer's temporary file (the widest process id, a serial under a
    /// million); it still names this process as its writer.
    #[test]
    fn the_longest_sibling_name_does_not_depend_on_the_process_id() {
        let name = OsStr::new("plan.parquet");
        let probe = longest_sibling_name(name, 3);
        assert_eq!(
            probe.len(),
            ".plan.parquet.tmp-".len() + LONGEST_PID_DIGITS + 1 + LONGEST_SERIAL_DIGITS
        );
        let widest = sibling_name(name, "tmp", &format!("{}-{}", u32::MAX, 999_999));
        assert!(probe.len() >= widest.len());
        let tail = probe.to_str().unwrap().strip_prefix(".plan.parquet.tmp-");
        assert_eq!(tail.and_then(temp_pid), Some(std::process::id()));
    }

    #[test]
    fn only_pid_dash_serial_tails_name_a_process() {
        assert_eq!(temp_pid("123-4"), Some(123));
        assert_eq!(temp_pid("123-"), None);
        assert_eq!(temp_pid("x123-4"), None);
        assert_eq!(temp_pid("123-4.bak"), None);
        assert_eq!(temp_pid("99999999999-1"), None);
    }

    /// Links planted at the temporary names this process would take (a shared folder) are
    /// never written through: the file they point to keeps its bytes, the links stay links,
    /// and the output is a new regular file.
    #[cfg(unix)]
    #[test]
    fn links_at_the_temporary_names_are_skipped_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("out.parquet");
        let next = NEXT_TEMP.load(Ordering::Relaxed);
        let planted: Vec<PathBuf> = (next..next + 20)
            .map(|serial| {
                let link = dir
                    .path()
                    .join(format!(".out.parquet.tmp-{}-{serial}", std::process::id()));
                std::os::unix::fs::symlink(&victim, &link).unwrap();
                link
            })
            .collect();
        atomic_write_bytes(&path, b"PAR1").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "{meta:?}");
        assert_eq!(fs::read(&path).unwrap(), b"PAR1");
        for link in &planted {
            assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink());
        }
    }

    /// A staged write leaves the target as it was until its commit, under the one temporary
    /// name `atomic_write` gives (`.NAME.tmp-PID-N`, no longer than the check of names allows
    /// for), with the mode of the file it replaces; dropped uncommitted, it leaves nothing.
    #[cfg(unix)]
    #[test]
    fn a_staged_write_is_the_atomic_write_up_to_its_rename() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let listing = || {
            let mut names: Vec<OsString> = fs::read_dir(dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let (answer, staged) = atomic_write_staged(&path, |file| {
            std::io::Write::write_all(file, b"new")?;
            Ok(42)
        })
        .unwrap();
        assert_eq!(answer, 42);
        assert_eq!(staged.path(), path);
        assert_eq!(fs::read(&path).unwrap(), b"old");
        let temp = staged.temp().file_name().unwrap().to_os_string();
        let tail = temp
            .to_str()
            .unwrap()
            .strip_prefix(".out.json.tmp-")
            .unwrap();
        assert_eq!(temp_pid(tail), Some(std::process::id()));
        assert!(temp.len() <= longest_sibling_name(OsStr::new("out.json"), 0).len());
        assert_eq!(listing(), vec![temp, OsString::from("out.json")]);
        assert_eq!(fs::read(staged.temp()).unwrap(), b"new");
        let mode = fs::metadata(staged.temp()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        staged.commit().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(listing(), vec![OsString::from("out.json")]);

        let (_, dropped) = atomic_write_staged(&path, |file| {
            std::io::Write::write_all(file, b"never")?;
            Ok(())
        })
        .unwrap();
        drop(dropped);
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(listing(), vec![OsString::from("out.json")]);
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let error = atomic_write(Path::new("/"), |_| Ok(())).unwrap_err();
        assert!(error.to_string().contains("no file name"), "{error}");
    }
}
