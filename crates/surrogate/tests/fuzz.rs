//! Mutated surrogate files: `SavedSurrogate::load` ends in a surrogate or an error naming the
//! file, never a panic or a hang (the shared mutation fuzzer of `layerprune-tests`).

mod common;

use layerprune_surrogate::{fit, FitOptions, SavedSurrogate, SurrogateKind};
use layerprune_tests::{fuzz_reader, fuzz_seed, FuzzBudget, JSON_DICTIONARY};

#[test]
fn mutated_surrogate_files_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let masks = common::stratified_masks(6, &[1, 2, 3], 60, 1);
    let targets = common::SmoothUtility::new(6, 2).values(&masks);
    let budget = FuzzBudget::from_env(300).share(SurrogateKind::ALL.len());
    for kind in SurrogateKind::ALL {
        let fitted = fit(kind, &masks, &targets, &FitOptions::default()).unwrap();
        let path = dir.path().join(format!("{kind}.json"));
        SavedSurrogate::new(fitted, "utility", "test")
            .save(&path)
            .unwrap();
        let original = std::fs::read(&path).unwrap();
        let (accepted, refused) = fuzz_reader(
            &path,
            &original,
            &JSON_DICTIONARY,
            budget,
            fuzz_seed(11),
            |path| {
                SavedSurrogate::load(path)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
        assert!(
            refused > 0,
            "{kind}: {refused} refused, {accepted} accepted"
        );
    }
}
