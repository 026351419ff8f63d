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
//! masks are taken in slices of the sorted order that fit the cache budget with the prefix
//! states carried between slices (one a block at most, the embedding's included). A state is
//! let go as soon as nothing ahead needs it: a block call's inputs once its outputs replace
//! them, a carried state once the masks that join the wavefront there have joined. Beyond the
//! budget only a block call's own tensors are held (its joined input and output, and the split
//! outputs: about three times `mask_batch` states) and, where the budget is smaller than one
//! block call's states, `mask_batch` groups (a slice is never smaller than one call).
//!
//! A slice starts from the states of the previous slice's last mask's prefix (the first slice
//! from what the last call on these windows left, or the embedding): each mask joins the
//! wavefront at the deepest of those states it shares, so a block runs once per distinct
//! prefix whatever the slices and calls, as one mask at a time.
//!
//! Concatenating and splitting happen where the states are ([`crate::stitch`]): with
//! [`crate::RuntimeOptions::io_binding`] (on by default for CUDA) by a Concat and a Split graph
//! on the device, so a batched state never visits host memory; otherwise by copying slices in
//! host memory.

use std::collections::BTreeMap;
use std::rc::Rc;

use layerprune_core::Mask;

use crate::evaluator::PrefixStack;
use crate::hidden::HiddenState;
use crate::model::LayeredModel;
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

/// Runs the masks at `order` (sorted, so that groups are neighbours) on one window batch from
/// `start` (its embedding, or the states of an earlier mask's prefix: a mask starts from the
/// deepest of them it shares), `mask_batch` groups' states per block call, and hands the masks'
/// final states to `finish`, a slice's at a time. `max_live_states` bounds the states held at
/// once. Returns the number of blocks run, counted per group (one state's worth of work each),
/// and the states of the last mask's prefix, where the next slice (and the next call) starts.
pub(crate) fn run_masks_batched(
    model: &mut LayeredModel,
    start: PrefixStack,
    masks: &[Mask],
    order: &[usize],
    mask_batch: usize,
    max_live_states: usize,
    finish: &mut FinishMany<'_>,
) -> Result<(u64, PrefixStack), RuntimeError> {
    let mut blocks_run = 0;
    let mut stack = SharedStack::from(start);
    // The carried prefix's states count against the bound too (at most one per block and the
    // embedding).
    let slice_len = max_live_states
        .saturating_sub(model.num_blocks() + 1)
        .max(mask_batch)
        .max(1);
    for slice in order.chunks(slice_len) {
        let (slice_blocks, next) = run_slice(
            model,
            stack,
            masks,
            slice,
            mask_batch,
            max_live_states,
            finish,
        )?;
        blocks_run += slice_blocks;
        stack = next;
    }
    Ok((blocks_run, stack.into_stack()))
}

