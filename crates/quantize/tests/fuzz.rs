//! Mutated ONNX graphs given to `quantize`: `quantize_single_file` ends in a quantized model or
//! an error naming the file, never a panic or a hang, whatever the bytes say of dims, data
//! types, raw data and external-data offsets (the shared mutation fuzzer of
//! `layerprune-tests`, on a block graph of the tiny fixture whose weight files stay beside it).

use layerprune_quantize::{quantize_single_file, Scheme};
use layerprune_tests::{copy_dir, fuzz_reader, fuzz_seed, tiny_model_dir, FuzzBudget};

/// Protobuf fragments for the mutator: varints that break lengths and counts (ten-byte
/// maximum, a negative dim), and the external-data keys a tensor's location is read from.
const PROTOBUF_DICTIONARY: [&[u8]; 8] = [
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0x80, 0x80, 0x80, 0x80, 0x08],
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0x00],
    b"location",
    b"offset",
    b"length",
    b"../../../etc/passwd",
];

fn quantize(path: &std::path::Path) -> Result<(), String> {
    for scheme in [
        Scheme::Int8,
        Scheme::Int4 {
            block_size: 32,
            accuracy_level: 0,
        },
    ] {
        quantize_single_file(path, &scheme).map_err(|error| error.to_string())?;
    }
    Ok(())
}

#[test]
fn mutated_block_graphs_are_quantized_or_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    copy_dir(&tiny_model_dir(), &model);
    let graph = model.join("block_001.onnx");
    let original = std::fs::read(&graph).unwrap();
    let (accepted, refused) = fuzz_reader(
        &graph,
        &original,
        &PROTOBUF_DICTIONARY,
        FuzzBudget::from_env(300),
        fuzz_seed(11),
        quantize,
    );
    assert!(
        refused > 0 && accepted > 0,
        "{refused} refused, {accepted} accepted"
    );
}
