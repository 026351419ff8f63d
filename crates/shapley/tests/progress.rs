//! The estimators' long loops report their progress as `tracing` events, which the stage
//! binaries turn into log lines; the library draws nothing itself. A loop of at least
//! `LONG_LOOP_BATCHES` (100) batches of the game writes an `info` line at each tenth of its
//! work and `debug` lines between; a shorter loop writes `debug` lines only; the cross-fitted
//! estimators write an `info` line per half or fold.

use layerprune_core::synthetic::AdditiveGame;
use layerprune_shapley::exact::exact_values;
use layerprune_shapley::progress::LONG_LOOP_BATCHES;
use layerprune_shapley::semivalue::{published_strata, semivalue_through, MaskDistribution};
use layerprune_shapley::surrogate::surrogate_shapley;
use layerprune_shapley::synthetic::TripleGame;
use layerprune_shapley::{evaluate_masks, run_estimator, Estimator, Players};

fn logged(run: impl FnOnce()) -> String {
    layerprune_tests::logged_at(tracing::Level::INFO, run)
}

/// The `done` counts of the lines `{label}: {done} of {total} {unit}`, in order.
fn counts(text: &str, label: &str, total: usize, unit: &str) -> Vec<usize> {
    let tail = format!(" of {total} {unit}");
    text.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&format!("{label}: "))? + label.len() + 2..];
            rest.strip_suffix(&tail)?.parse().ok()
        })
        .collect()
}

/// Ten lines, one per tenth: each at least its tenth of `total`, rising, the last `total`.
fn assert_tenths(done: &[usize], total: usize, text: &str) {
    assert_eq!(done.len(), 10, "{text}");
    for (tenth, &d) in done.iter().enumerate() {
        assert!(d * 10 >= (tenth + 1) * total, "{done:?}");
    }
    assert!(done.windows(2).all(|w| w[0] < w[1]), "{done:?}");
    assert_eq!(done.last(), Some(&total));
}

#[test]
fn the_semivalue_through_a_surrogate_logs_each_tenth_of_its_base_masks() {
    let n = 10;
    // 80,000 base masks of 11 queries, 744 a batch: 108 batches.
    let bases: usize = 80_000;
    let strata = MaskDistribution::Strata(published_strata(n));
    let mut game = TripleGame::layer_pruning_like(n, 1);
    let text = logged(|| {
        semivalue_through(&mut game, n, &strata, bases, 0).unwrap();
    });
    let done = counts(&text, "stratified-semivalue", bases, "base masks valued");
    assert_tenths(&done, bases, &text);
    assert!(text.lines().all(|l| l.contains("INFO")), "{text}");

    // Between the tenths, each batch (8192 / 11 = 744 base masks) is a debug line.
    let text = layerprune_tests::logged_at(tracing::Level::DEBUG, || {
        semivalue_through(&mut game, n, &strata, bases, 0).unwrap();
    });
    let done = counts(&text, "stratified-semivalue", bases, "base masks valued");
    assert_eq!(done.len(), bases.div_ceil(8192 / (n + 1)), "{text}");
    assert_eq!(done[0], 744);
    assert_eq!(text.matches("DEBUG").count(), done.len() - 10, "{text}");
}

#[test]
fn a_short_loop_logs_only_at_debug_level_and_a_long_one_each_tenth() {
    let n = 10;
    let mut game = TripleGame::layer_pruning_like(n, 2);
    // 100 pairs of 2 × 11 masks: one batch, as iterative removal asks at each round.
    let short = || {
        surrogate_shapley(&mut game.clone(), None, 100, 0).unwrap();
    };
    assert_eq!(logged(short), "");
    let text = layerprune_tests::logged_at(tracing::Level::DEBUG, short);
    assert_eq!(
        counts(&text, "surrogate-shapley", 100, "permutation pairs valued"),
        vec![100],
        "{text}"
    );

    // 4,000 pairs: 11 batches of 372 pairs, still short.
    let medium = || {
        surrogate_shapley(&mut game.clone(), None, 4000, 0).unwrap();
    };
    assert_eq!(logged(medium), "");
    let text = layerprune_tests::logged_at(tracing::Level::DEBUG, medium);
    let done = counts(&text, "surrogate-shapley", 4000, "permutation pairs valued");
    assert_eq!(done.len(), 11, "{text}");

    // 40,000 pairs: 108 batches, a long loop.
    let pairs: usize = 40_000;
    assert!(pairs.div_ceil(8192 / (2 * (n + 1))) >= LONG_LOOP_BATCHES);
    let text = logged(|| {
        surrogate_shapley(&mut game, None, pairs, 0).unwrap();
    });
    let done = counts(
        &text,
        "surrogate-shapley",
        pairs,
        "permutation pairs valued",
    );
    assert_tenths(&done, pairs, &text);
}

