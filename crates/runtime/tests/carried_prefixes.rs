//! Prefix states carried from one evaluator call to the next: a run checkpointed every few
//! masks, or a selection method asking for a few masks at a time (a race a few windows at a
//! time), starts each call from the states the last call on the same windows left, within the
//! cache's budget, and gets the same values as one call for every mask — one mask at a time or
//! masks batched through shared blocks.

use layerprune_core::Mask;
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, RuntimeOptions};
use layerprune_tests::{blocks_needed, every_mask, fixture_windows, tiny_model_dir};

const SEQ_LEN: usize = 20;

fn evaluator(windows: &[Vec<u32>], options: EvalOptions) -> Evaluator {
    let model = LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).unwrap();
    Evaluator::new(model, windows, options).unwrap()
}

/// Every mask of the fixture's 6 blocks, in prefix order.
fn sorted_masks() -> Vec<Mask> {
    let mut masks = every_mask(6);
    masks.sort();
    masks
}

fn nll_sums(results: &[layerprune_runtime::MaskEvaluation]) -> Vec<f64> {
    results.iter().map(|r| r.nll_sum).collect()
}

/// One mask at a time; masks batched 4 states a block call (slices of the sorted masks cut by
/// the cache below), the head one mask or 4 at a time; one window per batch (each batch its
/// own carried prefix).
fn ways(cache_bytes: usize) -> [EvalOptions; 4] {
    let one = EvalOptions {
        cache_bytes,
        ..EvalOptions::default()
    };
    [
        one.clone(),
        EvalOptions {
            mask_batch: 4,
            ..one.clone()
        },
        EvalOptions {
            mask_batch: 4,
            head_batch: 4,
            ..one.clone()
        },
        EvalOptions {
            batch_windows: 1,
            ..one
        },
    ]
}

/// Window batches of `options` on the two windows of these tests: each runs every block.
fn batches(options: &EvalOptions) -> u64 {
    if options.batch_windows == 1 {
        2
    } else {
        1
    }
}

#[test]
fn a_call_starts_from_where_the_last_call_on_the_same_windows_left_off() {
    let windows = fixture_windows(11, 2, SEQ_LEN);
    let masks = sorted_masks();
    let one_call = nll_sums(
        &evaluator(&windows, EvalOptions::default())
            .evaluate(&masks, &mut |_, _| {})
            .unwrap(),
    );
    let one_call_blocks = blocks_needed(&masks, masks.len());
    // Each chunk from the embedding would run more.
    assert!(blocks_needed(&masks, 5) > one_call_blocks + 20);
    // A cache of 9 states of the two windows: the batched masks in slices of 4 (a block call's
    // worth; 9 less the carried prefix's 7 would be 2), which start from the last slice's last
    // mask's prefix too.
    let state_bytes = evaluator(&windows, EvalOptions::default())
        .model()
        .state_bytes(2, SEQ_LEN);
    for cache_bytes in [EvalOptions::default().cache_bytes, 9 * state_bytes] {
        for options in ways(cache_bytes) {
            let mut whole = evaluator(&windows, options.clone());
            let results = whole.evaluate(&masks, &mut |_, _| {}).unwrap();
            assert_eq!(nll_sums(&results), one_call, "{options:?}");
            let one_call_blocks = batches(&options) * one_call_blocks;
            assert_eq!(whole.blocks_run(), one_call_blocks, "{options:?}");

            let mut chunked = evaluator(&windows, options.clone());
            let mut results = Vec::new();
            for chunk in masks.chunks(5) {
                results.extend(chunked.evaluate(chunk, &mut |_, _| {}).unwrap());
            }
            // Bit for bit the same values, for the blocks of one call: each chunk's first
            // masks start from the prefix they share with the last chunk's last mask.
            assert_eq!(nll_sums(&results), one_call, "{options:?}");
            assert_eq!(chunked.blocks_run(), one_call_blocks, "{options:?}");
            // The last mask asked again runs no block: its final state was carried.
            let last = &masks[masks.len() - 1..];
            let again = chunked.evaluate(last, &mut |_, _| {}).unwrap();
            assert_eq!(
                nll_sums(&again)[..],
                one_call[masks.len() - 1..],
                "{options:?}"
            );
            assert_eq!(chunked.blocks_run(), one_call_blocks, "{options:?}");
        }
    }
}

