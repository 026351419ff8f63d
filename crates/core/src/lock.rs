//! One run at a time per resumable file: an exclusive lock held while a run reads, extends and
//! rewrites a table it resumes (`evaluate --out`, `apply-prune --cache`, `frontier`'s caches).
//!
//! Why: such a run reads the file once, keeps the rows in memory and rewrites the whole file
//! after every batch. Two runs on one file (`make -j` building two plans that share a cache, or a
//! run started twice by hand) would each rewrite it without the other's rows, and the slower
//! one's last write would drop what the other measured. The lock makes the second run wait for
//! the first (a cache, where waiting is what a parallel build wants and the wait costs nothing it
//! would not re-run) or refuse at once (an output, where a second writer is a mistake).
//!
//! The lock is an advisory `flock` on a hidden file beside the locked one, `.NAME.lock`, never on
//! the file itself: the atomic writer replaces that file by a rename, so a lock on it would lock
//! the inode that is about to be replaced. The lock file is removed when the lock is released;
//! one left by a killed run holds no lock (the kernel releases it with the process) and is
//! taken over by the next run, opened for reading where it cannot be opened for writing (a
//! killed run of another user left it: `flock` needs no more, but on NFS, where it is refused
//! and the run is told to remove it). Taking the lock checks that the lock file it locked is
//! still the one at its path, so a run that was waiting while the holder removed it never
//! shares the lock with a run that created a new one.
//!
//! A file system that takes no locks at all (NFS mounted without its lock daemon, some FUSE
//! file systems: `flock` fails with ENOLCK or "not supported") does not stop the run: it goes on
//! unguarded, with a warning that two runs on the file there must not overlap, as every run did
//! before these locks existed. Refusing would make the tool unusable on such a mount.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An exclusive lock on a file (see the module documentation), released when dropped.
#[derive(Debug)]
pub struct FileLock {
    lock_path: PathBuf,
    /// Holds the lock; closing it releases the lock.
    file: File,
    /// False where the file system takes no locks: the run goes on unguarded.
    held: bool,
    /// The lock file's identity while the lock is held, listed in [`HELD_HERE`].
    identity: Option<FileIdentity>,
}

/// A file's device and inode.
type FileIdentity = (u64, u64);

/// The lock files this process holds a lock on ([`FileLock::held_here`]).
static HELD_HERE: Mutex<Vec<FileIdentity>> = Mutex::new(Vec::new());

fn held_here() -> std::sync::MutexGuard<'static, Vec<FileIdentity>> {
    // A list of numbers is whole even if a thread panicked holding it.
    HELD_HERE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another handle in this one) holds it.
    #[error("{} is in use by another run (it holds {}); wait for that run to finish, or choose another file", .path.display(), .lock_path.display())]
    Busy { path: PathBuf, lock_path: PathBuf },
    #[error("{}: cannot lock {}: {source}", .path.display(), .lock_path.display())]
    Io {
        path: PathBuf,
        lock_path: PathBuf,
        source: io::Error,
    },
    /// A termination signal came while waiting ([`crate::interrupt`]).
    #[error("{}: {source} (while waiting for another run's lock)", .path.display())]
    Interrupted {
        path: PathBuf,
        source: crate::Interrupted,
    },
}

