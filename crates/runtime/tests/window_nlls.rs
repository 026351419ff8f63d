//! Each mask's NLL per window (`MaskEvaluation::window_nll_sums`, what a plan's margin over its
//! runner-up is computed from): in the token table's order, whichever way the windows are
//! batched and the masks grouped, each window's value its NLL evaluated alone, and as means per
//! token (`Evaluator::window_nlls`, what evaluation tables store).

use layerprune_core::Mask;
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, RuntimeOptions};
use layerprune_tests::{every_mask, fixture_windows, tiny_model_dir};

fn evaluator(windows: &[Vec<u32>], options: EvalOptions) -> Evaluator {
    let model = LayeredModel::open(&tiny_model_dir(), &RuntimeOptions::default()).unwrap();
    Evaluator::new(model, windows, options).unwrap()
}

/// The ways the work is batched: one window and one mask at a time, windows two at a time, masks
/// five at a time through shared blocks with the head four at a time.
fn batchings() -> [EvalOptions; 3] {
    [
        EvalOptions::default(),
        EvalOptions {
            batch_windows: 2,
            ..EvalOptions::default()
        },
        EvalOptions {
            mask_batch: 5,
            head_batch: 4,
            ..EvalOptions::default()
        },
    ]
}

#[test]
fn each_window_is_its_own_nll_in_order_however_the_work_is_batched() {
    let windows = fixture_windows(11, 3, 20);
    let masks = every_mask(6);
    // Each window alone: the reference.
    let alone: Vec<Vec<f64>> = windows
        .iter()
        .map(|window| {
            evaluator(std::slice::from_ref(window), EvalOptions::default())
                .evaluate(&masks, &mut |_, _| {})
                .unwrap()
                .into_iter()
                .map(|r| r.nll_sum)
                .collect()
        })
        .collect();
    for options in batchings() {
        let results = evaluator(&windows, options.clone())
            .evaluate(&masks, &mut |_, _| {})
            .unwrap();
        for (index, (mask, result)) in masks.iter().zip(&results).enumerate() {
            assert_eq!(
                result.window_nll_sums.len(),
                windows.len(),
                "{mask} {options:?}"
            );
            let total: f64 = result.window_nll_sums.iter().sum();
            assert!((total - result.nll_sum).abs() < 1e-9, "{mask} {options:?}");
            for (w, sum) in result.window_nll_sums.iter().enumerate() {
                let reference = alone[w][index];
                assert!(
                    (sum - reference).abs() < 1e-4 * reference.abs().max(1.0),
                    "{mask} {options:?}: window {w} {sum} vs alone {reference}"
                );
            }
        }
    }
}

#[test]
fn means_per_window_average_to_the_masks_nll() {
    let windows = fixture_windows(11, 3, 20);
    let mut ev = evaluator(&windows, EvalOptions::default());
    let masks = [Mask::full(6), Mask::from_removed(6, &[2, 4]).unwrap()];
    let results = ev.evaluate(&masks, &mut |_, _| {}).unwrap();
    for (mask, result) in masks.iter().zip(&results) {
        let means = ev.window_nlls(result);
        assert_eq!(means.len(), 3);
        // Each window scores 19 tokens: the mean of the means is the mask's NLL.
        let mean = means.iter().sum::<f64>() / 3.0;
        assert!(
            (mean - result.nll()).abs() < 1e-9,
            "{mask}: {mean} vs {}",
            result.nll()
        );
        assert!(
            (means[1] - result.window_nll_sums[1] / 19.0).abs() < 1e-12,
            "{mask}"
        );
    }
}

#[test]
fn a_range_of_windows_gives_those_windows_nlls() {
    let windows = fixture_windows(13, 5, 20);
    let masks = every_mask(6);
    for options in batchings() {
        let mut ev = evaluator(&windows, options.clone());
        let whole = ev.evaluate(&masks, &mut |_, _| {}).unwrap();
        for range in [0..1, 0..2, 1..4, 3..5, 0..5] {
            let part = ev
                .evaluate_windows(&masks, range.clone(), &mut |_, _| {})
                .unwrap();
            for (mask, (whole, part)) in masks.iter().zip(whole.iter().zip(&part)) {
                assert_eq!(part.tokens_scored, 19 * range.len() as u64, "{mask}");
                assert_eq!(part.window_nll_sums.len(), range.len(), "{mask}");
                let total: f64 = part.window_nll_sums.iter().sum();
                assert!((total - part.nll_sum).abs() < 1e-9, "{mask} {range:?}");
                for (sum, reference) in part
                    .window_nll_sums
                    .iter()
                    .zip(&whole.window_nll_sums[range.clone()])
                {
                    assert!(
                        (sum - reference).abs() < 1e-4 * reference.abs().max(1.0),
                        "{mask} {options:?} {range:?}: {sum} vs {reference}"
                    );
                }
            }
        }
        for bad in [0..0, 4..6, 5..6] {
            let err = ev
                .evaluate_windows(&masks[..1], bad.clone(), &mut |_, _| {})
                .unwrap_err();
            assert!(err.to_string().contains("of 5 windows"), "{bad:?}: {err}");
        }
    }
}

