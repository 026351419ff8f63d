//! The selection rules on synthetic games whose answers are known or can be brute-forced.

use layerprune_core::synthetic::{AdditiveGame, PairwiseGame, WindowedGame};
use layerprune_core::{CountingGame, Game, Mask};
use layerprune_selection::{
    iterative_removal, one_shot, sleb, surrogate_search, Race, SearchOptions, SelectionError,
    SurrogateShapley,
};
use layerprune_shapley::synthetic::TripleGame;
use layerprune_surrogate::{QuadraticSurrogate, Surrogate};
use rand::{Rng, SeedableRng};

/// Any synthetic game used as a surrogate (no closed form: Shapley values are sampled).
struct GameSurrogate<G>(G);

impl<G: Game + Clone + Send + Sync> Surrogate for GameSurrogate<G> {
    fn num_players(&self) -> usize {
        self.0.num_players()
    }
    fn predict(&self, masks: &[Mask]) -> Vec<f64> {
        self.0
            .clone()
            .values(masks)
            .expect("synthetic games value any mask of their length")
    }
}

fn quadratic_of(game: &PairwiseGame) -> QuadraticSurrogate {
    QuadraticSurrogate {
        num_players: game.linear.len(),
        intercept: game.base,
        linear: game.linear.clone(),
        pairs: game.pairs.clone(),
    }
}

fn random_pairwise(num_players: usize, interaction: f64, seed: u64) -> PairwiseGame {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let linear = (0..num_players)
        .map(|_| rng.random_range(0.0..1.0))
        .collect();
    let mut pairs = vec![vec![0.0; num_players]; num_players];
    for (i, j) in (0..num_players).flat_map(|i| (i + 1..num_players).map(move |j| (i, j))) {
        let w = rng.random_range(-interaction..interaction);
        pairs[i][j] = w;
        pairs[j][i] = w;
    }
    PairwiseGame {
        linear,
        pairs,
        base: 0.0,
    }
}

fn value_without(game: &mut dyn Game, removed: &[usize]) -> f64 {
    let mask = Mask::from_removed(game.num_players(), removed).unwrap();
    game.value(&mask).unwrap()
}

/// The best k-subset of the removable blocks by brute force.
fn brute_force_best(game: &mut dyn Game, k: usize, fixed: &[usize]) -> (Vec<usize>, f64) {
    let n = game.num_players();
    let mut best = (Vec::new(), f64::NEG_INFINITY);
    for bits in 0u32..1 << n {
        if bits.count_ones() as usize != k || fixed.iter().any(|&f| bits >> f & 1 == 1) {
            continue;
        }
        let removed: Vec<usize> = (0..n).filter(|&i| bits >> i & 1 == 1).collect();
        let value = value_without(game, &removed);
        if value > best.1 {
            best = (removed, value);
        }
    }
    best
}

#[test]
fn iterative_equals_one_shot_on_an_additive_game() {
    let weights = vec![0.4, 0.05, 0.9, 0.3, 0.12, 0.7, 0.2, 0.6];
    let additive = PairwiseGame {
        linear: weights.clone(),
        pairs: vec![vec![0.0; 8]; 8],
        base: 1.0,
    };
    let quadratic = quadratic_of(&additive);
    let sampled = GameSurrogate(AdditiveGame::new(weights.clone(), 1.0));
    for k in 1..8 {
        let expected = one_shot(&weights, k, &[]).unwrap();
        let exact = iterative_removal(&SurrogateShapley::quadratic(&quadratic), k, &[]).unwrap();
        assert_eq!(exact.removed_blocks(k), expected, "k = {k}");
        let by_sampling =
            iterative_removal(&SurrogateShapley::sampled(&sampled, 4, 7), k, &[]).unwrap();
        assert_eq!(by_sampling.removed_blocks(k), expected, "k = {k}");
    }
}

