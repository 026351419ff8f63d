//! Every way of grouping the work gives each mask each window's NLL bit for bit on the CPU
//! provider (evaluation tables record "cpu" whatever the grouping, so a resumed or merged table
//! mixes them): masks one at a time or batched through shared blocks, the head batched or not,
//! small window batches filled or not, prefix reuse on or off, a cache from one state to all of
//! them, states bound or not, every arena; over a run of calls on ranges of the windows (as a
//! race makes) that start from the prefixes earlier calls left, with the full mask, the empty
//! mask, a mask asked twice in one call and calls of no mask among them. Each result is checked
//! against the same mask run alone from the embedding on the same window batches.

use std::collections::HashMap;
use std::ops::Range;

use layerprune_core::Mask;
use layerprune_runtime::{Arena, EvalOptions, Evaluator, LayeredModel, RuntimeOptions};
use layerprune_tests::{fixture_windows, tiny_model_dir, FuzzRng};

const SEQ_LEN: usize = 12;
const WINDOWS: usize = 5;
const BLOCKS: usize = 6;

fn open(io_binding: bool, arena: Arena) -> LayeredModel {
    let options = RuntimeOptions {
        io_binding: Some(io_binding),
        arena,
        verify_hashes: false,
        ..RuntimeOptions::default()
    };
    LayeredModel::open(&tiny_model_dir(), &options).unwrap()
}

/// Settings drawn from `rng`: the grouping, and how the model holds its states.
fn settings(rng: &mut FuzzRng, state_bytes: usize) -> (EvalOptions, bool, Arena) {
    let reuse_prefixes = rng.below(5) != 0;
    let options = EvalOptions {
        batch_windows: [0, 1, 2, 3][rng.below(4)],
        // One state, a few, a slice's worth, and all of them.
        cache_bytes: [1, 3, 8, 1 << 20][rng.below(4)] * state_bytes,
        reuse_prefixes,
        mask_batch: if reuse_prefixes {
            [1, 2, 3, 64][rng.below(4)]
        } else {
            1
        },
        head_batch: [0, 1, 2, 7][rng.below(4)],
        fill_small_batches: [None, Some(true), Some(false)][rng.below(3)],
    };
    let arena = [Arena::Keep, Arena::Shrink, Arena::Off][rng.below(3)];
    (options, rng.below(2) == 0, arena)
}

/// Up to 9 masks drawn from `rng`: the full and empty masks, one block kept, and masks that
/// share prefixes of every length; sometimes one of them twice.
fn masks(rng: &mut FuzzRng) -> Vec<Mask> {
    let count = rng.below(10);
    let mut masks: Vec<Mask> = (0..count)
        .map(|_| match rng.below(6) {
            0 => Mask::full(BLOCKS),
            1 => Mask::empty(BLOCKS),
            2 => Mask::from_removed(BLOCKS, &[1, 2, 3, 4, 5]).unwrap(),
            _ => Mask::from_kept((0..BLOCKS).map(|_| rng.below(3) != 0).collect()),
        })
        .collect();
    if count > 2 && rng.below(2) == 0 {
        masks.push(masks[rng.below(count)].clone());
    }
    masks
}

/// All the windows, or a range of them.
fn windows_asked(rng: &mut FuzzRng) -> Range<usize> {
    if rng.below(2) == 0 {
        return 0..WINDOWS;
    }
    let start = rng.below(WINDOWS);
    start..start + 1 + rng.below(WINDOWS - start)
}

#[test]
fn every_grouping_gives_each_window_the_same_nll_bit_for_bit() {
    let windows = fixture_windows(3, WINDOWS, SEQ_LEN);
    let state_bytes = open(false, Arena::Keep).state_bytes(1, SEQ_LEN);
    // Per windows a pass: an evaluator that runs each mask alone from the embedding, and what
    // it gave for each (mask, windows).
    let mut alone: HashMap<usize, Evaluator> = HashMap::new();
    let mut reference: HashMap<(usize, Mask, Range<usize>), Vec<u64>> = HashMap::new();
    for seed in 0..16 {
        let mut rng = FuzzRng(seed * 7919 + 1);
        let (options, io_binding, arena) = settings(&mut rng, state_bytes);
        let batch_windows = options.batch_windows;
        let mut evaluator =
            Evaluator::new(open(io_binding, arena), &windows, options.clone()).unwrap();
        for call in 0..1 + rng.below(6) {
            let masks = masks(&mut rng);
            let range = windows_asked(&mut rng);
            let results = evaluator
                .evaluate_windows(&masks, range.clone(), &mut |_, _| {})
                .unwrap();
            assert_eq!(results.len(), masks.len());
            let one_by_one = alone.entry(batch_windows).or_insert_with(|| {
                let options = EvalOptions {
                    batch_windows,
                    reuse_prefixes: false,
                    ..EvalOptions::default()
                };
                Evaluator::new(open(false, Arena::Keep), &windows, options).unwrap()
            });
            for (mask, result) in masks.iter().zip(&results) {
                let expected = reference
                    .entry((batch_windows, mask.clone(), range.clone()))
                    .or_insert_with(|| {
                        let result = one_by_one
                            .evaluate_windows(
                                std::slice::from_ref(mask),
                                range.clone(),
                                &mut |_, _| {},
                            )
                            .unwrap();
                        result[0]
                            .window_nll_sums
                            .iter()
                            .map(|x| x.to_bits())
                            .collect()
                    });
                let got: Vec<u64> = result.window_nll_sums.iter().map(|x| x.to_bits()).collect();
                assert_eq!(
                    &got, expected,
                    "seed {seed}, call {call}: mask {mask} on windows {range:?}, {options:?}, \
                     states bound {io_binding}, arena {arena:?}"
                );
                assert_eq!(result.tokens_scored, (range.len() * (SEQ_LEN - 1)) as u64);
                let total: f64 = result.window_nll_sums.iter().sum();
                assert!((total - result.nll_sum).abs() < 1e-9 * total, "seed {seed}");
            }
        }
    }
}