/// How often a run waiting for another run's lock asks for it again: a tenth of a second is
/// nothing beside the evaluation run it waits for.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl FileLock {
    /// The hidden lock file of `path`: `.NAME.lock` in the same folder.
    pub fn lock_path(path: &Path) -> PathBuf {
        // The name's bytes as they are: a lossy conversion would give two names that are not
        // UTF-8 (`a\xff`, `a\xfe`) one lock, so a run on one would refuse or wait for a run
        // on the other.
        let mut name = std::ffi::OsString::from(".");
        name.push(path.file_name().unwrap_or("file".as_ref()));
        name.push(".lock");
        path.with_file_name(name)
    }

    /// Takes the lock of `path` or fails at once with [`LockError::Busy`].
    pub fn try_acquire(path: &Path) -> Result<FileLock, LockError> {
        Self::acquire_with(path, None)
    }

    /// Takes the lock of `path`, waiting as long as another run holds it; `on_wait` is called
    /// once, before waiting, when it is held (to say what the run is waiting for).
    pub fn acquire_waiting(path: &Path, on_wait: &mut dyn FnMut()) -> Result<FileLock, LockError> {
        Self::acquire_with(path, Some(on_wait))
    }

    fn acquire_with(
        path: &Path,
        mut on_wait: Option<&mut dyn FnMut()>,
    ) -> Result<FileLock, LockError> {
        let lock_path = Self::lock_path(path);
        let io_error = |source| LockError::Io {
            path: path.to_path_buf(),
            lock_path: lock_path.clone(),
            source,
        };
        let mut told = false;
        loop {
            refuse_foreign(&lock_path).map_err(io_error)?;
            let (file, read_only) = open_lock_file(&lock_path).map_err(io_error)?;
            // On NFS `flock` is a POSIX lock, which an fd opened read-only cannot take
            // exclusively (EBADF): such a leftover is then refused as one not to be taken over.
            let unlockable = |error: io::Error| {
                io_error(if read_only {
                    read_only_lock_refused(error, &lock_path)
                } else {
                    error
                })
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => match on_wait.as_mut() {
                    None => {
                        return Err(LockError::Busy {
                            path: path.to_path_buf(),
                            lock_path,
                        })
                    }
                    Some(on_wait) => {
                        if !told {
                            on_wait();
                            told = true;
                        }
                        // Asked again and again, not a blocking `flock`: the kernel restarts
                        // that after a signal (SA_RESTART), so a stage stopping at its next
                        // batch would wait on for the other run (a second Ctrl-C was needed).
                        loop {
                            match file.try_lock() {
                                Ok(()) => break,
                                Err(TryLockError::WouldBlock) => {
                                    crate::interrupt::check().map_err(|source| {
                                        LockError::Interrupted {
                                            path: path.to_path_buf(),
                                            source,
                                        }
                                    })?;
                                    std::thread::sleep(LOCK_POLL);
                                }
                                Err(TryLockError::Error(error)) => return Err(unlockable(error)),
                            }
                        }
                    }
                },
                Err(TryLockError::Error(error)) if locks_unsupported(&error) => {
                    tracing::warn!(
                        "{}: the file system takes no locks ({error}); going on without one, so \
                         two runs on this file must not overlap",
                        path.display()
                    );
                    return Ok(FileLock {
                        lock_path,
                        file,
                        held: false,
                        identity: None,
                    });
                }
                Err(TryLockError::Error(error)) => return Err(unlockable(error)),
            }
            // The holder we waited for may have removed the file it locked (on release): then
            // this lock is on a file no other run will find, and the lock is taken again.
            if still_at_path(&file, &lock_path) {
                let identity = identity(&file);
                if let Some(identity) = identity {
                    held_here().push(identity);
                }
                return Ok(FileLock {
                    lock_path,
                    file,
                    held: true,
                    identity,
                });
            }
        }
    }
}

impl FileLock {
    /// Whether the lock is held; false where the file system takes no locks and the run goes
    /// on unguarded.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Whether this process holds the lock of `path` now (a [`FileLock`] of it, however the
    /// path was spelled, is alive here and holds its lock): then no other run is writing
    /// `path`, and what a writer of it left beside it was left by a run that has ended, whatever
    /// its process id (a container's stage is often PID 1 on every run, this one included).
    /// False where the file system takes no locks, and where files cannot be told apart by
    /// device and inode (not Unix).
    pub fn held_here(path: &Path) -> bool {
        let Some(identity) = fs::metadata(Self::lock_path(path))
            .ok()
            .and_then(|meta| metadata_identity(&meta))
        else {
            return false;
        };
        held_here().contains(&identity)
    }
}

#[cfg(unix)]
fn metadata_identity(meta: &fs::Metadata) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn metadata_identity(_meta: &fs::Metadata) -> Option<FileIdentity> {
    None
}

fn identity(file: &File) -> Option<FileIdentity> {
    metadata_identity(&file.metadata().ok()?)
}

/// Whether `flock` failed because the file system takes no locks at all (as opposed to a lock
/// that could not be taken): ENOLCK (NFS without its lock daemon) or "not supported".
fn locks_unsupported(error: &io::Error) -> bool {
    #[cfg(unix)]
    if error.raw_os_error() == Some(libc::ENOLCK) {
        return true;
    }
    error.kind() == io::ErrorKind::Unsupported
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Off the list before the file goes: a new lock file may get its inode.
        if let Some(identity) = self.identity {
            let mut held = held_here();
            if let Some(at) = held.iter().position(|h| *h == identity) {
                held.swap_remove(at);
            }
        }
        // Removed while still held, so no run can lock this file after it is gone and believe
        // it holds the lock; a run waiting on it sees it gone and locks a new one. Only if it
        // is still the file locked: whatever replaced it at that path is not ours to remove.
        if still_at_path(&self.file, &self.lock_path) {
            let _ = fs::remove_file(&self.lock_path);
        }
        if self.held {
            let _ = self.file.unlock();
        }
    }
}

