//! Mutated task files: loading an ARC-style Arrow IPC stream (strings, a struct of string
//! lists) as `evaluate --tasks` does ends in questions or an error naming the file, never a
//! panic or a hang (the shared mutation fuzzer of `layerprune-tests`).

use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, StringArray, StructArray};
use arrow_schema::{Field, Fields};
use layerprune_tasks::{write_arrow_stream, Task};
use layerprune_tests::{fuzz_reader, fuzz_seed, FuzzBudget, ARROW_DICTIONARY};

fn string_lists(rows: &[&[&str]]) -> ArrayRef {
    let mut builder = ListBuilder::new(StringBuilder::new());
    for items in rows {
        for item in *items {
            builder.values().append_value(item);
        }
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn load(path: &std::path::Path) -> Result<(), String> {
    Task::ArcEasy
        .load(path)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn mutated_task_files_are_loaded_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arc_easy.arrow");
    let texts = string_lists(&[&["ice", "steam", "rock"], &["one", "two"]]);
    let labels = string_lists(&[&["A", "B", "C"], &["1", "2"]]);
    let fields = Fields::from(vec![
        Field::new("text", texts.data_type().clone(), true),
        Field::new("label", labels.data_type().clone(), true),
    ]);
    let choices: ArrayRef = Arc::new(StructArray::new(fields, vec![texts, labels], None));
    let strings = |values: &[&str]| -> ArrayRef { Arc::new(StringArray::from(values.to_vec())) };
    write_arrow_stream(
        &path,
        vec![
            ("question", strings(&["Which is a gas?", "Pick two"])),
            ("choices", choices),
            ("answerKey", strings(&["B", "2"])),
        ],
    )
    .unwrap();
    let original = std::fs::read(&path).unwrap();
    // The file itself loads: the refusals below are the mutations'.
    load(&path).unwrap();
    let (_, refused) = fuzz_reader(
        &path,
        &original,
        &ARROW_DICTIONARY,
        FuzzBudget::from_env(300),
        fuzz_seed(2),
        load,
    );
    assert!(refused > 0);
}
