//! Block runs replayed as CUDA graphs ([`crate::RuntimeOptions::cuda_graphs`]).
//!
//! On an H200 the host set the pace of a TinyLlama-1.1B shape: 0.57 ms to launch a block's
//! few dozen kernels against 0.22 ms of matrix products (docs/benchmarks.md §5). ONNX Runtime's
//! CUDA provider can instead record a session's kernels into a CUDA graph and afterwards launch
//! the whole graph at once: with `enable_cuda_graph` it runs a session normally twice for each
//! graph id (`gpu_graph_id`, a run option), captures on the third run, and from then on only
//! replays. A replay checks nothing: it reads and writes the addresses it was captured with. So
//! every run of a captured shape must read from and write to the same buffers:
//!
//! - each captured shape has one input and one output buffer, shared by every block session
//!   (their runs are ordered on the one shared stream, so they never overlap), and its own
//!   graph id;
//! - a run copies the state into the input buffer, replays, and copies the output buffer into a
//!   fresh state: the prefix cache keeps states, and the next run overwrites the output buffer;
//! - fresh states come from the embedding session's allocator, never from a block session's. A
//!   captured graph keeps the addresses of its intermediates, which its session's arena hands
//!   out again to that session's later runs only; a state held in that arena would be
//!   overwritten by the next replay.
//!
//! Shapes past [`CAPTURED_SHAPES`] (masks batched in many sizes) run uncaptured, with the same
//! rule for where their outputs go. The copies cost two passes over a state per block: at a
//! 7B shape, 10 MB each way against 2.5 ms of compute.
//!
//! On the CPU provider the same buffers and copies run with host copies and no capture, which is
//! how the tests check this path (the results must not change by a bit).

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::Path;

use ort::memory::Allocator;
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{DynTensor, DynTensorValueType, Shape, TensorElementType};

use crate::hidden::{
    fresh_state_like, queued_run_options, run_binding, run_into, state_binding, BoundOutput,
    HiddenState,
};
use crate::session::onnx_error;
use crate::RuntimeError;

/// Shapes captured per block session. One mask at a time has one shape per window batch (two
/// when the windows do not divide evenly); each captured shape holds two states' worth of
/// buffers for the whole model.
pub(crate) const CAPTURED_SHAPES: usize = 4;

/// Runs of a shape ONNX Runtime's CUDA provider makes before it captures the third
/// (`min_num_runs_before_cuda_graph_capture_`): the warm-up runs each captured shape this
/// many times plus one, so that timed runs are replays.
pub(crate) const RUNS_BEFORE_CAPTURE: usize = 2;

/// How states are copied into and out of the fixed buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Copies {
    /// On the shared CUDA stream (`crate::cuda`), ordered with the runs.
    SharedStream,
    /// By the host, at once (the CPU provider, for tests).
    #[cfg(test)]
    Host,
}

/// One captured shape: its buffers and the run options that name its graph.
struct CapturedShape {
    shape: Shape,
    element: TensorElementType,
    input: DynTensor,
    output: DynTensor,
    run_options: RunOptions,
}

/// The fixed buffers, bindings and graph ids of every captured block run.
pub(crate) struct CapturedBlocks {
    /// Where fresh states (and the fixed buffers) are allocated: not a block session's arena.
    allocator: Allocator,
    copies: Copies,
    /// Whether runs return before the device has finished them ([`RunOptions::disable_device_sync`]).
    queued: bool,
    /// How many shapes are captured (normally [`CAPTURED_SHAPES`]).
    capacity: usize,
    shapes: Vec<CapturedShape>,
    /// One binding per (block, captured shape), made on the block's first run of that shape.
    bindings: HashMap<(usize, usize), IoBinding>,
    /// Run options of shapes past `capacity`: graph id -1, never captured.
    uncaptured: RunOptions,
}

impl CapturedBlocks {
    /// `allocator`: where states go (the embedding session's, on the device). `queued`: runs do
    /// not wait for the device ([`crate::RuntimeOptions::overlap`]).
    pub(crate) fn new(
        allocator: Allocator,
        copies: Copies,
        queued: bool,
        capacity: usize,
        dir: &Path,
    ) -> Result<Self, RuntimeError> {
        Ok(CapturedBlocks {
            uncaptured: run_options(copies, queued, -1, dir)?,
            allocator,
            copies,
            queued,
            capacity,
            shapes: Vec::new(),
            bindings: HashMap::new(),
        })
    }

