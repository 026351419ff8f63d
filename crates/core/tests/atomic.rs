//! The atomic writer: the mode of what it writes, and what a failure leaves behind.
//!
//! A test binary of its own, because the mode test sets the process's umask.

use std::fs;
use std::io::Write;

use layerprune_core::atomic_write;

/// A new file is 0644 less the umask, never a temporary's 0600; a file replaced keeps its own
/// permission bits, whatever the umask (until 2026-12-07 a private 0600 output became a
/// world-readable 0644 one on a rerun, and a 0640 group file lost its group's read).
#[cfg(unix)]
#[test]
fn new_files_are_written_0644_and_a_replaced_file_keeps_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let private = dir.path().join("private.json");
    fs::write(&private, b"old").unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o600)).unwrap();
    let shared = dir.path().join("shared.json");
    fs::write(&shared, b"old").unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o664)).unwrap();
    // SAFETY: umask only changes the process's file creation mask; this binary's other tests
    // only assert on contents and folder listings.
    let previous = unsafe { libc::umask(0o022) };
    let fresh = atomic_write(&path, |file| Ok(file.write_all(b"new")?));
    let replaced_private = atomic_write(&private, |file| Ok(file.write_all(b"new")?));
    let replaced_shared = atomic_write(&shared, |file| Ok(file.write_all(b"new")?));
    unsafe { libc::umask(previous) };
    fresh.unwrap();
    replaced_private.unwrap();
    replaced_shared.unwrap();
    for (file, wanted) in [(&path, 0o644), (&private, 0o600), (&shared, 0o664)] {
        let mode = fs::metadata(file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, wanted, "{}: mode {mode:o}", file.display());
        assert_eq!(fs::read(file).unwrap(), b"new");
    }
}

/// A file its owner may not write (made read-only with `chmod a-w`) is refused, named, with a
/// way out, and kept as it was, as `File::create` or a shell redirect would refuse it (until
/// 2026-12-07 it was replaced by a writable 0644 file). Judged by the mode bits, so the same
/// for root, who may write any file.
#[cfg(unix)]
#[test]
fn a_read_only_file_is_refused_not_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scores.parquet");
    fs::write(&path, b"kept").unwrap();
    for mode in [0o444, 0o400, 0o040] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let error = atomic_write(&path, |file| Ok(file.write_all(b"new")?)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(&format!("is read-only (mode {mode:04o})"))
                && message.contains("chmod u+w"),
            "{message}"
        );
        assert!(layerprune_core::refuse_read_only(&path).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"kept");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            mode
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "left a file");
    }
    // Writable by its owner again: replaced, keeping its mode.
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    layerprune_core::refuse_read_only(&path).unwrap();
    atomic_write(&path, |file| Ok(file.write_all(b"new")?)).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    // Nothing there, or a folder: nothing to refuse.
    layerprune_core::refuse_read_only(&dir.path().join("missing")).unwrap();
    layerprune_core::refuse_read_only(dir.path()).unwrap();
}