#[test]
fn iterative_avoids_removing_both_substitutes() {
    // Blocks 1 and 4 are substitutes: either one alone is worth about 1, both together no
    // more. Each looks cheap (Shapley ≈ 0.5), so one-shot removes both and loses the whole
    // unit; after one is gone the other is essential, which the iterative rule sees.
    let mut linear = vec![0.9, 1.0, 0.7, 0.8, 1.05, 0.6];
    let mut pairs = vec![vec![0.0; 6]; 6];
    pairs[1][4] = -1.0;
    pairs[4][1] = -1.0;
    let mut game = PairwiseGame {
        linear: linear.clone(),
        pairs,
        base: 0.0,
    };
    let shapley = game.shapley_values();
    let one_shot_removed = one_shot(&shapley, 2, &[]).unwrap();
    assert_eq!(one_shot_removed, vec![1, 4]);
    let quadratic = quadratic_of(&game);
    let exact = iterative_removal(&SurrogateShapley::quadratic(&quadratic), 2, &[]).unwrap();
    assert_eq!(exact.removal_order, vec![1, 5]);
    assert!((exact.shapley_at_removal[0] - 0.5).abs() < 1e-12);
    let sampled_surrogate = GameSurrogate(game.clone());
    let sampled =
        iterative_removal(&SurrogateShapley::sampled(&sampled_surrogate, 8, 3), 2, &[]).unwrap();
    assert_eq!(sampled.removal_order, exact.removal_order);
    let lost_by_one_shot = value_without(&mut game, &one_shot_removed);
    let lost_by_iterative = value_without(&mut game, &exact.removed_blocks(2));
    assert!(
        lost_by_iterative > lost_by_one_shot + 0.3,
        "{lost_by_iterative} vs {lost_by_one_shot}"
    );
    // The closed form with kept blocks outside the players (fixed) matches sampling.
    linear[0] = 0.1;
    game.linear = linear;
    let quadratic = quadratic_of(&game);
    let sampled_surrogate = GameSurrogate(game.clone());
    let exact = iterative_removal(&SurrogateShapley::quadratic(&quadratic), 3, &[0, 3]).unwrap();
    let sampled = iterative_removal(
        &SurrogateShapley::sampled(&sampled_surrogate, 8, 3),
        3,
        &[0, 3],
    )
    .unwrap();
    assert_eq!(exact.removal_order, sampled.removal_order);
    for (a, b) in exact
        .shapley_at_removal
        .iter()
        .zip(&sampled.shapley_at_removal)
    {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    assert!(!exact.removal_order.contains(&0) && !exact.removal_order.contains(&3));
}

#[test]
fn search_finds_the_brute_force_optimum_of_pairwise_games() {
    for (seed, num_players, k) in [(1, 10, 3), (2, 12, 4), (3, 11, 2), (4, 12, 4), (5, 9, 4)] {
        let mut game = random_pairwise(num_players, 0.4, seed);
        let quadratic = quadratic_of(&game);
        let fixed = [0];
        let (best, best_value) = brute_force_best(&mut game, k, &fixed);
        let one_shot_start = one_shot(&game.shapley_values(), k, &fixed).unwrap();
        let local = SearchOptions {
            random_starts: 12,
            top_n: 5,
            seed,
            exhaustive_limit: 0,
            max_steps: 100,
        };
        let found = surrogate_search(
            &quadratic,
            k,
            &fixed,
            std::slice::from_ref(&one_shot_start),
            &local,
        )
        .unwrap();
        assert_eq!(found[0].removed_blocks, best, "seed {seed}");
        assert!((found[0].predicted - best_value).abs() < 1e-9);
        assert_eq!(found.len(), 5);
        for pair in found.windows(2) {
            assert!(pair[0].predicted >= pair[1].predicted);
            assert_ne!(pair[0].removed_blocks, pair[1].removed_blocks);
        }
        for candidate in &found {
            assert_eq!(candidate.removed_blocks.len(), k);
            assert!(!candidate.removed_blocks.contains(&0));
            let measured = value_without(&mut game, &candidate.removed_blocks);
            assert!((measured - candidate.predicted).abs() < 1e-9);
        }
        let exhaustive = surrogate_search(
            &quadratic,
            k,
            &fixed,
            &[],
            &SearchOptions {
                exhaustive_limit: 1_000_000,
                ..local
            },
        )
        .unwrap();
        assert_eq!(exhaustive[0].removed_blocks, best, "seed {seed}");
    }
}

#[test]
fn search_improves_on_its_start_when_interactions_matter() {
    // The one-shot solution of the substitutes game is the worst pair; the search leaves it.
    let mut pairs = vec![vec![0.0; 6]; 6];
    pairs[1][4] = -1.0;
    pairs[4][1] = -1.0;
    let game = PairwiseGame {
        linear: vec![0.9, 1.0, 0.7, 0.8, 1.05, 0.6],
        pairs,
        base: 0.0,
    };
    let options = SearchOptions {
        random_starts: 0,
        exhaustive_limit: 0,
        ..SearchOptions::default()
    };
    let found = surrogate_search(&quadratic_of(&game), 2, &[], &[vec![1, 4]], &options).unwrap();
    assert_ne!(found[0].removed_blocks, vec![1, 4]);
    assert!(found[0].predicted > 3.0 + 0.3);
    let bad_start = surrogate_search(&quadratic_of(&game), 2, &[], &[vec![1]], &options);
    assert!(matches!(bad_start, Err(SelectionError::BadOption(_))));
}

/// SLEB written out the slow way: one mask at a time.
fn greedy_by_hand(game: &mut dyn Game, k: usize, fixed: &[usize]) -> Vec<usize> {
    let n = game.num_players();
    let mut removed: Vec<usize> = Vec::new();
    for _ in 0..k {
        let mut best: Option<(usize, f64)> = None;
        for block in (0..n).filter(|b| !removed.contains(b) && !fixed.contains(b)) {
            let mut trial = removed.clone();
            trial.push(block);
            let value = value_without(game, &trial);
            if best.is_none_or(|(_, v)| value > v) {
                best = Some((block, value));
            }
        }
        removed.push(best.unwrap().0);
    }
    removed
}

#[test]
fn sleb_matches_the_greedy_by_hand_and_counts_its_evaluations() {
    for seed in 0..4 {
        let mut game = TripleGame::layer_pruning_like(10, seed);
        let fixed = [0];
        let k = 4;
        let result = sleb(&mut game, k, &fixed, None).unwrap();
        assert_eq!(result.removal_order, greedy_by_hand(&mut game, k, &fixed));
        // 9 removable blocks: 9 + 8 + 7 + 6 distinct masks.
        assert_eq!(result.evaluations_after, vec![9, 17, 24, 30]);
        assert_eq!(result.llm_evaluations(), 30);
        for (j, value) in result.values_after.iter().enumerate() {
            let removed = result.removed_blocks(j + 1);
            assert!((value - value_without(&mut game, &removed)).abs() < 1e-12);
        }
        assert!(!result.removal_order.contains(&0));
    }
}

#[test]
fn raced_sleb_chooses_sleb_s_plans_for_fewer_evaluations() {
    // The layer-pruning-like game measured on 10 windows: a difficulty shared by every mask
    // (±0.5, far more than any removal's cost) and each mask's own deviation (±0.0005).
    let mut share = Vec::new();
    for seed in 0..8 {
        let windowed = || WindowedGame {
            inner: TripleGame::layer_pruning_like(16, seed),
            windows: 10,
            window_spread: 0.5,
            mask_spread: 0.0005,
            seed,
        };
        let k = 6;
        let plain = sleb(&mut windowed(), k, &[0], None).unwrap();
        let mut counted = CountingGame::new(windowed());
        let raced = sleb(&mut counted, k, &[0], Some(&Race::default())).unwrap();
        assert_eq!(raced.removal_order, plain.removal_order, "seed {seed}");
        assert_eq!(raced.values_after, plain.values_after, "seed {seed}");
        // Charged the windows it measured: fewer evaluations, counted as the game counts.
        assert_eq!(raced.llm_evaluations(), counted.evaluations());
        assert!(raced.evaluations_after.windows(2).all(|w| w[0] < w[1]));
        share.push(raced.llm_evaluations() as f64 / plain.llm_evaluations() as f64);
    }
    let mean = share.iter().sum::<f64>() / share.len() as f64;
    assert!(
        mean < 0.75,
        "raced SLEB cost {mean} of SLEB's evaluations: {share:?}"
    );
    // On a game of whole values only, the race has nothing to measure: SLEB itself.
    let mut whole = TripleGame::layer_pruning_like(12, 1);
    let raced = sleb(&mut whole, 3, &[], Some(&Race::default())).unwrap();
    assert_eq!(raced, sleb(&mut whole, 3, &[], None).unwrap());
}

#[test]
fn fixed_blocks_are_never_removed_and_k_must_leave_a_player() {
    let game = random_pairwise(7, 0.3, 9);
    let quadratic = quadratic_of(&game);
    // Make the fixed blocks the least important so every rule would like to remove them.
    let mut scores = game.shapley_values();
    scores[0] = -10.0;
    scores[6] = -10.0;
    let mut cheap = game.clone();
    cheap.linear[0] = -5.0;
    cheap.linear[6] = -5.0;
    let cheap_quadratic = quadratic_of(&cheap);
    let fixed = [0, 6];
    for k in 1..5 {
        let removed = one_shot(&scores, k, &fixed).unwrap();
        let iterative =
            iterative_removal(&SurrogateShapley::quadratic(&cheap_quadratic), k, &fixed).unwrap();
        let searched =
            surrogate_search(&cheap_quadratic, k, &fixed, &[], &SearchOptions::default()).unwrap();
        let greedy = sleb(&mut cheap.clone(), k, &fixed, None).unwrap();
        for plan in [
            removed,
            iterative.removed_blocks(k),
            searched[0].removed_blocks.clone(),
            greedy.removed_blocks(k),
        ] {
            assert_eq!(plan.len(), k);
            assert!(!plan.contains(&0) && !plan.contains(&6), "{plan:?}");
        }
    }
    let too_many = |result: Result<(), SelectionError>| {
        assert!(
            matches!(
                result,
                Err(SelectionError::TooManyRemoved {
                    k: 5,
                    players: 5,
                    ..
                })
            ),
            "{result:?}"
        );
    };
    too_many(one_shot(&scores, 5, &fixed).map(drop));
    too_many(iterative_removal(&SurrogateShapley::quadratic(&quadratic), 5, &fixed).map(drop));
    too_many(surrogate_search(&quadratic, 5, &fixed, &[], &SearchOptions::default()).map(drop));
    too_many(sleb(&mut game.clone(), 5, &fixed, None).map(drop));
    assert!(matches!(
        one_shot(&scores, 7, &[]),
        Err(SelectionError::TooManyRemoved { players: 7, .. })
    ));
}

/// With fixed blocks, a surrogate's block scores are the Shapley values of the players' game
/// (the fixed blocks kept), not the closed form over all blocks: fitted on masks that always
/// keep block 0, the quadratic cannot tell player 1's own effect from its pair with block 0,
/// and the closed form over all blocks halves what went into that pair (and here reorders
/// blocks 3 and 4).
#[test]
fn surrogate_scores_with_fixed_blocks_are_those_of_the_players_game() {
    use layerprune_core::synthetic::exact_shapley;
    use layerprune_core::{PlayerGame, Players};
    use layerprune_surrogate::{fit, FitOptions, FittedSurrogate, SurrogateKind};

    let n = 6;
    let fixed = [0usize];
    let players = Players::new(n, &fixed).unwrap();
    let mut pairs = vec![vec![0.0; n]; n];
    for (i, j, w) in [(0, 1, 0.6), (4, 5, 0.4)] {
        pairs[i][j] = w;
        pairs[j][i] = w;
    }
    let game = PairwiseGame {
        linear: vec![0.5, 0.05, 0.2, 0.34, 0.1, 0.1],
        pairs,
        base: 0.0,
    };
    let truth =
        exact_shapley(&mut PlayerGame::new(game.clone(), players.clone()).unwrap()).unwrap();
    // Every coalition of the players, block 0 kept, as sample-masks --fixed 0 writes them.
    let masks: Vec<Mask> = (0..1usize << players.len())
        .map(|bits| players.mask_keeping((0..players.len()).filter(|p| bits >> p & 1 == 1)))
        .collect();
    let targets = game.clone().values(&masks).unwrap();
    // A light ridge: since 2026-12-06 the players' own effects carry the whole penalty (the
    // fixed block's constant columns no longer share it), which at 0.01 shrinks them by 0.02.
    let options = FitOptions {
        ridge_alpha: 0.001,
        ..FitOptions::default()
    };
    let fitted = fit(SurrogateKind::Quadratic, &masks, &targets, &options).unwrap();
    let FittedSurrogate::Quadratic(quadratic) = &fitted else {
        panic!("a quadratic fit")
    };
    let scores = SurrogateShapley::quadratic(quadratic)
        .player_scores(&fixed)
        .unwrap();
    assert_eq!(scores[0], f64::INFINITY, "a fixed block is never removed");
    for (p, &block) in players.blocks().iter().enumerate() {
        assert!(
            (scores[block] - truth[p]).abs() < 0.02,
            "{scores:?} vs {truth:?}"
        );
    }
    // The closed form over all blocks once went wrong here (it missed block 1's pair with the
    // fixed block 0, whose constant column shared the pair's effect). The fit now leaves a
    // block that never varies out (coefficients 0), so it gives the players' values too.
    let over_all_blocks = quadratic.exact_shapley().unwrap();
    assert_eq!(over_all_blocks[0], 0.0, "{over_all_blocks:?}");
    for (p, &block) in players.blocks().iter().enumerate() {
        assert!(
            (over_all_blocks[block] - truth[p]).abs() < 0.02,
            "{over_all_blocks:?} vs {truth:?}"
        );
    }
    // And the sampled route (an MLP or forest surrogate) agrees on the same game.
    let sampled = SurrogateShapley::sampled(&fitted, 2000, 1)
        .player_scores(&fixed)
        .unwrap();
    for block in 1..n {
        assert!(
            (sampled[block] - scores[block]).abs() < 0.02,
            "{sampled:?} vs {scores:?}"
        );
    }
    assert_eq!(sampled[0], f64::INFINITY);
}

/// A game in which the masks `diverged` removes give NaN (a collapsed model's NLL can), with
/// the sign bit set when `negative` (the value is −NLL: a NaN NLL negated).
struct Diverges {
    inner: AdditiveGame,
    diverged: Vec<Mask>,
    negative: bool,
}

impl Game for Diverges {
    fn num_players(&self) -> usize {
        self.inner.num_players()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, layerprune_core::GameError> {
        let mut values = self.inner.values(masks)?;
        for (mask, value) in masks.iter().zip(values.iter_mut()) {
            if self.diverged.contains(mask) {
                *value = if self.negative { -f64::NAN } else { f64::NAN };
            }
        }
        Ok(values)
    }
}

#[test]
fn a_diverged_mask_is_never_the_plan_nor_stops_the_search() {
    use layerprune_selection::{
        largest_within, measure_plans, sleb_chooser, Candidate, Plan, RatioTarget,
    };
    let n = 6;
    let weights = vec![0.5, 0.05, 0.06, 0.07, 0.09, 0.08];
    // Search: the best-predicted candidate diverged; the plan is the best finite one.
    let mut game = Diverges {
        inner: AdditiveGame::new(weights.clone(), 0.0),
        diverged: vec![Mask::from_removed(n, &[1, 2]).unwrap()],
        negative: false,
    };
    let mut plan = Plan::new("search", vec![1, 2], 10);
    plan.candidates = [vec![1, 2], vec![3, 4], vec![2, 5]]
        .into_iter()
        .enumerate()
        .map(|(i, removed_blocks)| Candidate {
            removed_blocks,
            predicted: -1.0 - i as f64 / 10.0,
        })
        .collect();
    let mut plans = vec![plan];
    measure_plans(&mut game, &mut plans, n).unwrap();
    assert_eq!(plans[0].removed, vec![2, 5], "the lowest finite NLL");
    assert!(plans[0].measured_nll.unwrap().is_finite());
    assert_eq!(plans[0].llm_evaluations, 13);

    // --max-ppl-ratio: a single removal that diverged (−NaN, which `total_cmp` sorts first)
    // does not end the search; the cheapest blocks still go.
    let mut game = Diverges {
        inner: AdditiveGame::new(weights, 0.0),
        diverged: vec![Mask::from_removed(n, &[5]).unwrap()],
        negative: true,
    };
    let search = largest_within(
        &mut game,
        &[],
        &RatioTarget::new(1.2),
        &mut sleb_chooser(&[], None),
    )
    .unwrap();
    let chosen = &search.probes[search.chosen.expect("blocks within the ratio")];
    assert!(!chosen.removed_blocks.contains(&5), "{:?}", search.probes);
    assert!(!chosen.removed_blocks.is_empty());
}