/// One slice of [`run_masks_batched`]: its masks from the deepest state of `start` each shares,
/// advanced together block by block. Returns the blocks run and the last mask's prefix states.
fn run_slice(
    model: &mut LayeredModel,
    mut start: SharedStack,
    masks: &[Mask],
    slice: &[usize],
    mask_batch: usize,
    max_live_states: usize,
    finish: &mut FinishMany<'_>,
) -> Result<(u64, SharedStack), RuntimeError> {
    let mut blocks_run = 0;
    let last = *slice.last().expect("slices are not empty");
    // Each mask joins the wavefront at the deepest carried state it shares; the masks that join
    // at one depth share that state (they agree with the carried mask, so with each other, on
    // every block before it).
    let mut joining: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &index in slice {
        joining
            .entry(start.depth_shared_with(&masks[index]))
            .or_default()
            .push(index);
    }
    // The last mask's prefix states, where the next slice starts: the carried ones it shares,
    // then those it runs, the shallowest first and no more than the budget (as one mask at a
    // time keeps the shallowest of its stack; a slice of the budget's size leaves room for a
    // whole prefix, a slice of one block call's size where the budget is smaller goes over it
    // by its groups).
    let last_depth = start.depth_shared_with(&masks[last]);
    let last_cap = max_live_states.max(1);
    let mut last_states: Vec<(usize, Rc<HiddenState>)> = start
        .states
        .iter()
        .filter(|(depth, _)| *depth <= last_depth)
        .take(last_cap)
        .cloned()
        .collect();
    #[cfg(debug_assertions)]
    let mut live = LiveStates::default();
    #[cfg(debug_assertions)]
    start.states.iter().for_each(|(_, state)| live.track(state));
    let mut groups: Vec<Group> = Vec::new();
    // Up to the depth after the last block: a mask that shares every block with the carried one
    // (asked again) joins there.
    for block in 0..=model.num_blocks() {
        if let Some(members) = joining.remove(&block) {
            groups.push(Group {
                members,
                state: start.state_at(block),
            });
        }
        // Carried states no mask joins at any more are let go (those of the last mask's
        // prefix stay in `last_states`).
        start
            .states
            .retain(|(depth, _)| joining.contains_key(depth));
        if block == model.num_blocks() {
            break;
        }
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
        // Each call's inputs are let go with its chunk, once their groups hold the outputs:
        // a state only the groups that ran it held is not kept to the end of the block.
        let mut pending = runs.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<(usize, Rc<HiddenState>)> =
                pending.by_ref().take(mask_batch.max(1)).collect();
            let outputs = if let [(_, input)] = &chunk[..] {
                vec![model.run_block(block, input)?]
            } else {
                let inputs: Vec<&HiddenState> = chunk.iter().map(|(_, s)| s.as_ref()).collect();
                let input = model.concat_states(&inputs)?;
                let output = model.run_block(block, &input)?;
                model.split_state(&output, chunk.len())?
            };
            for ((position, _), output) in chunk.iter().zip(outputs) {
                let output = Rc::new(output);
                #[cfg(debug_assertions)]
                live.track(&output);
                // Members stay in the slice's order, so the last mask is its group's last.
                if next[*position].members.last() == Some(&last) && last_states.len() < last_cap {
                    last_states.push((block + 1, Rc::clone(&output)));
                }
                next[*position].state = output;
            }
            blocks_run += chunk.len() as u64;
            drop(chunk);
            // Beside the groups' states, only the carried and the last mask's prefixes: one
            // state a depth, and one more where a new state of the last mask's prefix sits at
            // the depth of a carried one still to be joined.
            #[cfg(debug_assertions)]
            {
                let (alive, groups) = (live.count(), distinct_states(&next));
                assert!(
                    alive <= groups + model.num_blocks() + 2,
                    "block {block}: {alive} states alive, {groups} of them the groups'"
                );
            }
        }
        groups = next;
    }
    debug_assert!(joining.is_empty(), "every mask joined the wavefront");
    let finished: Vec<(usize, &HiddenState)> = groups
        .iter()
        .flat_map(|group| group.members.iter().map(|&index| (index, &*group.state)))
        .collect();
    finish(model, &finished)?;
    Ok((
        blocks_run,
        SharedStack {
            states: last_states,
            mask: Some(masks[last].clone()),
        },
    ))
}

/// The states of a slice still alive (in debug builds): whoever holds them, the groups, the
/// carried prefix, the last mask's prefix or anything else, so that a test of the batched path
/// fails where a state outlives its use.
#[cfg(debug_assertions)]
#[derive(Default)]
struct LiveStates(Vec<std::rc::Weak<HiddenState>>);

#[cfg(debug_assertions)]
impl LiveStates {
    fn track(&mut self, state: &Rc<HiddenState>) {
        self.0.push(Rc::downgrade(state));
    }

    fn count(&mut self) -> usize {
        self.0.retain(|state| state.strong_count() > 0);
        self.0.len()
    }
}

/// The distinct states `groups` hold (a group that skipped a block shares its state with the
/// group that ran it).
#[cfg(debug_assertions)]
fn distinct_states(groups: &[Group]) -> usize {
    let mut states: Vec<*const HiddenState> = groups
        .iter()
        .map(|group| Rc::as_ptr(&group.state))
        .collect();
    states.sort_unstable();
    states.dedup();
    states.len()
}

/// A [`PrefixStack`] whose states the groups of a slice share.
struct SharedStack {
    states: Vec<(usize, Rc<HiddenState>)>,
    mask: Option<Mask>,
}

impl From<PrefixStack> for SharedStack {
    fn from(stack: PrefixStack) -> Self {
        SharedStack {
            states: stack
                .states
                .into_iter()
                .map(|(depth, state)| (depth, Rc::new(state)))
                .collect(),
            mask: stack.mask,
        }
    }
}

impl SharedStack {
    /// The depth of the deepest state `mask` can start from: at most the blocks it shares with
    /// the stack's mask.
    fn depth_shared_with(&self, mask: &Mask) -> usize {
        let shared = self
            .mask
            .as_ref()
            .map_or(0, |carried| carried.common_prefix_len(mask));
        self.states
            .iter()
            .map(|(depth, _)| *depth)
            .filter(|&depth| depth <= shared)
            .max()
            .unwrap_or(0)
    }

    fn state_at(&self, depth: usize) -> Rc<HiddenState> {
        let (_, state) = self
            .states
            .iter()
            .find(|(d, _)| *d == depth)
            .expect("a depth of the stack");
        Rc::clone(state)
    }

    fn into_stack(self) -> PrefixStack {
        let states = self
            .states
            .into_iter()
            .map(|(depth, state)| {
                let state = Rc::try_unwrap(state)
                    .unwrap_or_else(|_| unreachable!("the slice's groups are gone"));
                (depth, state)
            })
            .collect();
        PrefixStack {
            states,
            mask: self.mask,
        }
    }
}