/// Opens (creating it where missing) the lock file at `lock_path`. One that exists but cannot be
/// opened for writing — left by a killed run of another user (a `sudo` run, a teammate's in a
/// shared or sticky folder), or made read-only — is opened for reading: `flock` takes a lock on
/// a file opened read-only, and the run writes nothing into it, so such a leftover is taken
/// over as any other (it blocked the output with "Permission denied" until 2026-12-07). One that
/// cannot be opened at all is refused, saying whose it is and to remove it. Returns the file and
/// whether it was opened read-only.
fn open_lock_file(lock_path: &Path) -> io::Result<(File, bool)> {
    let error = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
    {
        Ok(file) => return Ok((file, false)),
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => error,
        Err(error) => return Err(error),
    };
    let Ok(meta) = fs::symlink_metadata(lock_path) else {
        // Not there: the folder refuses a new file, which the error says.
        return Err(error);
    };
    match File::open(lock_path) {
        Ok(file) => Ok((file, true)),
        Err(read_error) => Err(told_to_remove(
            error,
            lock_path,
            &meta,
            &format!("that this run can neither write nor read ({read_error})"),
        )),
    }
}

/// `error`, followed by [`remove_it`]'s words on the lock file at `lock_path`.
fn told_to_remove(
    error: io::Error,
    lock_path: &Path,
    meta: &fs::Metadata,
    what: &str,
) -> io::Error {
    io::Error::new(
        error.kind(),
        format!("{error}; {}", remove_it(lock_path, meta, what)),
    )
}

/// The refusal of a lock file this run opened read-only (it may not write it) and cannot lock
/// so (`error`: EBADF where `flock` is emulated by POSIX locks, on NFS): said as one that cannot
/// be opened, whose it is and to remove it, not as the bare "Bad file descriptor".
fn read_only_lock_refused(error: io::Error, lock_path: &Path) -> io::Error {
    let Ok(meta) = fs::symlink_metadata(lock_path) else {
        return error;
    };
    told_to_remove(
        error,
        lock_path,
        &meta,
        "that this run may not write, and cannot lock read-only here (NFS takes an exclusive \
         lock only on a file opened for writing)",
    )
}

/// "it is a lock file of user NAME (uid N) WHAT: if no run of its owner is writing the file
/// now, remove it (rm PATH)": a leftover lock file this run cannot take over.
fn remove_it(lock_path: &Path, meta: &fs::Metadata, what: &str) -> String {
    format!(
        "it is a lock file {}{what}: if no run of its owner is writing the file now, remove it \
         (rm {})",
        owner(meta),
        lock_path.display()
    )
}

/// "of user NAME (uid N) ", whose lock file `meta` is (Unix), for a refusal.
#[cfg(unix)]
fn owner(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = meta.uid();
    match user_name(uid) {
        Some(name) => format!("of user {name} (uid {uid}) "),
        None => format!("of uid {uid} "),
    }
}

#[cfg(not(unix))]
fn owner(_meta: &fs::Metadata) -> String {
    String::new()
}