/// A call on part of the windows batches more masks a block call when
/// `EvalOptions::fill_small_batches` is on (the default on CUDA, where such a call costs about
/// what a full one does): as many masks as fit a full batch's windows, the same NLLs as one mask
/// at a time, in fewer block runs; a full call is unchanged.
#[test]
fn calls_on_few_windows_batch_masks_to_a_full_calls_windows_with_the_same_nlls() {
    let windows = fixture_windows(17, 10, 20);
    let masks = every_mask(6);
    let run = |fill: Option<bool>, range: std::ops::Range<usize>| {
        let mut ev = evaluator(
            &windows,
            EvalOptions {
                fill_small_batches: fill,
                ..EvalOptions::default()
            },
        );
        let before = ev.model().run_tally();
        let results = ev.evaluate_windows(&masks, range, &mut |_, _| {}).unwrap();
        let tally = ev.model().run_tally().since(&before);
        (results, tally)
    };
    // The CPU's default is one mask at a time.
    let (_, default_tally) = run(None, 0..3);
    for range in [0..3, 3..6, 6..10] {
        let (alone, alone_tally) = run(Some(false), range.clone());
        let (filled, filled_tally) = run(Some(true), range.clone());
        assert_eq!(alone.len(), filled.len());
        for (mask, (a, f)) in masks.iter().zip(alone.iter().zip(&filled)) {
            assert_eq!(a.window_nll_sums.len(), range.len(), "{mask}");
            for (x, y) in a.window_nll_sums.iter().zip(&f.window_nll_sums) {
                assert!(
                    (x - y).abs() < 1e-4 * x.abs().max(1.0),
                    "{mask} {range:?}: {x} filled, {y} alone"
                );
            }
        }
        // 10 / 3 = 3 (10 / 4 = 2) masks a block call: fewer block runs, and joins and splits.
        assert!(
            filled_tally.blocks.runs < alone_tally.blocks.runs,
            "{range:?}: {} block runs filled, {} alone",
            filled_tally.blocks.runs,
            alone_tally.blocks.runs
        );
        assert!(filled_tally.stitching.runs > 0, "{range:?}");
        assert_eq!(alone_tally.stitching.runs, 0, "{range:?}");
    }
    assert_eq!(default_tally.stitching.runs, 0, "on the CPU by default");
    // All the windows: the largest batch, nothing to fill.
    let (_, whole_tally) = run(Some(true), 0..10);
    assert_eq!(whole_tally.stitching.runs, 0);
}

/// The last batch of an uneven split (10 windows 4 at a time: 4, 4, 2) is filled in a whole
/// evaluation too, two masks a call, with the same NLLs; the full batches are not.
#[test]
fn the_last_batch_of_an_uneven_split_is_filled_with_the_same_nlls() {
    let windows = fixture_windows(19, 10, 20);
    let masks = every_mask(6);
    let run = |fill: bool| {
        let mut ev = evaluator(
            &windows,
            EvalOptions {
                batch_windows: 4,
                fill_small_batches: Some(fill),
                ..EvalOptions::default()
            },
        );
        let before = ev.model().run_tally();
        let results = ev.evaluate(&masks, &mut |_, _| {}).unwrap();
        (results, ev.model().run_tally().since(&before))
    };
    let (alone, alone_tally) = run(false);
    let (filled, filled_tally) = run(true);
    for (mask, (a, f)) in masks.iter().zip(alone.iter().zip(&filled)) {
        assert!(
            (a.nll_sum - f.nll_sum).abs() < 1e-4 * a.nll_sum.abs().max(1.0),
            "{mask}: {} alone, {} filled",
            a.nll_sum,
            f.nll_sum
        );
        assert_eq!(a.window_nll_sums.len(), f.window_nll_sums.len(), "{mask}");
    }
    assert_eq!(alone_tally.stitching.runs, 0);
    assert!(filled_tally.stitching.runs > 0);
    assert!(filled_tally.blocks.runs < alone_tally.blocks.runs);
    // The head still one mask at a time (the CPU's automatic head batch).
    assert_eq!(filled_tally.head.runs, alone_tally.head.runs);
}
