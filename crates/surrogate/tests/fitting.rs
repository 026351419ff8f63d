//! Each kind of surrogate on synthetic games whose truth is known.

mod common;

use common::{game_values, random_pairwise_game, stratified_masks, SmoothUtility};
use layerprune_core::synthetic::{exact_shapley, VetoGame};
use layerprune_core::Game;
use layerprune_surrogate::{
    cross_validate, fit, r2_score, FitOptions, FittedSurrogate, Surrogate, SurrogateError,
    SurrogateGame, SurrogateKind,
};

#[test]
fn quadratic_recovers_a_pairwise_game_and_its_shapley_values() {
    let num_blocks = 12;
    let mut game = random_pairwise_game(num_blocks, 1);
    let masks = stratified_masks(num_blocks, &[1, 3, 5, 7, 9], 1500, 2);
    let targets = game_values(&mut game, &masks);
    let options = FitOptions {
        ridge_alpha: 1e-10,
        ..FitOptions::default()
    };
    let model = fit(SurrogateKind::Quadratic, &masks, &targets, &options).unwrap();

    let held_out = stratified_masks(num_blocks, &[0, 2, 4, 6, 8, 10, 12], 700, 3);
    let truth = game_values(&mut game, &held_out);
    let r2 = r2_score(&truth, &model.predict(&held_out));
    assert!(r2 > 0.999, "held-out R² {r2}");

    let phi = model.exact_shapley().unwrap();
    for (i, (got, want)) in phi.iter().zip(game.shapley_values()).enumerate() {
        assert!((got - want).abs() < 1e-6, "block {i}: {got} vs {want}");
    }
}

#[test]
fn quadratic_closed_form_equals_brute_force_shapley_of_the_fit() {
    // A game that is far from quadratic, so the fit is only an approximation; the closed form
    // must still be the exact Shapley value of the fitted model itself.
    for num_blocks in [3, 6, 10] {
        let mut game = VetoGame {
            num_players: num_blocks,
            veto_block: 1,
            quorum: num_blocks / 2,
        };
        let masks = stratified_masks(num_blocks, &[0, 1, 2, 3], 400, 5);
        let targets = game_values(&mut game, &masks);
        let model = fit(
            SurrogateKind::Quadratic,
            &masks,
            &targets,
            &FitOptions::default(),
        )
        .unwrap();
        let closed_form = model.exact_shapley().unwrap();
        let brute_force = exact_shapley(&mut SurrogateGame(&model)).unwrap();
        for (a, b) in closed_form.iter().zip(&brute_force) {
            assert!(
                (a - b).abs() < 1e-9,
                "L={num_blocks}: {closed_form:?} vs {brute_force:?}"
            );
        }
    }
}

#[test]
fn mlp_fits_a_smooth_monotone_utility() {
    let num_blocks = 10;
    let utility = SmoothUtility::new(num_blocks, 7);
    let masks = stratified_masks(num_blocks, &[1, 2, 3, 4, 5, 6], 6000, 8);
    let targets = utility.values(&masks);
    let model = fit(
        SurrogateKind::PublishedMlp,
        &masks,
        &targets,
        &FitOptions::default(),
    )
    .unwrap();
    let held_out = stratified_masks(num_blocks, &[1, 2, 3, 4, 5, 6], 600, 9);
    let r2 = r2_score(&utility.values(&held_out), &model.predict(&held_out));
    assert!(r2 > 0.9, "held-out R² {r2}");
    assert_eq!(model.exact_shapley(), None);
}

