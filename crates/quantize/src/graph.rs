//! Rewriting one ONNX graph: every MatMul whose weight is a constant — a float32 rank-2
//! initializer, or the transpose of one (how the tied LM head is exported) — gets a quantized
//! weight; nothing else in the graph changes.
//!
//! int8: the initializer is replaced by int8 codes and a `DequantizeLinear` (per output channel,
//! symmetric) whose output takes the initializer's name, so the MatMul (and a Transpose in
//! front of it) read the dequantized weight unchanged. ONNX Runtime does not constant-fold a
//! `DequantizeLinear`, so the weight stays int8 in memory and is expanded per run.
//!
//! int4: the MatMul (and its Transpose) is replaced by one `com.microsoft` `MatMulNBits` with
//! the same input and output names, which multiplies by the packed weight directly.
//!
//! A weight is rewritten only when the MatMul (or its Transpose) is its only reader, so no
//! other node ever sees a changed value. Subgraphs (If/Loop bodies) are not searched; the
//! exported graphs have none.

use std::collections::HashMap;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto,
};
use protobuf::EnumOrUnknown;

use crate::quant::{
    quantize_int4_blockwise, quantize_int8_per_channel, Int4Blockwise, Int8PerChannel,
};
use crate::{QuantizeError, Scheme};

pub const MS_DOMAIN: &str = "com.microsoft";

/// How a MatMul reads its constant weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// `MatMul(x, W)` with `W` `[K, N]`.
    Direct,
    /// `MatMul(x, Transpose(W))` with `W` `[N, K]`.
    Transposed,
}

#[derive(Clone, Debug)]
struct Target {
    matmul: usize,
    transpose: Option<usize>,
    initializer: usize,
    layout: Layout,
    k: usize,
    n: usize,
}

/// One rewritten MatMul, for the report.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatMul {
    pub node: String,
    pub weight: String,
    pub k: usize,
    pub n: usize,
}

/// What [`quantize_model`] did to one graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphReport {
    pub quantized: Vec<QuantizedMatMul>,
    /// MatMuls with a constant weight left as they were, and why.
    pub skipped: Vec<(String, String)>,
    /// Products by a stored weight that this stage cannot rewrite (a `Gemm`: GPT-2's Conv1D
    /// projections export as one), with why: a model holding one is refused, not written with
    /// a scheme its blocks do not have.
    pub unsupported: Vec<(String, String)>,
}

/// Chooses the codes of one weight. `input` names the MatMul's activation input, so a
/// calibration-aware rounding can look up what it saw there.
pub trait Rounding {
    fn int8(
        &mut self,
        input: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
    ) -> Result<Int8PerChannel, QuantizeError>;
    fn int4(
        &mut self,
        input: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
        block_size: usize,
    ) -> Result<Int4Blockwise, QuantizeError>;
}

/// Round to nearest.
pub struct Nearest;

impl Rounding for Nearest {
    fn int8(
        &mut self,
        _: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
    ) -> Result<Int8PerChannel, QuantizeError> {
        Ok(quantize_int8_per_channel(w_nk, n, k))
    }

    fn int4(
        &mut self,
        _: &str,
        w_nk: &[f32],
        n: usize,
        k: usize,
        block_size: usize,
    ) -> Result<Int4Blockwise, QuantizeError> {
        Ok(quantize_int4_blockwise(w_nk, n, k, block_size))
    }
}

/// The activation inputs of the MatMuls [`quantize_model`] would rewrite, with their width K
/// (each once, in graph order).
pub fn quantizable_inputs(model: &ModelProto) -> Vec<(String, usize)> {
    let Some(graph) = model.graph.as_ref() else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    find_targets(graph, &mut GraphReport::default())
        .into_iter()
        .filter_map(|t| {
            let input = graph.node[t.matmul].input[0].clone();
            seen.insert(input.clone()).then_some((input, t.k))
        })
        .collect()
}

/// Reads a float32 initializer's values (inline or external).
pub trait TensorLoader {
    fn load_f32(&mut self, tensor: &TensorProto) -> Result<Vec<f32>, QuantizeError>;
}

