//! Prefix states carried from one evaluator call to the next: a run checkpointed every few
//! masks, or a selection method asking for a few masks at a time (a race a few windows at a
//! time), starts each call from the states the last call on the same windows left, within the
//! cache's budget, and gets the same values as one call for every mask.

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

#[test]
fn a_call_starts_from_where_the_last_call_on_the_same_windows_left_off() {
    let windows = fixture_windows(11, 2, SEQ_LEN);
    let masks = sorted_masks();
    let mut whole = evaluator(&windows, EvalOptions::default());
    let one_call = whole.evaluate(&masks, &mut |_, _| {}).unwrap();
    assert_eq!(whole.blocks_run(), blocks_needed(&masks, masks.len()));

    let mut chunked = evaluator(&windows, EvalOptions::default());
    let mut results = Vec::new();
    for chunk in masks.chunks(5) {
        results.extend(chunked.evaluate(chunk, &mut |_, _| {}).unwrap());
    }
    // Bit for bit the same values, for the blocks of one call: each chunk's first mask starts
    // from the prefix it shares with the last chunk's last mask.
    assert_eq!(nll_sums(&results), nll_sums(&one_call));
    assert_eq!(chunked.blocks_run(), whole.blocks_run());
    // Each chunk from the embedding would run more.
    assert!(blocks_needed(&masks, 5) > whole.blocks_run() + 20);
}

/// Chunks of 5 masks measured on window 0, then on window 1, chunk after chunk (as a race asks
/// for a few windows at a time): each window's values and the blocks run.
fn alternating_windows(cache_bytes: usize) -> (Vec<Vec<f64>>, u64) {
    let windows = fixture_windows(11, 2, SEQ_LEN);
    let masks = sorted_masks();
    let mut ev = evaluator(
        &windows,
        EvalOptions {
            cache_bytes,
            ..EvalOptions::default()
        },
    );
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

    // The default cache keeps both windows' prefixes: the blocks of one call on each window.
    let (values, blocks) = alternating_windows(EvalOptions::default().cache_bytes);
    assert_eq!(values, alone);
    assert_eq!(blocks, 2 * one_call);
    // Room for one window's prefix and a call's states (7 with the embedding) beside it.
    let (values, blocks) = alternating_windows(14 * state_bytes);
    assert_eq!(values, alone);
    assert_eq!(blocks, 2 * one_call);
    // Room for one call's states only: the other window's prefix is dropped before each call,
    // which starts from the embedding.
    let (values, blocks) = alternating_windows(7 * state_bytes);
    assert_eq!(values, alone);
    assert_eq!(blocks, 2 * from_the_embedding);
}
