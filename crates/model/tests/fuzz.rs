//! Mutated manifests: `Manifest::load` ends in a manifest or an error naming the file, never a
//! panic or a hang (the shared mutation fuzzer of `layerprune-tests`, with a JSON dictionary).

use layerprune_model::Manifest;
use layerprune_tests::{fuzz_reader, fuzz_seed, tiny_model_dir, FuzzBudget, JSON_DICTIONARY};

#[test]
fn mutated_manifests_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(tiny_model_dir().join("manifest.json")).unwrap();
    let (accepted, refused) = fuzz_reader(
        &dir.path().join("manifest.json"),
        &original,
        &JSON_DICTIONARY,
        FuzzBudget::from_env(400),
        fuzz_seed(7),
        |path| {
            Manifest::load(path.parent().unwrap())
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    // Most edits break the JSON or a checked field; some only touch free text.
    assert!(refused > accepted, "{refused} refused, {accepted} accepted");
}

/// Mutated block graphs: what a model folder's check reads of a graph (its external-data
/// references, each confined to the folder) ends in the references or an error naming the
/// graph, never a panic or a hang.
#[test]
fn mutated_graphs_references_are_read_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    layerprune_tests::copy_dir(&tiny_model_dir(), &model);
    let graph = model.join("block_002.onnx");
    let original = std::fs::read(&graph).unwrap();
    let (accepted, refused) = fuzz_reader(
        &graph,
        &original,
        &[b"location", b"../../x", b"/etc/passwd", &[0xff; 10]],
        FuzzBudget::from_env(300),
        fuzz_seed(9),
        |path| {
            let dir = path.parent().unwrap();
            Manifest::load(dir)
                .and_then(|manifest| manifest.check_references(dir, false))
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    assert!(
        refused > 0 && accepted > 0,
        "{refused} refused, {accepted} accepted"
    );
}
