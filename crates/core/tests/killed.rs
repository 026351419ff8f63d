//! What a run killed with SIGKILL leaves, and what the next run makes of it: a writer killed
//! part-way through [`atomic_write`] leaves the old file whole (its temporary file is removed by
//! the next write), and a lock whose holder was killed is taken over, while a live holder's is
//! refused or waited for.
//!
//! The killed runs are this test binary run again as a child (`child_process`, which does
//! nothing unless `KILLED_CHILD` names a part), so that the kill is of a real process.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use layerprune_core::{atomic_write, FileLock, LockError};

/// The child's part: `lock` takes the lock of `KILLED_PATH` and holds it; `write` writes
/// `KILLED_PATH` atomically without end. Each says `ready` once it is in the middle of it.
#[test]
fn child_process() {
    let Ok(part) = std::env::var("KILLED_CHILD") else {
        return;
    };
    let path = std::path::PathBuf::from(std::env::var("KILLED_PATH").unwrap());
    match part.as_str() {
        "lock" => {
            let _lock = FileLock::try_acquire(&path).unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            // Killed long before; bounded so that a failed test leaves no process for long.
            std::thread::sleep(Duration::from_secs(120));
        }
        "write" => {
            let _ = atomic_write::<()>(&path, |file| loop {
                file.write_all(&[b'n'; 1 << 16])?;
                file.flush()?;
                println!("ready");
                std::io::stdout().flush()?;
                std::thread::sleep(Duration::from_millis(5));
            });
        }
        other => panic!("no part {other}"),
    }
}

/// This binary run as a child playing `part` on `path`, once it says it is ready.
fn child(part: &str, path: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILLED_CHILD", part)
        .env("KILLED_PATH", path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        // The harness may have written "test child_process ... " on the line first.
        lines.any(|line| line.unwrap().ends_with("ready")),
        "the child never got ready"
    );
    // Keep draining its output so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    child
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn a_writer_killed_part_way_leaves_the_old_file_and_the_next_write_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evaluations.parquet");
    std::fs::write(&path, b"old").unwrap();
    let writer = child("write", &path);
    let pid = writer.id();
    kill(writer);
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    let temp = dir.path().join(format!(".evaluations.parquet.tmp-{pid}-0"));
    assert!(
        std::fs::metadata(&temp).unwrap().len() >= 1 << 16,
        "the killed writer's partial file"
    );
    atomic_write(&path, |file| Ok(file.write_all(b"new")?)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["evaluations.parquet"]);
}

#[test]
fn a_live_holders_lock_is_refused_or_waited_for_and_a_killed_ones_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.parquet");
    let lock_path = FileLock::lock_path(&path);

    // Held by a live process: refused at once, naming the file.
    let holder = child("lock", &path);
    match FileLock::try_acquire(&path) {
        Err(LockError::Busy { path: busy, .. }) => assert_eq!(busy, path),
        other => panic!("expected Busy, got {other:?}"),
    }
    // Killed: its lock file stays, holding no lock, and is taken over.
    kill(holder);
    assert!(lock_path.exists());
    let lock = FileLock::try_acquire(&path).unwrap();
    assert!(lock.is_held());
    drop(lock);
    assert!(!lock_path.exists());

    // A waiting taker says so, waits while the holder lives, and takes the lock once it is
    // killed.
    let holder = child("lock", &path);
    let (taken_tx, taken_rx) = std::sync::mpsc::channel();
    let waiter_path = path.clone();
    let waiter = std::thread::spawn(move || {
        let mut told = false;
        let lock = FileLock::acquire_waiting(&waiter_path, &mut || told = true).unwrap();
        taken_tx.send(()).unwrap();
        (lock, told)
    });
    assert!(taken_rx.recv_timeout(Duration::from_millis(300)).is_err());
    kill(holder);
    taken_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let (lock, told) = waiter.join().unwrap();
    assert!(told && lock.is_held());
    drop(lock);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