#[cfg(test)]
fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.as_slice())
}

fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: value,
        ..Default::default()
    }
}

fn is_float_matrix(tensor: &TensorProto) -> bool {
    tensor.data_type == DataType::FLOAT as i32
        && tensor.dims.len() == 2
        && tensor.dims.iter().all(|&d| d > 0)
}

/// How many times each value is read: node inputs and graph outputs.
fn reader_counts(graph: &GraphProto) -> HashMap<&str, usize> {
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for node in &graph.node {
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            *readers.entry(input.as_str()).or_default() += 1;
        }
    }
    for output in &graph.output {
        *readers.entry(output.name.as_str()).or_default() += 1;
    }
    readers
}

fn find_targets(graph: &GraphProto, report: &mut GraphReport) -> Vec<Target> {
    let initializers: HashMap<&str, usize> = graph
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let producers: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let readers = reader_counts(graph);
    let single_reader = |name: &str| readers.get(name).copied() == Some(1);
    let mut targets = Vec::new();
    for (index, node) in graph.node.iter().enumerate() {
        if node.op_type == "Gemm" && node.domain.is_empty() {
            if let Some(weight) = node
                .input
                .get(1)
                .filter(|w| initializers.contains_key(w.as_str()))
            {
                report.unsupported.push((
                    node.name.clone(),
                    format!(
                        "a Gemm reads the stored weight {weight} (GPT-2's Conv1D projections \
                         export as Gemm); quantize rewrites MatMuls only"
                    ),
                ));
            }
        }
        if node.op_type != "MatMul" || !node.domain.is_empty() || node.input.len() != 2 {
            continue;
        }
        let weight = node.input[1].as_str();
        let (initializer, transpose, layout) = if let Some(&init) = initializers.get(weight) {
            (init, None, Layout::Direct)
        } else if let Some(&producer) = producers.get(weight) {
            let t = &graph.node[producer];
            let swaps = attr_ints(t, "perm").is_none_or(|p| p == [1, 0]);
            match initializers.get(t.input.first().map(String::as_str).unwrap_or("")) {
                Some(&init) if t.op_type == "Transpose" && t.domain.is_empty() && swaps => {
                    if !single_reader(weight) {
                        report.skipped.push((
                            node.name.clone(),
                            format!("the transposed weight {weight} has other readers"),
                        ));
                        continue;
                    }
                    (init, Some(producer), Layout::Transposed)
                }
                _ => continue,
            }
        } else {
            continue;
        };
        let tensor = &graph.initializer[initializer];
        if !is_float_matrix(tensor) {
            report.skipped.push((
                node.name.clone(),
                format!(
                    "weight {} is not a float32 matrix (type {}, dims {:?})",
                    tensor.name, tensor.data_type, tensor.dims
                ),
            ));
            continue;
        }
        if !single_reader(&tensor.name) {
            report.skipped.push((
                node.name.clone(),
                format!("weight {} has other readers", tensor.name),
            ));
            continue;
        }
        let (rows, cols) = (tensor.dims[0] as usize, tensor.dims[1] as usize);
        let (k, n) = match layout {
            Layout::Direct => (rows, cols),
            Layout::Transposed => (cols, rows),
        };
        targets.push(Target {
            matmul: index,
            transpose,
            initializer,
            layout,
            k,
            n,
        });
    }
    targets
}

