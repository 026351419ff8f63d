//! How `quantize` takes the files a layered `--out` keeps unchanged from `--model` (the
//! embedding's float weights, the tokenizer): copies by default, hard links only with
//! `--hard-link-source-files`. A weight file with several links is one the onnx Python package
//! refuses to `onnx.load` (a possible hard-link attack), in the source folder as in the output.

#![cfg(unix)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use layerprune_runtime::Manifest;

fn quantize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args(args)
        .output()
        .expect("quantize runs")
}

/// For each file `out` lists with the same sha256 as `model` lists it (taken unchanged):
/// whether it is the source's file (same device and inode), and its link count.
fn unchanged(model: &Path, out: &Path) -> Vec<(String, bool, u64)> {
    let source = Manifest::load(model).unwrap();
    let taken: Vec<(String, bool, u64)> = Manifest::load(out)
        .unwrap()
        .files
        .iter()
        .filter(|(file, sha256)| source.files.get(*file) == Some(sha256))
        .map(|(file, _)| {
            let ours = std::fs::metadata(out.join(file)).unwrap();
            let theirs = std::fs::metadata(model.join(file)).unwrap();
            let same = (ours.dev(), ours.ino()) == (theirs.dev(), theirs.ino());
            (file.clone(), same, ours.nlink())
        })
        .collect();
    assert!(
        taken
            .iter()
            .any(|(file, _, _)| file.starts_with("weights/")),
        "no weight file taken unchanged: {taken:?}"
    );
    taken
}

#[test]
fn the_quantized_folder_copies_its_unchanged_files_unless_hard_links_are_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // A copy of the fixture: its own files have one link each, whatever linked the committed one.
    let model = dir.path().join("model");
    layerprune_tests::copy_tiny_model(&model);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scheme",
            "int8",
        ];
        args.extend(extra);
        let output = quantize(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let copied = dir.path().join("copied");
    run(&copied, &[]);
    for (file, same, links) in unchanged(&model, &copied) {
        assert!(
            !same && links == 1,
            "{file}: the source's file ({links} links)"
        );
    }
    let linked = dir.path().join("linked");
    run(&linked, &["--hard-link-source-files"]);
    for (file, same, links) in unchanged(&model, &linked) {
        assert!(
            same && links == 2,
            "{file}: not hard-linked ({links} links)"
        );
    }
    assert_eq!(
        layerprune_tests::snapshot_within(&copied),
        layerprune_tests::snapshot_within(&linked)
    );
}

/// One .onnx file's output holds every tensor itself: there is nothing to link.
#[test]
fn hard_links_are_refused_for_one_onnx_file() {
    let dir = tempfile::tempdir().unwrap();
    let block = layerprune_tests::tiny_model_dir().join("block_000.onnx");
    let out = dir.path().join("block-int8.onnx");
    let output = quantize(&[
        "--model",
        block.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--scheme",
        "int8",
        "--hard-link-source-files",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--hard-link-source-files applies to a layered model folder"),
        "{stderr}"
    );
    assert!(!out.exists());
}
