//! Hidden states between blocks and the runs that pass them on: runs whose output is bound to
//! device memory (I/O binding), the run options of queued and shrinking runs, and copies to the
//! host.

use std::ops::Deref;
use std::path::Path;

use ort::memory::{AllocationDevice, Allocator, MemoryInfo};
use ort::session::{IoBinding, RunOptions, Session, SessionInputs, SessionOutputs};
use ort::value::{DynTensor, DynTensorValueType, DynValue, Value, ValueTypeMarker};

use crate::arena::Arena;
use crate::options::RuntimeOptions;
use crate::session::onnx_error;
use crate::RuntimeError;

/// Hidden states between blocks, as ONNX Runtime holds them ([batch, seq, hidden], in the
/// model's dtype). Passed from graph to graph without conversion; with
/// [`RuntimeOptions::io_binding`] they stay in the device's memory (CUDA device memory on a
/// GPU), else ONNX Runtime returns them in host memory. [`on_host`] reads either.
pub type HiddenState = DynValue;

/// Runs `session` on its one input, with its first output bound to `memory` (ONNX Runtime
/// allocates it there, from the session's allocator for that device), and returns that
/// output. A fresh binding per call: ONNX Runtime would otherwise write the next call's
/// output into the buffer of this one, which the caller still holds. `run_options`: those of
/// the model's runs that leave their outputs on the device ([`model_run_options`]).
pub(crate) fn run_bound<T: ValueTypeMarker + ?Sized>(
    session: &mut Session,
    input: &Value<T>,
    memory: &MemoryInfo<'static>,
    run_options: Option<&RunOptions>,
    path: &Path,
) -> Result<DynValue, RuntimeError> {
    let (binding, output_name) = state_binding(session, input, BoundOutput::Memory(memory), path)?;
    let mut outputs = run_binding(session, &binding, run_options).map_err(onnx_error(path))?;
    outputs
        .remove(&output_name)
        .ok_or_else(|| RuntimeError::Onnx {
            path: path.to_path_buf(),
            message: format!("bound output {output_name} missing"),
        })
}

/// A new state of `state`'s shape and element type from `allocator`, for a run's output.
pub(crate) fn fresh_state_like(
    state: &HiddenState,
    allocator: &Allocator,
    path: &Path,
) -> Result<DynTensor, RuntimeError> {
    let tensor = state
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(onnx_error(path))?;
    DynTensor::new(allocator, *tensor.data_type(), tensor.shape().clone()).map_err(onnx_error(path))
}

/// Runs `session` on `state` with its output written into `fresh` (a state of the same shape,
/// from an allocator other than the session's own arena: [`fresh_state_like`]), and returns it.
pub(crate) fn run_into(
    session: &mut Session,
    state: &HiddenState,
    mut fresh: DynTensor,
    run_options: Option<&RunOptions>,
    path: &Path,
) -> Result<HiddenState, RuntimeError> {
    let (binding, _) = state_binding(session, state, BoundOutput::Tensor(&mut fresh), path)?;
    run_binding(session, &binding, run_options).map_err(onnx_error(path))?;
    Ok(fresh.into_dyn())
}

/// Where a bound run writes its state output.
pub(crate) enum BoundOutput<'a> {
    /// A buffer ONNX Runtime allocates in this memory, from the session's allocator for it.
    Memory(&'a MemoryInfo<'static>),
    /// This tensor.
    Tensor(&'a mut DynTensor),
}

/// A binding of `session`'s hidden-state input to `input` and its output to `output`, with the
/// output's name (under which a run returns it).
pub(crate) fn state_binding<T: ValueTypeMarker + ?Sized>(
    session: &Session,
    input: &Value<T>,
    output: BoundOutput<'_>,
    path: &Path,
) -> Result<(IoBinding, String), RuntimeError> {
    let (input_name, output_name) = state_names(session, path)?;
    let mut binding = session.create_binding().map_err(onnx_error(path))?;
    binding
        .bind_input(input_name, input)
        .map_err(onnx_error(path))?;
    match output {
        BoundOutput::Memory(memory) => binding.bind_output_to_device(output_name.as_str(), memory),
        BoundOutput::Tensor(tensor) => binding.bind_output(output_name.as_str(), tensor),
    }
    .map_err(onnx_error(path))?;
    Ok((binding, output_name))
}

/// The names of a graph's hidden-state input and output (its first of each; the embedding's
/// input is its token ids).
pub(crate) fn state_names(
    session: &Session,
    path: &Path,
) -> Result<(String, String), RuntimeError> {
    match (session.inputs().first(), session.outputs().first()) {
        (Some(input), Some(output)) => Ok((input.name().to_string(), output.name().to_string())),
        _ => Err(RuntimeError::Onnx {
            path: path.to_path_buf(),
            message: "graph has no input or no output".into(),
        }),
    }
}

