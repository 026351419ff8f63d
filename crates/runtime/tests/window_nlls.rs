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