/// The login name of `uid` from the password database, where it has one.
#[cfg(unix)]
fn user_name(uid: u32) -> Option<String> {
    let mut buffer = vec![0 as libc::c_char; 4096];
    // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r writes the entry's strings
    // into `buffer`, which outlives every read of them below.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let status = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if status != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points to a NUL-terminated string inside `buffer`.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Refuses to take as a lock file something at `lock_path` that no run made: a lock file is
/// an empty regular file (a run writes nothing into it), and the lock removes it when released.
fn refuse_foreign(lock_path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(lock_path) {
        Ok(meta) if !meta.is_file() || meta.len() > 0 => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is in the way: it is {}, where a lock file is empty; it is not removed (move \
                 it, or write to another file)",
                lock_path.display(),
                if meta.is_file() {
                    "a file with content".to_string()
                } else {
                    crate::file_kind(&meta).to_string()
                }
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(unix)]
fn still_at_path(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(at_path)) => held.dev() == at_path.dev() && held.ino() == at_path.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_at_path(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A lock is known to be held here while it is, under any spelling of the path, and no
    /// longer once dropped; another file's lock says nothing of it.
    #[cfg(unix)]
    #[test]
    fn a_lock_held_here_is_known_by_any_spelling_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let respelled = dir.path().join(".").join("t.parquet");
        assert!(!FileLock::held_here(&path));
        let lock = FileLock::try_acquire(&path).unwrap();
        assert!(FileLock::held_here(&path));
        assert!(FileLock::held_here(&respelled));
        let other = FileLock::try_acquire(&dir.path().join("u.parquet")).unwrap();
        drop(lock);
        assert!(!FileLock::held_here(&path));
        assert!(!FileLock::held_here(&respelled));
        // A new lock file at the path is not taken for the dropped lock's.
        fs::write(FileLock::lock_path(&path), b"").unwrap();
        assert!(!FileLock::held_here(&path));
        drop(other);
    }

    #[test]
    fn only_a_file_system_without_locks_lets_a_run_go_on_unguarded() {
        // ENOLCK: NFS mounted without its lock daemon; "not supported": some FUSE file systems.
        assert!(locks_unsupported(&io::Error::from_raw_os_error(
            libc::ENOLCK
        )));
        assert!(locks_unsupported(&io::Error::from_raw_os_error(
            libc::EOPNOTSUPP
        )));
        assert!(locks_unsupported(&io::Error::from(
            io::ErrorKind::Unsupported
        )));
        // A lock that could not be taken for another reason still stops the run.
        for errno in [libc::EACCES, libc::EBADF, libc::EINTR, libc::ENOSPC] {
            assert!(
                !locks_unsupported(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        // Where locks work, the lock is held.
        let dir = tempfile::tempdir().unwrap();
        let lock = FileLock::try_acquire(&dir.path().join("t.parquet")).unwrap();
        assert!(lock.is_held());
    }

    #[test]
    fn a_held_lock_refuses_a_second_taker_until_it_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evaluations.parquet");
        let held = FileLock::try_acquire(&path).unwrap();
        assert!(dir.path().join(".evaluations.parquet.lock").exists());
        match FileLock::try_acquire(&path) {
            Err(LockError::Busy { path: busy, .. }) => assert_eq!(busy, path),
            other => panic!("expected Busy, got {other:?}"),
        }
        // Another file's lock is independent.
        let other = FileLock::try_acquire(&dir.path().join("other.parquet")).unwrap();
        drop(held);
        // Released: the lock file is gone and the lock can be taken again.
        assert!(!dir.path().join(".evaluations.parquet.lock").exists());
        drop(FileLock::try_acquire(&path).unwrap());
        drop(other);
        // Nothing is left beside the files.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[cfg(unix)]
    #[test]
    fn files_whose_names_are_not_utf8_have_locks_of_their_own() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let first = dir
            .path()
            .join(OsStr::from_bytes(b"evaluations-\xff.parquet"));
        let second = dir
            .path()
            .join(OsStr::from_bytes(b"evaluations-\xfe.parquet"));
        assert_eq!(
            FileLock::lock_path(&first),
            dir.path()
                .join(OsStr::from_bytes(b".evaluations-\xff.parquet.lock"))
        );
        let held = FileLock::try_acquire(&first).unwrap();
        // Another file: not busy.
        let other = FileLock::try_acquire(&second).unwrap();
        drop((held, other));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_lock_file_left_by_a_killed_run_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        // What a killed holder leaves: the file, with no lock on it.
        fs::write(FileLock::lock_path(&path), b"").unwrap();
        let lock = FileLock::try_acquire(&path).unwrap();
        drop(lock);
        assert!(!FileLock::lock_path(&path).exists());
    }

    /// A lock file left by a killed run that this run may not open for writing (another user's,
    /// here one made read-only, which a user other than root cannot write either) is opened for
    /// reading and locked all the same: taken over, and a second taker refused while it is
    /// held. Root writes any file, so there the case is the process-level test's
    /// (tests/python/test_reliability.py, `test_a_lock_file_of_another_user_is_taken_over`).
    #[cfg(unix)]
    #[test]
    fn a_lock_file_this_run_cannot_write_is_locked_read_only() {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: geteuid only reads the process's effective user id.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("skipped: root may write a read-only file, so none is refused to it");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.parquet");
        let lock_path = FileLock::lock_path(&path);
        fs::write(&lock_path, b"").unwrap();
        fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o444)).unwrap();
        let lock = FileLock::try_acquire(&path).unwrap();
        assert!(lock.is_held());
        assert!(matches!(
            FileLock::try_acquire(&path),
            Err(LockError::Busy { .. })
        ));
        drop(lock);
        assert!(!lock_path.exists());
        // Neither writable nor readable: refused, saying whose it is and to remove it.
        fs::write(&lock_path, b"").unwrap();
        fs::set_permissions(&lock_path, fs::Permissions::from_mode(0o000)).unwrap();
        let error = FileLock::try_acquire(&path).unwrap_err().to_string();
        assert!(
            error.contains("a lock file of")
                && error.contains("uid")
                && error.contains(&format!("rm {}", lock_path.display())),
            "{error}"
        );
    }

    /// A lock file opened read-only that cannot be locked so (EBADF: `flock` on NFS, emulated by
    /// POSIX locks) is refused saying whose it is and to remove it, as one that cannot be
    /// opened, not with the bare "Bad file descriptor".
    #[cfg(unix)]
    #[test]
    fn a_read_only_lock_file_that_cannot_be_locked_is_named_to_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let lock_path = FileLock::lock_path(&dir.path().join("out.parquet"));
        fs::write(&lock_path, b"").unwrap();
        let error = read_only_lock_refused(io::Error::from_raw_os_error(libc::EBADF), &lock_path);
        let message = error.to_string();
        assert!(
            message.contains("Bad file descriptor")
                && message.contains("it is a lock file of")
                && message.contains("uid")
                && message.contains("cannot lock read-only here")
                && message.contains(&format!("rm {}", lock_path.display())),
            "{message}"
        );
    }

    #[test]
    fn a_file_no_run_made_is_never_taken_for_a_lock_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let lock_path = FileLock::lock_path(&path);
        // A user's file at the lock's name: refused, kept.
        fs::write(&lock_path, b"precious").unwrap();
        let error = FileLock::try_acquire(&path).unwrap_err().to_string();
        assert!(error.contains("is in the way"), "{error}");
        assert_eq!(fs::read(&lock_path).unwrap(), b"precious");
        fs::remove_file(&lock_path).unwrap();
        // A file that replaced the lock file while it was held (a rename onto its path) is not
        // removed with the lock.
        let lock = FileLock::try_acquire(&path).unwrap();
        let replacement = dir.path().join("written");
        fs::write(&replacement, b"a table").unwrap();
        fs::rename(&replacement, &lock_path).unwrap();
        drop(lock);
        assert_eq!(fs::read(&lock_path).unwrap(), b"a table");
    }

    #[test]
    fn a_waiting_taker_gets_the_lock_when_the_holder_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.parquet");
        let held = FileLock::try_acquire(&path).unwrap();
        let (waiting_tx, waiting_rx) = mpsc::channel();
        let (taken_tx, taken_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let waiter_path = path.clone();
        let waiter = std::thread::spawn(move || {
            let lock = FileLock::acquire_waiting(&waiter_path, &mut || {
                waiting_tx.send(()).unwrap();
            })
            .unwrap();
            taken_tx.send(()).unwrap();
            // Held until the main thread has checked that nobody else can take it.
            release_rx.recv().unwrap();
            drop(lock);
        });
        // It says it waits, and does not get the lock while it is held.
        waiting_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(taken_rx.recv_timeout(Duration::from_millis(200)).is_err());
        drop(held);
        taken_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        // The waiter holds the lock (on a new lock file, since the holder removed its own).
        assert!(matches!(
            FileLock::try_acquire(&path),
            Err(LockError::Busy { .. })
        ));
        release_tx.send(()).unwrap();
        waiter.join().unwrap();
        drop(FileLock::try_acquire(&path).unwrap());
    }

    /// A run waiting for another run's lock stops at the first termination signal (its stage
    /// then ends through its error path), not only at a second one.
    #[cfg(unix)]
    #[test]
    fn a_termination_signal_ends_the_wait_for_a_lock() {
        // In a child process: the handler is process-wide and the signal would reach the
        // test harness otherwise.
        if std::env::var_os("LAYERPRUNE_LOCK_SIGNAL_CHILD").is_some() {
            let folder = tempfile::tempdir().unwrap();
            let path = folder.path().join("cache.parquet");
            let _held = FileLock::try_acquire(&path).unwrap();
            crate::interrupt::catch_termination_signals();
            let waiting = |()| {
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(300));
                    // SAFETY: raising a signal at this process, whose handler only stores it.
                    unsafe { libc::raise(libc::SIGTERM) };
                });
            };
            let error = FileLock::acquire_waiting(&path, &mut || waiting(())).unwrap_err();
            assert!(
                matches!(&error, LockError::Interrupted { source, .. } if source.signal == libc::SIGTERM),
                "{error}"
            );
            assert!(error
                .to_string()
                .contains("while waiting for another run's lock"));
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::a_termination_signal_ends_the_wait_for_a_lock",
                "--test-threads",
                "1",
            ])
            .env("LAYERPRUNE_LOCK_SIGNAL_CHILD", "1")
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("still waiting for the lock 60 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
    }
}
