//! End-to-end tests over the committed tiny model fixture (`data/fixtures/tiny-llama`, made
//! by `tools/export/make_fixture.py`). The tests live in `tests/*.rs`; this file only locates
//! the fixture.

use std::path::PathBuf;

/// The fixture model folder.
pub fn tiny_model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/fixtures/tiny-llama")
}
