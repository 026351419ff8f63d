//! Quantizing a whole model: a layered model folder (docs/model-format.md) or one ONNX file.
//!
//! Folder: each graph is rewritten by [`quantize_model`]; the new tensors of at least 1 KiB go
//! to content-addressed files `weights/<first 32 hex digits of sha256>.bin` beside the graph
//! (ONNX resolves external data against the graph's own folder: `blocks/weights/…` for a graph
//! `blocks/block_000.onnx`), as the exporter writes them, so graphs stay small and a pruned or
//! re-pruned folder can still find the files a graph uses. Float weight files no graph reads
//! any more are left out, every other listed file is copied (or hard-linked, where asked:
//! [`SourceFiles`]; `onnx.load` refuses a weight file with several links), and the manifest
//! gets the new hashes and a `quantization` [`Record`]. The folder is built beside the
//! destination and renamed into place (`layerprune_model::write_folder`, the writer pruned
//! folders use too); [`quantize_folder_to`] writes each graph's files into it as soon as the
//! graph is done, so memory holds the graphs in flight rather than the whole model.
//!
//! One file (e.g. `merge_layered.py`'s): every tensor is stored inline in the output, so it is
//! self-contained (ONNX's protobuf limit of 2 GiB applies), and the record goes into the
//! model's `metadata_props` under `layerprune.quantization`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use layerprune_core::parallel::{threads_or_budget, try_map_in_order};
use layerprune_core::Device;
use layerprune_model::{
    confined, confined_reference, external_data_locations, model_id, take_source_file, Manifest,
    SourceFiles, MANIFEST_FILE, MAX_TENSOR_ELEMENTS,
};
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use protobuf::{EnumOrUnknown, Message};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::calibrate::{Activations, Gptq};
use crate::graph::{
    check_initializer_names, entry, external_location, quantize_model, GraphReport, Nearest,
    Rounding,
};
use crate::{QuantizeError, Scheme};

/// Tensors at least this large are written to their own weight file (the exporter's rule).
pub const EXTERNAL_THRESHOLD_BYTES: usize = 1024;
/// The key of the record in a single file's `metadata_props`.
pub const METADATA_KEY: &str = "layerprune.quantization";
/// protobuf refuses messages of 2 GiB or more.
const PROTOBUF_LIMIT: usize = (1 << 31) - 1;

/// The manifest's `quantization` record (docs/model-format.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// `int8` or `int4`.
    pub scheme: String,
    pub bits: u32,
    /// Inputs per scale and zero point (int4); absent for per-channel int8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    pub symmetric: bool,
    /// How the codes were chosen: `rtn` (round to nearest) or `gptq`.
    pub method: String,
    /// GPTQ's calibration data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationRecord>,
    /// What the quantized MatMuls became.
    pub operator: String,
    /// `MatMulNBits`' accuracy_level (int4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_level: Option<i64>,
    /// MatMuls quantized over all graphs.
    pub quantized_matmuls: usize,
    /// Graphs left in float on request (e.g. the head).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_graphs: Vec<String>,
    /// `model_id` of the model that was quantized (sha256 of its manifest, or of the file).
    pub source_model_id: String,
    /// The tool and its version.
    pub tool: String,
}

/// What GPTQ was calibrated on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CalibrationRecord {
    /// `dataset_id` of the token table.
    pub dataset_id: String,
    pub windows: usize,
    pub seq_len: usize,
    /// Added to the diagonal of `Σ x xᵀ`, as a fraction of its mean.
    pub damp: f64,
    /// Which graphs GPTQ rounded (the blocks), and what became of the others: rounded to
    /// nearest, left in float on request, or float32 with no MatMul weight (the embedding's
    /// Gather), e.g. `blocks; head, head_logits rounded to nearest; embedding float32 (no
    /// MatMul weight)`.
    pub graphs: String,
}

/// GPTQ's calibration tokens and damping.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Token ids, windows of one length.
    pub windows: Vec<Vec<u32>>,
    pub dataset_id: String,
    /// Fraction of the mean diagonal added to `Σ x xᵀ` (GPTQ's default is 0.01).
    pub damp: f64,
    /// Where the calibration passes run: the CPU, or a CUDA GPU (an error when the CUDA
    /// execution provider cannot be registered, never a fall-back to the CPU).
    pub device: Device,
}

