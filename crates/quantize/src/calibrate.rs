//! What GPTQ needs from the calibration tokens: for every MatMul input of every block, the
//! second-moment matrix `Σ x xᵀ` of the activations it sees. The float model runs through
//! ONNX Runtime block by block; each block runs as a copy whose graph also outputs the
//! MatMuls' inputs (weights inlined, since a graph loaded from memory has no folder to resolve
//! external files against), and its output is the next block's input. The activations are
//! the float model's throughout — GPTQ's reference code feeds each layer the already
//! quantized layers' outputs; this keeps the calibration pass independent of the scheme.
//!
//! The passes run on the CPU provider or, asked for, on a CUDA GPU through the CUDA execution
//! provider; a CUDA request that cannot be met (a CPU build of the library, no visible GPU)
//! is [`RuntimeError::DeviceUnavailable`], never a silent fall-back to the CPU, as for
//! `evaluate`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use layerprune_core::Device;
use layerprune_runtime::{session_builder, RuntimeError, RuntimeOptions};
use ndarray::{Array2, Array3, Ix2};
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::type_proto::{Tensor, Value};
use onnx_protobuf::{Message, ModelProto, TypeProto, ValueInfoProto};
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use protobuf::EnumOrUnknown;

use crate::folder::FileLoader;
use crate::gptq::{gptq_int4, gptq_int8, Hessian};
use crate::graph::{external_location, quantizable_inputs, Rounding};
use crate::quant::{Int4Blockwise, Int8PerChannel};
use crate::QuantizeError;

fn onnx_error(path: &Path, message: impl std::fmt::Display) -> QuantizeError {
    QuantizeError::Runtime(RuntimeError::Onnx {
        path: path.to_path_buf(),
        message: message.to_string(),
    })
}

