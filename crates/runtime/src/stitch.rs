//! Concatenating hidden states along the batch axis and splitting them again, where they are.
//!
//! Masks batched through a shared block ([`crate::batching`]) need their states stacked into one
//! block input and the block's output cut back into one state per group. In host memory that is
//! a copy of slices (the plain path). With the states bound to the device's memory
//! ([`crate::RuntimeOptions::io_binding`], on by default for CUDA), copying them to the host and
//! back for every batched block call would cost more than the batching gains, so the two
//! operations run as graphs of their own on the model's provider: one `Concat` node, or one
//! `Split` node into equal parts, along axis 0, with the outputs bound to the same memory as
//! the blocks' outputs. A session is built once per element type and number of parts.
//!
//! Both are exact copies, so a batched evaluation gives the same NLL bit for bit either way
//! (tested on the CPU provider with binding on, tests/io_binding.rs).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::{Tensor as TensorType, Value as TypeValue};
use onnx_protobuf::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto,
    ValueInfoProto,
};
use ort::memory::MemoryInfo;
use ort::session::{RunOptions, Session};
use ort::value::{PrimitiveTensorElementType, Tensor, TensorElementType, ValueType};
use protobuf::{Message, MessageField};

use crate::hidden::{on_host, run_binding, HiddenState};
use crate::session::{explained, session_builder};
use crate::{RuntimeError, RuntimeOptions};

/// The batch-axis graphs of one model, built as they are first needed.
#[derive(Default)]
pub(crate) struct Stitcher {
    /// By operation, ONNX element type and number of parts.
    sessions: HashMap<(Operation, i32, usize), Session>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Operation {
    Concat,
    Split,
}

impl Stitcher {
    /// The states one after another along the batch axis: in `memory` (by a graph) when
    /// given, else in host memory.
    pub(crate) fn concat(
        &mut self,
        states: &[&HiddenState],
        memory: Option<&MemoryInfo<'static>>,
        run_options: Option<&RunOptions>,
        options: &RuntimeOptions,
    ) -> Result<HiddenState, RuntimeError> {
        let ty = element_type(states[0])?;
        let Some(memory) = memory else {
            return match ty {
                TensorElementType::Float32 => concat_on_host::<f32>(states),
                TensorElementType::Float16 => concat_on_host::<half::f16>(states),
                TensorElementType::Bfloat16 => concat_on_host::<half::bf16>(states),
                other => Err(unbatchable(other)),
            };
        };
        let session = self.session(Operation::Concat, ty, states.len(), options)?;
        let label = graph_label(Operation::Concat);
        let mut binding = session.create_binding().map_err(batch_error)?;
        for (i, state) in states.iter().enumerate() {
            binding
                .bind_input(format!("in{i}"), *state)
                .map_err(batch_error)?;
        }
        binding
            .bind_output_to_device("out", memory)
            .map_err(batch_error)?;
        let mut outputs = run_binding(session, &binding, run_options).map_err(batch_error)?;
        outputs.remove("out").ok_or_else(|| RuntimeError::Onnx {
            path: label.into(),
            message: "output out missing".into(),
        })
    }

    /// The inverse of [`Stitcher::concat`]: `parts` equal slices along the batch axis.
    pub(crate) fn split(
        &mut self,
        state: &HiddenState,
        parts: usize,
        memory: Option<&MemoryInfo<'static>>,
        run_options: Option<&RunOptions>,
        options: &RuntimeOptions,
    ) -> Result<Vec<HiddenState>, RuntimeError> {
        let ty = element_type(state)?;
        let Some(memory) = memory else {
            return match ty {
                TensorElementType::Float32 => split_on_host::<f32>(state, parts),
                TensorElementType::Float16 => split_on_host::<half::f16>(state, parts),
                TensorElementType::Bfloat16 => split_on_host::<half::bf16>(state, parts),
                other => Err(unbatchable(other)),
            };
        };
        let session = self.session(Operation::Split, ty, parts, options)?;
        let mut binding = session.create_binding().map_err(batch_error)?;
        binding.bind_input("in", state).map_err(batch_error)?;
        for i in 0..parts {
            binding
                .bind_output_to_device(format!("out{i}"), memory)
                .map_err(batch_error)?;
        }
        let mut outputs = run_binding(session, &binding, run_options).map_err(batch_error)?;
        (0..parts)
            .map(|i| {
                outputs
                    .remove(format!("out{i}").as_str())
                    .ok_or_else(|| RuntimeError::Onnx {
                        path: graph_label(Operation::Split).into(),
                        message: format!("output out{i} missing"),
                    })
            })
            .collect()
    }

