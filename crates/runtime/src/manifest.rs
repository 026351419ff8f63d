//! The manifest of a layered model folder lives in `layerprune-model` (re-exported by this
//! crate); its errors are [`RuntimeError::Model`](crate::RuntimeError::Model).

pub use layerprune_model::{
    model_id, sha256_file, BlockRef, GraphBytes, GraphRef, Manifest, ModelError, FORMAT,
    MANIFEST_FILE,
};