/// Refuses a graph that defines an initializer name twice: ONNX names every value once, and
/// which of the two a reader takes is up to it (the rewrite would pick one and keep the
/// other). The error names the initializer; [`QuantizeError::in_graph`] adds the graph.
pub fn check_initializer_names(model: &ModelProto) -> Result<(), QuantizeError> {
    let Some(graph) = model.graph.as_ref() else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for tensor in &graph.initializer {
        if !seen.insert(tensor.name.as_str()) {
            return Err(QuantizeError::BadTensor {
                name: tensor.name.clone(),
                problem: "is defined more than once among the graph's initializers (ONNX \
                          names every value once); export the graph again"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Refuses a weight holding NaN or ±infinity: no grid holds it, and rounding would replace it
/// silently (the scale's max skips a NaN). Names the first such value by its `[K, N]` or
/// `[N, K]` position as stored.
fn refuse_non_finite(
    name: &str,
    values: &[f32],
    k: usize,
    n: usize,
    layout: Layout,
) -> Result<(), QuantizeError> {
    let Some(index) = values.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let count = values.iter().filter(|v| !v.is_finite()).count();
    let cols = match layout {
        Layout::Direct => n,
        Layout::Transposed => k,
    };
    Err(QuantizeError::BadTensor {
        name: name.to_string(),
        problem: format!(
            "holds {count} non-finite value(s), the first {} at [{}, {}]; a weight with NaN or \
             infinity cannot be quantized (fix the float model first)",
            values[index],
            index / cols,
            index % cols
        ),
    })
}

/// The `[N, K]` (output channel major) view of a target's weight.
fn weight_nk(values: Vec<f32>, target: &Target) -> Vec<f32> {
    match target.layout {
        Layout::Transposed => values,
        Layout::Direct => transpose(&values, target.k, target.n),
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose<T: Copy>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(values.len());
    for c in 0..cols {
        for r in 0..rows {
            out.push(values[r * cols + c]);
        }
    }
    out
}

/// An inline tensor from raw little-endian bytes.
pub fn raw_tensor(name: String, data_type: DataType, dims: &[usize], raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name,
        data_type: data_type as i32,
        dims: dims.iter().map(|&d| d as i64).collect(),
        raw_data: raw,
        data_location: EnumOrUnknown::new(DataLocation::DEFAULT),
        ..Default::default()
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A name not yet used in the graph, derived from `base`.
fn fresh_name(base: &str, suffix: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let mut name = format!("{base}{suffix}");
    let mut i = 1;
    while taken.contains(&name) {
        name = format!("{base}{suffix}_{i}");
        i += 1;
    }
    taken.insert(name.clone());
    name
}

fn ensure_opset(model: &mut ModelProto, domain: &str, version: i64) {
    if !model.opset_import.iter().any(|o| o.domain == domain) {
        model.opset_import.push(OperatorSetIdProto {
            domain: domain.into(),
            version,
            ..Default::default()
        });
    }
}

/// The model's default-domain opset (`""` or `ai.onnx`).
fn default_opset(model: &ModelProto) -> Option<i64> {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
}

/// Quantizes every MatMul of `model`'s main graph that reads a constant weight. New tensors
/// are inline (`raw_data`); the caller decides which to move to external files. Returns what
/// was done; a graph with no such MatMul is returned unchanged with an empty report.
pub fn quantize_model(
    model: &mut ModelProto,
    scheme: &Scheme,
    loader: &mut dyn TensorLoader,
    rounding: &mut dyn Rounding,
) -> Result<GraphReport, QuantizeError> {
    scheme.validate()?;
    check_initializer_names(model)?;
    let mut report = GraphReport::default();
    let Some(graph) = model.graph.as_mut() else {
        return Ok(report);
    };
    let targets = find_targets(graph, &mut report);
    if targets.is_empty() {
        return Ok(report);
    }
    let mut taken: std::collections::HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| {
            n.output
                .iter()
                .cloned()
                .chain(std::iter::once(n.name.clone()))
        })
        .chain(graph.initializer.iter().map(|t| t.name.clone()))
        .chain(graph.input.iter().map(|v| v.name.clone()))
        .collect();

    let mut new_initializers = Vec::new();
    let mut dequantize_nodes = Vec::new();
    let mut replacements: HashMap<usize, NodeProto> = HashMap::new();
    let mut removed_nodes = std::collections::HashSet::new();
    let mut removed_initializers = std::collections::HashSet::new();
    for target in &targets {
        let tensor = &graph.initializer[target.initializer];
        let weight_name = tensor.name.clone();
        let values = loader.load_f32(tensor)?;
        if values.len() != target.k * target.n {
            return Err(QuantizeError::BadTensor {
                name: weight_name,
                problem: format!(
                    "holds {} values, dims say {}×{}",
                    values.len(),
                    target.k,
                    target.n
                ),
            });
        }
        refuse_non_finite(&weight_name, &values, target.k, target.n, target.layout)?;
        let w = weight_nk(values, target);
        let matmul = &graph.node[target.matmul];
        let input = matmul.input[0].as_str();
        match scheme {
            Scheme::Int8 => {
                let q = rounding.int8(input, &w, target.n, target.k)?;
                // DequantizeLinear's axis is the output channel of the stored tensor: columns
                // of a [K, N] weight, rows of an [N, K] one.
                let (codes, dims, axis) = match target.layout {
                    Layout::Direct => (
                        transpose(&q.codes, target.n, target.k),
                        [target.k, target.n],
                        1,
                    ),
                    Layout::Transposed => (q.codes, [target.n, target.k], 0),
                };
                let codes_name = fresh_name(&weight_name, "_int8", &mut taken);
                let scale_name = fresh_name(&weight_name, "_scale", &mut taken);
                new_initializers.push(raw_tensor(
                    codes_name.clone(),
                    DataType::INT8,
                    &dims,
                    // In place: i8 and u8 share size and alignment.
                    codes.into_iter().map(|c| c as u8).collect(),
                ));
                new_initializers.push(raw_tensor(
                    scale_name.clone(),
                    DataType::FLOAT,
                    &[target.n],
                    f32_bytes(&q.scales),
                ));
                dequantize_nodes.push(NodeProto {
                    name: fresh_name(&weight_name, "_DequantizeLinear", &mut taken),
                    op_type: "DequantizeLinear".into(),
                    input: vec![codes_name, scale_name],
                    output: vec![weight_name.clone()],
                    attribute: vec![int_attr("axis", axis)],
                    ..Default::default()
                });
            }
            Scheme::Int4 {
                block_size,
                accuracy_level,
            } => {
                let q = rounding.int4(input, &w, target.n, target.k, *block_size)?;
                let blocks = q.blocks_per_row();
                let b_name = fresh_name(&weight_name, "_Q4", &mut taken);
                let scales_name = fresh_name(&weight_name, "_scales", &mut taken);
                let zp_name = fresh_name(&weight_name, "_zero_points", &mut taken);
                new_initializers.push(raw_tensor(
                    b_name.clone(),
                    DataType::UINT8,
                    &[target.n, blocks, block_size / 2],
                    q.packed,
                ));
                new_initializers.push(raw_tensor(
                    scales_name.clone(),
                    DataType::FLOAT,
                    &[target.n * blocks],
                    f32_bytes(&q.scales),
                ));
                new_initializers.push(raw_tensor(
                    zp_name.clone(),
                    DataType::UINT8,
                    &[target.n * blocks.div_ceil(2)],
                    q.zero_points,
                ));
                let node = NodeProto {
                    name: matmul.name.clone(),
                    op_type: "MatMulNBits".into(),
                    domain: MS_DOMAIN.into(),
                    input: vec![matmul.input[0].clone(), b_name, scales_name, zp_name],
                    output: matmul.output.clone(),
                    attribute: vec![
                        int_attr("K", target.k as i64),
                        int_attr("N", target.n as i64),
                        int_attr("bits", 4),
                        int_attr("block_size", *block_size as i64),
                        int_attr("accuracy_level", *accuracy_level),
                    ],
                    doc_string: matmul.doc_string.clone(),
                    ..Default::default()
                };
                replacements.insert(target.matmul, node);
                removed_nodes.extend(target.transpose);
            }
        }
        removed_initializers.insert(target.initializer);
        report.quantized.push(QuantizedMatMul {
            node: matmul.name.clone(),
            weight: weight_name,
            k: target.k,
            n: target.n,
        });
    }

    let removed_names: std::collections::HashSet<String> = removed_initializers
        .iter()
        .map(|&i| graph.initializer[i].name.clone())
        .collect();
    let removed_values: std::collections::HashSet<String> = removed_nodes
        .iter()
        .flat_map(|&i| graph.node[i].output.iter().cloned())
        .collect();
    let old_nodes = std::mem::take(&mut graph.node);
    // DequantizeLinear nodes read only initializers, so putting them first keeps the node
    // list topologically sorted.
    graph.node = dequantize_nodes;
    for (index, node) in old_nodes.into_iter().enumerate() {
        if removed_nodes.contains(&index) {
            continue;
        }
        graph.node.push(replacements.remove(&index).unwrap_or(node));
    }
    let old_initializers = std::mem::take(&mut graph.initializer);
    graph.initializer = old_initializers
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed_initializers.contains(i))
        .map(|(_, t)| t)
        .chain(new_initializers)
        .collect();
    // Graphs of IR < 4 list initializers among the inputs too; a removed one must go there.
    graph.input.retain(|v| !removed_names.contains(&v.name));
    graph
        .value_info
        .retain(|v| !removed_values.contains(v.name.as_str()));

    match scheme {
        Scheme::Int8 => {
            if default_opset(model).is_some_and(|v| v < 13) {
                return Err(QuantizeError::Unsupported(
                    "per-channel DequantizeLinear needs opset 13 or later".into(),
                ));
            }
        }
        Scheme::Int4 { .. } => ensure_opset(model, MS_DOMAIN, 1),
    }
    Ok(report)
}

/// The `location` entry of an external tensor.
pub fn external_location(tensor: &TensorProto) -> Option<String> {
    if tensor.data_location.enum_value() != Ok(DataLocation::EXTERNAL) {
        return None;
    }
    entry(&tensor.external_data, "location").map(str::to_string)
}

pub fn entry<'a>(entries: &'a [StringStringEntryProto], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Inline;
    impl TensorLoader for Inline {
        fn load_f32(&mut self, tensor: &TensorProto) -> Result<Vec<f32>, QuantizeError> {
            Ok(tensor
                .raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        }
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            name: format!("{op}_{}", outputs[0]),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn weight(name: &str, rows: usize, cols: usize) -> TensorProto {
        let values: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        raw_tensor(
            name.into(),
            DataType::FLOAT,
            &[rows, cols],
            f32_bytes(&values),
        )
    }

    /// x → MatMul(W1 [8, 4]) → MatMul(Transpose(W2 [6, 4])) → Add(W3 shared with a MatMul).
    fn model() -> ModelProto {
        let graph = GraphProto {
            node: vec![
                node("MatMul", &["x", "w1"], &["h"]),
                node("Transpose", &["w2"], &["w2t"]),
                node("MatMul", &["h", "w2t"], &["y"]),
                node("MatMul", &["y", "w3"], &["z"]),
                node("Add", &["z", "w3"], &["out"]),
            ],
            initializer: vec![weight("w1", 8, 4), weight("w2", 6, 4), weight("w3", 6, 6)],
            ..Default::default()
        };
        ModelProto {
            graph: protobuf::MessageField::some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 17,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn int4_replaces_matmul_and_transpose_and_leaves_shared_weights() {
        let mut m = model();
        let scheme = Scheme::Int4 {
            block_size: 16,
            accuracy_level: 0,
        };
        let report = quantize_model(&mut m, &scheme, &mut Inline, &mut Nearest).unwrap();
        assert_eq!(report.quantized.len(), 2);
        assert_eq!((report.quantized[0].k, report.quantized[0].n), (8, 4));
        assert_eq!((report.quantized[1].k, report.quantized[1].n), (4, 6));
        assert_eq!(report.skipped.len(), 1);
        assert!(report.skipped[0].1.contains("w3"));
        let g = m.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMulNBits", "MatMulNBits", "MatMul", "Add"]);
        assert_eq!(g.node[1].input[0], "h");
        assert_eq!(g.node[1].output, ["y"]);
        assert!(g
            .initializer
            .iter()
            .all(|t| t.name != "w1" && t.name != "w2"));
        assert!(g.initializer.iter().any(|t| t.name == "w3"));
        let b = g.initializer.iter().find(|t| t.name == "w2_Q4").unwrap();
        assert_eq!(b.dims, [6, 1, 8]);
        assert!(m.opset_import.iter().any(|o| o.domain == MS_DOMAIN));
    }

    #[test]
    fn a_gemm_by_a_stored_weight_is_reported_as_unsupported() {
        let mut m = model();
        let g = m.graph.as_mut().unwrap();
        g.node.push(node("Gemm", &["out", "w4", "b4"], &["gemm"]));
        g.initializer.push(weight("w4", 6, 3));
        let report = quantize_model(&mut m, &Scheme::Int8, &mut Inline, &mut Nearest).unwrap();
        assert_eq!(report.quantized.len(), 2);
        assert_eq!(report.unsupported.len(), 1);
        assert!(
            report.unsupported[0].1.contains("w4"),
            "{:?}",
            report.unsupported
        );
    }

    #[test]
    fn int8_puts_dequantize_in_front_and_keeps_the_rest() {
        let mut m = model();
        let report = quantize_model(&mut m, &Scheme::Int8, &mut Inline, &mut Nearest).unwrap();
        assert_eq!(report.quantized.len(), 2);
        let g = m.graph.as_ref().unwrap();
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            [
                "DequantizeLinear",
                "DequantizeLinear",
                "MatMul",
                "Transpose",
                "MatMul",
                "MatMul",
                "Add"
            ]
        );
        assert_eq!(g.node[0].output, ["w1"]);
        assert_eq!(attr_int(&g.node[0], "axis"), Some(1));
        assert_eq!(g.node[1].output, ["w2"]);
        assert_eq!(attr_int(&g.node[1], "axis"), Some(0));
        let codes = g.initializer.iter().find(|t| t.name == "w1_int8").unwrap();
        assert_eq!(codes.dims, [8, 4]);
        assert_eq!(codes.data_type, DataType::INT8 as i32);
        assert!(!m.opset_import.iter().any(|o| o.domain == MS_DOMAIN));
    }

    #[test]
    fn graph_without_constant_matmul_is_untouched() {
        let mut m = model();
        let g = m.graph.as_mut().unwrap();
        g.node.retain(|n| n.op_type == "Add");
        let before = m.clone();
        let report = quantize_model(&mut m, &Scheme::Int8, &mut Inline, &mut Nearest).unwrap();
        assert!(report.quantized.is_empty());
        assert_eq!(m, before);
    }

    #[test]
    fn a_non_finite_weight_is_refused_naming_it() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for scheme in [
                Scheme::Int8,
                Scheme::Int4 {
                    block_size: 16,
                    accuracy_level: 0,
                },
            ] {
                let mut m = model();
                let g = m.graph.as_mut().unwrap();
                // w2 is [6, 4], read transposed: the value at row 1, column 2.
                let w2 = g.initializer.iter_mut().find(|t| t.name == "w2").unwrap();
                w2.raw_data[(4 + 2) * 4..][..4].copy_from_slice(&bad.to_le_bytes());
                let before = m.clone();
                let error = quantize_model(&mut m, &scheme, &mut Inline, &mut Nearest)
                    .unwrap_err()
                    .in_graph(std::path::Path::new("block_007.onnx"))
                    .to_string();
                assert!(
                    error.contains("block_007.onnx")
                        && error.contains("tensor w2")
                        && error.contains("non-finite")
                        && error.contains(&format!("{bad} at [1, 2]")),
                    "{error}"
                );
                // Refused before anything of the graph changed.
                assert_eq!(m.graph, before.graph);
            }
        }
    }

    #[test]
    fn a_graph_defining_an_initializer_twice_is_refused_naming_it() {
        let mut m = model();
        let g = m.graph.as_mut().unwrap();
        g.initializer.push(weight("w1", 8, 4));
        let error = quantize_model(&mut m, &Scheme::Int8, &mut Inline, &mut Nearest)
            .unwrap_err()
            .in_graph(std::path::Path::new("block_001.onnx"))
            .to_string();
        assert!(
            error.contains("block_001.onnx")
                && error.contains("tensor w1")
                && error.contains("defined more than once"),
            "{error}"
        );
    }

    #[test]
    fn transpose_roundtrip() {
        let v: Vec<i32> = (0..6).collect();
        assert_eq!(transpose(&v, 2, 3), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(transpose(&transpose(&v, 2, 3), 3, 2), v);
    }
}