    /// Opens the Concat and Split graphs of 2 to `max_parts` states of `ty` now, so that no
    /// session is built while masks are being evaluated: on CUDA each costs far more than
    /// the batched block call it serves. Returns how many it opened (not those open already).
    pub(crate) fn prepare(
        &mut self,
        ty: TensorElementType,
        max_parts: usize,
        options: &RuntimeOptions,
    ) -> Result<usize, RuntimeError> {
        let before = self.sessions.len();
        for parts in 2..=max_parts {
            self.session(Operation::Concat, ty, parts, options)?;
            self.session(Operation::Split, ty, parts, options)?;
        }
        Ok(self.sessions.len() - before)
    }

    /// How many graphs are open.
    #[cfg(test)]
    pub(crate) fn open_graphs(&self) -> usize {
        self.sessions.len()
    }

    fn session(
        &mut self,
        operation: Operation,
        ty: TensorElementType,
        parts: usize,
        options: &RuntimeOptions,
    ) -> Result<&mut Session, RuntimeError> {
        let onnx_type = onnx_type(ty)?;
        let key = (operation, onnx_type as i32, parts);
        match self.sessions.entry(key) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let label = Path::new(graph_label(operation));
                let bytes = graph(operation, onnx_type, parts);
                let session = session_builder(label, options)?
                    .commit_from_memory(&bytes)
                    .map_err(|error| RuntimeError::Onnx {
                        path: label.into(),
                        message: error.message().to_string(),
                    })?;
                Ok(entry.insert(session))
            }
        }
    }
}

/// How the graphs are named in errors (they have no file).
fn graph_label(operation: Operation) -> &'static str {
    match operation {
        Operation::Concat => "(batch-axis Concat graph)",
        Operation::Split => "(batch-axis Split graph)",
    }
}

fn batch_error(error: ort::Error) -> RuntimeError {
    RuntimeError::BadInput(format!(
        "batching hidden states across masks: {}",
        explained(error.message())
    ))
}

fn unbatchable(ty: TensorElementType) -> RuntimeError {
    RuntimeError::BadInput(format!(
        "hidden states of type {ty:?} cannot be batched across masks"
    ))
}

fn onnx_type(ty: TensorElementType) -> Result<DataType, RuntimeError> {
    match ty {
        TensorElementType::Float32 => Ok(DataType::FLOAT),
        TensorElementType::Float16 => Ok(DataType::FLOAT16),
        TensorElementType::Bfloat16 => Ok(DataType::BFLOAT16),
        other => Err(unbatchable(other)),
    }
}