    /// Runs `session` (block `block`, at `path`) on `state` and returns its output as a fresh
    /// state: captured and replayed for the first [`CAPTURED_SHAPES`] shapes met, run normally
    /// for others, in both cases never left in a block session's arena.
    pub(crate) fn run(
        &mut self,
        block: usize,
        session: &mut Session,
        state: &HiddenState,
        path: &Path,
    ) -> Result<HiddenState, RuntimeError> {
        let mut fresh = fresh_state_like(state, &self.allocator, path)?;
        let shape = fresh.shape().clone();
        let element = *fresh.data_type();
        let Some(index) = self.shape_index(&shape, element, path)? else {
            return run_into(session, state, fresh, Some(&self.uncaptured), path);
        };
        let tensor = state
            .view()
            .downcast::<DynTensorValueType>()
            .map_err(onnx_error(path))?;
        let bytes = byte_count(&shape, element)?;
        let captured = &mut self.shapes[index];
        // SAFETY: both are whole tensors of `shape` and `element` (`bytes` long), distinct
        // allocations, in memory `self.copies` reaches (the shared stream's copy takes host or
        // device memory alike).
        unsafe {
            copy(
                self.copies,
                captured.input.data_ptr_mut(),
                tensor.data_ptr(),
                bytes,
            )?
        };
        let binding = match self.bindings.entry((block, index)) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                // Made once per (block, shape), not per run (this is the hot path).
                let output = BoundOutput::Tensor(&mut captured.output);
                let (binding, _) = state_binding(session, &captured.input, output, path)?;
                entry.insert(binding)
            }
        };
        run_binding(session, binding, Some(&captured.run_options)).map_err(onnx_error(path))?;
        // SAFETY: as above; `fresh` was allocated with the same shape and element type.
        unsafe {
            copy(
                self.copies,
                fresh.data_ptr_mut(),
                captured.output.data_ptr(),
                bytes,
            )?
        };
        Ok(fresh.into_dyn())
    }

    /// The captured shape `shape` of `element` is (made on first sight while there is room);
    /// `None`: past the capacity, run uncaptured.
    fn shape_index(
        &mut self,
        shape: &Shape,
        element: TensorElementType,
        path: &Path,
    ) -> Result<Option<usize>, RuntimeError> {
        if let Some(index) = self
            .shapes
            .iter()
            .position(|captured| &captured.shape == shape && captured.element == element)
        {
            return Ok(Some(index));
        }
        if self.shapes.len() >= self.capacity {
            return Ok(None);
        }
        // Graph ids start at 1: ONNX Runtime reserves 0.
        let id = self.shapes.len() as i32 + 1;
        self.shapes.push(CapturedShape {
            shape: shape.clone(),
            element,
            input: DynTensor::new(&self.allocator, element, shape.clone())
                .map_err(onnx_error(path))?,
            output: DynTensor::new(&self.allocator, element, shape.clone())
                .map_err(onnx_error(path))?,
            run_options: run_options(self.copies, self.queued, id, path)?,
        });
        Ok(Some(self.shapes.len() - 1))
    }

    /// Shapes captured so far.
    pub(crate) fn captured_shapes(&self) -> usize {
        self.shapes.len()
    }
}

/// Run options naming graph `id` (-1: never captured) on CUDA, not waiting for the device when
/// `queued`.
fn run_options(
    copies: Copies,
    queued: bool,
    id: i32,
    path: &Path,
) -> Result<RunOptions, RuntimeError> {
    let mut options = if queued {
        queued_run_options(path)?
    } else {
        RunOptions::new().map_err(onnx_error(path))?
    };
    if copies == Copies::SharedStream {
        options
            .set("gpu_graph_id", id.to_string())
            .map_err(onnx_error(path))?;
    }
    Ok(options)
}

fn byte_count(shape: &Shape, element: TensorElementType) -> Result<usize, RuntimeError> {
    element
        .byte_size(shape.num_elements())
        .ok_or_else(|| RuntimeError::BadInput(format!("hidden states of type {element:?}")))
}

