//! Post-training weight quantization of the ONNX graphs of a layered model (full or pruned) or
//! of a single-file ONNX model, so a model can be quantized before or after pruning and still
//! run through `evaluate` unchanged. Every MatMul against a constant weight gets either int8
//! codes per output channel (`DequantizeLinear` → `MatMul`) or int4 block-wise codes with
//! zero points (ONNX Runtime's `com.microsoft` `MatMulNBits`, on the CPU and CUDA providers);
//! the codes are chosen by rounding to nearest, or by GPTQ on the activations of calibration
//! tokens. The graphs are read and rewritten through the `onnx-protobuf` message types;
//! nothing but the quantized MatMuls changes.
//!
//! [`quant`] holds the number formats, [`gptq`] the calibration-aware rounding, [`graph`] the
//! rewrite of one graph, [`folder`] the model folder (external weight files, the manifest and
//! its [`Record`]); a private module runs the float blocks through ONNX Runtime for GPTQ's
//! activations.

mod calibrate;
pub mod folder;
pub mod gptq;
pub mod graph;
pub mod quant;

use std::path::PathBuf;

pub use folder::{
    check_calibration, check_damp, quantize_folder, quantize_folder_to, quantize_single_file,
    write_folder, write_single_file, Calibration, CalibrationRecord, FolderOptions, QuantizedFile,
    QuantizedFolder, Record, WrittenFolder,
};
pub use graph::{
    check_initializer_names, quantize_model, GraphReport, Nearest, QuantizedMatMul, Rounding,
    TensorLoader,
};
/// How a quantized folder takes the files it keeps unchanged from its source (copied by
/// default), as a pruned folder does.
pub use layerprune_model::SourceFiles;

/// Block sizes `MatMulNBits` accepts for 4-bit weights (a power of two, at least 16); 32 and
/// 128 are the ones measured.
pub const INT4_BLOCK_SIZES: [usize; 5] = [16, 32, 64, 128, 256];

/// A quantization scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// int8, symmetric, one scale per output channel.
    Int8,
    /// int4, one scale and zero point per `block_size` inputs of an output channel.
    /// `accuracy_level` is `MatMulNBits`' attribute: 0 (the default) computes in the input's
    /// float type; 4 lets the CPU provider quantize the activations to int8 per block too.
    Int4 {
        block_size: usize,
        accuracy_level: i64,
    },
}

impl Scheme {
    pub fn validate(&self) -> Result<(), QuantizeError> {
        match self {
            Scheme::Int8 => Ok(()),
            Scheme::Int4 {
                block_size,
                accuracy_level,
            } => {
                if !INT4_BLOCK_SIZES.contains(block_size) {
                    return Err(QuantizeError::Unsupported(format!(
                        "int4 group size {block_size} is not supported; MatMulNBits takes one of \
                         {INT4_BLOCK_SIZES:?} (its block_size)"
                    )));
                }
                if !(0..=4).contains(accuracy_level) {
                    return Err(QuantizeError::Unsupported(format!(
                        "accuracy level {accuracy_level} is not one of MatMulNBits' 0..=4"
                    )));
                }
                Ok(())
            }
        }
    }

    /// The scheme's name in the manifest and in reports: `int8`, `int4`.
    pub fn name(&self) -> &'static str {
        match self {
            Scheme::Int8 => "int8",
            Scheme::Int4 { .. } => "int4",
        }
    }
}

/// Everything that can go wrong; each names the file or tensor concerned.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    BadModel { path: PathBuf, problem: String },
    #[error("tensor {name}: {problem}")]
    BadTensor { name: String, problem: String },
    #[error("{path}: no MatMul reads a constant float32 weight, so there is nothing to quantize")]
    NothingToQuantize { path: PathBuf },
    #[error("{0}")]
    Unsupported(String),
    /// The model folder: its manifest, files, hashes and graphs (`layerprune-model`).
    #[error(transparent)]
    Model(#[from] layerprune_model::ModelError),
    #[error(transparent)]
    Runtime(#[from] layerprune_runtime::RuntimeError),
    /// A termination signal arrived: the folder being written is removed, as on any error.
    #[error(transparent)]
    Interrupted(#[from] layerprune_core::Interrupted),
}

impl QuantizeError {
    /// This error, of the graph file `path`: what [`quantize_model`] and its rounding report
    /// knowing no file (a tensor's problem, an opset or a GPTQ input it cannot take) names the
    /// file too.
    pub fn in_graph(self, path: &std::path::Path) -> Self {
        match self {
            QuantizeError::BadTensor { name, problem } => QuantizeError::BadModel {
                path: path.to_path_buf(),
                problem: format!("tensor {name}: {problem}"),
            },
            QuantizeError::Unsupported(problem) => {
                QuantizeError::Unsupported(format!("{}: {problem}", path.display()))
            }
            other => other,
        }
    }
}
