//! `contain_panic` keeps a contained panic off stderr, and leaves every other panic loud. The
//! test runs this test binary again as a child (libtest's capture would hide what the panic
//! hook prints) and reads the child's stderr.

use layerprune_core::contain_panic;
use std::process::Command;

const CHILD: &str = "LAYERPRUNE_CONTAINED_CHILD";

/// In the child: one contained panic, then (when asked) one that is not contained.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let caught = contain_panic(|| -> u8 { panic!("decoder tripped") });
    eprintln!("caught: {caught:?}");
    if mode == "loud" {
        let _ = std::thread::spawn(|| panic!("not contained")).join();
    }
}

fn child_stderr(mode: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
        .env(CHILD, mode)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_contained_panic_prints_nothing_and_others_still_print() {
    let quiet = child_stderr("quiet");
    assert!(
        quiet.contains("caught: Err(\"decoder tripped\")"),
        "{quiet}"
    );
    assert!(!quiet.contains("panicked at"), "{quiet}");

    let loud = child_stderr("loud");
    // One panic message, the uncontained one's.
    assert_eq!(loud.matches("panicked at").count(), 1, "{loud}");
    assert!(loud.contains("not contained"), "{loud}");
}