/// Chunks of 5 masks measured on window 0, then on window 1, chunk after chunk (as a race asks
/// for a few windows at a time): each window's values and the blocks run.
fn alternating_windows(options: EvalOptions) -> (Vec<Vec<f64>>, u64) {
    let windows = fixture_windows(11, 2, SEQ_LEN);
    let masks = sorted_masks();
    let mut ev = evaluator(&windows, options);
    let mut values = vec![Vec::new(), Vec::new()];
    for chunk in masks.chunks(5) {
        for (w, values) in values.iter_mut().enumerate() {
            let results = ev
                .evaluate_windows(chunk, w..w + 1, &mut |_, _| {})
                .unwrap();
            values.extend(nll_sums(&results));
        }
    }
    (values, ev.blocks_run())
}

#[test]
fn each_run_of_windows_carries_its_own_prefix_within_the_cache() {
    let windows = fixture_windows(11, 2, SEQ_LEN);
    let masks = sorted_masks();
    // Each window alone, every mask in one call: the reference values.
    let alone: Vec<Vec<f64>> = windows
        .iter()
        .map(|window| {
            nll_sums(
                &evaluator(std::slice::from_ref(window), EvalOptions::default())
                    .evaluate(&masks, &mut |_, _| {})
                    .unwrap(),
            )
        })
        .collect();
    let state_bytes = evaluator(&windows, EvalOptions::default())
        .model()
        .state_bytes(1, SEQ_LEN);
    let one_call = blocks_needed(&masks, masks.len());
    let from_the_embedding = blocks_needed(&masks, 5);

    // The default cache keeps both windows' prefixes: the blocks of one call on each window;
    // so does room for one window's prefix and a call's states (7 with the embedding) beside
    // it. With room for one call's states only, the other window's prefix is dropped before
    // each call, which starts from the embedding.
    for (cache_bytes, expected_blocks) in [
        (EvalOptions::default().cache_bytes, 2 * one_call),
        (14 * state_bytes, 2 * one_call),
        (7 * state_bytes, 2 * from_the_embedding),
    ] {
        for options in ways(cache_bytes) {
            let (values, blocks) = alternating_windows(options.clone());
            assert_eq!(values, alone, "{options:?}");
            assert_eq!(blocks, expected_blocks, "{options:?}");
        }
    }
}

/// Masks batched through a block that every one of them runs (the 32 masks keeping block 5):
/// each group's input is let go once the group holds its output, not kept to the end of the
/// block; and masks that share nothing with the prefix carried from the last call (the 32
/// removing block 0, or only the last of them, after the full model): its states are let go
/// once no mask joins there.
/// What is checked is the batched path's own count of the states still alive after each block
/// call, a debug assertion (the slice's groups, one prefix a depth, one more); here the values
/// are checked against one mask at a time, with a budget of every mask's states and with one
/// that cuts slices.
#[test]
fn batched_masks_let_go_of_each_state_once_used() {
    let windows = fixture_windows(5, 2, SEQ_LEN);
    let full = Mask::from_kept(vec![true; 6]);
    let keeping_5: Vec<Mask> = sorted_masks()
        .into_iter()
        .filter(|m| m.is_kept(5))
        .collect();
    let removing_0: Vec<Mask> = sorted_masks()
        .into_iter()
        .filter(|m| !m.is_kept(0))
        .collect();
    let state_bytes = evaluator(&windows, EvalOptions::default())
        .model()
        .state_bytes(2, SEQ_LEN);
    let last_removing_0 = removing_0[removing_0.len() - 1..].to_vec();
    for masks in [keeping_5, removing_0, last_removing_0] {
        let one_at_a_time = nll_sums(
            &evaluator(&windows, EvalOptions::default())
                .evaluate(&masks, &mut |_, _| {})
                .unwrap(),
        );
        for (cache_bytes, mask_batch) in [(64 * state_bytes, 2), (12 * state_bytes, 4)] {
            let options = EvalOptions {
                cache_bytes,
                mask_batch,
                ..EvalOptions::default()
            };
            let mut batched = evaluator(&windows, options.clone());
            batched
                .evaluate(std::slice::from_ref(&full), &mut |_, _| {})
                .unwrap();
            let results = batched.evaluate(&masks, &mut |_, _| {}).unwrap();
            assert_eq!(nll_sums(&results), one_at_a_time, "{options:?}");
            // Asked again, the last mask runs no block: its prefix was carried, within the
            // budget.
            let blocks = batched.blocks_run();
            batched
                .evaluate(&masks[masks.len() - 1..], &mut |_, _| {})
                .unwrap();
            assert_eq!(batched.blocks_run(), blocks, "{options:?}");
        }
    }
}
