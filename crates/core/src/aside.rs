//! A file kept aside while a stage replaces it, to be put back if what the stage writes after
//! it fails: for a stage that writes two outputs (`apply-prune --out` and `--pruned-out`), so
//! that a run failing on the second leaves the first as it found it, not the failed run's.
//!
//! The copy aside is a hard link beside the file (or, where the file system has none, a copy
//! with its permissions and times, which Make compares), named as a temporary file of this
//! process ([`crate::sibling_name`]), so one left by a run killed part-way is removed by the
//! next write of the file ([`crate::atomic::remove_stale_temps`]).

use std::fs::{self, Metadata, OpenOptions};
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// The file at `path` before a stage replaces it (or that there was none).
#[derive(Debug)]
pub struct KeptAside {
    path: PathBuf,
    /// `None`: there was no file.
    aside: Option<PathBuf>,
    /// The copy aside is this process's while kept: the stage holds the file's lock, under
    /// which every other sibling of it is taken for a dead writer's and removed by its next
    /// write (the one this copy is kept for).
    _in_use: Option<crate::SiblingInUse>,
}

/// What [`KeptAside::put_back`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutBack {
    /// The earlier file is back at its path.
    Restored,
    /// The earlier file was never replaced (the write failed before its rename): it is at its
    /// path as it was, and the copy aside is removed.
    Untouched,
    /// There was none: the one written since is removed.
    Removed,
}

impl KeptAside {
    /// Keeps the file at `path` aside (nothing to keep where there is none).
    pub fn keep(path: &Path) -> io::Result<KeptAside> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == ErrorKind::NotFound => {
                return Ok(KeptAside {
                    path: path.to_path_buf(),
                    aside: None,
                    _in_use: None,
                })
            }
            Err(error) => return Err(error),
        };
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "not a file name"))?;
        for serial in 0..1000 {
            let aside = path.with_file_name(crate::sibling_name(
                name,
                "tmp",
                &format!("{}-{serial}", std::process::id()),
            ));
            let in_use = crate::SiblingInUse::claim(&aside);
            let kept = fs::hard_link(path, &aside).or_else(|error| match error.kind() {
                ErrorKind::AlreadyExists => Err(error),
                _ => copy_with_times(path, &aside, &meta),
            });
            match kept {
                Ok(()) => {
                    return Ok(KeptAside {
                        path: path.to_path_buf(),
                        aside: Some(aside),
                        _in_use: Some(in_use),
                    })
                }
                Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
        Err(io::Error::new(
            ErrorKind::AlreadyExists,
            "every name tried for the copy aside was taken",
        ))
    }

    /// After a failure: the earlier file back at its path, or the one written since removed.
    /// The error says where the earlier file is still kept, if anywhere.
    pub fn put_back(self) -> io::Result<PutBack> {
        match &self.aside {
            // Still the file kept aside (a hard link to it): a rename between two links of one
            // file does nothing (rename(2)), and would leave the aside beside it.
            Some(aside) if same_file(aside, &self.path) => {
                fs::remove_file(aside).map(|()| PutBack::Untouched)
            }
            Some(aside) => fs::rename(aside, &self.path)
                .map(|()| PutBack::Restored)
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!(
                            "cannot put back the earlier file ({error}); it is kept as {}, which \
                             the next write of {} deletes: move it elsewhere now to keep it",
                            aside.display(),
                            self.path.display()
                        ),
                    )
                }),
            None => crate::remove_file_if_there(&self.path).map(|()| PutBack::Removed),
        }
    }

    /// After success: the earlier file is no longer needed.
    pub fn discard(self) {
        if let Some(aside) = &self.aside {
            let _ = fs::remove_file(aside);
        }
    }
}

/// Whether `a` and `b` are links to one file (same device and inode; never where either is
/// missing). Elsewhere than Unix, never: the aside is then put back by a rename.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// `from` copied to the new file `to` (never one already there), with `meta`'s permissions and
/// times.
fn copy_with_times(from: &Path, to: &Path, meta: &Metadata) -> io::Result<()> {
    let mut source = crate::open_input(from)?;
    let mut copy = OpenOptions::new().write(true).create_new(true).open(to)?;
    let copied = io::copy(&mut source, &mut copy)
        .and_then(|_| copy.set_permissions(meta.permissions()))
        .and_then(|()| {
            let mut times = fs::FileTimes::new().set_modified(meta.modified()?);
            if let Ok(accessed) = meta.accessed() {
                times = times.set_accessed(accessed);
            }
            copy.set_times(times)
        })
        .and_then(|()| copy.sync_all());
    if copied.is_err() {
        let _ = fs::remove_file(to);
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the file system has no hard links, the earlier file is kept as a copy that puts
    /// back its bytes, permissions and time; a name already taken is never written.
    #[test]
    fn a_copy_aside_keeps_the_bytes_permissions_and_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plan = dir.path().join("plan.parquet");
        fs::write(&plan, b"the earlier plan").unwrap();
        fs::set_permissions(&plan, fs::Permissions::from_mode(0o640)).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(&plan)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let meta = fs::metadata(&plan).unwrap();
        let aside = dir.path().join(".plan.parquet.tmp-1-0");
        copy_with_times(&plan, &aside, &meta).unwrap();
        let copied = fs::metadata(&aside).unwrap();
        assert_eq!(fs::read(&aside).unwrap(), b"the earlier plan");
        assert_eq!(copied.permissions().mode() & 0o777, 0o640);
        assert_eq!(copied.modified().unwrap(), old);
        let error = copy_with_times(&plan, &aside, &meta).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&aside).unwrap(), b"the earlier plan");
    }

    /// Kept, replaced and put back: the earlier bytes and time; never replaced (the write
    /// failed), the file as it was and nothing beside it; with none before, the file written
    /// since is removed; discarded after success, nothing is left beside the file.
    #[test]
    fn a_file_kept_aside_is_put_back_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.parquet");
        fs::write(&path, b"earlier").unwrap();
        let time = fs::metadata(&path).unwrap().modified().unwrap();
        let kept = KeptAside::keep(&path).unwrap();
        crate::atomic_write_bytes(&path, b"this run's").unwrap();
        assert_eq!(kept.put_back().unwrap(), PutBack::Restored);
        assert_eq!(fs::read(&path).unwrap(), b"earlier");
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), time);

        let kept = KeptAside::keep(&path).unwrap();
        crate::atomic_write_bytes(&path, b"this run's").unwrap();
        kept.discard();
        assert_eq!(fs::read(&path).unwrap(), b"this run's");

        // The write failed before its rename: the file was never replaced, and the aside (a
        // hard link to it, which a rename onto it would leave) is removed.
        let kept = KeptAside::keep(&path).unwrap();
        crate::atomic_write(
            &path,
            |_| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
                Err("a full disk".into())
            },
        )
        .unwrap_err();
        assert_eq!(kept.put_back().unwrap(), PutBack::Untouched);
        assert_eq!(fs::read(&path).unwrap(), b"this run's");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "left a file beside it"
        );

        fs::remove_file(&path).unwrap();
        let kept = KeptAside::keep(&path).unwrap();
        crate::atomic_write_bytes(&path, b"this run's").unwrap();
        assert_eq!(kept.put_back().unwrap(), PutBack::Removed);
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "left a file beside it"
        );
    }
}