impl Record {
    fn new(scheme: &Scheme, quantized: usize, excluded: Vec<String>, source_id: String) -> Self {
        let (bits, block_size, symmetric, operator, accuracy_level) = match scheme {
            Scheme::Int8 => (8, None, true, layerprune_model::INT8_OPERATOR, None),
            Scheme::Int4 {
                block_size,
                accuracy_level,
            } => (
                4,
                Some(*block_size),
                false,
                layerprune_model::INT4_OPERATOR,
                Some(*accuracy_level),
            ),
        };
        Record {
            scheme: scheme.name().into(),
            bits,
            block_size,
            symmetric,
            method: "rtn".into(),
            calibration: None,
            operator: operator.into(),
            accuracy_level,
            quantized_matmuls: quantized,
            excluded_graphs: excluded,
            source_model_id: source_id,
            tool: format!("quantize {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What to quantize.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    pub scheme: Scheme,
    /// Leave the head graphs (`head`, `head_logits`) in float.
    pub exclude_head: bool,
    /// Check the source files' sha256 against its manifest first.
    pub verify: bool,
    /// Round the blocks' weights with GPTQ on these tokens instead of to nearest.
    pub calibration: Option<Calibration>,
    /// CPU threads (0: the process's thread budget). Rounding to nearest rounds this many
    /// graph files at a time; GPTQ, whose blocks go one after another, runs ONNX Runtime's
    /// calibration passes and its own factoring and sweeps on them.
    pub threads: usize,
}

/// A quantized folder, held in memory until [`write_folder`] ([`quantize_folder_to`] writes
/// each graph's files as it is done instead).
#[derive(Debug)]
pub struct QuantizedFolder {
    pub manifest: Manifest,
    /// Rewritten graphs by relative path.
    pub graphs: BTreeMap<String, Vec<u8>>,
    /// New weight files by relative path.
    pub new_weights: BTreeMap<String, Vec<u8>>,
    /// Files taken unchanged from the source folder.
    pub unchanged: Vec<String>,
    /// Source files no longer needed (float weights that were quantized).
    pub dropped: Vec<String>,
    /// Per graph, what was done.
    pub reports: Vec<(String, GraphReport)>,
}

/// Reads float32 tensors, inline or from external data files under `dir`.
pub(crate) struct FileLoader {
    pub(crate) dir: PathBuf,
    pub(crate) graph: PathBuf,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> QuantizeError + '_ {
    move |source| QuantizeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl FileLoader {
    fn bad(&self, tensor: &TensorProto, problem: String) -> QuantizeError {
        QuantizeError::BadModel {
            path: self.graph.clone(),
            problem: format!("tensor {}: {problem}", tensor.name),
        }
    }

    /// Moves the weights `graph` reads from external files into the graph itself.
    pub(crate) fn inline_weights(&self, graph: &mut GraphProto) -> Result<(), QuantizeError> {
        for tensor in graph.initializer.iter_mut() {
            if external_location(tensor).is_some() {
                tensor.raw_data = self.raw_bytes(tensor)?;
                tensor.external_data.clear();
                tensor.data_location = EnumOrUnknown::new(DataLocation::DEFAULT);
            }
        }
        Ok(())
    }

    /// The tensor's bytes as stored: raw, or from its external file.
    pub(crate) fn raw_bytes(&self, tensor: &TensorProto) -> Result<Vec<u8>, QuantizeError> {
        let Some(mut external) = self.open_external(tensor)? else {
            return Ok(tensor.raw_data.clone());
        };
        let mut bytes = vec![0u8; external.length];
        external
            .file
            .read_exact(&mut bytes)
            .map_err(|error| self.unreadable(tensor, &external, error))?;
        Ok(bytes)
    }

    /// The external file of `tensor`, positioned at its data; `None` for a tensor stored in
    /// the graph. The data's offset and length are checked against the file's size.
    fn open_external(&self, tensor: &TensorProto) -> Result<Option<External>, QuantizeError> {
        let Some(location) = external_location(tensor) else {
            return Ok(None);
        };
        // Relative, no `..`, no symlink out of the folder (the graph lies in `dir`).
        let graph_name = self
            .graph
            .strip_prefix(&self.dir)
            .ok()
            .or_else(|| self.graph.file_name().map(Path::new))
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (_, path) = confined_reference(&self.dir, &graph_name, &location)
            .map_err(|error| self.bad(tensor, error.to_string()))?;
        let number = |key: &str| -> Result<Option<u64>, QuantizeError> {
            entry(&tensor.external_data, key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| self.bad(tensor, format!("external data {key} is {v:?}")))
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        // Named with the graph and tensor that read it: a weight file alone says not whose.
        let unreadable = |error: std::io::Error| {
            self.bad(
                tensor,
                format!("external data {location} ({}): {error}", path.display()),
            )
        };
        let mut file = layerprune_core::open_input(&path).map_err(unreadable)?;
        let size = file.metadata().map_err(unreadable)?.len();
        let length = number("length")?.unwrap_or(size.saturating_sub(offset));
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(self.bad(
                tensor,
                format!("external data {location} is {size} bytes, shorter than offset {offset} + length {length}"),
            ));
        }
        file.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
        let length = usize::try_from(length).map_err(|_| {
            self.bad(
                tensor,
                format!("external data length {length} is too large"),
            )
        })?;
        Ok(Some(External {
            file,
            length,
            location,
            path,
        }))
    }

    fn unreadable(
        &self,
        tensor: &TensorProto,
        external: &External,
        error: std::io::Error,
    ) -> QuantizeError {
        self.bad(
            tensor,
            format!(
                "external data {} ({}): {error}",
                external.location,
                external.path.display()
            ),
        )
    }
}

/// A tensor's external data: its file, positioned at the data, and the data's length.
struct External {
    file: fs::File,
    length: usize,
    location: String,
    path: PathBuf,
}

/// Bytes of external data converted to float32 at a time: a weight is read into its values
/// directly, never held as bytes and values at once (the tied head of SmolLM2-135M is 113 MB).
const READ_CHUNK_BYTES: usize = 1 << 20;

fn f32_from_le(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl crate::TensorLoader for FileLoader {
    fn load_f32(&mut self, tensor: &TensorProto) -> Result<Vec<f32>, QuantizeError> {
        if tensor.data_type != DataType::FLOAT as i32 {
            return Err(self.bad(tensor, "is not float32".into()));
        }
        let count = element_count(&tensor.dims).ok_or_else(|| {
            self.bad(tensor, format!("dims {:?} are not a tensor's", tensor.dims))
        })?;
        if external_location(tensor).is_none() && !tensor.float_data.is_empty() {
            if tensor.float_data.len() != count {
                return Err(self.bad(tensor, "float_data does not match its dims".into()));
            }
            return Ok(tensor.float_data.clone());
        }
        let external = self.open_external(tensor)?;
        let length = external
            .as_ref()
            .map_or(tensor.raw_data.len(), |e| e.length);
        if length != count.saturating_mul(4) {
            return Err(self.bad(
                tensor,
                format!(
                    "holds {length} bytes, its dims {:?} need {}",
                    tensor.dims,
                    count * 4
                ),
            ));
        }
        let Some(mut external) = external else {
            return Ok(f32_from_le(&tensor.raw_data).collect());
        };
        let mut values = Vec::with_capacity(count);
        let mut buffer = vec![0u8; READ_CHUNK_BYTES.min(length)];
        let mut left = length;
        while left > 0 {
            let chunk = &mut buffer[..left.min(READ_CHUNK_BYTES)];
            external
                .file
                .read_exact(chunk)
                .map_err(|error| self.unreadable(tensor, &external, error))?;
            values.extend(f32_from_le(chunk));
            left -= chunk.len();
        }
        Ok(values)
    }
}

/// The number of elements of a tensor of `dims`: non-negative dims whose product (in checked
/// arithmetic) is at most [`MAX_TENSOR_ELEMENTS`]; `None` otherwise.
fn element_count(dims: &[i64]) -> Option<usize> {
    let count = dims.iter().try_fold(1u64, |count, &dim| {
        count.checked_mul(u64::try_from(dim).ok()?)
    })?;
    (count <= MAX_TENSOR_ELEMENTS)
        .then(|| usize::try_from(count).ok())
        .flatten()
}

pub(crate) fn parse_model(path: &Path) -> Result<ModelProto, QuantizeError> {
    // The model crate's reader, which every graph reader shares: an empty file or one holding
    // no graph is refused as no ONNX model, not quantized as a graph with nothing in it.
    Ok(layerprune_model::read_graph(path)?)
}

fn encode(model: &ModelProto, path: &Path) -> Result<Vec<u8>, QuantizeError> {
    let size = model.compute_size() as usize;
    if size > PROTOBUF_LIMIT {
        return Err(QuantizeError::Unsupported(format!(
            "{}: the quantized model would be {size} bytes, over protobuf's 2 GiB limit for \
             one file; quantize the layered folder instead",
            path.display()
        )));
    }
    model
        .write_to_bytes()
        .map_err(|error| QuantizeError::BadModel {
            path: path.to_path_buf(),
            problem: format!("cannot encode the rewritten graph: {error}"),
        })
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Moves the tensors named in `names` of at least [`EXTERNAL_THRESHOLD_BYTES`] of the graph
/// `file` (folder-relative) of the folder `source` to content-addressed weight files. The
/// graph names each `weights/<hash>.bin`, which ONNX resolves against the graph's own folder;
/// the files are returned by their folder-relative path (`blocks/weights/<hash>.bin` for a
/// graph `blocks/block_000.onnx`) with their sha256 and bytes.
fn externalize(
    model: &mut ModelProto,
    names: &BTreeSet<String>,
    source: &Path,
    file: &str,
) -> Result<BTreeMap<String, (String, Vec<u8>)>, QuantizeError> {
    let mut files = BTreeMap::new();
    let Some(graph) = model.graph.as_mut() else {
        return Ok(files);
    };
    for tensor in graph.initializer.iter_mut() {
        if !names.contains(&tensor.name) || tensor.raw_data.len() < EXTERNAL_THRESHOLD_BYTES {
            continue;
        }
        let raw = std::mem::take(&mut tensor.raw_data);
        let hash = sha256_hex(&raw);
        let location = format!("weights/{}.bin", &hash[..32]);
        let (relative, _) = confined_reference(source, file, &location)?;
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.into(),
            value,
            ..Default::default()
        };
        tensor.external_data = vec![
            entry("location", location),
            entry("offset", "0".into()),
            entry("length", raw.len().to_string()),
        ];
        tensor.data_location = EnumOrUnknown::new(DataLocation::EXTERNAL);
        files.entry(relative).or_insert((hash, raw));
    }
    Ok(files)
}

/// The folder-relative paths of the external data `model` (the graph `file` of the folder
/// `source`) reads, each [`confined_reference`] to the folder.
fn references(
    source: &Path,
    file: &str,
    model: &ModelProto,
) -> Result<BTreeSet<String>, QuantizeError> {
    external_data_locations(model)
        .iter()
        .map(|location| Ok(confined_reference(source, file, location)?.0))
        .collect()
}

fn initializer_names(model: &ModelProto) -> BTreeSet<String> {
    model
        .graph
        .iter()
        .flat_map(|g| g.initializer.iter().map(|t| t.name.clone()))
        .collect()
}

/// Refuses calibration `windows` (read from the token table `table`, named in the message)
/// that the layered model in `source` cannot run (ids outside its vocabulary, unequal
/// lengths, another tokenizer's, a length other than the one a fixed-length export such as
/// Mamba's runs, or longer than a fused export's rotary tables): checked before any work,
/// where GPTQ's first pass would fail — with `evaluate`'s words.
pub fn check_calibration(
    source: &Path,
    windows: &[Vec<u32>],
    tokenizer_sha256: &str,
    table: &Path,
) -> Result<(), QuantizeError> {
    let manifest = Manifest::load(source)?;
    let refuse = |problem: String| {
        QuantizeError::Unsupported(format!(
            "calibration tokens {} with {}: {problem}",
            table.display(),
            source.display()
        ))
    };
    // The window lengths the model runs too, as every stage that runs windows checks them.
    layerprune_runtime::check_tokens(&manifest, source, windows, tokenizer_sha256)
        .map_err(|e| refuse(e.to_string()))
}

/// Chooses a graph's rounding once its model is parsed: to nearest, or GPTQ on the
/// activations reaching it (returned with the method's name for the log).
type ChooseRounding<'a> =
    &'a mut dyn FnMut(
        &ModelProto,
        &Path,
        &FileLoader,
    ) -> Result<(Box<dyn Rounding>, &'static str), QuantizeError>;

/// Where the files of the new folder go as each graph is done, so no more than the graphs in
/// flight are held in memory: kept ([`quantize_folder`]) or written into the folder being
/// built ([`quantize_folder_to`]). Called from the threads that round graphs.
trait Sink: Sync {
    /// Takes the file `relative` of the new folder (a rewritten graph or a new weight file).
    /// A path given again — a weight file two graphs share by content — is taken once.
    fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), QuantizeError>;
}

/// Keeps the files in memory.
#[derive(Default)]
struct MemorySink(Mutex<BTreeMap<String, Vec<u8>>>);

impl Sink for MemorySink {
    fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), QuantizeError> {
        lock(&self.0).entry(relative.to_string()).or_insert(bytes);
        Ok(())
    }
}

/// Writes the files into `folder` (the temporary folder [`quantize_folder_to`] fills).
struct FolderSink<'a> {
    folder: &'a Path,
    written: Mutex<BTreeSet<String>>,
}

impl Sink for FolderSink<'_> {
    fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), QuantizeError> {
        if !lock(&self.written).insert(relative.to_string()) {
            return Ok(());
        }
        layerprune_model::write_file(&confined(self.folder, relative)?, &bytes)?;
        Ok(())
    }
}

