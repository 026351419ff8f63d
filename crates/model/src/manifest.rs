//! The manifest of a layered model folder, as written by `tools/export/export_layered.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ModelError;

pub const FORMAT: &str = "layerprune-layered-onnx";
pub const MANIFEST_FILE: &str = "manifest.json";

/// One graph file and how its inputs and outputs are named.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GraphRef {
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    pub output: String,
}

/// One residual block. `original_index` is its position in the unpruned model, so a pruned
/// model still says which blocks it kept.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BlockRef {
    pub index: usize,
    pub original_index: usize,
    pub file: String,
}

/// `manifest.json`. Unknown fields are kept (`extra`) so a tool that rewrites the manifest
/// (pruning, quantization) never drops what a newer exporter wrote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub architecture: String,
    pub num_blocks: usize,
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub dtype: String,
    pub opset: u32,
    pub embedding: GraphRef,
    pub blocks: Vec<BlockRef>,
    pub head: GraphRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_logits: Option<GraphRef>,
    pub tokenizer: String,
    /// sha256 of every file in the folder but the manifest, by relative path.
    pub files: BTreeMap<String, String>,
    /// How `quantize` rewrote the MatMul weights (the record `layerprune_quantize::Record`
    /// reads and writes; docs/model-format.md); absent for the exporter's float weights.
    /// Running the model needs nothing from it: the graphs hold the quantized operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<serde_json::Value>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`: the format, the block list, and that every graph
    /// it names is listed with a hash.
    pub fn load(dir: &Path) -> Result<Manifest, ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|error| ModelError::BadManifest {
                path: path.clone(),
                problem: format!("not a valid manifest: {error}"),
            })?;
        manifest.validate(&path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<(), ModelError> {
        let bad = |problem: String| ModelError::BadManifest {
            path: path.to_path_buf(),
            problem,
        };
        if self.format != FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT:?}",
                self.format
            )));
        }
        if self.blocks.len() != self.num_blocks {
            return Err(bad(format!(
                "num_blocks is {} but {} blocks are listed",
                self.num_blocks,
                self.blocks.len()
            )));
        }
        for (position, block) in self.blocks.iter().enumerate() {
            if block.index != position {
                return Err(bad(format!(
                    "block at position {position} has index {}",
                    block.index
                )));
            }
        }
        for file in self.graph_files() {
            if !self.files.contains_key(file) {
                return Err(bad(format!("graph {file} has no sha256 in `files`")));
            }
        }
        if self.vocab_size == 0 || self.hidden_size == 0 {
            return Err(bad("vocab_size and hidden_size must be positive".into()));
        }
        Ok(())
    }

    /// Every graph file the model runs.
    pub fn graph_files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.embedding.file.as_str())
            .chain(self.blocks.iter().map(|b| b.file.as_str()))
            .chain(std::iter::once(self.head.file.as_str()))
            .chain(self.head_logits.iter().map(|h| h.file.as_str()))
    }

    /// Checks every listed file's sha256 against the folder's contents.
    pub fn verify_files(&self, dir: &Path) -> Result<(), ModelError> {
        for (relative, expected) in &self.files {
            let path = dir.join(relative);
            let actual = sha256_file(&path)?;
            if &actual != expected {
                return Err(ModelError::HashMismatch {
                    path,
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }

    pub fn block_path(&self, dir: &Path, index: usize) -> PathBuf {
        dir.join(&self.blocks[index].file)
    }

    /// The original indices of the blocks this model has (identity for an unpruned model).
    pub fn original_indices(&self) -> Vec<usize> {
        self.blocks.iter().map(|b| b.original_index).collect()
    }

    /// The manifest as written to `manifest.json`: pretty-printed JSON, no trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        // A manifest is strings, numbers and JSON values with string keys: always encodable.
        serde_json::to_vec_pretty(self).expect("a manifest encodes as JSON")
    }

    /// Writes `dir/manifest.json` ([`Manifest::to_json`]) atomically, mode 0644.
    pub fn write(&self, dir: &Path) -> Result<(), ModelError> {
        crate::write_file(&dir.join(MANIFEST_FILE), &self.to_json())
    }
}

/// The `num_blocks` field of `dir/manifest.json`, reading nothing else: enough to plan masks
/// for a model (`sample-masks`) without checking, or even having, the rest of its folder.
pub fn read_num_blocks(dir: &Path) -> Result<usize, ModelError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&path).map_err(ModelError::io(&path))?;
    let bad = |problem: String| ModelError::BadManifest {
        path: path.clone(),
        problem,
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|error| bad(format!("not valid JSON: {error}")))?;
    let num_blocks = manifest
        .get("num_blocks")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| bad("has no non-negative integer field \"num_blocks\"".into()))?;
    usize::try_from(num_blocks).map_err(|_| bad(format!("num_blocks {num_blocks} is too large")))
}

/// The model id: sha256 of the manifest's bytes, which include every part's hash.
pub fn model_id(dir: &Path) -> Result<String, ModelError> {
    sha256_file(&dir.join(MANIFEST_FILE))
}

pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
