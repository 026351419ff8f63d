//! The selection methods on real models' games whose optimum is known: SmolLM2-135M's blocks
//! 16–27 and 3–13 and Gemma 3 270M's blocks 6–16, every mask measured window by window and committed
//! (`data/games`, `make exact-frontier`). The synthetic games elsewhere are built to have the
//! structure the methods assume; these have whatever the models have.

use layerprune_core::{CachedGame, Game, Players};
use layerprune_selection::frontier::{frontier, Budget, FrontierConfig, FrontierPoint};
use layerprune_selection::method_names::ADAPTIVE_RACED;
use layerprune_selection::Race;
use layerprune_tests::{every_mask, real_game, GEMMA3_GAME, SMOLLM2_EARLY_GAME, SMOLLM2_GAME};

/// The best value at each k (index k) over every mask of the game, by brute force.
fn optimum_by_k(game: &mut dyn Game, fixed: &[usize]) -> Vec<f64> {
    let players = Players::new(game.num_players(), fixed).unwrap();
    let mut best = vec![f64::NEG_INFINITY; players.len() + 1];
    for mask in every_mask(players.len()) {
        let value = game.value(&players.lift(&mask)).unwrap();
        let k = mask.num_removed();
        best[k] = best[k].max(value);
    }
    best
}

/// The committed game `name` played at every k of `ks`: raced adaptive removal (the
/// recommended method) at `budgets`, SLEB and leave-one-out; with the optimum at each k.
fn play(name: &str, ks: &[usize], budgets: &[Budget]) -> (Vec<FrontierPoint>, Vec<f64>) {
    let (recorded, fixed) = real_game(name);
    let mut game = CachedGame::new(recorded);
    let optimum = optimum_by_k(&mut game, &fixed);
    let config = FrontierConfig {
        ks: ks.to_vec(),
        fixed,
        adaptive_budgets: budgets.to_vec(),
        adaptive: false,
        adaptive_race: Some(Race::default()),
        one_pass: Vec::new(),
        reverse: false,
        leave_one_out: true,
        sleb: true,
        sleb_race: None,
        shapley_masks: None,
        seed: 0,
    };
    (frontier(&mut game, &config).unwrap(), optimum)
}

/// The points of `method` at `k`, in the frontier's order (budgets ascending).
fn runs<'a>(points: &'a [FrontierPoint], method: &str, k: usize) -> Vec<&'a FrontierPoint> {
    points
        .iter()
        .filter(|p| p.method == method && p.k == k)
        .collect()
}

/// On SmolLM2's blocks 16–27 (measured: docs/results.md, "Against the exact optimum") SLEB's
/// path holds the optimum at k = 1–10 and misses it at 11; leave-one-out finds it at 4 of
/// the 11. The recommended method finds it at every k and every budget, at the least budget
/// for about a third of SLEB's evaluations.
#[test]
fn on_a_real_model_s_game_the_recommended_method_finds_the_optimum_at_every_k() {
    let ks: Vec<usize> = (1..=11).collect();
    let budgets = [Budget::Least, Budget::OfSleb(0.5), Budget::OfSleb(1.0)];
    let (points, optimum) = play(SMOLLM2_GAME, &ks, &budgets);
    let at = |method: &str, k: usize| runs(&points, method, k);
    let (mut least_evaluations, mut sleb_evaluations) = (0, 0);
    for &k in &ks {
        let sleb = at("sleb", k)[0];
        assert_eq!(
            sleb.value == optimum[k],
            k <= 10,
            "SLEB at k = {k}: {sleb:?}"
        );
        sleb_evaluations += sleb.llm_evaluations;
        let raced = at(ADAPTIVE_RACED, k);
        assert!(!raced.is_empty());
        for run in &raced {
            assert_eq!(run.value, optimum[k], "k = {k}: {run:?}");
            assert!(run.llm_evaluations <= run.budget.unwrap(), "{run:?}");
        }
        least_evaluations += raced[0].llm_evaluations;
    }
    let loo_optimal = ks
        .iter()
        .filter(|&&k| at("leave-one-out", k)[0].value == optimum[k])
        .count();
    assert_eq!(loo_optimal, 4);
    assert!(
        3 * least_evaluations <= sleb_evaluations + sleb_evaluations / 10,
        "{least_evaluations} evaluations at the least budget, SLEB {sleb_evaluations}"
    );
}

