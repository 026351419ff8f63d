//! The atomic writer: the mode of what it writes, and what a failure leaves behind.
//!
//! A test binary of its own, because the mode test sets the process's umask.

use std::fs;
use std::io::Write;

use layerprune_core::atomic_write;

#[cfg(unix)]
#[test]
fn files_are_written_0644_under_umask_022_even_over_a_0600_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.json");
    // SAFETY: umask only changes the process's file creation mask; this binary's other tests
    // only assert on contents and folder listings.
    let previous = unsafe { libc::umask(0o022) };
    let fresh = atomic_write(&path, |file| Ok(file.write_all(b"new")?));
    // An earlier file of another mode (e.g. tempfile's 0600) is replaced with a 0644 one.
    let other = dir.path().join("private.json");
    fs::write(&other, b"old").unwrap();
    fs::set_permissions(&other, fs::Permissions::from_mode(0o600)).unwrap();
    let replaced = atomic_write(&other, |file| Ok(file.write_all(b"new")?));
    unsafe { libc::umask(previous) };
    fresh.unwrap();
    replaced.unwrap();
    for file in [&path, &other] {
        let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}: mode {mode:o}", file.display());
        assert_eq!(fs::read(file).unwrap(), b"new");
    }
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
