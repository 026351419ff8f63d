//! `evaluate --summary`: the keys it writes are the ones docs/formats.md documents ("The run
//! summary"), so that a key added or renamed in one place and not the other fails here, and
//! what they say of a CPU run of the committed tiny model.

use std::collections::BTreeSet;
use std::process::Command;

/// The names in backticks in the first column of the table under `## The run summary` in
/// docs/formats.md.
fn documented_keys() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../docs/formats.md");
    let formats = std::fs::read_to_string(path).expect("docs/formats.md");
    let start = formats
        .find("## The run summary")
        .expect("docs/formats.md has a section on the run summary");
    let section = &formats[start..];
    let section = &section[..section[2..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 2)];
    section
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first = line.split('|').nth(1).expect("a first column");
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_summary_has_exactly_the_documented_keys_and_says_how_the_run_went() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.parquet");
    layerprune_tests::write_tiny_tokens(
        &tokens,
        layerprune_tests::fixture_windows(5, 3, 16),
        "synthetic ids",
    );
    let out = dir.path().join("out.parquet");
    let summary_path = dir.path().join("summary.json");
    let done = Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--model")
        .arg(layerprune_tests::tiny_model_dir())
        .arg("--tokens")
        .arg(&tokens)
        .args(["--mask", "111111", "--mask", "110111", "--mask", "110011"])
        .arg("--out")
        .arg(&out)
        .arg("--summary")
        .arg(&summary_path)
        .arg("--quiet")
        .output()
        .expect("evaluate runs");
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let written: BTreeSet<String> = summary.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        written,
        documented_keys(),
        "evaluate --summary's keys against docs/formats.md, \"The run summary\""
    );
    // The graph kinds under graph_runs are the documented four, and the time outside them.
    let kinds: BTreeSet<&str> = summary["graph_runs"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "blocks",
            "embedding",
            "head",
            "outside_runs_seconds",
            "stitching"
        ])
    );
    // What a CPU run of three masks, one at a time, says.
    assert_eq!(summary["masks"], 3);
    assert_eq!(summary["windows"], 3);
    assert_eq!(summary["seq_len"], 16);
    assert_eq!(summary["tokens_per_mask"], 3 * 15);
    assert_eq!(summary["device"], "cpu");
    assert_eq!(summary["graph_optimization"], "layout");
    assert_eq!(summary["arena"], "keep");
    assert!(summary["device_memory"].is_null());
    // 6 + 5 + 4 kept blocks; the two partial masks share the full model's prefix.
    assert_eq!(summary["blocks_in_masks"], 15);
    let blocks_run = summary["blocks_run"].as_u64().unwrap();
    assert!((6..15).contains(&blocks_run), "{blocks_run}");
    // One window batch, one mask a call: a block run on a prefix is one graph run.
    assert_eq!(summary["graph_runs"]["blocks"]["runs"], blocks_run);
    assert_eq!(summary["graph_runs"]["head"]["runs"], 3);
    assert_eq!(summary["cuda_graphs_would_pay"], false);
}
