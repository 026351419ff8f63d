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
use ndarray::{s, Array2, Array3, ArrayView3, Ix2, Ix3};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::{Tensor, Value};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, TensorProto, TypeProto,
    ValueInfoProto,
};
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use protobuf::EnumOrUnknown;

use crate::folder::FileLoader;
use crate::gptq::{gptq_int4, gptq_int8, Hessian, InverseFactor};
use crate::graph::{quantizable_inputs, Rounding};
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

/// Calibration rows (window tokens) one run of a graph takes, or one window where a window is
/// longer: what bounds the memory of a run, which holds the block's intermediates for its
/// rows (at Llama-2-7B's widths about 0.5 GB of MatMul inputs for 8,192 rows, and the
/// attention's scores, which grow with the square of the window: 4 windows of 2,048 tokens,
/// 32 heads, about 2 GB). Besides, the hidden states of all windows are kept (`rows × width`
/// floats: 4.3 GB for GPTQ's published 128 windows of 2,048 tokens at width 4,096), each run's
/// output written over its own input.
const ROWS_PER_RUN: usize = 8192;

/// Prefix of the outputs the probe graph adds: one `K × K` second-moment matrix per MatMul
/// input.
const GRAM_PREFIX: &str = "layerprune_gptq_gram/";

/// The float model's hidden states on the calibration windows, advanced block by block.
pub struct Activations {
    /// Device and threads of every session (`layerprune_runtime::session_builder`).
    runtime: RuntimeOptions,
    hidden: Array3<f32>,
    /// Windows a run takes (`ROWS_PER_RUN` rows, at least one window).
    windows_per_run: usize,
    /// Input widths already warned of as wider than the calibration tokens.
    warned_widths: std::collections::BTreeSet<usize>,
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
            // The second moments are inverted: TF32's 10-bit mantissas would perturb them by
            // about 1e-3; GPTQ's reference code accumulates them in float32 as well.
            tf32: matches!(device, Device::Cuda(_)).then_some(false),
            ..RuntimeOptions::default()
        };
        let windows_per_run = (ROWS_PER_RUN / length).max(1);
        let mut session = session_builder(embed, &runtime)?
            .commit_from_file(embed)
            .map_err(|e| onnx_error(embed, e))?;
        let mut hidden: Option<Array3<f32>> = None;
        for (run, chunk) in windows.chunks(windows_per_run).enumerate() {
            let ids = Array2::from_shape_fn((chunk.len(), length), |(b, t)| i64::from(chunk[b][t]));
            let input = TensorRef::from_array_view(&ids).map_err(|e| onnx_error(embed, e))?;
            let outputs = session
                .run(ort::inputs![input])
                .map_err(|e| onnx_error(embed, e))?;
            let (_, value) = outputs
                .iter()
                .next()
                .ok_or_else(|| onnx_error(embed, "the embedding graph has no output"))?;
            let states = value
                .try_extract_array::<f32>()
                .map_err(|e| onnx_error(embed, e))?
                .into_dimensionality::<Ix3>()
                .map_err(|e| onnx_error(embed, format!("embedding output: {e}")))?;
            let all = hidden
                .get_or_insert_with(|| Array3::zeros((windows.len(), length, states.shape()[2])));
            let first = run * windows_per_run;
            copy_windows(
                all,
                first..first + chunk.len(),
                states,
                embed,
                "embedding output",
            )?;
        }
        Ok(Activations {
            runtime,
            hidden: hidden.expect("at least one window"),
            windows_per_run,
            warned_widths: Default::default(),
        })
    }

    /// Runs the block `model` (read from `path`) on the current hidden states: returns the
    /// second-moment matrix of each quantizable MatMul input, and moves on to the block's
    /// output. The matrices are products the graph itself computes (`Gemm` of each input's
    /// rows with themselves, float32, on the session's device), summed over the runs in
    /// float64; only they and the block's output leave the session.
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
        let grams: Vec<String> = (0..inputs.len())
            .map(|i| format!("{GRAM_PREFIX}{i}"))
            .collect();
        for ((name, k), gram) in inputs.iter().zip(&grams) {
            add_gram(graph, name, *k, gram);
        }
        // A graph loaded from memory has no folder to resolve external files against.
        loader.inline_weights(graph)?;
        let bytes = probe
            .write_to_bytes()
            .map_err(|e| onnx_error(path, format!("cannot encode the probe graph: {e}")))?;
        let mut session = session_builder(path, &self.runtime)?
            .with_optimization_level(GraphOptimizationLevel::Level1)
            .map_err(|e| onnx_error(path, e))?
            .commit_from_memory(&bytes)
            .map_err(|e| onnx_error(path, e))?;
        let mut hessians: Vec<Hessian> = inputs.iter().map(|&(_, k)| Hessian::new(k)).collect();
        let windows = self.hidden.shape()[0];
        for first in (0..windows).step_by(self.windows_per_run) {
            let last = (first + self.windows_per_run).min(windows);
            let chunk = self.hidden.slice(s![first..last, .., ..]);
            let rows = chunk.shape()[0] * chunk.shape()[1];
            let input = TensorRef::from_array_view(chunk).map_err(|e| onnx_error(path, e))?;
            let outputs = session
                .run(ort::inputs![input])
                .map_err(|e| onnx_error(path, e))?;
            for ((hessian, gram), (name, _)) in hessians.iter_mut().zip(&grams).zip(&inputs) {
                let product = outputs[gram.as_str()]
                    .try_extract_array::<f32>()
                    .map_err(|e| onnx_error(path, e))?
                    .into_dimensionality::<Ix2>()
                    .map_err(|e| onnx_error(path, format!("input {name}: {e}")))?;
                if product.dim() != (hessian.k, hessian.k) {
                    return Err(onnx_error(
                        path,
                        format!(
                            "MatMul input {name}: second moments of shape {:?}, not {k} x {k}",
                            product.shape(),
                            k = hessian.k
                        ),
                    ));
                }
                hessian.add_gram(product, rows);
            }
            let states = outputs[output.as_str()]
                .try_extract_array::<f32>()
                .map_err(|e| onnx_error(path, e))?
                .into_dimensionality::<Ix3>()
                .map_err(|e| onnx_error(path, format!("block output: {e}")))?;
            copy_windows(&mut self.hidden, first..last, states, path, "block output")?;
        }
        for ((name, k), hessian) in inputs.iter().zip(&hessians) {
            if hessian.rows < *k && self.warned_widths.insert(*k) {
                tracing::warn!(
                    "{}: GPTQ: MatMul input {name} is {k} wide but the calibration gave {} \
                     tokens: its second-moment matrix has rank at most {}, and only the damping \
                     makes it invertible; give at least {k} calibration tokens (more windows or \
                     longer ones); said once for all inputs this wide",
                    path.display(),
                    hessian.rows,
                    hessian.rows,
                );
            }
        }
        Ok(inputs
            .into_iter()
            .map(|(name, _)| name)
            .zip(hessians)
            .collect())
    }
}

