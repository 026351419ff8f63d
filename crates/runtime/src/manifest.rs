//! The manifest of a layered model folder lives in `layerprune-model` (re-exported by this
//! crate); its errors become [`RuntimeError`]s here.

pub use layerprune_model::{
    model_id, sha256_file, BlockRef, GraphRef, Manifest, ModelError, FORMAT, MANIFEST_FILE,
};

use crate::RuntimeError;

impl From<ModelError> for RuntimeError {
    fn from(error: ModelError) -> Self {
        match error {
            ModelError::Io { path, source } => RuntimeError::Io { path, source },
            ModelError::BadManifest { path, problem } => {
                RuntimeError::BadManifest { path, problem }
            }
            ModelError::HashMismatch {
                path,
                expected,
                actual,
            } => RuntimeError::HashMismatch {
                path,
                expected,
                actual,
            },
            other => RuntimeError::BadInput(other.to_string()),
        }
    }
}
