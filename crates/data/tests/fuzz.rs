//! Mutated tokenizer files: loading a tokenizer.json and using it as prepare-tokens does (a
//! text encoded, the leading special tokens found, ids decoded) ends in a result or an error
//! naming the file, never a panic or a hang (the shared mutation fuzzer of
//! `layerprune-tests`, with a JSON dictionary, on the tiny fixture's byte-level BPE tokenizer).

use layerprune_data::{read_arrow_stream_strings, read_jsonl_field, TokenizerFile};
use layerprune_tests::{
    fuzz_reader, fuzz_seed, tiny_model_dir, FuzzBudget, ARROW_DICTIONARY, JSON_DICTIONARY,
};

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

/// A small Arrow IPC stream of two batches with a text column and a nullable one, as BoolQ's
/// and the task files are.
fn arrow_stream() -> Vec<u8> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("question", DataType::Utf8, false),
        Field::new("passage", DataType::Utf8, true),
    ]));
    let mut bytes = Vec::new();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut bytes, &schema).unwrap();
    for (questions, passages) in [
        (vec!["is it?", "was it?"], vec![Some("Passage A."), None]),
        (vec!["will it?"], vec![Some("Passage B, a longer one.")]),
    ] {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(questions)),
            Arc::new(StringArray::from(passages)),
        ];
        writer
            .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
            .unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    bytes
}

#[test]
fn mutated_arrow_streams_are_read_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("passages.arrow");
    let original = arrow_stream();
    std::fs::write(&path, &original).unwrap();
    // The stream itself is read (its null passage refused, its question column read).
    assert!(read_arrow_stream_strings(&path, "passage").is_err());
    assert_eq!(
        read_arrow_stream_strings(&path, "question").unwrap().len(),
        3
    );
    let (_, refused) = fuzz_reader(
        &path,
        &original,
        &ARROW_DICTIONARY,
        FuzzBudget::from_env(300),
        fuzz_seed(3),
        |path| {
            read_arrow_stream_strings(path, "question")
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
    assert!(refused > 0);
}

#[test]
fn mutated_json_lines_are_read_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.jsonl");
    let original = b"{\"text\": \"First document.\", \"meta\": {\"id\": 1}}\n\
        {\"text\": \"Second one\\u00e9, with \\\"quotes\\\".\", \"meta\": {\"id\": 2}}\n\
        \n{\"text\": \"Third.\", \"tags\": [\"a\", \"b\"]}\n";
    std::fs::write(&path, original).unwrap();
    assert_eq!(read_jsonl_field(&path, "text").unwrap().len(), 3);
    let (_, refused) = fuzz_reader(
        &path,
        original,
        &JSON_DICTIONARY,
        FuzzBudget::from_env(300),
        fuzz_seed(4),
        |path| {
            read_jsonl_field(path, "text")
                .map(drop)
                .map_err(|e| e.to_string())
        },
    );
    assert!(refused > 0);
}
