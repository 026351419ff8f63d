//! Quantizing a whole model: a layered model folder (docs/model-format.md) or one ONNX file.
//!
//! Folder: each graph is rewritten by [`quantize_model`]; the new tensors of at least 1 KiB go
//! to content-addressed files `weights/<first 32 hex digits of sha256>.bin`, as the exporter
//! writes them, so graphs stay small and a pruned or re-pruned folder can still find the files
//! a graph uses. Float weight files no graph reads any more are left out, every other listed
//! file is hard-linked (or copied), and the manifest gets the new hashes and a `quantization`
//! [`Record`]. The folder is built beside the destination and renamed into place
//! (`layerprune_model::write_folder`, the writer pruned folders use too).
//!
//! One file (e.g. `merge_layered.py`'s): every tensor is stored inline in the output, so it is
//! self-contained (ONNX's protobuf limit of 2 GiB applies), and the record goes into the
//! model's `metadata_props` under `layerprune.quantization`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use layerprune_core::parallel::{threads_or_budget, try_map_in_order};
use layerprune_core::Device;
use layerprune_model::{
    confined, confined_reference, external_data_locations, link_or_copy, model_id, Manifest,
    MANIFEST_FILE, MAX_TENSOR_ELEMENTS,
};
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{GraphProto, ModelProto, StringStringEntryProto, TensorProto};
use protobuf::{EnumOrUnknown, Message};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::calibrate::{Activations, Gptq};
use crate::graph::{entry, external_location, quantize_model, GraphReport, Nearest, Rounding};
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
    /// Which graphs GPTQ rounded; the others were rounded to nearest.
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
            Scheme::Int8 => (8, None, true, "DequantizeLinear+MatMul", None),
            Scheme::Int4 {
                block_size,
                accuracy_level,
            } => (
                4,
                Some(*block_size),
                false,
                "com.microsoft.MatMulNBits",
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

/// A quantized folder, held in memory until [`write_folder`].
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
        let Some(location) = external_location(tensor) else {
            return Ok(tensor.raw_data.clone());
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
        let mut bytes = vec![0u8; length];
        file.read_exact(&mut bytes).map_err(unreadable)?;
        Ok(bytes)
    }
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
        let bytes = self.raw_bytes(tensor)?;
        if bytes.len() != count.saturating_mul(4) {
            return Err(self.bad(
                tensor,
                format!(
                    "holds {} bytes, its dims {:?} need {}",
                    bytes.len(),
                    tensor.dims,
                    count * 4
                ),
            ));
        }
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
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
    let bytes = layerprune_core::read_input(path).map_err(io_error(path))?;
    ModelProto::parse_from_bytes(&bytes).map_err(|error| QuantizeError::BadModel {
        path: path.to_path_buf(),
        problem: format!("not an ONNX model: {error}"),
    })
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

/// Moves the tensors named in `names` of at least [`EXTERNAL_THRESHOLD_BYTES`] to
/// content-addressed weight files (collected in `files`).
fn externalize(
    model: &mut ModelProto,
    names: &BTreeSet<String>,
    files: &mut BTreeMap<String, Vec<u8>>,
) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    for tensor in graph.initializer.iter_mut() {
        if !names.contains(&tensor.name) || tensor.raw_data.len() < EXTERNAL_THRESHOLD_BYTES {
            continue;
        }
        let raw = std::mem::take(&mut tensor.raw_data);
        let location = format!("weights/{}.bin", &sha256_hex(&raw)[..32]);
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: key.into(),
            value,
            ..Default::default()
        };
        tensor.external_data = vec![
            entry("location", location.clone()),
            entry("offset", "0".into()),
            entry("length", raw.len().to_string()),
        ];
        tensor.data_location = EnumOrUnknown::new(DataLocation::EXTERNAL);
        files.entry(location).or_insert(raw);
    }
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
/// lengths): checked before any work, where GPTQ's first pass would fail.
pub fn check_calibration(
    source: &Path,
    windows: &[Vec<u32>],
    tokenizer_sha256: &str,
    table: &Path,
) -> Result<(), QuantizeError> {
    let manifest = Manifest::load(source)?;
    layerprune_runtime::check_tokens(&manifest, source, windows, tokenizer_sha256).map_err(|e| {
        QuantizeError::Unsupported(format!(
            "calibration tokens {} with {}: {e}",
            table.display(),
            source.display()
        ))
    })
}