#[test]
fn masks_valued_through_a_game_are_logged_under_the_estimator_s_name() {
    // Every mask of 14 players: two batches of 8192, debug lines named after the estimator.
    let n = 14;
    let mut game = AdditiveGame::new((0..n).map(|i| i as f64).collect(), 0.5);
    let text = layerprune_tests::logged_at(tracing::Level::DEBUG, || {
        exact_values(&mut game, &Players::all(n)).unwrap();
    });
    let done = counts(&text, "exact-shapley", 1 << n, "masks valued");
    assert_eq!(done, vec![8192, 16384], "{text}");
    assert!(!text.contains(" INFO "), "{text}");

    // Every mask of 20 players: 128 batches, a long loop.
    let n = 20;
    let total = 1 << n;
    let masks = layerprune_shapley::synthetic::every_mask(n);
    let mut game = AdditiveGame::new((0..n).map(|i| i as f64).collect(), 0.5);
    let text = logged(|| {
        evaluate_masks(&mut game, &Players::all(n), &masks).unwrap();
    });
    let done = counts(&text, "evaluate-masks", total, "masks valued");
    assert_tenths(&done, total, &text);
}

#[test]
fn the_cross_fitted_estimators_log_each_half_or_fold() {
    let n = 10;
    let players = Players::all(n);
    let mut game = TripleGame::layer_pruning_like(n, 3);
    let text = logged(|| {
        run_estimator(
            Estimator::RegressionAdjustedExp,
            &mut game,
            &players,
            600,
            1,
        )
        .unwrap();
    });
    let halves: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("regression-adjusted-exp: cross-fitting half"))
        .collect();
    assert_eq!(halves.len(), 2, "{text}");
    assert!(halves[0].contains("half 1/2 done (exp-polynomial of order"));
    assert!(halves[1].contains("half 2/2 done"));
    // 600 evaluations of 10 players: one batch of masks, valued without an info line.
    assert!(!text.contains("masks valued"), "{text}");

    let text = logged(|| {
        run_estimator(
            Estimator::RegressionAdjustedStratified,
            &mut game,
            &players,
            300,
            1,
        )
        .unwrap();
    });
    for fold in 1..=5 {
        let needle = format!("regression-adjusted-stratified: fold {fold}/5 done");
        assert!(text.contains(&needle), "{needle} not in {text}");
    }
    assert_eq!(text.lines().count(), 5, "{text}");
}

#[test]
fn a_surrogate_sampled_inside_a_cross_fit_is_labelled_with_its_estimator() {
    // Above 16 players φ(f) of the exp-polynomial is 4,096 permutation pairs through f in
    // each half (227 pairs of 2 × 18 masks a batch: 19 batches, debug lines), labelled by the
    // estimator and the half.
    let n = 17;
    let players = Players::all(n);
    let mut game = TripleGame::layer_pruning_like(n, 4);
    let text = layerprune_tests::logged_at(tracing::Level::DEBUG, || {
        run_estimator(
            Estimator::RegressionAdjustedExp,
            &mut game,
            &players,
            400,
            1,
        )
        .unwrap();
    });
    for half in 1..=2 {
        let label = format!("regression-adjusted-exp: surrogate {half}/2");
        let done = counts(&text, &label, 4096, "permutation pairs valued");
        assert_eq!(done.len(), 19, "{text}");
        assert_eq!(done.last(), Some(&4096));
        // Each Gauss–Newton step of the fit is a debug line too.
        assert!(
            text.contains(&format!("{label}: Gauss–Newton step 1/8")),
            "{text}"
        );
    }
    assert!(!text.contains("surrogate-shapley:"), "{text}");
    // At info level: one line per half.
    assert_eq!(text.matches(" INFO ").count(), 2, "{text}");
}
