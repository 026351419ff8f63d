use std::path::PathBuf;

/// Everything that can go wrong reading or writing a model folder; each names the file
/// concerned.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A manifest that cannot be read as one, or that contradicts itself or its folder.
    #[error("{path}: {problem}")]
    BadManifest { path: PathBuf, problem: String },
    #[error(
        "{path}: sha256 is {actual} but the manifest says {expected} (file changed or corrupt)"
    )]
    HashMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A graph file that is not an ONNX model.
    #[error("{path}: {problem}")]
    BadGraph { path: PathBuf, problem: String },
    /// The destination of a folder cannot be written (exists without overwrite, no name).
    #[error("{path} {problem}")]
    Destination { path: PathBuf, problem: String },
    /// A request that does not fit the model (e.g. a block out of range).
    #[error("{0}")]
    BadRequest(String),
    /// A termination signal came while a file was read whole (hashed): a model-sized read
    /// stops there, not after the last file ([`layerprune_core::interrupt`]).
    #[error("{path}: {source} (while reading it)")]
    Interrupted {
        path: PathBuf,
        source: layerprune_core::Interrupted,
    },
    /// A file could not be written (`layerprune_core::atomic_write`).
    #[error(transparent)]
    Write(#[from] layerprune_core::AtomicWriteError),
}

impl ModelError {
    pub(crate) fn io(path: &std::path::Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
        move |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
