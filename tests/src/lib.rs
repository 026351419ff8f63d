//! End-to-end tests over the committed tiny model fixture (`data/fixtures/tiny-llama`, made
//! by `tools/export/make_fixture.py`). The tests live in `tests/*.rs`; this file locates the
//! fixture and makes token windows for it, for these tests and the stages' own CLI tests.

use std::path::PathBuf;

/// The fixture model folder.
pub fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/tiny-llama")
}

/// `count` deterministic windows of `len` token ids inside the fixture's vocabulary of 320,
/// from a linear congruential generator seeded with `seed` (no dependency, the same on every
/// platform).
pub fn fixture_windows(seed: u64, count: usize, len: usize) -> Vec<Vec<u32>> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) % 320) as u32
                })
                .collect()
        })
        .collect()
}

/// Every mask of `num_blocks` blocks (2^num_blocks of them), bit i of the index keeping block
/// i: a mask list with many shared prefixes, for runs over the fixture's 6 blocks.
pub fn every_mask(num_blocks: usize) -> Vec<layerprune_core::Mask> {
    (0..1u64 << num_blocks)
        .map(|bits| {
            layerprune_core::Mask::from_kept((0..num_blocks).map(|i| bits >> i & 1 == 1).collect())
        })
        .collect()
}

/// Every file under `dir` with its bytes (a symbolic link as its target's name, not followed):
/// compared before and after a refused run to show nothing under `dir` changed.
pub fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    fn visit(dir: &std::path::Path, out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let kind = std::fs::symlink_metadata(&path).unwrap().file_type();
            if kind.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(path, target.to_string_lossy().as_bytes().to_vec());
            } else if kind.is_dir() {
                visit(&path, out);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    visit(dir, &mut out);
    out
}

/// Rewrites the ONNX graph at `graph` so its first tensor stored as external data reads from
/// `location` (for tests of hostile model folders).
pub fn relocate_first_external_tensor(graph: &std::path::Path, location: &str) {
    use onnx_protobuf::{Message, ModelProto};
    let mut model = ModelProto::parse_from_bytes(&std::fs::read(graph).unwrap()).unwrap();
    let tensor = model
        .graph
        .as_mut()
        .unwrap()
        .initializer
        .iter_mut()
        .find(|t| t.external_data.iter().any(|e| e.key == "location"))
        .unwrap();
    for entry in &mut tensor.external_data {
        if entry.key == "location" {
            entry.value = location.to_string();
        }
    }
    std::fs::write(graph, model.write_to_bytes().unwrap()).unwrap();
}
