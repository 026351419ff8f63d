//! The manifest of a layered model folder, as written by `tools/export/export_layered.py`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{confined, confined_reference, graph_external_data, ModelError};

pub const FORMAT: &str = "layerprune-layered-onnx";
/// The newest `format_version` this build reads; a manifest with a higher one is refused.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "manifest.json";
/// The most blocks a manifest may list (`num_blocks`, and every `original_index` is below it).
pub const MAX_BLOCKS: usize = layerprune_core::MAX_BLOCKS;
/// The most elements one tensor the manifest's sizes imply may have (the embedding
/// `vocab_size × hidden_size`, an MLP weight `hidden_size × intermediate_size`): 2^36, above
/// any real model (a 256k vocabulary × 65,536) yet far below what overflows or exhausts memory
/// in a count.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 36;
/// The largest `manifest.json` read: 64 MiB, hundreds of times a real one (a 7B model's lists
/// a few hundred files in about 100 kB).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// The `dtype`s a layered folder may have: the element type of the hidden states between its
/// graphs, as `tools/export`'s `--dtype fp32 / fp16 / bf16` writes them (a quantized folder
/// keeps `float32`: its states stay float). The runtime allocates and reads the states by
/// this name, so another one (`float8`) is refused, not run as float32.
pub const DTYPES: [&str; 3] = ["float32", "float16", "bfloat16"];
/// The manifest's optional token counts that bound the windows its graphs run.
const WINDOW_FIELDS: [&str; 3] = ["fixed_seq_len", "context_length", "rotary_positions"];

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

