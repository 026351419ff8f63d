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