/// A tensor of `ty` and unknown shape (the graphs take any batch, length and width).
fn tensor_info(name: String, ty: DataType) -> ValueInfoProto {
    ValueInfoProto {
        name,
        type_: MessageField::some(TypeProto {
            value: Some(TypeValue::TensorType(TensorType {
                elem_type: ty as i32,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The serialized graph: `Concat(in0, …, in{parts-1}) -> out` or
/// `Split(in) -> out0, …, out{parts-1}` along axis 0 (opset 17: no `split` input, so equal
/// parts).
fn graph(operation: Operation, ty: DataType, parts: usize) -> Vec<u8> {
    let numbered =
        |prefix: &str| -> Vec<String> { (0..parts).map(|i| format!("{prefix}{i}")).collect() };
    let (op_type, inputs, outputs) = match operation {
        Operation::Concat => ("Concat", numbered("in"), vec!["out".to_string()]),
        Operation::Split => ("Split", vec!["in".to_string()], numbered("out")),
    };
    let node = NodeProto {
        name: op_type.to_lowercase(),
        op_type: op_type.into(),
        input: inputs.clone(),
        output: outputs.clone(),
        attribute: vec![AttributeProto {
            name: "axis".into(),
            i: 0,
            type_: onnx_protobuf::attribute_proto::AttributeType::INT.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        graph: MessageField::some(GraphProto {
            name: format!("batch_axis_{}", op_type.to_lowercase()),
            node: vec![node],
            input: inputs.into_iter().map(|n| tensor_info(n, ty)).collect(),
            output: outputs.into_iter().map(|n| tensor_info(n, ty)).collect(),
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
            ..Default::default()
        }],
        ..Default::default()
    };
    model
        .write_to_bytes()
        .expect("a graph of one node serializes")
}

fn element_type(state: &HiddenState) -> Result<TensorElementType, RuntimeError> {
    match state.dtype() {
        ValueType::Tensor { ty, .. } => Ok(*ty),
        other => Err(RuntimeError::BadInput(format!(
            "a block returned {other:?}, not a tensor of hidden states"
        ))),
    }
}

fn concat_on_host<T>(states: &[&HiddenState]) -> Result<HiddenState, RuntimeError>
where
    T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    let mut shape: Vec<i64> = Vec::new();
    let mut data: Vec<T> = Vec::new();
    for state in states {
        let state = on_host(state)?;
        let (part_shape, part) = state.try_extract_tensor::<T>().map_err(batch_error)?;
        if shape.is_empty() {
            shape = part_shape.to_vec();
            data.reserve(part.len() * states.len());
        } else {
            shape[0] += part_shape[0];
        }
        data.extend_from_slice(part);
    }
    Ok(Tensor::from_array((shape, data))
        .map_err(batch_error)?
        .into_dyn())
}

fn split_on_host<T>(state: &HiddenState, parts: usize) -> Result<Vec<HiddenState>, RuntimeError>
where
    T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    let state = on_host(state)?;
    let (shape, data) = state.try_extract_tensor::<T>().map_err(batch_error)?;
    let mut part_shape = shape.to_vec();
    part_shape[0] /= parts as i64;
    let chunk = data.len() / parts;
    data.chunks(chunk)
        .map(|part| {
            Tensor::from_array((part_shape.clone(), part.to_vec()))
                .map(Tensor::into_dyn)
                .map_err(batch_error)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three states of shape [2, 3, 4] and element type `T`, with distinct values.
    fn states<T>(make: fn(f32) -> T) -> Vec<HiddenState>
    where
        T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
    {
        (0..3)
            .map(|s| {
                let data: Vec<T> = (0..24).map(|i| make((s * 24 + i) as f32 * 0.37)).collect();
                Tensor::from_array((vec![2i64, 3, 4], data))
                    .unwrap()
                    .into_dyn()
            })
            .collect()
    }

    fn contents<T>(state: &HiddenState) -> (Vec<i64>, Vec<T>)
    where
        T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
    {
        let (shape, data) = state.try_extract_tensor::<T>().unwrap();
        (shape.to_vec(), data.to_vec())
    }

    fn check<T>(make: fn(f32) -> T)
    where
        T: PrimitiveTensorElementType + Clone + std::fmt::Debug + PartialEq + 'static,
    {
        crate::environment(1).unwrap();
        let options = RuntimeOptions::default();
        let memory = options.output_memory().unwrap();
        let mut stitcher = Stitcher::default();
        let states = states(make);
        let refs: Vec<&HiddenState> = states.iter().collect();
        let by_graph = stitcher
            .concat(&refs, Some(&memory), None, &options)
            .unwrap();
        let on_host = stitcher.concat(&refs, None, None, &options).unwrap();
        let (shape, joined) = contents::<T>(&by_graph);
        assert_eq!(shape, vec![6, 3, 4]);
        assert_eq!((shape, joined), contents::<T>(&on_host));
        for parts in [
            stitcher
                .split(&by_graph, 3, Some(&memory), None, &options)
                .unwrap(),
            stitcher.split(&on_host, 3, None, None, &options).unwrap(),
        ] {
            assert_eq!(parts.len(), 3);
            for (part, state) in parts.iter().zip(&states) {
                assert_eq!(contents::<T>(part), contents::<T>(state));
            }
        }
        // One Concat and one Split session, built once.
        assert_eq!(stitcher.sessions.len(), 2);
    }

    #[test]
    fn prepared_joins_are_the_ones_used_later() {
        crate::environment(1).unwrap();
        let options = RuntimeOptions::default();
        let memory = options.output_memory().unwrap();
        let mut stitcher = Stitcher::default();
        // Concat and Split of 2, 3 and 4 states; none again; then those of 5.
        let opened = stitcher.prepare(TensorElementType::Float32, 4, &options);
        assert_eq!(opened.unwrap(), 6);
        let again = stitcher.prepare(TensorElementType::Float32, 4, &options);
        assert_eq!(again.unwrap(), 0);
        let more = stitcher.prepare(TensorElementType::Float32, 5, &options);
        assert_eq!(more.unwrap(), 2);
        assert_eq!(stitcher.sessions.len(), 8);
        let states = states(|x| x);
        let refs: Vec<&HiddenState> = states.iter().collect();
        let joined = stitcher
            .concat(&refs, Some(&memory), None, &options)
            .unwrap();
        stitcher
            .split(&joined, 3, Some(&memory), None, &options)
            .unwrap();
        assert_eq!(stitcher.sessions.len(), 8);
    }

    #[test]
    fn the_graphs_concat_and_split_exactly_as_the_host_does() {
        check::<f32>(|x| x);
        check::<half::f16>(half::f16::from_f32);
        check::<half::bf16>(half::bf16::from_f32);
    }

    #[test]
    fn integer_states_are_refused_by_name() {
        let state = Tensor::from_array((vec![1i64, 2], vec![1i64, 2]))
            .unwrap()
            .into_dyn();
        let error = Stitcher::default()
            .concat(&[&state], None, None, &RuntimeOptions::default())
            .unwrap_err();
        assert!(error.to_string().contains("Int64"), "{error}");
    }
}