/// The bytes a set of graphs reads ([`Manifest::graph_bytes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphBytes {
    /// Each file once: what a runtime holds at the least.
    pub distinct: u64,
    /// Summed over the graphs, a file counted for each graph that reads it: what ONNX
    /// Runtime's sessions, each with its own copy, hold.
    pub per_graph: u64,
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
    /// Reads and checks `dir/manifest.json`: the format and its version, the block list, the
    /// sizes, that every graph it names is listed with a hash, and that every path it names
    /// stays inside `dir` ([`confined`]).
    pub fn load(dir: &Path) -> Result<Manifest, ModelError> {
        Manifest::load_with_id(dir).map(|(manifest, _)| manifest)
    }

    /// [`Manifest::load`], with the model's id ([`model_id`]: the sha256 of the very bytes
    /// read, one read of the file): a stage that checks its inputs against the manifest and
    /// then opens the model compares the model's id with this one, so that all it checked was
    /// checked against the model it runs (a manifest read twice could be replaced between the
    /// reads, `apply-prune --pruned-out X --overwrite` renaming a new folder over it).
    pub fn load_with_id(dir: &Path) -> Result<(Manifest, String), ModelError> {
        if dir.is_file() {
            let hint = if dir.file_name() == Some(MANIFEST_FILE.as_ref()) {
                "; give the folder that holds it"
            } else {
                ""
            };
            return Err(ModelError::BadManifest {
                path: dir.to_path_buf(),
                problem: format!(
                    "a file, not a layered model folder (a folder holding {MANIFEST_FILE}){hint}"
                ),
            });
        }
        let path = dir.join(MANIFEST_FILE);
        let bytes = read_manifest(dir)?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|error| ModelError::BadManifest {
                path: path.clone(),
                problem: format!("not a valid manifest: {error}"),
            })?;
        manifest.validate(dir)?;
        Ok((manifest, layerprune_core::sha256_hex(&bytes)))
    }

    fn validate(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let bad = |problem: String| ModelError::BadManifest {
            path: path.clone(),
            problem,
        };
        if self.format != FORMAT {
            return Err(bad(format!(
                "format is {:?}, expected {FORMAT:?}",
                self.format
            )));
        }
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(bad(format!(
                "format_version {} is not supported: the newest this build reads is \
                 {FORMAT_VERSION}",
                self.format_version
            )));
        }
        if !DTYPES.contains(&self.dtype.as_str()) {
            return Err(bad(format!(
                "dtype is {:?}, which is none of the dtypes a layered model may have ({}: \
                 tools/export's --dtype fp32, fp16, bf16)",
                self.dtype,
                DTYPES.join(", ")
            )));
        }
        if self.num_blocks > MAX_BLOCKS {
            return Err(bad(format!(
                "num_blocks {} is more than the {MAX_BLOCKS} blocks a model may have",
                self.num_blocks
            )));
        }
        if self.blocks.len() != self.num_blocks {
            return Err(bad(format!(
                "num_blocks is {} but {} blocks are listed",
                self.num_blocks,
                self.blocks.len()
            )));
        }
        if self.num_blocks == 0 {
            return Err(bad("num_blocks is 0: a model has one block at least".into()));
        }
        // Each block its own graph: one shared with another block, the embedding or a head
        // would run that graph in the block's place. Compared as paths (`./block_000.onnx` is
        // `block_000.onnx`).
        let normal = crate::confine::without_dots;
        let others: BTreeSet<PathBuf> = std::iter::once(self.embedding.file.as_str())
            .chain(std::iter::once(self.head.file.as_str()))
            .chain(self.head_logits.iter().map(|h| h.file.as_str()))
            .map(normal)
            .collect();
        let mut block_graphs = BTreeSet::new();
        for (position, block) in self.blocks.iter().enumerate() {
            let file = block.file.as_str();
            let path = normal(file);
            if others.contains(&path) || !block_graphs.insert(path) {
                return Err(bad(format!(
                    "block {position}'s graph {file} is also another part's (each block has \
                     its own)"
                )));
            }
        }
        let mut originals = BTreeSet::new();
        for (position, block) in self.blocks.iter().enumerate() {
            if block.index != position {
                return Err(bad(format!(
                    "block at position {position} has index {}",
                    block.index
                )));
            }
            if block.original_index >= MAX_BLOCKS || !originals.insert(block.original_index) {
                return Err(bad(format!(
                    "block {position} has original_index {}, which is repeated or not below \
                     {MAX_BLOCKS}",
                    block.original_index
                )));
            }
        }
        self.validate_sizes().map_err(bad)?;
        self.validate_window_fields().map_err(bad)?;
        // Every path the manifest names, before anything joins it to the folder.
        for entry in self.files.keys() {
            confined(dir, entry)?;
        }
        for file in self
            .graph_files()
            .chain(std::iter::once(self.tokenizer.as_str()))
        {
            confined(dir, file)?;
        }
        for file in self.graph_files() {
            if !self.files.contains_key(file) {
                return Err(bad(format!("graph {file} has no sha256 in `files`")));
            }
        }
        Ok(())
    }

    /// The sizes are positive and every tensor they imply has at most
    /// [`MAX_TENSOR_ELEMENTS`] elements (products in checked arithmetic).
    fn validate_sizes(&self) -> Result<(), String> {
        if self.vocab_size == 0 || self.hidden_size == 0 {
            return Err("vocab_size and hidden_size must be positive".into());
        }
        let hidden = self.hidden_size as u64;
        let mut tensors = vec![("vocab_size", self.vocab_size as u64)];
        if let Some(value) = self.extra.get("intermediate_size") {
            let intermediate = value
                .as_u64()
                .ok_or_else(|| format!("intermediate_size is {value}, not a size"))?;
            tensors.push(("intermediate_size", intermediate));
        }
        for (name, size) in tensors {
            let elements = hidden.checked_mul(size);
            if elements.is_none_or(|elements| elements > MAX_TENSOR_ELEMENTS) {
                return Err(format!(
                    "hidden_size {hidden} × {name} {size} is more than the \
                     {MAX_TENSOR_ELEMENTS} elements a tensor may have"
                ));
            }
        }
        Ok(())
    }

    /// The optional fields that bound the windows the graphs run ([`Self::fixed_seq_len`],
    /// [`Self::context_length`], [`Self::rotary_positions`]) are positive whole numbers, and
    /// `attention_kernel` ([`Self::fused_attention`]) a string: read as absent otherwise, a
    /// mistyped one (`"fixed_seq_len": "16"`) would lift a limit the graphs still have, and
    /// a 0 would refuse every window.
    fn validate_window_fields(&self) -> Result<(), String> {
        for key in WINDOW_FIELDS {
            if let Some(value) = self.extra.get(key) {
                if value.as_u64().is_none_or(|n| n == 0) {
                    return Err(format!(
                        "{key} is {value}, not a positive whole number of tokens"
                    ));
                }
            }
        }
        match self.extra.get("attention_kernel") {
            Some(value) if !value.is_string() => {
                Err(format!("attention_kernel is {value}, not a string"))
            }
            _ => Ok(()),
        }
    }

    /// Every graph file the model runs.
    pub fn graph_files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.embedding.file.as_str())
            .chain(self.blocks.iter().map(|b| b.file.as_str()))
            .chain(std::iter::once(self.head.file.as_str()))
            .chain(self.head_logits.iter().map(|h| h.file.as_str()))
    }

    /// The graphs opened to evaluate masks: the embedding, every block and the head (the
    /// logits head opens only where logits are asked for).
    pub fn evaluated_graphs(&self) -> Vec<&str> {
        std::iter::once(self.embedding.file.as_str())
            .chain(self.blocks.iter().map(|b| b.file.as_str()))
            .chain(std::iter::once(self.head.file.as_str()))
            .collect()
    }

    /// The bytes of `graphs` (folder-relative graph files) and of the external-data files each
    /// reads: what a runtime that loads them holds. ONNX Runtime's sessions do not share
    /// initializers, so a file two graphs read (tied embedding and head weights) is held twice.
    pub fn graph_bytes(&self, dir: &Path, graphs: &[&str]) -> Result<GraphBytes, ModelError> {
        let references = self.references(dir)?;
        let mut seen = BTreeSet::new();
        let mut bytes = GraphBytes::default();
        for &graph in graphs {
            let reads = references.get(graph).into_iter().flatten();
            for file in std::iter::once(graph).chain(reads.map(String::as_str)) {
                let path = confined(dir, file)?;
                let size = std::fs::metadata(&path)
                    .map_err(|source| ModelError::Io { path, source })?
                    .len();
                bytes.per_graph += size;
                if seen.insert(file) {
                    bytes.distinct += size;
                }
            }
        }
        Ok(bytes)
    }

    /// The external-data files each graph uses, by graph: folder-relative paths, each checked
    /// to stay inside `dir` ([`confined_reference`]; an error names the graph and the
    /// location). Whether `files` lists them is not checked here ([`Self::check_references`]).
    pub fn references(&self, dir: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, ModelError> {
        let mut references = BTreeMap::new();
        for graph in self.graph_files() {
            if references.contains_key(graph) {
                continue;
            }
            let locations = graph_external_data(&confined(dir, graph)?)?;
            let mut files = BTreeSet::new();
            for location in &locations {
                files.insert(confined_reference(dir, graph, location)?.0);
            }
            references.insert(graph.to_string(), files);
        }
        Ok(references)
    }

    /// [`Self::references`], and, when `listed`, that `files` lists each of them with a
    /// sha256: a file a graph reads but the manifest does not list would go unchecked and the
    /// model id would not cover it. The error names the graph and the unlisted file.
    pub fn check_references(
        &self,
        dir: &Path,
        listed: bool,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, ModelError> {
        let references = self.references(dir)?;
        if listed {
            for (graph, files) in &references {
                if let Some(file) = files.iter().find(|f| !self.files.contains_key(*f)) {
                    return Err(ModelError::BadManifest {
                        path: dir.join(MANIFEST_FILE),
                        problem: format!(
                            "graph {graph} uses {file}, which `files` does not list with a \
                             sha256 (its bytes would go unchecked and the model id would not \
                             cover them)"
                        ),
                    });
                }
            }
        }
        Ok(references)
    }

    /// Checks the folder: every listed file's sha256 matches the folder's contents, then every
    /// external-data file the graphs use is listed in `files` (and stays inside `dir`), then
    /// `vocab_size` against the embedding's table ([`Self::check_vocabulary`]).
    /// The files are hashed on up to `VERIFY_THREADS` (8) threads (a 7B model's 13.5 GB took
    /// about 20 s on one core); a failure reported is the first in the manifest's order, as
    /// one thread would report it.
    pub fn verify_files(&self, dir: &Path) -> Result<(), ModelError> {
        let files: Vec<(&String, &String)> = self.files.iter().collect();
        // The failure reported is the first in the manifest's order, as one thread's would be.
        layerprune_core::parallel::try_map_in_order(
            &files,
            VERIFY_THREADS,
            |_, (relative, expected)| check_hash(dir, relative, expected),
        )?;
        // The graphs are the ones the manifest describes; now what they read.
        self.check_references(dir, true)?;
        self.check_vocabulary(dir)
    }

    /// Refuses a manifest whose `vocab_size` is not the number of rows of the table the
    /// embedding graph looks tokens up in (the initializer its Gather reads with the graph's
    /// input), naming manifest.json: the stages check token ids against `vocab_size`, so a
    /// smaller one blames a good token table ("tokenized for another model?") and a larger one
    /// lets ids past the table reach the graph's Gather (an error on the CPU provider,
    /// unchecked on CUDA). An embedding whose table is not an initializer the Gather reads
    /// directly is not checked.
    pub fn check_vocabulary(&self, dir: &Path) -> Result<(), ModelError> {
        let graph = confined(dir, &self.embedding.file)?;
        let Some((table, rows)) = embedding_rows(&crate::read_graph(&graph)?) else {
            return Ok(());
        };
        if rows == self.vocab_size as u64 {
            return Ok(());
        }
        Err(ModelError::BadManifest {
            path: dir.join(MANIFEST_FILE),
            problem: format!(
                "vocab_size is {}, but {} looks token ids up in a table of {rows} rows ({table}); \
                 the manifest does not describe its graphs",
                self.vocab_size, self.embedding.file
            ),
        })
    }

    /// What loading a model checks: with `verify`, [`Self::verify_files`]; without (a
    /// `--no-verify` run), that every file `files` lists is in the folder (a stat each, no
    /// hashing: a folder copied in part is refused here, not by ONNX Runtime in the middle of
    /// a run, and `inspect --no-verify` says so), every external-data file the graphs use
    /// stays inside `dir`, and [`Self::check_vocabulary`].
    pub fn check_folder(&self, dir: &Path, verify: bool) -> Result<(), ModelError> {
        if verify {
            self.verify_files(dir)
        } else {
            for relative in self.files.keys() {
                present(dir, relative)?;
            }
            self.check_references(dir, false)?;
            self.check_vocabulary(dir)
        }
    }

    /// The one sequence length the graphs accept, for models exported with a fixed length
    /// (Mamba: the state-space scan is unrolled for `fixed_seq_len` tokens); `None` for any.
    pub fn fixed_seq_len(&self) -> Option<usize> {
        self.extra_count("fixed_seq_len")
    }

    /// Whether windows of `seq_len` tokens fit the model in `dir`: exactly its
    /// [`Self::fixed_seq_len`], at most its [`Self::rotary_positions`] and at most its
    /// [`Self::context_length`]. One check for every stage that runs windows on a model
    /// (evaluate, apply-prune, frontier, quantize's GPTQ) and for prepare-tokens, which refuses
    /// them before it tokenizes.
    pub fn check_window_length(&self, dir: &Path, seq_len: usize) -> Result<(), ModelError> {
        let dir = dir.display();
        if let Some(fixed) = self.fixed_seq_len() {
            if seq_len != fixed {
                return Err(ModelError::BadRequest(format!(
                    "{dir} was exported for windows of exactly {fixed} tokens ({}), but the \
                     windows have {seq_len}: prepare the tokens with `prepare-tokens --seq-len \
                     {fixed}` (make: SEQ_LEN={fixed}), or export the model again with \
                     --fixed-seq-len {seq_len}",
                    self.architecture
                )));
            }
        }
        if let Some(positions) = self.rotary_positions() {
            if seq_len > positions {
                return Err(ModelError::BadRequest(format!(
                    "{dir} runs windows of at most {positions} tokens (its blocks' fused \
                     attention holds rotary tables for {positions} positions: rotary_positions \
                     in its manifest.json), but the windows have {seq_len}: prepare the tokens \
                     with `prepare-tokens --seq-len {positions}` or less (make: \
                     SEQ_LEN={positions}), or export the model with --attention-kernel standard"
                )));
            }
        }
        if let Some(context) = self.context_length() {
            if seq_len > context {
                return Err(ModelError::BadRequest(format!(
                    "{dir} was made for sequences of at most {context} tokens (context_length in \
                     its manifest.json: the checkpoint's max_position_embeddings), but the \
                     windows have {seq_len}: its positions past that are ones the model never \
                     saw; prepare the tokens with `prepare-tokens --seq-len {context}` or less \
                     (make: SEQ_LEN={context})"
                )));
            }
        }
        Ok(())
    }

    /// The longest sequence the checkpoint was made for (`context_length`: its
    /// `max_position_embeddings` or `n_positions`, recorded by tools/export since 2026-12-06);
    /// `None` for a model without positions (Mamba) or a folder exported before.
    pub fn context_length(&self) -> Option<usize> {
        self.extra_count("context_length")
    }

    /// The attention heads of each block (`num_attention_heads`, the checkpoint's config);
    /// `None` for a model without attention (Mamba) or whose manifest records none. What the
    /// automatic window batch bounds the attention's memory with.
    pub fn attention_heads(&self) -> Option<usize> {
        self.extra_count("num_attention_heads")
    }

    /// The longest sequence the block graphs run, for exports whose attention is ONNX
    /// Runtime's fused GroupQueryAttention (`rotary_positions`: the length of the rotary tables
    /// its node holds; tools/export's `--attention-kernel fused`); `None` for any length.
    pub fn rotary_positions(&self) -> Option<usize> {
        self.extra_count("rotary_positions")
    }

    /// Whether the blocks' attention is ONNX Runtime's fused GroupQueryAttention
    /// (`attention_kernel: "fused"`, tools/export's `--attention-kernel fused`), a
    /// `com.microsoft` operator that ONNX Runtime's CUDA provider runs in float16 / bfloat16 only.
    pub fn fused_attention(&self) -> bool {
        self.extra
            .get("attention_kernel")
            .and_then(serde_json::Value::as_str)
            == Some("fused")
    }

    /// The non-negative integer field `key` of the manifest's other fields, if it has one.
    fn extra_count(&self, key: &str) -> Option<usize> {
        self.extra
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .map(|n| n as usize)
    }

    /// The path of block `index`'s graph ([`confined`] to `dir`).
    pub fn block_path(&self, dir: &Path, index: usize) -> Result<PathBuf, ModelError> {
        let block = self.blocks.get(index).ok_or_else(|| {
            ModelError::BadRequest(format!(
                "block {index} is out of range for {} ({} blocks)",
                dir.display(),
                self.num_blocks
            ))
        })?;
        confined(dir, &block.file)
    }

    /// The tokenizer file's path ([`confined`] to `dir`).
    pub fn tokenizer_path(&self, dir: &Path) -> Result<PathBuf, ModelError> {
        confined(dir, &self.tokenizer)
    }

    /// The tokenizer this manifest names where `files` does not list it (under any spelling)
    /// and the folder `dir` has it: what a folder written from this one (pruned, quantized)
    /// copies besides its listed files, since the runtime reads an unlisted tokenizer
    /// unchecked: left out, the new folder would name a file it lacks.
    pub fn unlisted_tokenizer(&self, dir: &Path) -> Result<Option<&str>, ModelError> {
        let listed = self.files.keys().any(|file| {
            crate::confine::without_dots(file) == crate::confine::without_dots(&self.tokenizer)
        });
        Ok((!listed && self.tokenizer_path(dir)?.is_file()).then_some(self.tokenizer.as_str()))
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

/// Whether `dir` is meant as a layered model folder: its `manifest.json` is there in any form
/// (a regular file, but also a folder, a device, a FIFO or a dangling symbolic link, which
/// [`Manifest::load`] then refuses, saying what it is). A tool that also takes other folders
/// (prepare-tokens: a Hugging Face checkpoint's, for its tokenizer.json) branches on this, not
/// on `is_file`: a damaged manifest is refused, not passed over, the folder silently taken
/// for another kind and the manifest's checks skipped.
pub fn is_layered_folder(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(MANIFEST_FILE)).is_ok()
}

/// The `num_blocks` field of `dir/manifest.json`, reading nothing else: enough to plan masks
/// for a model (`sample-masks`) without checking, or even having, the rest of its folder.
pub fn read_num_blocks(dir: &Path) -> Result<usize, ModelError> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = read_manifest(dir)?;
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
    match usize::try_from(num_blocks) {
        Ok(num_blocks) if num_blocks <= MAX_BLOCKS => Ok(num_blocks),
        _ => Err(bad(format!(
            "num_blocks {num_blocks} is more than the {MAX_BLOCKS} blocks a model may have"
        ))),
    }
}

/// The bytes of `dir/manifest.json`; a folder without one is named as not a layered model
/// folder, and a folder that is not there as missing, rather than with the OS's "No such file"
/// for a file the user never named. A file over [`MAX_MANIFEST_BYTES`] is refused before it is
/// read, not read whole into memory.
fn read_manifest(dir: &Path) -> Result<Vec<u8>, ModelError> {
    use std::io::Read;
    let path = dir.join(MANIFEST_FILE);
    let file = layerprune_core::open_input(&path).map_err(|source| {
        if source.kind() != std::io::ErrorKind::NotFound {
            return ModelError::Io {
                path: path.clone(),
                source,
            };
        }
        let problem = if let Ok(target) = std::fs::read_link(&path) {
            // The name is there, as a symbolic link to nothing: not a folder without one.
            return ModelError::BadManifest {
                path: path.clone(),
                problem: format!(
                    "a symbolic link to {}, which is not there (a dangling link)",
                    target.display()
                ),
            };
        } else if dir.is_dir() {
            format!(
                "a folder without a {MANIFEST_FILE}, so not a layered model folder (tools/export \
                 writes one from a Hugging Face model: docs/your-model.md)"
            )
        } else {
            "no such model folder".to_string()
        };
        ModelError::BadManifest {
            path: dir.to_path_buf(),
            problem,
        }
    })?;
    let too_large = |bytes: u64| ModelError::BadManifest {
        path: path.clone(),
        problem: format!(
            "is {bytes} bytes or more, over the {MAX_MANIFEST_BYTES} a manifest may have (it \
             lists the model's files, it does not hold them)"
        ),
    };
    let size = file.metadata().map_err(ModelError::io(&path))?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(too_large(size));
    }
    // Read no further than the limit: a file may grow after its size was read.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ModelError::io(&path))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The table an embedding graph looks token ids up in: the name and first dimension of the
/// initializer that a Gather (along axis 0) of the main graph indexes with one of the graph's
/// inputs (`Gather(embed_tokens.weight, input_ids)`, as tools/export writes it). `None` where
/// no Gather reads an initializer so (a table computed, dequantized or cast first): nothing
/// to compare.
fn embedding_rows(model: &onnx_protobuf::ModelProto) -> Option<(String, u64)> {
    let graph = model.graph.as_ref()?;
    let tables: BTreeMap<&str, &[i64]> = graph
        .initializer
        .iter()
        .map(|tensor| (tensor.name.as_str(), tensor.dims.as_slice()))
        .collect();
    // A graph input that is also an initializer is a default value, not the token ids.
    let is_fed = |name: &str| {
        graph
            .input
            .iter()
            .any(|input| input.name == name && !tables.contains_key(name))
    };
    graph.node.iter().find_map(|node| {
        let along_rows = node
            .attribute
            .iter()
            .all(|attribute| attribute.name != "axis" || attribute.i == 0);
        if node.op_type != "Gather" || !node.domain.is_empty() || !along_rows {
            return None;
        }
        let [table, ids, ..] = node.input.as_slice() else {
            return None;
        };
        let rows = *tables.get(table.as_str())?.first()?;
        (is_fed(ids) && rows > 0).then(|| (table.clone(), rows as u64))
    })
}

/// The model id: sha256 of the manifest's bytes, which include every part's hash (read with
/// the manifest itself by [`Manifest::load_with_id`]).
pub fn model_id(dir: &Path) -> Result<String, ModelError> {
    sha256_file(&dir.join(MANIFEST_FILE))
}

/// The path of a file of the folder (`relative`, confined to `dir`), refused where the folder
/// lacks it. Said as what it is (the OS says only "No such file or directory"): a folder copied
/// in part, or a file deleted from it.
fn present(dir: &Path, relative: &str) -> Result<PathBuf, ModelError> {
    let path = confined(dir, relative)?;
    if let Err(error) = std::fs::symlink_metadata(&path) {
        if error.kind() == std::io::ErrorKind::NotFound {
            return Err(ModelError::BadManifest {
                path,
                problem: format!(
                    "listed in {MANIFEST_FILE}, but not in the folder (copied in part, or the \
                     file deleted since)"
                ),
            });
        }
    }
    Ok(path)
}

/// Whether the file `relative` of `dir` (confined to it) has the sha256 `expected`.
fn check_hash(dir: &Path, relative: &str, expected: &str) -> Result<(), ModelError> {
    let path = present(dir, relative)?;
    let actual = sha256_file(&path)?;
    if actual != expected {
        return Err(ModelError::HashMismatch {
            path,
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Threads [`Manifest::verify_files`] hashes on at most: beyond this many, parallel reads
/// from one disk compete more than they overlap.
pub const VERIFY_THREADS: usize = 8;

/// The sha256 of the file at `path`, in hex; read in 1 MiB pieces, asking between them
/// whether the stage was asked to end.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    use sha2::Digest;
    use std::io::Read;
    let mut file = layerprune_core::open_input(path).map_err(|source| ModelError::Io {
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
        // A 7B model is read for half a minute or more: a stage asked to end stops here.
        layerprune_core::interrupt::check().map_err(|source| ModelError::Interrupted {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(hex::encode(hasher.finalize()))
}