/// Copies one run's states (`[windows, tokens, width]`) into the windows `windows` of `all`.
fn copy_windows(
    all: &mut Array3<f32>,
    windows: std::ops::Range<usize>,
    states: ArrayView3<f32>,
    path: &Path,
    what: &str,
) -> Result<(), QuantizeError> {
    let (_, tokens, width) = all.dim();
    let expected = [windows.len(), tokens, width];
    if states.shape() != expected {
        return Err(onnx_error(
            path,
            format!("{what} has shape {:?}, not {expected:?}", states.shape()),
        ));
    }
    all.slice_mut(s![windows, .., ..]).assign(&states);
    Ok(())
}

/// Adds to `graph` the output `gram`: `xᵀ x` of the MatMul input `x` with its rows flattened
/// (`[rows, k]`), one `Gemm` with the first operand transposed.
fn add_gram(graph: &mut GraphProto, x: &str, k: usize, gram: &str) {
    let shape = format!("{gram}/shape");
    let rows = format!("{gram}/rows");
    graph.initializer.push(TensorProto {
        name: shape.clone(),
        dims: vec![2],
        data_type: DataType::INT64 as i32,
        int64_data: vec![-1, k as i64],
        ..Default::default()
    });
    graph.node.push(NodeProto {
        name: rows.clone(),
        op_type: "Reshape".into(),
        input: vec![x.into(), shape],
        output: vec![rows.clone()],
        ..Default::default()
    });
    graph.node.push(NodeProto {
        name: gram.into(),
        op_type: "Gemm".into(),
        input: vec![rows.clone(), rows],
        output: vec![gram.into()],
        attribute: vec![AttributeProto {
            name: "transA".into(),
            type_: EnumOrUnknown::new(AttributeType::INT),
            i: 1,
            ..Default::default()
        }],
        ..Default::default()
    });
    graph.output.push(float_output(gram));
}