/// A mutex's value, also after a thread panicked holding it (what it guards stays whole: one
/// insertion at a time).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What quantizing one graph file of a folder gave (its files went to the [`Sink`]).
#[derive(Default)]
struct GraphOutcome {
    /// The sha256 of the rewritten graph, if any MatMul was quantized.
    encoded: Option<String>,
    /// Its new content-addressed weight files (folder-relative) and their sha256.
    new_weights: BTreeMap<String, String>,
    /// The external-data files it reads.
    references: BTreeSet<String>,
    /// The external-data files it read before it was rewritten.
    source_references: BTreeSet<String>,
    /// What was done; `None` for a graph left in float on request (`exclude_head`).
    report: Option<GraphReport>,
}

/// Counts the graphs done for the log, in whatever order threads finish them.
struct Progress {
    done: AtomicUsize,
    total: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        Progress {
            done: AtomicUsize::new(0),
            total,
        }
    }

    /// Logs the graph `file` done, and `what` was done to it.
    fn done(&self, file: &str, what: &str) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            "quantize: {file}: {what}, {done}/{} graphs done",
            self.total
        );
    }
}

/// Quantizes the graph `file` of the folder `source`; its rewritten graph and new weight
/// files go to `sink` as soon as it is done.
fn quantize_graph(
    source: &Path,
    file: &str,
    options: &FolderOptions,
    head_graphs: &BTreeSet<&str>,
    progress: &Progress,
    sink: &dyn Sink,
    rounding: ChooseRounding<'_>,
) -> Result<GraphOutcome, QuantizeError> {
    // Asked to end: before the next graph (its error path removes the folder being written).
    layerprune_core::interrupt::check()?;
    let path = confined(source, file)?;
    let mut model = parse_model(&path)?;
    let source_references = references(source, file, &model)?;
    if options.exclude_head && head_graphs.contains(file) {
        progress.done(file, "left in float (the head, excluded)");
        return Ok(GraphOutcome {
            references: source_references.clone(),
            source_references,
            ..GraphOutcome::default()
        });
    }
    // Before GPTQ runs the graph: which of two same-named initializers it would read is
    // ONNX Runtime's choice.
    check_initializer_names(&model).map_err(|error| error.in_graph(&path))?;
    let before = initializer_names(&model);
    let mut loader = FileLoader {
        dir: source.to_path_buf(),
        graph: path.clone(),
    };
    let (mut rounding, method) = rounding(&model, &path, &loader)?;
    // A cut-off ONNX file can parse as a graph of no nodes (an empty file, or one holding no
    // graph, `parse_model` refuses): it would be copied as it is, into a folder that cannot
    // run.
    if model
        .graph
        .as_ref()
        .is_none_or(|graph| graph.node.is_empty())
    {
        return Err(QuantizeError::BadModel {
            path,
            problem: "the graph has no nodes (an empty or cut-off ONNX file)".into(),
        });
    }
    let report = quantize_model(&mut model, &options.scheme, &mut loader, rounding.as_mut())
        .map_err(|error| error.in_graph(&path))?;
    drop(rounding);
    let mut outcome = GraphOutcome::default();
    if !report.quantized.is_empty() {
        let added: BTreeSet<String> = initializer_names(&model)
            .difference(&before)
            .cloned()
            .collect();
        for (relative, (hash, bytes)) in externalize(&mut model, &added, source, file)? {
            sink.put(&relative, bytes)?;
            outcome.new_weights.insert(relative, hash);
        }
        let encoded = encode(&model, &path)?;
        outcome.encoded = Some(sha256_hex(&encoded));
        sink.put(file, encoded)?;
    }
    progress.done(
        file,
        &format!("{} MatMuls ({method})", report.quantized.len()),
    );
    outcome.references = references(source, file, &model)?;
    outcome.source_references = source_references;
    outcome.report = Some(report);
    Ok(outcome)
}

