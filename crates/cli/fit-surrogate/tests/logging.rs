//! Log lines on stderr: levels filtered by `RUST_LOG`, JSON with `LAYERPRUNE_LOG=json`, and
//! stdout (the metrics table) the same whatever the logging.

use std::path::Path;
use std::process::{Command, Output};

mod common;

const NUM_BLOCKS: usize = 5;

/// Every mask of 5 blocks; the empty mask's utility is NaN, so a warning is logged.
fn write_table(path: &Path) {
    common::write_every_mask_table(path, NUM_BLOCKS, 2.0, 100, |mask| {
        2.0 + 0.1 * mask.num_removed() as f64
    });
}

/// Fits an MLP (2 folds, 5 epochs) with the given logging environment, to a new `out`.
fn fit(folder: &Path, out: &str, env: &[(&str, &str)]) -> Output {
    let evaluations = folder.join("evals.parquet");
    if !evaluations.exists() {
        write_table(&evaluations);
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_fit-surrogate"));
    command
        .args(["--evaluations", evaluations.to_str().unwrap()])
        .args([
            "--model", "mlp", "--epochs", "5", "--folds", "2", "--seed", "1",
        ])
        .args(["--out", folder.join(out).to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("LAYERPRUNE_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn rust_log_warn_drops_info_lines_and_leaves_stdout_alone() {
    let folder = tempfile::tempdir().unwrap();
    let default = fit(folder.path(), "a.json", &[]);
    let stderr = text(&default.stderr);
    assert!(stderr.contains("saved the mlp surrogate"), "{stderr}");
    assert!(stderr.contains("mlp: trained 5 epochs"), "{stderr}");
    assert!(stderr.contains("dropped 1 of 32 rows"), "{stderr}");
    assert!(
        !stderr.contains("mlp: epoch"),
        "debug lines are off by default: {stderr}"
    );

    let warn = fit(folder.path(), "b.json", &[("RUST_LOG", "warn")]);
    let quiet = text(&warn.stderr);
    assert!(!quiet.contains("saved the"), "{quiet}");
    assert!(!quiet.contains("mlp: trained"), "{quiet}");
    assert!(
        quiet.contains("dropped 1 of 32 rows"),
        "warnings stay: {quiet}"
    );
    assert_eq!(text(&warn.stdout), text(&default.stdout));
    assert!(text(&default.stdout).contains("mean"));

    let debug = fit(
        folder.path(),
        "c.json",
        &[("RUST_LOG", "info,layerprune_surrogate=debug")],
    );
    let detailed = text(&debug.stderr);
    assert!(detailed.contains("mlp: epoch 5/5"), "{detailed}");
    assert!(detailed.contains("saved the mlp surrogate"), "{detailed}");
    assert_eq!(text(&debug.stdout), text(&default.stdout));
}

#[test]
fn layerprune_log_json_writes_one_object_per_line() {
    let folder = tempfile::tempdir().unwrap();
    let plain = fit(folder.path(), "a.json", &[]);
    let json = fit(folder.path(), "b.json", &[("LAYERPRUNE_LOG", "json")]);
    assert_eq!(text(&json.stdout), text(&plain.stdout));
    let stderr = text(&json.stderr);
    let mut levels = Vec::new();
    for line in stderr.lines() {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{stderr}"));
        let level = object["level"].as_str().expect("a level field").to_string();
        let message = object["fields"]["message"].as_str().unwrap_or_default();
        if message.contains("dropped 1 of 32 rows") {
            assert_eq!(level, "WARN");
        }
        if message.contains("saved the mlp surrogate") {
            assert_eq!(level, "INFO");
        }
        levels.push(level);
    }
    assert!(levels.iter().any(|l| l == "WARN"), "{stderr}");
    assert!(levels.iter().any(|l| l == "INFO"), "{stderr}");
}

#[test]
fn errors_at_exit_are_plain_text_whatever_the_log_format() {
    let output = Command::new(env!("CARGO_BIN_EXE_fit-surrogate"))
        .args(["--evaluations", "/no/such/evals.parquet"])
        .env("LAYERPRUNE_LOG", "json")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("fit-surrogate: error: ") && stderr.contains("/no/such/evals.parquet"),
        "{stderr}"
    );
}

/// A finished shard's table is complete but holds only its shard's masks: fitting on it says so.
#[test]
fn a_shards_table_is_named_as_part_of_the_masks() {
    use layerprune_tables::{input_role, read_evaluations, write_evaluations, Provenance};
    let folder = tempfile::tempdir().unwrap();
    let whole = fit(folder.path(), "whole.json", &[]);
    assert!(!text(&whole.stderr).contains("the masks of shard"));
    let evaluations = folder.path().join("evals.parquet");
    let table = read_evaluations(&evaluations).unwrap();
    let provenance = Provenance::new("evaluate", "0", vec![]).with_input(input_role::SHARD, "1/2");
    write_evaluations(&evaluations, &table, &provenance).unwrap();
    let shard = fit(folder.path(), "shard.json", &[]);
    let stderr = text(&shard.stderr);
    assert!(
        stderr.contains("the masks of shard 1/2 only (32 rows)") && stderr.contains("--merge"),
        "{stderr}"
    );
}
