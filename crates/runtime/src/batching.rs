//! Masks batched through the blocks they share.
//!
//! One mask at a time, a block's matrix products see only one mask's tokens (windows × sequence
//! length rows): on a GPU that leaves most of the device idle. Here the masks advance together,
//! block by block, as a wavefront: masks that agree on every block before `b` share one hidden
//! state (a group); at block `b` each group splits into the masks that skip it (they keep the
//! state) and those that run it; the states of every group that runs `b` are concatenated along
//! the batch axis and run through `b` in calls of at most `mask_batch` states, then split again.
//! A block runs once per distinct prefix, as with the prefix stack of one-at-a-time evaluation,
//! but with many masks' tokens per call.
//!
//! Memory: every group holds a state, and there are at most as many groups as masks, so the
//! masks are taken in slices of the sorted order that fit the cache budget.
//!
//! Concatenating and splitting are host operations: the states are read and written in host
//! memory. With [`crate::RuntimeOptions::io_binding`] on CUDA, a state that runs alone stays on
//! the device, but one that joins a batch is copied to the host ([`on_host`]) and the batch's
//! output is copied back from the device to be split; its parts then go to the device again as
//! the next block's input. On the CPU provider nothing is copied beyond what batching always
//! copied. (A device-side concatenation, a Concat/Split graph of its own, would remove these
//! transfers.)

use std::rc::Rc;

use layerprune_core::Mask;
use ort::value::{PrimitiveTensorElementType, Tensor, TensorElementType, ValueType};

use crate::model::{on_host, HiddenState, LayeredModel};
use crate::RuntimeError;

/// Hidden states of several groups, one after another along the batch axis.
fn concat_states(states: &[&HiddenState]) -> Result<HiddenState, RuntimeError> {
    match element_type(states[0])? {
        TensorElementType::Float32 => concat_typed::<f32>(states),
        TensorElementType::Float16 => concat_typed::<half::f16>(states),
        TensorElementType::Bfloat16 => concat_typed::<half::bf16>(states),
        other => Err(RuntimeError::BadInput(format!(
            "hidden states of type {other:?} cannot be batched across masks"
        ))),
    }
}

fn concat_typed<T>(states: &[&HiddenState]) -> Result<HiddenState, RuntimeError>
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

/// The inverse of [`concat_states`]: `parts` equal slices along the batch axis.
fn split_state(state: &HiddenState, parts: usize) -> Result<Vec<HiddenState>, RuntimeError> {
    match element_type(state)? {
        TensorElementType::Float32 => split_typed::<f32>(state, parts),
        TensorElementType::Float16 => split_typed::<half::f16>(state, parts),
        TensorElementType::Bfloat16 => split_typed::<half::bf16>(state, parts),
        other => Err(RuntimeError::BadInput(format!(
            "hidden states of type {other:?} cannot be batched across masks"
        ))),
    }
}

fn split_typed<T>(state: &HiddenState, parts: usize) -> Result<Vec<HiddenState>, RuntimeError>
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

fn element_type(state: &HiddenState) -> Result<TensorElementType, RuntimeError> {
    match state.dtype() {
        ValueType::Tensor { ty, .. } => Ok(*ty),
        other => Err(RuntimeError::BadInput(format!(
            "a block returned {other:?}, not a tensor of hidden states"
        ))),
    }
}

fn batch_error(error: ort::Error) -> RuntimeError {
    RuntimeError::BadInput(format!("batching hidden states across masks: {error}"))
}

/// Masks (positions in the sorted order) that agree on every block so far, and their state.
struct Group {
    members: Vec<usize>,
    state: Rc<HiddenState>,
}

/// Runs the masks at `order` (sorted, so that groups are neighbours) from one embedded batch
/// of `rows` windows, `mask_batch` groups' states per block call, and hands each mask's final
/// state to `finish(model, index, state)`. `max_live_states` bounds the states held at once.
/// Returns the number of blocks run, counted per group (one state's worth of work each).
pub(crate) fn run_masks_batched(
    model: &mut LayeredModel,
    embedded: HiddenState,
    masks: &[Mask],
    order: &[usize],
    mask_batch: usize,
    max_live_states: usize,
    finish: &mut dyn FnMut(&mut LayeredModel, usize, &HiddenState) -> Result<(), RuntimeError>,
) -> Result<u64, RuntimeError> {
    let embedded = Rc::new(embedded);
    let mut blocks_run = 0;
    for slice in order.chunks(max_live_states.max(mask_batch).max(1)) {
        let mut groups = vec![Group {
            members: slice.to_vec(),
            state: Rc::clone(&embedded),
        }];
        for block in 0..model.num_blocks() {
            let mut next: Vec<Group> = Vec::with_capacity(groups.len() + 1);
            // Positions in `next` of the groups that run this block, with their input state.
            let mut runs: Vec<(usize, Rc<HiddenState>)> = Vec::new();
            for group in groups {
                let (keep, skip): (Vec<usize>, Vec<usize>) = group
                    .members
                    .into_iter()
                    .partition(|&index| masks[index].is_kept(block));
                if !skip.is_empty() {
                    next.push(Group {
                        members: skip,
                        state: Rc::clone(&group.state),
                    });
                }
                if !keep.is_empty() {
                    runs.push((next.len(), Rc::clone(&group.state)));
                    next.push(Group {
                        members: keep,
                        state: group.state,
                    });
                }
            }
            for chunk in runs.chunks(mask_batch.max(1)) {
                let outputs = if chunk.len() == 1 {
                    vec![model.run_block(block, &chunk[0].1)?]
                } else {
                    let inputs: Vec<&HiddenState> = chunk.iter().map(|(_, s)| s.as_ref()).collect();
                    let output = model.run_block(block, &concat_states(&inputs)?)?;
                    split_state(&output, chunk.len())?
                };
                for ((position, _), output) in chunk.iter().zip(outputs) {
                    next[*position].state = Rc::new(output);
                }
                blocks_run += chunk.len() as u64;
            }
            groups = next;
        }
        for group in &groups {
            for &index in &group.members {
                finish(model, index, &group.state)?;
            }
        }
    }
    Ok(blocks_run)
}