/// GPTQ rounding with the second-moment matrices of one graph's MatMul inputs.
pub struct Gptq {
    /// Inputs no weight has needed yet.
    hessians: HashMap<String, Hessian>,
    /// Inputs factored, kept for the other weights reading them.
    factors: HashMap<String, InverseFactor>,
    damp: f64,
    graph: PathBuf,
    /// Threads of the factoring and the sweeps (0: the process's thread budget).
    threads: usize,
}

impl Gptq {
    pub fn new(
        hessians: HashMap<String, Hessian>,
        damp: f64,
        graph: PathBuf,
        threads: usize,
    ) -> Self {
        Gptq {
            hessians,
            factors: HashMap::new(),
            damp,
            graph,
            threads,
        }
    }

    /// The factor of `input`'s second moments, made when a weight first needs it (and its
    /// matrix then dropped).
    fn factor(&mut self, input: &str) -> Result<&InverseFactor, QuantizeError> {
        if !self.factors.contains_key(input) {
            let hessian = self.hessians.remove(input).ok_or_else(|| {
                onnx_error(
                    &self.graph,
                    format!("no calibration activations for MatMul input {input}"),
                )
            })?;
            let factor = InverseFactor::new(hessian, self.damp, self.threads)?;
            self.factors.insert(input.to_string(), factor);
        }
        Ok(&self.factors[input])
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
        tracing::debug!("gptq int8: {}: {input} (N={n} K={k})", self.graph.display());
        let threads = self.threads;
        gptq_int8(w_nk, n, k, self.factor(input)?, threads)
    }

    fn int4(
        &mut self,
        input: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
        block_size: usize,
    ) -> Result<Int4Blockwise, QuantizeError> {
        tracing::debug!("gptq int4: {}: {input} (N={n} K={k})", self.graph.display());
        let threads = self.threads;
        gptq_int4(w_nk, n, k, block_size, self.factor(input)?, threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::parse_model;

    /// The tiny model's reference windows (two of 16 tokens).
    fn windows() -> Vec<Vec<u32>> {
        let path = layerprune_tests::tiny_model_dir().join("reference.json");
        let reference: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        serde_json::from_value(reference["input_ids"].clone()).unwrap()
    }

    /// The matrices the graph computes, a window a run, equal `Σ x xᵀ` of the MatMul inputs
    /// themselves (taken out of the block as outputs, summed in float64), and the states
    /// passed on equal the block's output of one run of every window.
    #[test]
    fn second_moments_from_the_graph_equal_the_inputs_rows_summed_in_float64() {
        let dir = layerprune_tests::tiny_model_dir();
        let windows = windows();
        let mut activations =
            Activations::start(&dir.join("embed.onnx"), &windows, 1, Device::Cpu).unwrap();
        activations.windows_per_run = 1;
        let hidden = activations.hidden.clone();
        let path = dir.join("block_000.onnx");
        let model = parse_model(&path).unwrap();
        let loader = FileLoader {
            dir: dir.clone(),
            graph: path.clone(),
        };
        let hessians = activations.block(&model, &path, &loader).unwrap();

        // The oracle: the block with its MatMul inputs as extra outputs, all windows at once.
        let inputs = quantizable_inputs(&model);
        assert!(inputs.len() >= 4, "{inputs:?}");
        let mut probe = model.clone();
        let graph = probe.graph.as_mut().unwrap();
        let output = graph.output[0].name.clone();
        for (name, _) in &inputs {
            graph.output.push(float_output(name));
        }
        loader.inline_weights(graph).unwrap();
        let mut session = session_builder(&path, &activations.runtime)
            .unwrap()
            .commit_from_memory(&probe.write_to_bytes().unwrap())
            .unwrap();
        let outputs = session
            .run(ort::inputs![TensorRef::from_array_view(&hidden).unwrap()])
            .unwrap();
        for (name, k) in &inputs {
            let x = outputs[name.as_str()].try_extract_array::<f32>().unwrap();
            let x = x.to_shape((x.len() / k, *k)).unwrap();
            let mut expected = Hessian::new(*k);
            expected.add(x.view());
            let got = &hessians[name];
            assert_eq!(got.rows, expected.rows);
            assert_eq!(got.rows, 2 * 16);
            let scale = expected.h.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (a, b) in got.h.iter().zip(&expected.h) {
                assert!((a - b).abs() <= 1e-5 * scale, "{name}: {a} vs {b}");
            }
        }
        let next = outputs[output.as_str()].try_extract_array::<f32>().unwrap();
        let worst = next
            .iter()
            .zip(&activations.hidden)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert_eq!(next.shape(), activations.hidden.shape());
        assert!(worst < 1e-5, "block output differs by {worst}");
    }
}