#[test]
fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let error = atomic_write(&path, |file| -> Result<(), _> {
        file.write_all(b"{\"half\": ")?;
        Err("the writer gave up".into())
    })
    .unwrap_err();
    assert_eq!(error.path, path);
    assert_eq!(error.message(), "writing failed: the writer gave up");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

    atomic_write(&path, |file| Ok(file.write_all(b"old")?)).unwrap();
    atomic_write(&path, |file| -> Result<(), _> {
        file.write_all(b"new but broken")?;
        Err("no".into())
    })
    .unwrap_err();
    assert_eq!(fs::read(&path).unwrap(), b"old");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.json")]);

    let value = atomic_write(&path, |file| {
        file.write_all(b"new")?;
        Ok(42)
    })
    .unwrap();
    assert_eq!(value, 42);
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn a_missing_folder_fails_without_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("out.json");
    let error = atomic_write(&path, |_| Ok(())).unwrap_err();
    assert_eq!(error.path, path);
    assert!(error.step.starts_with("cannot create"), "{error}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A process id that is no longer alive: a child that has exited and been reaped.
#[cfg(target_os = "linux")]
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[cfg(target_os = "linux")]
#[test]
fn the_next_write_removes_temporary_files_of_dead_writers_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    let dead = dead_pid();
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let own = std::process::id();
    let stale = [
        format!(".out.json.tmp-{dead}-0"),
        format!(".out.json.tmp-{dead}-17"),
    ];
    let kept = [
        // A live process's (another's and this one's) temporary files.
        format!(".out.json.tmp-{}-0", live.id()),
        format!(".out.json.tmp-{own}-999"),
        // Another output's temporary file, and names that only look alike.
        format!(".other.json.tmp-{dead}-0"),
        format!(".out.json.tmp-{dead}-0.bak"),
        ".out.json.tmp-x-1".to_string(),
        format!("out.json.tmp-{dead}-0"),
    ];
    for name in stale.iter().chain(&kept) {
        fs::write(dir.path().join(name), b"half").unwrap();
    }
    atomic_write(&path, |file| Ok(file.write_all(b"new")?)).unwrap();
    live.kill().unwrap();
    live.wait().unwrap();

    assert_eq!(fs::read(&path).unwrap(), b"new");
    for name in &stale {
        assert!(!dir.path().join(name).exists(), "{name} survived");
    }
    for name in &kept {
        assert_eq!(fs::read(dir.path().join(name)).unwrap(), b"half", "{name}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn remove_stale_temps_never_touches_a_folder_or_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let dead = dead_pid();
    let folder = dir.path().join(format!(".t.parquet.tmp-{dead}-0"));
    fs::create_dir(&folder).unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"keep").unwrap();
    let link = dir.path().join(format!(".t.parquet.tmp-{dead}-1"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let removed = layerprune_core::atomic::remove_stale_temps(&path);
    assert!(removed.is_empty(), "{removed:?}");
    assert!(folder.is_dir());
    assert_eq!(fs::read(&link).unwrap(), b"keep");
}

/// Two outputs whose names differ only in bytes that are not UTF-8 have temporary files of
/// their own: a write of one never removes the other's dead writer's file (a lossy conversion
/// of the names once made them one prefix).
#[cfg(target_os = "linux")]
#[test]
fn names_that_are_not_utf8_keep_their_own_temporary_files() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_pid();
    let ours = dir.path().join(OsStr::from_bytes(b"out\xff.json"));
    let theirs_temp = dir.path().join(OsStr::from_bytes(
        &[
            b".out\xfe.json.tmp-".as_slice(),
            dead.to_string().as_bytes(),
            b"-0",
        ]
        .concat(),
    ));
    let ours_temp = dir.path().join(OsStr::from_bytes(
        &[
            b".out\xff.json.tmp-".as_slice(),
            dead.to_string().as_bytes(),
            b"-0",
        ]
        .concat(),
    ));
    fs::write(&theirs_temp, b"half").unwrap();
    fs::write(&ours_temp, b"half").unwrap();
    assert_eq!(
        layerprune_core::dead_writers_siblings(&ours, "tmp"),
        vec![ours_temp.clone()]
    );
    atomic_write(&ours, |file| Ok(file.write_all(b"new")?)).unwrap();
    assert_eq!(fs::read(&ours).unwrap(), b"new");
    assert!(!ours_temp.exists());
    assert_eq!(fs::read(&theirs_temp).unwrap(), b"half");
    // The sibling's name keeps the bytes.
    assert_eq!(
        layerprune_core::sibling_name(OsStr::from_bytes(b"m\xfe"), "old", "1-2").as_bytes(),
        b".m\xfe.old-1-2"
    );
}

/// While this process holds the output's lock, no other run is writing it, so every temporary
/// file beside it is a killed writer's whatever its process id: one of PID 1 (a container's
/// stage, killed on an earlier run), one of this process's own id (the same, when this run is
/// PID 1 too) and one of a live process (an id since taken by another process) are removed.
/// What this process is using is kept: a file kept aside for putting back (`KeptAside`, as
/// `apply-prune` keeps its plan table while it writes the folder) and a claimed sibling.
/// Without the lock the process ids decide, as before: only dead processes' files go.
#[cfg(target_os = "linux")]
#[test]
fn under_the_lock_every_writers_temporary_files_go_but_this_processs_in_use() {
    use layerprune_core::{FileLock, KeptAside, PutBack, SiblingInUse};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.json");
    fs::write(&path, b"earlier").unwrap();
    let own = std::process::id();
    let mut live = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let leftovers = [
        ".held.json.tmp-1-0".to_string(),
        format!(".held.json.tmp-{own}-990"),
        format!(".held.json.tmp-{}-0", live.id()),
    ];
    let plant = || {
        for name in &leftovers {
            fs::write(dir.path().join(name), b"half").unwrap();
        }
    };
    plant();
    // Without the lock: live ids (PID 1, this process, the sleeper) are left alone.
    atomic_write(&path, |file| Ok(file.write_all(b"unlocked")?)).unwrap();
    for name in &leftovers {
        assert!(
            dir.path().join(name).exists(),
            "{name} removed without the lock"
        );
    }

    let lock = FileLock::try_acquire(&path).unwrap();
    assert!(FileLock::held_here(&path));
    let claimed = dir.path().join(format!(".held.json.tmp-{own}-991"));
    let claim = SiblingInUse::claim(&claimed);
    fs::write(&claimed, b"being written").unwrap();
    let kept = KeptAside::keep(&path).unwrap();
    atomic_write(&path, |file| Ok(file.write_all(b"new")?)).unwrap();
    live.kill().unwrap();
    live.wait().unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    for name in &leftovers {
        assert!(
            !dir.path().join(name).exists(),
            "{name} survived under the lock"
        );
    }
    assert_eq!(fs::read(&claimed).unwrap(), b"being written");
    assert_eq!(kept.put_back().unwrap(), PutBack::Restored);
    assert_eq!(fs::read(&path).unwrap(), b"unlocked");
    drop(claim);
    drop(lock);
    assert!(!FileLock::held_here(&path));
    // The claim gone and the lock released: this process's id is spared again, by the id rule.
    atomic_write(&path, |file| Ok(file.write_all(b"after")?)).unwrap();
    assert_eq!(fs::read(&claimed).unwrap(), b"being written");
    fs::remove_file(&claimed).unwrap();
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["held.json"]);
}
