//! How `apply-prune --pruned-out` takes the files it keeps from `--model`: copies by default,
//! hard links only with `--hard-link-source-files`. A weight file with several links is one
//! the onnx Python package refuses to `onnx.load` (a possible hard-link attack), in the source
//! folder as in the pruned one, so linking by default broke the user's exported model for it.

#![cfg(unix)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use layerprune_model::Manifest;
use layerprune_tables::{write_scores, Provenance, ScoreRow, ScoreTable};

/// A score table over the fixture's 6 blocks: removing k blocks removes the last k.
fn write_reverse_scores(path: &Path) {
    let table = ScoreTable {
        num_blocks: 6,
        fixed_blocks: Vec::new(),
        model_id: String::new(),
        dataset_id: String::new(),
        rows: (0..6)
            .map(|block| ScoreRow::point(block, -(block as f64), "test", 1))
            .collect(),
    };
    write_scores(path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
}

/// `apply-prune` writing the folder of the plan removing 2 blocks of `model` to `pruned` (no
/// model runs: no --tokens), with `extra` flags.
fn prune(scores: &Path, model: &Path, pruned: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--scores",
        scores.to_str().unwrap(),
        "--estimator",
        "test",
        "--k",
        "2",
        "--model",
        model.to_str().unwrap(),
        "--pruned-out",
        pruned.to_str().unwrap(),
    ];
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_apply-prune"))
        .args(&args)
        .output()
        .expect("the apply-prune binary runs")
}

/// For each file the pruned folder lists: whether it is the source's file (same device and
/// inode), and its link count.
fn sharing(model: &Path, pruned: &Path) -> Vec<(String, bool, u64)> {
    let manifest = Manifest::load(pruned).unwrap();
    assert!(
        manifest.files.keys().any(|f| f.starts_with("weights/")),
        "{:?}",
        manifest.files.keys()
    );
    manifest
        .files
        .keys()
        .map(|file| {
            let ours = std::fs::metadata(pruned.join(file)).unwrap();
            let theirs = std::fs::metadata(model.join(file)).unwrap();
            let same = (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino());
            (file.clone(), same, ours.nlink())
        })
        .collect()
}

#[test]
fn the_pruned_folder_copies_its_files_unless_hard_links_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of the fixture: its own files have one link each, whatever linked the committed one.
    let model = dir.path().join("model");
    layerprune_tests::copy_tiny_model(&model);
    let scores = dir.path().join("scores.parquet");
    write_reverse_scores(&scores);

    let copied = dir.path().join("copied");
    let output = prune(&scores, &model, &copied, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (file, same, links) in sharing(&model, &copied) {
        assert!(
            !same && links == 1,
            "{file}: the source's file ({links} links)"
        );
    }
    assert_eq!(Manifest::load(&copied).unwrap().num_blocks, 4);

    let linked = dir.path().join("linked");
    let output = prune(&scores, &model, &linked, &["--hard-link-source-files"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("--hard-link-source-files"), "{stderr}");
    for (file, same, links) in sharing(&model, &linked) {
        assert!(
            same && links == 2,
            "{file}: not hard-linked ({links} links)"
        );
    }
    // The same folder either way.
    assert_eq!(
        layerprune_tests::snapshot_within(&copied),
        layerprune_tests::snapshot_within(&linked)
    );
}

#[test]
fn hard_links_need_a_pruned_folder() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("scores.parquet");
    write_reverse_scores(&scores);
    let plans = dir.path().join("plans.parquet");
    let output = Command::new(env!("CARGO_BIN_EXE_apply-prune"))
        .args([
            "--scores",
            scores.to_str().unwrap(),
            "--estimator",
            "test",
            "--k",
            "2",
            "--out",
            plans.to_str().unwrap(),
            "--hard-link-source-files",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--pruned-out"), "{stderr}");
    assert!(!plans.exists());
}