/// Chooses a graph's rounding once its model is parsed: to nearest, or GPTQ on the
/// activations reaching it (returned with the method's name for the log).
type ChooseRounding<'a> =
    &'a mut dyn FnMut(
        &ModelProto,
        &Path,
        &FileLoader,
    ) -> Result<(Box<dyn Rounding>, &'static str), QuantizeError>;

/// What quantizing one graph file of a folder gave.
#[derive(Default)]
struct GraphOutcome {
    /// The rewritten graph, if any MatMul was quantized.
    encoded: Option<Vec<u8>>,
    /// Its new content-addressed weight files.
    new_weights: BTreeMap<String, Vec<u8>>,
    /// The external-data files it reads.
    references: BTreeSet<String>,
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

/// Quantizes the graph `file` of the folder `source` (nothing is written).
fn quantize_graph(
    source: &Path,
    file: &str,
    options: &FolderOptions,
    head_graphs: &BTreeSet<&str>,
    progress: &Progress,
    rounding: ChooseRounding<'_>,
) -> Result<GraphOutcome, QuantizeError> {
    let path = confined(source, file)?;
    let mut model = parse_model(&path)?;
    if options.exclude_head && head_graphs.contains(file) {
        progress.done(file, "left in float (the head, excluded)");
        return Ok(GraphOutcome {
            references: references(source, file, &model)?,
            ..GraphOutcome::default()
        });
    }
    let before = initializer_names(&model);
    let mut loader = FileLoader {
        dir: source.to_path_buf(),
        graph: path.clone(),
    };
    let (mut rounding, method) = rounding(&model, &path, &loader)?;
    // An empty (or cut-off) ONNX file parses as a model of no nodes: it would be copied as
    // it is, into a folder that cannot run.
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
    let mut outcome = GraphOutcome::default();
    if !report.quantized.is_empty() {
        let added: BTreeSet<String> = initializer_names(&model)
            .difference(&before)
            .cloned()
            .collect();
        externalize(&mut model, &added, &mut outcome.new_weights);
        outcome.encoded = Some(encode(&model, &path)?);
    }
    progress.done(
        file,
        &format!("{} MatMuls ({method})", report.quantized.len()),
    );
    outcome.references = references(source, file, &model)?;
    outcome.report = Some(report);
    Ok(outcome)
}

/// Quantizes the layered model in `source` (nothing is written; see [`write_folder`]).
pub fn quantize_folder(
    source: &Path,
    options: &FolderOptions,
) -> Result<QuantizedFolder, QuantizeError> {
    options.scheme.validate()?;
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
        quantize_graph(source, file, options, &head_graphs, &progress, rounding)
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

    let mut graphs = BTreeMap::new();
    let mut new_weights = BTreeMap::new();
    let mut reports = Vec::new();
    let mut referenced = BTreeSet::new();
    let mut excluded = Vec::new();
    for (file, outcome) in graph_files.iter().zip(outcomes) {
        referenced.extend(outcome.references);
        let Some(report) = outcome.report else {
            excluded.push(file.clone());
            continue;
        };
        if let Some(encoded) = outcome.encoded {
            graphs.insert(file.clone(), encoded);
        }
        for (location, bytes) in outcome.new_weights {
            new_weights.entry(location).or_insert(bytes);
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

    let mut files = BTreeMap::new();
    let mut unchanged = Vec::new();
    let mut dropped = Vec::new();
    for (relative, hash) in &manifest.files {
        if let Some(bytes) = graphs.get(relative) {
            files.insert(relative.clone(), sha256_hex(bytes));
        } else if relative.starts_with("weights/") && !referenced.contains(relative) {
            dropped.push(relative.clone());
        } else {
            files.insert(relative.clone(), hash.clone());
            // A new weight file identical to a listed one is the same file.
            if !new_weights.contains_key(relative) {
                unchanged.push(relative.clone());
            }
        }
    }
    for (relative, bytes) in &new_weights {
        files
            .entry(relative.clone())
            .or_insert_with(|| sha256_hex(bytes));
    }
    let mut record = Record::new(&options.scheme, quantized, excluded, model_id(source)?);
    if let Some(calibration) = &options.calibration {
        record.method = "gptq".into();
        record.calibration = Some(CalibrationRecord {
            dataset_id: calibration.dataset_id.clone(),
            windows: calibration.windows.len(),
            seq_len: calibration.windows.first().map_or(0, Vec::len),
            damp: calibration.damp,
            graphs: if options.exclude_head {
                "blocks (embedding rounded to nearest, head left in float)".into()
            } else {
                "blocks (embedding and head rounded to nearest)".into()
            },
        });
    }
    let mut new_manifest = manifest;
    new_manifest.files = files;
    new_manifest.quantization =
        Some(
            serde_json::to_value(&record).map_err(|error| QuantizeError::BadModel {
                path: manifest_path,
                problem: format!("cannot encode the quantization record: {error}"),
            })?,
        );
    Ok(QuantizedFolder {
        manifest: new_manifest,
        graphs,
        new_weights,
        unchanged,
        dropped,
        reports,
    })
}

impl QuantizedFolder {
    /// The quantization record written into the manifest.
    pub fn record(&self) -> Option<Record> {
        self.manifest
            .quantization
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
    }
}

fn fill_folder(
    source: &Path,
    folder: &Path,
    quantized: &QuantizedFolder,
) -> Result<(), QuantizeError> {
    for relative in &quantized.unchanged {
        link_or_copy(&confined(source, relative)?, &confined(folder, relative)?)?;
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
/// absent, the old folder, or complete. A `dest` that is, is inside, or contains `source` is
/// refused, every path is confined to its folder, and no file is copied onto its source.
pub fn write_folder(
    source: &Path,
    dest: &Path,
    quantized: &QuantizedFolder,
    overwrite: bool,
) -> Result<(), QuantizeError> {
    refuse_source(source, dest)?;
    layerprune_model::write_folder_from(source, dest, overwrite, |folder| {
        fill_folder(source, folder, quantized)
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
            "{} already exists; pass --overwrite to replace it",
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
