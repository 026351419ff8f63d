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
//! Concatenating and splitting happen where the states are ([`crate::stitch`]): with
//! [`crate::RuntimeOptions::io_binding`] (on by default for CUDA) by a Concat and a Split graph
//! on the device, so a batched state never visits host memory; otherwise by copying slices in
//! host memory.

use std::rc::Rc;

use layerprune_core::Mask;

use crate::model::{HiddenState, LayeredModel};
use crate::RuntimeError;

/// Masks (positions in the sorted order) that agree on every block so far, and their state.
struct Group {
    members: Vec<usize>,
    state: Rc<HiddenState>,
}

/// What is done with finished masks: `(index, final state)` pairs, several at once so that the
/// head too can run on many masks' states in one call.
pub(crate) type FinishMany<'f> =
    dyn FnMut(&mut LayeredModel, &[(usize, &HiddenState)]) -> Result<(), RuntimeError> + 'f;

/// Runs the masks at `order` (sorted, so that groups are neighbours) from one embedded batch
/// of `rows` windows, `mask_batch` groups' states per block call, and hands the masks' final
/// states to `finish`, a slice's at a time. `max_live_states` bounds the states held at once.
/// Returns the number of blocks run, counted per group (one state's worth of work each).
pub(crate) fn run_masks_batched(
    model: &mut LayeredModel,
    embedded: HiddenState,
    masks: &[Mask],
    order: &[usize],
    mask_batch: usize,
    max_live_states: usize,
    finish: &mut FinishMany<'_>,
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
                    let input = model.concat_states(&inputs)?;
                    let output = model.run_block(block, &input)?;
                    model.split_state(&output, chunk.len())?
                };
                for ((position, _), output) in chunk.iter().zip(outputs) {
                    next[*position].state = Rc::new(output);
                }
                blocks_run += chunk.len() as u64;
            }
            groups = next;
        }
        let finished: Vec<(usize, &HiddenState)> = groups
            .iter()
            .flat_map(|group| group.members.iter().map(|&index| (index, &*group.state)))
            .collect();
        finish(model, &finished)?;
    }
    Ok(blocks_run)
}