/// On Gemma 3's blocks 6–16 (calibration set c1) SLEB's path misses the optimum at 5 of the 10
/// k (by up to ×2.9, at k = 10). At SLEB's cost the recommended method is never worse than SLEB
/// and finds the optimum at 8; with a budget of 2,000 (used: about 1.2 × SLEB's) at every k.
/// (Below SLEB's cost it is worse than SLEB at some k here: docs/results.md.)
#[test]
fn on_gemma_s_game_the_recommended_method_at_sleb_s_cost_is_never_worse_than_sleb() {
    let ks: Vec<usize> = (1..=10).collect();
    let budgets = [Budget::OfSleb(1.0), Budget::Evaluations(2000)];
    let (points, optimum) = play(GEMMA3_GAME, &ks, &budgets);
    let (mut sleb_optimal, mut raced_optimal) = (0, 0);
    for &k in &ks {
        let sleb = runs(&points, "sleb", k)[0];
        let raced = runs(&points, ADAPTIVE_RACED, k);
        let (at_sleb_cost, at_2000) = (raced[0], raced[1]);
        // SLEB's cost, raised to the least budget (P + k) at k = 1.
        let budget = sleb.llm_evaluations.max(11 + k);
        assert_eq!(at_sleb_cost.budget, Some(budget));
        assert!(at_sleb_cost.llm_evaluations <= budget, "{at_sleb_cost:?}");
        assert!(
            at_sleb_cost.value >= sleb.value,
            "k = {k}: {at_sleb_cost:?} {sleb:?}"
        );
        assert_eq!(at_2000.value, optimum[k], "k = {k}: {at_2000:?}");
        sleb_optimal += usize::from(sleb.value == optimum[k]);
        raced_optimal += usize::from(at_sleb_cost.value == optimum[k]);
    }
    assert_eq!(sleb_optimal, 5);
    assert!(raced_optimal >= 8, "{raced_optimal} of 10");
}

/// On SmolLM2's early blocks 3–13 (calibration set c1) SLEB's path misses the optimum at k = 6
/// only (+5.7 %: the k = 6 optimum, 4 5 6 7 12 13, leaves block 3, which the k = 5 one
/// removes). At SLEB's cost the recommended method finds the optimum at every k, for fewer
/// evaluations than SLEB in all.
#[test]
fn on_smollm2_s_early_blocks_the_recommended_method_at_sleb_s_cost_finds_every_optimum() {
    let ks: Vec<usize> = (1..=10).collect();
    let (points, optimum) = play(SMOLLM2_EARLY_GAME, &ks, &[Budget::OfSleb(1.0)]);
    let (mut raced_evaluations, mut sleb_evaluations) = (0, 0);
    for &k in &ks {
        let (sleb, raced) = (
            runs(&points, "sleb", k)[0],
            runs(&points, ADAPTIVE_RACED, k)[0],
        );
        assert_eq!(
            sleb.value == optimum[k],
            k != 6,
            "SLEB at k = {k}: {sleb:?}"
        );
        assert_eq!(raced.value, optimum[k], "k = {k}: {raced:?}");
        assert!(raced.llm_evaluations <= raced.budget.unwrap(), "{raced:?}");
        raced_evaluations += raced.llm_evaluations;
        sleb_evaluations += sleb.llm_evaluations;
    }
    assert!(
        raced_evaluations < sleb_evaluations,
        "{raced_evaluations} evaluations, SLEB {sleb_evaluations}"
    );
}