#[test]
fn mlp_scales_targets_outside_the_unit_interval() {
    // −(NLL increase): ≤ 0 and unbounded below; the sigmoid alone could not reach it.
    let num_blocks = 8;
    let utility = SmoothUtility::new(num_blocks, 11);
    let masks = stratified_masks(num_blocks, &[1, 2, 3, 4, 5], 2400, 12);
    let targets: Vec<f64> = utility
        .values(&masks)
        .iter()
        .map(|u| 3.0 * u.ln())
        .collect();
    let model = fit(
        SurrogateKind::PublishedMlp,
        &masks,
        &targets,
        &FitOptions::default(),
    )
    .unwrap();
    let held_out = stratified_masks(num_blocks, &[1, 2, 3, 4, 5], 500, 13);
    let truth: Vec<f64> = utility
        .values(&held_out)
        .iter()
        .map(|u| 3.0 * u.ln())
        .collect();
    let r2 = r2_score(&truth, &model.predict(&held_out));
    assert!(r2 > 0.9, "held-out R² {r2}");
}

#[test]
fn forest_predicts_held_out_masks() {
    let num_blocks = 10;
    let utility = SmoothUtility::new(num_blocks, 21);
    let masks = stratified_masks(num_blocks, &[1, 2, 3, 4, 5, 6], 1500, 22);
    let targets = utility.values(&masks);
    let options = FitOptions {
        trees: 40,
        seed: 4,
        ..FitOptions::default()
    };
    let model = fit(SurrogateKind::Forest, &masks, &targets, &options).unwrap();
    let held_out = stratified_masks(num_blocks, &[1, 2, 3, 4, 5, 6], 500, 23);
    let r2 = r2_score(&utility.values(&held_out), &model.predict(&held_out));
    assert!(r2 > 0.7, "held-out R² {r2}");
    let again = fit(SurrogateKind::Forest, &masks, &targets, &options).unwrap();
    assert_eq!(
        model.predict(&held_out),
        again.predict(&held_out),
        "seeded forest"
    );
    // A batch large enough to be split over the cores, against each mask alone.
    let batch = stratified_masks(num_blocks, &[1, 2, 3, 4, 5, 6], 1200, 24);
    assert!(batch.len() >= 512, "two threads' worth: {}", batch.len());
    let one_by_one: Vec<f64> = batch
        .iter()
        .flat_map(|mask| model.predict(std::slice::from_ref(mask)))
        .collect();
    assert_eq!(
        model.predict(&batch),
        one_by_one,
        "split over threads, in order"
    );
}

#[test]
fn fitting_is_deterministic_for_a_seed_and_cross_validation_too() {
    let num_blocks = 8;
    let utility = SmoothUtility::new(num_blocks, 31);
    let masks = stratified_masks(num_blocks, &[1, 2, 3, 4], 600, 32);
    let targets = utility.values(&masks);
    let options = FitOptions {
        seed: 9,
        epochs: 40,
        trees: 10,
        ..FitOptions::default()
    };
    for kind in SurrogateKind::ALL {
        let first = cross_validate(kind, &masks, &targets, 4, &options).unwrap();
        let second = cross_validate(kind, &masks, &targets, 4, &options).unwrap();
        assert_eq!(first, second, "{kind}");
        assert_eq!(first.len(), 4);
        assert_eq!(first.iter().map(|f| f.n_test).sum::<usize>(), 600);
        assert!(first.iter().all(|f| f.n_train + f.n_test == 600));
    }
    let a = fit(SurrogateKind::PublishedMlp, &masks, &targets, &options).unwrap();
    let b = fit(SurrogateKind::PublishedMlp, &masks, &targets, &options).unwrap();
    assert_eq!(a.predict(&masks), b.predict(&masks));
    let other_seed = FitOptions {
        seed: 10,
        ..options
    };
    let c = fit(SurrogateKind::PublishedMlp, &masks, &targets, &other_seed).unwrap();
    assert_ne!(a.predict(&masks), c.predict(&masks));
}