/// A quantized folder as [`quantize_folder_to`] wrote it (or [`quantize_folder`] holds it):
/// its manifest and what each of its files is, by relative path.
#[derive(Debug)]
pub struct WrittenFolder {
    pub manifest: Manifest,
    /// Rewritten graphs.
    pub graphs: Vec<String>,
    /// New weight files.
    pub new_weights: Vec<String>,
    /// Files taken unchanged from the source folder.
    pub unchanged: Vec<String>,
    /// Source files no longer needed (float weights that were quantized).
    pub dropped: Vec<String>,
    /// Per graph, what was done.
    pub reports: Vec<(String, GraphReport)>,
}

impl WrittenFolder {
    /// The quantization record written into the manifest.
    pub fn record(&self) -> Option<Record> {
        record_of(&self.manifest)
    }
}

fn record_of(manifest: &Manifest) -> Option<Record> {
    manifest
        .quantization
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// The calibration record's `graphs`: GPTQ rounds the blocks; what became of each other graph
/// (the embedding's Gather is no MatMul, so it has nothing to round).
fn gptq_graphs(
    manifest: &Manifest,
    reports: &[(String, GraphReport)],
    excluded: &[String],
) -> String {
    let roles = std::iter::once(("embedding", manifest.embedding.file.as_str()))
        .chain(std::iter::once(("head", manifest.head.file.as_str())))
        .chain(
            manifest
                .head_logits
                .iter()
                .map(|h| ("head_logits", h.file.as_str())),
        );
    let (mut rounded, mut excluded_roles, mut float) = (Vec::new(), Vec::new(), Vec::new());
    for (role, file) in roles {
        if excluded.iter().any(|f| f == file) {
            excluded_roles.push(role);
        } else if reports
            .iter()
            .any(|(f, r)| f == file && !r.quantized.is_empty())
        {
            rounded.push(role);
        } else {
            float.push(role);
        }
    }
    let mut text = String::from("blocks");
    for (roles, what) in [
        (rounded, "rounded to nearest"),
        (excluded_roles, "left in float on request"),
        (float, "float32 (no MatMul weight)"),
    ] {
        if !roles.is_empty() {
            text.push_str(&format!("; {} {what}", roles.join(", ")));
        }
    }
    text
}

/// Refuses a GPTQ damping that is not a fraction of the mean diagonal of the inputs' second
/// moments above 0 and at most 1 (GPTQ's reference code takes 0.01; at 1 the damping weighs as
/// much as the calibration data's mean, and more only moves GPTQ towards rounding to nearest,
/// or overflows). What `quantize --damp` and [`quantize_folder_to`] accept.
pub fn check_damp(damp: f64) -> Result<(), QuantizeError> {
    if damp > 0.0 && damp <= 1.0 {
        Ok(())
    } else {
        Err(QuantizeError::Unsupported(format!(
            "GPTQ: damping {damp} is not a fraction of the mean diagonal above 0 and at most 1 \
             (GPTQ's default is 0.01)"
        )))
    }
}

/// Quantizes the layered model in `source`, each graph's new files handed to `sink` as soon as
/// the graph is done; returns what the new folder holds (its manifest not yet written).
fn quantize_into(
    source: &Path,
    options: &FolderOptions,
    sink: &dyn Sink,
) -> Result<WrittenFolder, QuantizeError> {
    options.scheme.validate()?;
    if let Some(calibration) = &options.calibration {
        check_damp(calibration.damp)?;
    }
    let manifest = Manifest::load(source)?;
    let manifest_path = source.join(MANIFEST_FILE);
    if let Some(record) = &manifest.quantization {
        return Err(QuantizeError::BadModel {
            path: manifest_path,
            problem: format!(
                "the model is already quantized ({}); quantize the float model it came from",
                record.get("scheme").and_then(|s| s.as_str()).unwrap_or("?")
            ),
        });
    }
    if manifest.dtype != "float32" {
        return Err(QuantizeError::Unsupported(format!(
            "{}: dtype is {}; only float32 models are quantized",
            manifest_path.display(),
            manifest.dtype
        )));
    }
    // Every file the graphs read stays inside `source`; with `verify`, each is also listed in
    // `files` and every listed file's sha256 matches.
    manifest.check_folder(source, options.verify)?;
    let head_graphs: BTreeSet<&str> = std::iter::once(manifest.head.file.as_str())
        .chain(manifest.head_logits.iter().map(|h| h.file.as_str()))
        .collect();
    // The manifest's order (embedding, blocks in order, heads): GPTQ's activations flow
    // through the blocks in that order.
    let mut graph_files: Vec<String> = Vec::new();
    for file in manifest.graph_files() {
        if !graph_files.iter().any(|f| f == file) {
            graph_files.push(file.to_string());
        }
    }
    let block_files: BTreeSet<&str> = manifest.blocks.iter().map(|b| b.file.as_str()).collect();
    let mut activations = match &options.calibration {
        Some(calibration) => Some(Activations::start(
            &confined(source, &manifest.embedding.file)?,
            &calibration.windows,
            options.threads,
            calibration.device,
        )?),
        None => None,
    };

    let progress = Progress::new(graph_files.len());
    let graph = |file: &String, rounding: ChooseRounding<'_>| {
        quantize_graph(
            source,
            file,
            options,
            &head_graphs,
            &progress,
            sink,
            rounding,
        )
    };
    let outcomes: Vec<GraphOutcome> = match &mut activations {
        // Rounding to nearest reads nothing but the graph's own weights: the graphs are
        // independent, and rounded `options.threads` at a time; the failure reported is the
        // first bad graph in the manifest's order, as one at a time.
        None => try_map_in_order(
            &graph_files,
            threads_or_budget(options.threads),
            |_, file| graph(file, &mut |_, _, _| Ok((Box::new(Nearest), "rtn"))),
        )?,
        // GPTQ's activations flow through the blocks in the manifest's order: one at a time.
        Some(activations) => graph_files
            .iter()
            .map(|file| {
                graph(file, &mut |model, path, loader| {
                    let Some(calibration) = options
                        .calibration
                        .as_ref()
                        .filter(|_| block_files.contains(file.as_str()))
                    else {
                        return Ok((Box::new(Nearest), "rtn"));
                    };
                    Ok((
                        Box::new(Gptq::new(
                            activations.block(model, path, loader)?,
                            calibration.damp,
                            path.to_path_buf(),
                            options.threads,
                        )),
                        "gptq",
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    drop(activations);

    let mut graphs = BTreeMap::new();
    let mut new_weights = BTreeMap::new();
    let mut reports = Vec::new();
    let mut referenced = BTreeSet::new();
    let mut source_referenced = BTreeSet::new();
    let mut excluded = Vec::new();
    for (file, outcome) in graph_files.iter().zip(outcomes) {
        referenced.extend(outcome.references);
        source_referenced.extend(outcome.source_references);
        let Some(report) = outcome.report else {
            excluded.push(file.clone());
            continue;
        };
        if let Some(hash) = outcome.encoded {
            graphs.insert(file.clone(), hash);
        }
        for (location, hash) in outcome.new_weights {
            new_weights.entry(location).or_insert(hash);
        }
        reports.push((file.clone(), report));
    }
    for (file, report) in &reports {
        refuse_unsupported(&source.join(file), report)?;
    }
    let quantized: usize = reports.iter().map(|(_, r)| r.quantized.len()).sum();
    if quantized == 0 {
        return Err(QuantizeError::NothingToQuantize {
            path: source.to_path_buf(),
        });
    }
    for location in &referenced {
        if !manifest.files.contains_key(location) && !new_weights.contains_key(location) {
            return Err(QuantizeError::BadModel {
                path: manifest_path.clone(),
                problem: format!("a graph uses {location}, which `files` does not list"),
            });
        }
    }

    // A listed file no graph reads any more is left out: a float weight file that a graph read
    // before it was rewritten (in `weights/` or beside a graph in a subfolder), or any file in
    // `weights/`.
    let mut files = BTreeMap::new();
    let mut unchanged = Vec::new();
    let mut dropped = Vec::new();
    for (relative, hash) in &manifest.files {
        if let Some(new) = graphs.get(relative).or_else(|| new_weights.get(relative)) {
            // A rewritten graph, or a new weight file identical to a listed one.
            files.insert(relative.clone(), new.clone());
        } else if !referenced.contains(relative)
            && (relative.starts_with("weights/") || source_referenced.contains(relative))
        {
            dropped.push(relative.clone());
        } else {
            files.insert(relative.clone(), hash.clone());
            unchanged.push(relative.clone());
        }
    }
    for (relative, hash) in graphs.iter().chain(&new_weights) {
        files
            .entry(relative.clone())
            .or_insert_with(|| hash.clone());
    }
    let mut record = Record::new(
        &options.scheme,
        quantized,
        excluded.clone(),
        model_id(source)?,
    );
    if let Some(calibration) = &options.calibration {
        record.method = "gptq".into();
        record.calibration = Some(CalibrationRecord {
            dataset_id: calibration.dataset_id.clone(),
            windows: calibration.windows.len(),
            seq_len: calibration.windows.first().map_or(0, Vec::len),
            damp: calibration.damp,
            graphs: gptq_graphs(&manifest, &reports, &excluded),
        });
    }
    // Copied unlisted, as apply-prune copies it.
    unchanged.extend(manifest.unlisted_tokenizer(source)?.map(String::from));
    let mut new_manifest = manifest;
    new_manifest.files = files;
    new_manifest.quantization =
        Some(
            serde_json::to_value(&record).map_err(|error| QuantizeError::BadModel {
                path: manifest_path,
                problem: format!("cannot encode the quantization record: {error}"),
            })?,
        );
    Ok(WrittenFolder {
        manifest: new_manifest,
        graphs: graphs.into_keys().collect(),
        new_weights: new_weights.into_keys().collect(),
        unchanged,
        dropped,
        reports,
    })
}

/// Quantizes the layered model in `source` in memory (nothing is written; see
/// [`write_folder`]). The whole quantized model is held until then: [`quantize_folder_to`]
/// writes each graph's files as it is done instead.
pub fn quantize_folder(
    source: &Path,
    options: &FolderOptions,
) -> Result<QuantizedFolder, QuantizeError> {
    let sink = MemorySink::default();
    let written = quantize_into(source, options, &sink)?;
    let mut bytes = sink.0.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut take = |names: &[String]| -> BTreeMap<String, Vec<u8>> {
        names
            .iter()
            .filter_map(|name| Some((name.clone(), bytes.remove(name)?)))
            .collect()
    };
    Ok(QuantizedFolder {
        graphs: take(&written.graphs),
        new_weights: take(&written.new_weights),
        manifest: written.manifest,
        unchanged: written.unchanged,
        dropped: written.dropped,
        reports: written.reports,
    })
}

/// Quantizes the layered model in `source` into the folder `dest`, written as
/// [`write_folder`] writes one (beside `dest`, then renamed into place; the same refusals; the
/// files taken unchanged copied or hard-linked as `source_files` says), but each graph's
/// rewritten graph and new weight files go into the folder being built as soon as the graph is
/// done: memory holds the graphs in flight, not the whole model.
pub fn quantize_folder_to(
    source: &Path,
    dest: &Path,
    options: &FolderOptions,
    source_files: SourceFiles,
    overwrite: bool,
) -> Result<WrittenFolder, QuantizeError> {
    refuse_source(source, dest)?;
    layerprune_model::write_folder_from(source, dest, overwrite, |folder| {
        let sink = FolderSink {
            folder,
            written: Mutex::default(),
        };
        let written = quantize_into(source, options, &sink)?;
        for relative in &written.unchanged {
            take_source_file(
                &confined(source, relative)?,
                &confined(folder, relative)?,
                source_files,
            )?;
        }
        written.manifest.write(folder)?;
        Ok(written)
    })
}

impl QuantizedFolder {
    /// The quantization record written into the manifest.
    pub fn record(&self) -> Option<Record> {
        record_of(&self.manifest)
    }
}

fn fill_folder(
    source: &Path,
    folder: &Path,
    quantized: &QuantizedFolder,
    source_files: SourceFiles,
) -> Result<(), QuantizeError> {
    for relative in &quantized.unchanged {
        take_source_file(
            &confined(source, relative)?,
            &confined(folder, relative)?,
            source_files,
        )?;
    }
    for (relative, bytes) in quantized.graphs.iter().chain(&quantized.new_weights) {
        layerprune_model::write_file(&confined(folder, relative)?, bytes)?;
    }
    quantized.manifest.write(folder)?;
    Ok(())
}

/// Refuses a destination that is the model being quantized (the same path, or the same file
/// by device and inode).
fn refuse_source(source: &Path, dest: &Path) -> Result<(), QuantizeError> {
    let same = layerprune_model::same_file(source, dest)
        || matches!(
            (fs::canonicalize(source), fs::canonicalize(dest)),
            (Ok(a), Ok(b)) if a == b
        );
    if same {
        return Err(QuantizeError::Unsupported(format!(
            "{} is the model being quantized; write the quantized model elsewhere",
            dest.display()
        )));
    }
    Ok(())
}

/// Writes the quantized folder beside `dest` and renames it into place, so `dest` is either
/// absent, the old folder, or complete; the files taken unchanged from `source` are copied or
/// hard-linked as `source_files` says. A `dest` that is, is inside, or contains `source` is
/// refused, every path is confined to its folder, and no file is copied onto its source.
pub fn write_folder(
    source: &Path,
    dest: &Path,
    quantized: &QuantizedFolder,
    source_files: SourceFiles,
    overwrite: bool,
) -> Result<(), QuantizeError> {
    refuse_source(source, dest)?;
    layerprune_model::write_folder_from(source, dest, overwrite, |folder| {
        fill_folder(source, folder, quantized, source_files)
    })
}

/// A quantized single-file model.
#[derive(Debug)]
pub struct QuantizedFile {
    pub bytes: Vec<u8>,
    pub report: GraphReport,
    pub record: Record,
}

/// Quantizes the ONNX file `source` (external data resolved beside it) into one
/// self-contained file.
pub fn quantize_single_file(
    source: &Path,
    scheme: &Scheme,
) -> Result<QuantizedFile, QuantizeError> {
    scheme.validate()?;
    let mut model = parse_model(source)?;
    if model.metadata_props.iter().any(|p| p.key == METADATA_KEY) {
        return Err(QuantizeError::BadModel {
            path: source.to_path_buf(),
            problem: "the model is already quantized; quantize the float model it came from".into(),
        });
    }
    let dir = source
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut loader = FileLoader {
        dir,
        graph: source.to_path_buf(),
    };
    let report = quantize_model(&mut model, scheme, &mut loader, &mut Nearest)
        .map_err(|error| error.in_graph(source))?;
    refuse_unsupported(source, &report)?;
    if report.quantized.is_empty() {
        return Err(QuantizeError::NothingToQuantize {
            path: source.to_path_buf(),
        });
    }
    if let Some(graph) = model.graph.as_mut() {
        loader.inline_weights(graph)?;
    }
    let source_id = sha256_hex(&layerprune_core::read_input(source).map_err(io_error(source))?);
    let record = Record::new(scheme, report.quantized.len(), Vec::new(), source_id);
    let text = serde_json::to_string(&record).map_err(|error| QuantizeError::BadModel {
        path: source.to_path_buf(),
        problem: format!("cannot encode the quantization record: {error}"),
    })?;
    model.metadata_props.push(StringStringEntryProto {
        key: METADATA_KEY.into(),
        value: text,
        ..Default::default()
    });
    Ok(QuantizedFile {
        bytes: encode(&model, source)?,
        report,
        record,
    })
}

/// Writes `bytes` to `dest` atomically (a temporary file beside it, renamed over it; mode
/// 0644). An existing `dest` is refused unless `overwrite`.
pub fn write_single_file(
    source: &Path,
    dest: &Path,
    bytes: &[u8],
    overwrite: bool,
) -> Result<(), QuantizeError> {
    refuse_source(source, dest)?;
    if dest.exists() && !overwrite {
        return Err(QuantizeError::Unsupported(format!(
            "{}: already exists; pass --overwrite to replace it",
            dest.display()
        )));
    }
    layerprune_model::write_file(dest, bytes)?;
    Ok(())
}

/// A graph with a product by a stored weight this stage cannot rewrite is refused, naming it:
/// written, the model would say it has a scheme its blocks do not have.
fn refuse_unsupported(graph: &Path, report: &GraphReport) -> Result<(), QuantizeError> {
    match report.unsupported.first() {
        Some((node, why)) => Err(QuantizeError::BadModel {
            path: graph.to_path_buf(),
            problem: format!(
                "node {node}: {why}: this architecture cannot be quantized ({} such node(s))",
                report.unsupported.len()
            ),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what it was given and, once it has block 0's graph, empties block
    /// 1's graph in the source folder: read after that, block 1 is refused.
    struct EmptiesTheNextBlock {
        source: PathBuf,
        puts: Mutex<Vec<String>>,
    }

    impl Sink for EmptiesTheNextBlock {
        fn put(&self, relative: &str, _: Vec<u8>) -> Result<(), QuantizeError> {
            lock(&self.puts).push(relative.to_string());
            if relative == "block_000.onnx" {
                fs::write(self.source.join("block_001.onnx"), b"").unwrap();
            }
            Ok(())
        }
    }

    /// Each graph's files leave the quantizer when the graph is done, before the next graph
    /// is read, so memory never holds the quantized model whole.
    #[test]
    fn each_graph_goes_to_the_sink_before_the_next_is_read() {
        let temp = tempfile::tempdir().unwrap();
        let source = temp.path().join("model");
        layerprune_tests::copy_tiny_model(&source);
        let sink = EmptiesTheNextBlock {
            source: source.clone(),
            puts: Mutex::default(),
        };
        let options = FolderOptions {
            scheme: Scheme::Int8,
            exclude_head: false,
            verify: true,
            calibration: None,
            threads: 1,
        };
        let error = quantize_into(&source, &options, &sink)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("block_001.onnx")
                && error.contains("an empty file (0 bytes), not an ONNX model"),
            "{error}"
        );
        let puts = lock(&sink.puts).clone();
        // Block 0's 7 new weight files, then its graph; nothing of block 1.
        assert_eq!(puts.len(), 8, "{puts:?}");
        assert!(puts[..7].iter().all(|p| p.starts_with("weights/")));
        assert_eq!(puts[7], "block_000.onnx");
    }
}
