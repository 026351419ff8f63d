//! Hostile model folders given to `quantize`: a manifest entry or a graph's external
//! data pointing outside the folder is refused, with or without hash verification, and the
//! quantized folder is never written over or inside its source. Nothing under the temporary
//! folder (which holds a sentinel file beside the model) changes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use layerprune_model::{sha256_file, MANIFEST_FILE};
use layerprune_quantize::{
    quantize_folder, quantize_single_file, write_folder, FolderOptions, Scheme, SourceFiles,
};
use onnx_protobuf::{GraphProto, Message, ModelProto};
use protobuf::MessageField;

const SENTINEL: &[u8] = b"must never change";

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    layerprune_tests::snapshot(dir)
}

/// A temporary folder with `model/` (the tiny fixture) and `sentinel.bin`.
fn scene() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("model");
    layerprune_tests::copy_dir(&layerprune_tests::tiny_model_dir(), &model);
    let sentinel = root.path().join("sentinel.bin");
    fs::write(&sentinel, SENTINEL).unwrap();
    (root, model, sentinel)
}

fn edit(model: &Path, change: impl FnOnce(&mut serde_json::Value)) {
    let path = model.join(MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    change(&mut manifest);
    fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

fn options(verify: bool) -> FolderOptions {
    FolderOptions {
        scheme: Scheme::Int8,
        exclude_head: false,
        verify,
        calibration: None,
        threads: 0,
    }
}

#[test]
fn an_absolute_entry_with_its_true_hash_is_refused_and_truncates_nothing() {
    let (root, model, sentinel) = scene();
    let absolute = sentinel.to_string_lossy().into_owned();
    let hash = sha256_file(&sentinel).unwrap();
    edit(&model, |m| m["files"][&absolute] = hash.into());
    let before = snapshot(root.path());
    for verify in [true, false] {
        let error = quantize_folder(&model, &options(verify)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(MANIFEST_FILE)
                && message.contains(&format!("entry {absolute:?} is an absolute path")),
            "{message}"
        );
    }
    assert_eq!(before, snapshot(root.path()));
    assert_eq!(fs::read(&sentinel).unwrap(), SENTINEL);
}

#[test]
fn an_empty_block_graph_is_refused_not_copied() {
    // Its hash is listed, so only the graph's reader can tell (without verification, or after
    // the manifest was re-hashed). An empty file is no ONNX model (protobuf would decode it as
    // a model of nothing); a graph of no nodes (a cut-off file can decode as one) would be
    // copied as it is, into a folder that cannot run.
    let no_nodes = ModelProto {
        graph: MessageField::some(GraphProto::default()),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();
    for (bytes, expected) in [
        (Vec::new(), "an empty file (0 bytes), not an ONNX model"),
        (no_nodes, "the graph has no nodes"),
    ] {
        let (root, model, _) = scene();
        let graph = model.join("block_003.onnx");
        fs::write(&graph, bytes).unwrap();
        let hash = sha256_file(&graph).unwrap();
        edit(&model, |m| m["files"]["block_003.onnx"] = hash.into());
        let before = snapshot(root.path());
        let error = quantize_folder(&model, &options(true))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("block_003.onnx") && error.contains(expected),
            "{error}"
        );
        assert_eq!(before, snapshot(root.path()));
    }
}

#[test]
fn external_data_outside_the_folder_is_refused_without_verification() {
    let (root, model, sentinel) = scene();
    let graph = model.join("block_002.onnx");
    layerprune_tests::relocate_first_external_tensor(&graph, &sentinel.to_string_lossy());
    let before = snapshot(root.path());
    let error = quantize_folder(&model, &options(false)).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("block_002.onnx") && message.contains("is an absolute path"),
        "{message}"
    );
    assert_eq!(before, snapshot(root.path()));
}

#[test]
fn the_quantized_folder_is_never_written_over_or_inside_its_source() {
    let (root, model, _) = scene();
    let quantized = quantize_folder(&model, &options(true)).unwrap();
    let before = snapshot(root.path());
    for (dest, problem) in [
        (model.clone(), "is the model being quantized"),
        (model.join("quantized"), "is inside the source folder"),
        (root.path().to_path_buf(), "contains the source folder"),
    ] {
        let error = write_folder(&model, &dest, &quantized, SourceFiles::Copy, true).unwrap_err();
        assert!(error.to_string().contains(problem), "{error}");
    }
    assert_eq!(before, snapshot(root.path()));
    write_folder(
        &model,
        &root.path().join("q"),
        &quantized,
        SourceFiles::Copy,
        false,
    )
    .unwrap();
}

#[test]
fn of_two_bad_graphs_the_first_in_the_manifest_is_reported_on_any_number_of_threads() {
    let (root, model, _) = scene();
    for block in ["block_001.onnx", "block_004.onnx"] {
        let graph = model.join(block);
        fs::write(&graph, b"").unwrap();
        let hash = sha256_file(&graph).unwrap();
        edit(&model, |m| m["files"][block] = hash.into());
    }
    let before = snapshot(root.path());
    for threads in [1, 2, 8] {
        let mut opts = options(true);
        opts.threads = threads;
        let error = quantize_folder(&model, &opts).unwrap_err().to_string();
        assert!(
            error.contains("block_001.onnx")
                && error.contains("an empty file (0 bytes), not an ONNX model"),
            "on {threads} threads: {error}"
        );
    }
    assert_eq!(before, snapshot(root.path()));
}

#[test]
fn errors_found_inside_a_graph_name_the_graph() {
    // A weight file the graph reads that is not there: the graph and tensor reading it are
    // named, not only the missing file (found by the graph fuzzer).
    let (_root, model, _) = scene();
    let graph = model.join("block_001.onnx");
    layerprune_tests::relocate_first_external_tensor(&graph, "weights/missing.bin");
    let error = quantize_single_file(&graph, &Scheme::Int8)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("block_001.onnx")
            && error.contains("tensor ")
            && error.contains("weights/missing.bin"),
        "{error}"
    );
    // An opset too old for per-channel DequantizeLinear: the graph is named.
    let (_root, model, _) = scene();
    let graph = model.join("block_002.onnx");
    let mut proto = ModelProto::parse_from_bytes(&fs::read(&graph).unwrap()).unwrap();
    for opset in &mut proto.opset_import {
        if opset.domain.is_empty() {
            opset.version = 11;
        }
    }
    fs::write(&graph, proto.write_to_bytes().unwrap()).unwrap();
    let error = quantize_single_file(&graph, &Scheme::Int8)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("block_002.onnx") && error.contains("opset 13"),
        "{error}"
    );
}