#[test]
fn quadratic_cross_validation_scores_a_pairwise_game_as_perfect() {
    let num_blocks = 6;
    let mut game = random_pairwise_game(num_blocks, 41);
    let masks = stratified_masks(num_blocks, &[1, 2, 3, 4], 300, 42);
    let targets = game_values(&mut game, &masks);
    let options = FitOptions {
        ridge_alpha: 1e-10,
        ..FitOptions::default()
    };
    let folds = cross_validate(SurrogateKind::Quadratic, &masks, &targets, 5, &options).unwrap();
    for fold in &folds {
        assert!(
            fold.r2 > 0.999999 && fold.spearman > 0.9999 && fold.mae < 1e-6,
            "{fold:?}"
        );
    }
    assert_eq!(game.num_players(), num_blocks);
}

/// A ridge strength whose n·α overflows f64 (any α from about 1.8e308 / rows) read as a zero
/// pivot: the fit was refused as singular, advising "a ridge_alpha > 0" to a user who gave
/// 1e308. It is the limit of the ridge instead: every weight 0, the mean as intercept, what
/// α = 1e300 gives to the last digits.
#[test]
fn a_ridge_too_large_for_f64_fits_the_mean() {
    let masks = stratified_masks(6, &[1, 2, 3], 60, 2);
    let targets = SmoothUtility::new(6, 1).values(&masks);
    let mean = targets.iter().sum::<f64>() / targets.len() as f64;
    let large = FitOptions {
        ridge_alpha: 1e300,
        ..FitOptions::default()
    };
    let reference = fit(SurrogateKind::Quadratic, &masks, &targets, &large).unwrap();
    for alpha in [1e308, f64::MAX] {
        let options = FitOptions {
            ridge_alpha: alpha,
            ..FitOptions::default()
        };
        let model = fit(SurrogateKind::Quadratic, &masks, &targets, &options).unwrap();
        let FittedSurrogate::Quadratic(quadratic) = &model else {
            panic!("a quadratic")
        };
        assert!((quadratic.intercept - mean).abs() < 1e-12, "{alpha}");
        assert!(quadratic.linear.iter().all(|&w| w == 0.0));
        for (a, b) in model.predict(&masks).iter().zip(reference.predict(&masks)) {
            assert!((a - b).abs() < 1e-12, "{alpha}: {a} vs {b}");
        }
        assert!(cross_validate(SurrogateKind::Quadratic, &masks, &targets, 3, &options).is_ok());
    }
}

/// Finite values too large for the fits' arithmetic (±1e308: squares, ranges and leaf means
/// overflow) gave every kind NaN coefficients and predictions, and NaN scores, without an
/// error. They are refused, naming the row.
#[test]
fn values_too_large_for_the_arithmetic_are_refused() {
    let masks = stratified_masks(6, &[1, 2, 3], 60, 2);
    let mut targets = SmoothUtility::new(6, 1).values(&masks);
    for (k, value) in targets.iter_mut().enumerate().skip(3) {
        *value = if k % 2 == 0 { 1e308 } else { -1e308 };
    }
    let options = FitOptions {
        epochs: 2,
        trees: 3,
        ..FitOptions::default()
    };
    for kind in SurrogateKind::ALL {
        match fit(kind, &masks, &targets, &options) {
            Err(error @ SurrogateError::TargetTooLarge { row: 3, .. }) => {
                assert!(error.to_string().contains("row 3"), "{error}")
            }
            Err(other) => panic!("{kind}: {other}"),
            Ok(model) => panic!(
                "{kind}: fitted, predicting {:?}",
                model.predict(&masks[..2])
            ),
        }
        assert!(cross_validate(kind, &masks, &targets, 3, &options).is_err());
    }
    // Large values short of the bound fit as before.
    let scaled: Vec<f64> = targets.iter().map(|v| v.clamp(-1e90, 1e90)).collect();
    for kind in SurrogateKind::ALL {
        let model = fit(kind, &masks, &scaled, &options).unwrap();
        assert!(
            model.predict(&masks).iter().all(|v| v.is_finite()),
            "{kind}"
        );
    }
}