/// Copies `bytes` bytes from `source` to `target`.
///
/// # Safety
/// Both must be allocations of at least `bytes` bytes in the memory `copies` works on (device
/// memory for [`Copies::SharedStream`], host memory for [`Copies::Host`]) that do not overlap.
unsafe fn copy(
    copies: Copies,
    target: *mut c_void,
    source: *const c_void,
    bytes: usize,
) -> Result<(), RuntimeError> {
    match copies {
        // SAFETY: the caller's contract.
        Copies::SharedStream => unsafe {
            crate::cuda::copy_on_shared_stream(target, source, bytes)
        },
        #[cfg(test)]
        Copies::Host => {
            // SAFETY: the caller's contract.
            unsafe {
                std::ptr::copy_nonoverlapping(source.cast::<u8>(), target.cast::<u8>(), bytes)
            };
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use layerprune_core::Mask;
    use layerprune_tests::{every_mask, fixture_windows, tiny_model_dir};
    use ndarray::Array2;

    use crate::{EvalOptions, Evaluator, LayeredModel, RuntimeOptions};

    /// The fixture with states bound (as on a GPU); `capacity`: captured shapes on the host,
    /// `None`: the plain bound path.
    fn open(capacity: Option<usize>) -> LayeredModel {
        let options = RuntimeOptions {
            io_binding: Some(true),
            verify_hashes: false,
            ..RuntimeOptions::default()
        };
        let mut model = LayeredModel::open(&tiny_model_dir(), &options).expect("fixture loads");
        if let Some(capacity) = capacity {
            model.capture_blocks_on_the_host(capacity);
        }
        model
    }

    /// NLL sums of `masks`, and the shapes captured.
    fn evaluate(
        capacity: Option<usize>,
        masks: &[Mask],
        options: EvalOptions,
    ) -> (Vec<f64>, usize) {
        let mut evaluator =
            Evaluator::new(open(capacity), &fixture_windows(7, 3, 24), options).unwrap();
        evaluator.warm_up().unwrap();
        let results = evaluator.evaluate(masks, &mut |_, _| {}).unwrap();
        (
            results.iter().map(|r| r.nll_sum).collect(),
            evaluator.model().captured_shapes(),
        )
    }

    /// Through the fixed buffers, every way the evaluator moves states gives the same NLL bit
    /// for bit: were a returned state the shared output buffer itself, the prefix stack's
    /// states would be overwritten by the next block run and later masks would differ.
    #[test]
    fn fixed_buffers_give_the_same_nll_bit_for_bit() {
        let masks = every_mask(6);
        for (options, capacity, shapes) in [
            (EvalOptions::default(), 4, 1),
            // Two window batches of 2 and 1 windows: two shapes.
            (
                EvalOptions {
                    batch_windows: 2,
                    ..EvalOptions::default()
                },
                4,
                2,
            ),
            // Room for two states: the stack pops and recomputes.
            (
                EvalOptions {
                    cache_bytes: 2 * 3 * 24 * 64 * 4,
                    ..EvalOptions::default()
                },
                4,
                1,
            ),
            // Masks batched in many sizes: past the capacity, runs go uncaptured.
            (
                EvalOptions {
                    mask_batch: 8,
                    ..EvalOptions::default()
                },
                2,
                2,
            ),
        ] {
            let (plain, plain_shapes) = evaluate(None, &masks, options.clone());
            let (fixed, fixed_shapes) = evaluate(Some(capacity), &masks, options.clone());
            assert_eq!(plain_shapes, 0);
            assert_eq!(fixed_shapes, shapes, "{options:?}");
            for ((mask, p), f) in masks.iter().zip(&plain).zip(&fixed) {
                assert!(p.is_finite());
                assert_eq!(
                    p.to_bits(),
                    f.to_bits(),
                    "mask {mask}, {options:?}: plain {p} vs fixed buffers {f}"
                );
            }
        }
    }

    /// A state returned by one block run is its own: the next run, which writes the same
    /// output buffer, leaves it as it was.
    #[test]
    fn a_returned_state_outlives_the_next_run() {
        let mut model = open(Some(1));
        let ids = Array2::from_shape_fn((2, 5), |(b, t)| (b * 7 + t * 3) as i64);
        let embedded = model.embed(&ids).unwrap();
        let first = model.run_block(0, &embedded).unwrap();
        let before = model.hidden_to_array(&first).unwrap();
        let second = model.run_block(1, &first).unwrap();
        assert_eq!(model.hidden_to_array(&first).unwrap(), before);
        assert_ne!(model.hidden_to_array(&second).unwrap(), before);
        // The same as the plain path, run for run.
        let mut plain = open(None);
        let embedded = plain.embed(&ids).unwrap();
        let plain_first = plain.run_block(0, &embedded).unwrap();
        let plain_second = plain.run_block(1, &plain_first).unwrap();
        assert_eq!(plain.hidden_to_array(&plain_first).unwrap(), before);
        assert_eq!(
            plain.hidden_to_array(&plain_second).unwrap(),
            model.hidden_to_array(&second).unwrap()
        );
        assert_eq!(model.captured_shapes(), 1);
    }
}