/// Run options for runs that return before the device has finished them
/// ([`RuntimeOptions::overlap`]): without the provider's synchronisation.
pub(crate) fn queued_run_options(path: &Path) -> Result<RunOptions, RuntimeError> {
    let mut run_options = RunOptions::new().map_err(onnx_error(path))?;
    run_options
        .disable_device_sync()
        .map_err(onnx_error(path))?;
    Ok(run_options)
}

/// Run options, `None` where ONNX Runtime's defaults do: `queued` runs return before the device
/// has finished them ([`RuntimeOptions::overlap`]); `shrink`ing ones give their arena's free
/// regions back at their end ([`Arena::Shrink`]).
pub(crate) fn model_run_options(
    options: &RuntimeOptions,
    queued: bool,
    shrink: bool,
    path: &Path,
) -> Result<Option<RunOptions>, RuntimeError> {
    if !queued && !shrink {
        return Ok(None);
    }
    let mut run_options = if queued {
        queued_run_options(path)?
    } else {
        RunOptions::new().map_err(onnx_error(path))?
    };
    if shrink {
        run_options
            .set(
                "memory.enable_memory_arena_shrinkage",
                Arena::shrinkage_target(options.device),
            )
            .map_err(onnx_error(path))?;
    }
    Ok(Some(run_options))
}

/// A run of `session` on `inputs` whose outputs ONNX Runtime returns in host memory, with
/// `run_options` when given.
pub(crate) fn run_to_host<'a, 'i, 'v: 'i, const N: usize>(
    session: &'a mut Session,
    inputs: impl Into<SessionInputs<'i, 'v, N>>,
    run_options: Option<&'a RunOptions>,
) -> ort::Result<SessionOutputs<'a>> {
    match run_options {
        Some(run_options) => session.run_with_options(inputs, run_options),
        None => session.run(inputs),
    }
}

/// A bound run of `session` with `run_options` when given ([`model_run_options`]).
pub(crate) fn run_binding<'b>(
    session: &'b mut Session,
    binding: &'b IoBinding,
    run_options: Option<&RunOptions>,
) -> ort::Result<SessionOutputs<'b>> {
    match run_options {
        Some(run_options) => session.run_binding_with_options(binding, run_options),
        None => session.run_binding(binding),
    }
}

/// A hidden state in host memory: the state itself where it is there already, else a copy.
pub enum OnHost<'a> {
    Borrowed(&'a HiddenState),
    Copied(HiddenState),
}

impl Deref for OnHost<'_> {
    type Target = HiddenState;

    fn deref(&self) -> &HiddenState {
        match self {
            OnHost::Borrowed(state) => state,
            OnHost::Copied(state) => state,
        }
    }
}

/// `state` where the host can read it (`try_extract_*`): itself when it is in host memory
/// (always on the CPU provider), else copied from the device (a bound state on CUDA).
pub fn on_host(state: &HiddenState) -> Result<OnHost<'_>, RuntimeError> {
    let tensor = state
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(copy_error)?;
    if tensor.memory_info().is_cpu_accessible() {
        return Ok(OnHost::Borrowed(state));
    }
    // ort's copy runs on a stream of its own: what the shared stream still has queued (the
    // state itself, maybe) must be done first.
    crate::cuda::wait_for_shared_stream()?;
    copy_to_host(state).map(OnHost::Copied)
}

pub(crate) fn copy_error(error: ort::Error) -> RuntimeError {
    RuntimeError::BadInput(format!(
        "copying hidden states to the host: {}",
        error.message()
    ))
}

/// A copy of `state` in host memory, wherever it is (ort's copy: an Identity graph whose output
/// is bound to the host).
pub(crate) fn copy_to_host(state: &HiddenState) -> Result<HiddenState, RuntimeError> {
    let tensor = state
        .view()
        .downcast::<DynTensorValueType>()
        .map_err(copy_error)?;
    let copy = tensor.to(AllocationDevice::CPU, 0).map_err(copy_error)?;
    Ok(copy.into_dyn())
}

pub(crate) fn first_output(
    mut outputs: ort::session::SessionOutputs<'_>,
    path: &Path,
) -> Result<DynValue, RuntimeError> {
    let name = outputs
        .keys()
        .next()
        .map(str::to_string)
        .ok_or_else(|| RuntimeError::Onnx {
            path: path.to_path_buf(),
            message: "graph produced no output".into(),
        })?;
    outputs.remove(&name).ok_or_else(|| RuntimeError::Onnx {
        path: path.to_path_buf(),
        message: format!("output {name} missing"),
    })
}
