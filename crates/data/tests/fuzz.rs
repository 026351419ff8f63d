//! Mutated tokenizer files: loading a tokenizer.json and using it as prepare-tokens does (a
//! text encoded, the leading special tokens found, ids decoded) ends in a result or an error
//! naming the file, never a panic or a hang (the shared mutation fuzzer of
//! `layerprune-tests`, with a JSON dictionary, on the tiny fixture's byte-level BPE tokenizer).

use layerprune_data::TokenizerFile;
use layerprune_tests::{fuzz_reader, fuzz_seed, tiny_model_dir, FuzzBudget, JSON_DICTIONARY};

fn use_tokenizer(path: &std::path::Path) -> Result<(), String> {
    let tokenizer = TokenizerFile::load(path).map_err(|e| e.to_string())?;
    let ids = tokenizer
        .encode("The cat sat on the mat.\n\nIt was 42 degrees — très chaud!")
        .map_err(|e| e.to_string())?;
    tokenizer.leading_special_ids().map_err(|e| e.to_string())?;
    tokenizer.decode(&ids).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn mutated_tokenizers_are_used_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(tiny_model_dir().join("tokenizer.json")).unwrap();
    // The file itself is used: the refusals below are the mutations'. About 1 % of mutants
    // are accepted (an edit in a token's text), too few to expect one in `make test`'s 300.
    use_tokenizer(&tiny_model_dir().join("tokenizer.json")).unwrap();
    let (_, refused) = fuzz_reader(
        &dir.path().join("tokenizer.json"),
        &original,
        &JSON_DICTIONARY,
        FuzzBudget::from_env(300),
        fuzz_seed(5),
        use_tokenizer,
    );
    assert!(refused > 0);
}