fn float_output(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        type_: protobuf::MessageField::some(TypeProto {
            value: Some(Value::TensorType(Tensor {
                elem_type: DataType::FLOAT as i32,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The float model's hidden states on the calibration windows, advanced block by block.
pub struct Activations {
    /// Device and threads of every session (`layerprune_runtime::session_builder`).
    runtime: RuntimeOptions,
    hidden: Array3<f32>,
}

impl Activations {
    /// Embeds `windows` (token ids, all the same length) with the graph `embed` on `device`,
    /// in the process's ONNX Runtime environment (`layerprune_runtime::environment`: `threads`
    /// CPU threads if it is the first to start it, 0 = one per core).
    pub fn start(
        embed: &Path,
        windows: &[Vec<u32>],
        threads: usize,
        device: Device,
    ) -> Result<Self, QuantizeError> {
        let length = windows.first().map_or(0, Vec::len);
        if length == 0 || windows.iter().any(|w| w.len() != length) {
            return Err(QuantizeError::Unsupported(
                "GPTQ needs calibration windows, all of the same non-zero length".into(),
            ));
        }
        let runtime = RuntimeOptions {
            device,
            threads,
            ..RuntimeOptions::default()
        };
        let ids = Array2::from_shape_fn((windows.len(), length), |(b, t)| i64::from(windows[b][t]));
        let mut session = session_builder(embed, &runtime)?
            .commit_from_file(embed)
            .map_err(|e| onnx_error(embed, e))?;
        let input = TensorRef::from_array_view(&ids).map_err(|e| onnx_error(embed, e))?;
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| onnx_error(embed, e))?;
        let name = outputs
            .keys()
            .next()
            .map(str::to_string)
            .ok_or_else(|| onnx_error(embed, "the embedding graph has no output"))?;
        let hidden = outputs[name.as_str()]
            .try_extract_array::<f32>()
            .map_err(|e| onnx_error(embed, e))?
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| onnx_error(embed, format!("embedding output: {e}")))?
            .to_owned();
        drop(outputs);
        Ok(Activations { runtime, hidden })
    }

    /// Runs the block `model` (read from `path`) on the current hidden states: returns the
    /// second-moment matrix of each quantizable MatMul input, and moves on to the block's
    /// output.
    pub(crate) fn block(
        &mut self,
        model: &ModelProto,
        path: &Path,
        loader: &FileLoader,
    ) -> Result<HashMap<String, Hessian>, QuantizeError> {
        let inputs = quantizable_inputs(model);
        let mut probe = model.clone();
        let Some(graph) = probe.graph.as_mut() else {
            return Ok(HashMap::new());
        };
        let output = graph
            .output
            .first()
            .map(|o| o.name.clone())
            .ok_or_else(|| onnx_error(path, "the block graph has no output"))?;
        for (name, _) in &inputs {
            if !graph.output.iter().any(|o| &o.name == name) {
                graph.output.push(float_output(name));
            }
        }
        for tensor in graph.initializer.iter_mut() {
            if external_location(tensor).is_some() {
                tensor.raw_data = loader.raw_bytes(tensor)?;
                tensor.external_data.clear();
                tensor.data_location = EnumOrUnknown::new(DataLocation::DEFAULT);
            }
        }
        let bytes = probe
            .write_to_bytes()
            .map_err(|e| onnx_error(path, format!("cannot encode the probe graph: {e}")))?;
        let mut session = session_builder(path, &self.runtime)?
            .with_optimization_level(GraphOptimizationLevel::Level1)
            .map_err(|e| onnx_error(path, e))?
            .commit_from_memory(&bytes)
            .map_err(|e| onnx_error(path, e))?;
        let input = TensorRef::from_array_view(&self.hidden).map_err(|e| onnx_error(path, e))?;
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| onnx_error(path, e))?;
        let mut hessians = HashMap::new();
        for (name, k) in inputs {
            let x = outputs[name.as_str()]
                .try_extract_array::<f32>()
                .map_err(|e| onnx_error(path, e))?;
            let rows = x.len() / k.max(1);
            let x = x
                .to_owned()
                .into_shape_with_order((rows, k))
                .map_err(|e| onnx_error(path, format!("input {name}: {e}")))?
                .into_dimensionality::<Ix2>()
                .map_err(|e| onnx_error(path, format!("input {name}: {e}")))?;
            let mut h = Hessian::new(k);
            h.add(x.view());
            hessians.insert(name, h);
        }
        let next = outputs[output.as_str()]
            .try_extract_array::<f32>()
            .map_err(|e| onnx_error(path, e))?
            .into_dimensionality::<ndarray::Ix3>()
            .map_err(|e| onnx_error(path, format!("block output: {e}")))?
            .to_owned();
        drop(outputs);
        self.hidden = next;
        Ok(hessians)
    }
}

/// GPTQ rounding with the second-moment matrices of one graph's MatMul inputs.
pub struct Gptq {
    pub hessians: HashMap<String, Hessian>,
    pub damp: f64,
    pub graph: PathBuf,
}

impl Gptq {
    fn hessian(&self, input: &str) -> Result<&Hessian, QuantizeError> {
        self.hessians.get(input).ok_or_else(|| {
            onnx_error(
                &self.graph,
                format!("no calibration activations for MatMul input {input}"),
            )
        })
    }
}

impl Rounding for Gptq {
    fn int8(
        &mut self,
        input: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
    ) -> Result<Int8PerChannel, QuantizeError> {
        let hessian = self.hessian(input)?;
        tracing::debug!("gptq int8: {}: {input} (N={n} K={k})", self.graph.display());
        gptq_int8(w_nk, n, k, hessian, self.damp)
    }

    fn int4(
        &mut self,
        input: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
        block_size: usize,
    ) -> Result<Int4Blockwise, QuantizeError> {
        let hessian = self.hessian(input)?;
        tracing::debug!("gptq int4: {}: {input} (N={n} K={k})", self.graph.display());
        gptq_int4(w_nk, n, k, block_size, hessian, self.damp)
    }
}
