//! The frontier on a synthetic game: every method charged for what it asked, the best-known
//! plan no worse than any method's, and the recorded game replaying it exactly.

use layerprune_core::synthetic::WindowedGame;
use layerprune_core::{CachedGame, CountingGame, Game, Mask, RecordedGame};
use layerprune_selection::frontier::{frontier, Budget, FrontierConfig};
use layerprune_selection::method_names::{ADAPTIVE, ADAPTIVE_RACED, BEST_KNOWN};
use layerprune_selection::{sleb_cost, BlockScores, Race};
use layerprune_shapley::synthetic::TripleGame;

fn config() -> FrontierConfig {
    FrontierConfig {
        ks: vec![2, 4],
        fixed: vec![0],
        adaptive_budgets: vec![Budget::Least, Budget::OfSleb(1.0), Budget::Evaluations(300)],
        adaptive: true,
        adaptive_race: None,
        one_pass: vec![BlockScores {
            method: "block-influence".into(),
            scores: (0..12).map(|i| ((i * 7) % 5) as f64).collect(),
            llm_evaluations: 1,
        }],
        reverse: true,
        leave_one_out: true,
        sleb: true,
        sleb_race: None,
        shapley_masks: Some(60),
        seed: 0,
    }
}

#[test]
fn every_method_is_charged_and_the_best_known_is_best() {
    let mut game = CountingGame::new(CachedGame::new(TripleGame::layer_pruning_like(12, 5)));
    let points = frontier(&mut game, &config()).unwrap();
    let players = 11;
    for k in [2, 4] {
        let at_k: Vec<_> = points.iter().filter(|p| p.k == k).collect();
        let best = at_k.iter().find(|p| p.method == BEST_KNOWN).unwrap();
        for point in &at_k {
            assert_eq!(point.removed_blocks.len(), k);
            assert!(!point.removed_blocks.contains(&0), "{point:?}");
            assert!(point.value <= best.value, "{point:?} beats {best:?}");
            // Every value is the game's value of the plan.
            let mask = Mask::from_removed(12, &point.removed_blocks).unwrap();
            assert_eq!(point.value, game.value(&mask).unwrap());
        }
        let sleb = at_k.iter().find(|p| p.method == "sleb").unwrap();
        assert_eq!(sleb.llm_evaluations, sleb_cost(players, k));
        let adaptive: Vec<_> = at_k.iter().filter(|p| p.method == ADAPTIVE).collect();
        assert_eq!(adaptive.len(), 3);
        assert!(adaptive[0].llm_evaluations <= players + k);
        assert!(adaptive[1].llm_evaluations <= sleb_cost(players, k));
        assert!(adaptive[2].llm_evaluations <= 300);
        let loo = at_k.iter().find(|p| p.method == "leave-one-out").unwrap();
        assert_eq!(loo.llm_evaluations, players + 1);
        let one_pass = at_k.iter().find(|p| p.method == "block-influence").unwrap();
        assert_eq!(one_pass.llm_evaluations, 2);
        // Leave-one-out removes the k blocks whose single removal hurts least.
        let mut singles: Vec<(f64, usize)> = (1..12)
            .map(|b| (game.value(&Mask::full(12).with(b, false)).unwrap(), b))
            .collect();
        singles.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut expected: Vec<usize> = singles[..k].iter().map(|s| s.1).collect();
        expected.sort_unstable();
        assert_eq!(loo.removed_blocks, expected);
        // The Shapley method: 60 stratified masks (one stratum is the singles here), the full
        // model and the singles not drawn, and its plan unless it was drawn.
        let shapley = at_k
            .iter()
            .find(|p| p.method == "surrogate-shapley")
            .unwrap();
        assert!((61..=73).contains(&shapley.llm_evaluations), "{shapley:?}");
    }
}

#[test]
fn the_frontier_replays_exactly_from_a_recorded_table() {
    let mut cached = CachedGame::new(TripleGame::layer_pruning_like(12, 9));
    let mut recorder = Recorder {
        inner: &mut cached,
        rows: Vec::new(),
    };
    let live = frontier(&mut recorder, &config()).unwrap();
    let mut recorded = RecordedGame::new(12, recorder.rows).unwrap();
    let replayed = frontier(&mut recorded, &config()).unwrap();
    assert_eq!(live, replayed);
}

/// On a game measured window by window, raced adaptive removal runs at every budget beside the
/// unraced, each run within its budget and its plan a whole measurement; the best-known plan
/// comes from whole measurements only. Budgets asked for that coincide at a k are run once, the
/// run naming each of them.
#[test]
fn raced_adaptive_runs_at_every_budget_within_it() {
    let windowed = || WindowedGame {
        inner: TripleGame::layer_pruning_like(12, 3),
        windows: 10,
        window_spread: 0.5,
        mask_spread: 0.01,
        seed: 3,
    };
    let mut game = CachedGame::new(windowed());
    let config = FrontierConfig {
        adaptive_race: Some(Race::default()),
        one_pass: Vec::new(),
        shapley_masks: None,
        adaptive_budgets: vec![
            Budget::Least,
            Budget::OfSleb(1.0),
            Budget::Evaluations(300),
            // Below the least budget at every k: raised to it, so the same run as `least`.
            Budget::OfSleb(0.01),
        ],
        ..config()
    };
    let points = frontier(&mut game, &config).unwrap();
    let mut whole = windowed();
    for k in [2, 4] {
        let at_k: Vec<_> = points.iter().filter(|p| p.k == k).collect();
        let best = at_k.iter().find(|p| p.method == BEST_KNOWN).unwrap();
        let budgets = [11 + k, sleb_cost(11, k), 300];
        let specs = [
            vec![Budget::Least, Budget::OfSleb(0.01)],
            vec![Budget::OfSleb(1.0)],
            vec![Budget::Evaluations(300)],
        ];
        for method in [ADAPTIVE, ADAPTIVE_RACED] {
            let runs: Vec<_> = at_k.iter().filter(|p| p.method == method).collect();
            assert_eq!(runs.len(), 3, "{method}");
            for ((run, budget), specs) in runs.iter().zip(budgets).zip(&specs) {
                assert_eq!(run.budget, Some(budget));
                assert_eq!(&run.budget_specs, specs);
                assert!(run.llm_evaluations <= budget, "{run:?}");
                let mask = Mask::from_removed(12, &run.removed_blocks).unwrap();
                assert_eq!(run.value, whole.value(&mask).unwrap());
                assert!(run.value <= best.value);
            }
        }
    }
}

#[test]
fn budgets_parse_and_resolve() {
    assert_eq!("least".parse::<Budget>().unwrap(), Budget::Least);
    assert_eq!("sleb".parse::<Budget>().unwrap(), Budget::OfSleb(1.0));
    assert_eq!("0.5sleb".parse::<Budget>().unwrap(), Budget::OfSleb(0.5));
    assert_eq!("2000".parse::<Budget>().unwrap(), Budget::Evaluations(2000));
    assert!("-1sleb".parse::<Budget>().is_err());
    assert!("lots".parse::<Budget>().is_err());
    // A budget of no evaluations is a usage error, refused as the flag is parsed.
    assert!("0"
        .parse::<Budget>()
        .unwrap_err()
        .contains("no evaluations"));
    assert_eq!(Budget::OfSleb(1.0).resolve(30, 6), 165);
    // A fraction never goes below the least budget; a number is taken as given.
    assert_eq!(Budget::OfSleb(0.01).resolve(30, 6), 36);
    assert_eq!(Budget::Evaluations(10).resolve(30, 6), 10);
    // Written as given, and read back the same.
    for (budget, text) in [
        (Budget::Least, "least"),
        (Budget::OfSleb(1.0), "sleb"),
        (Budget::OfSleb(0.25), "0.25sleb"),
        (Budget::Evaluations(2000), "2000"),
    ] {
        assert_eq!(budget.to_string(), text);
        assert_eq!(text.parse::<Budget>().unwrap(), budget);
    }
}

/// Records every value asked of the inner game.
struct Recorder<'a> {
    inner: &'a mut dyn Game,
    rows: Vec<(Mask, f64)>,
}

impl Game for Recorder<'_> {
    fn num_players(&self) -> usize {
        self.inner.num_players()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, layerprune_core::GameError> {
        let values = self.inner.values(masks)?;
        self.rows
            .extend(masks.iter().cloned().zip(values.iter().copied()));
        Ok(values)
    }
}

#[test]
fn a_k_of_zero_is_refused_before_any_evaluation() {
    let mut game = CountingGame::new(TripleGame::layer_pruning_like(12, 5));
    let config = FrontierConfig {
        ks: vec![0, 3],
        ..config()
    };
    let error = frontier(&mut game, &config).unwrap_err().to_string();
    assert!(error.contains("every k must be at least 1"), "{error}");
    assert_eq!(game.evaluations(), 0);
}

/// A [`TripleGame`] in which removing block `collapsed` (alone or with others) collapses the
/// model: −∞, the LLM's value of an NLL of +∞ (what an evaluation table records for it).
struct Collapsing {
    inner: TripleGame,
    collapsed: usize,
}

impl Game for Collapsing {
    fn num_players(&self) -> usize {
        self.inner.num_players()
    }
    fn values(&mut self, masks: &[Mask]) -> Result<Vec<f64>, layerprune_core::GameError> {
        let values = self.inner.values(masks)?;
        Ok(masks
            .iter()
            .zip(values)
            .map(|(mask, value)| {
                if mask.is_kept(self.collapsed) {
                    value
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect())
    }
}

/// A block whose single removal collapses the model is the most important block, removed
/// last: every method is played (the frontier stopped at leave-one-out with "the score of
/// block 3 is not a finite number (inf)"), and no method that measured it removes it (the
/// Shapley method's fit, which leaves collapsed masks out, never saw block 3 removed and
/// removed it first).
#[test]
fn a_single_removal_that_collapses_the_model_is_the_last_removed() {
    let mut game = Collapsing {
        inner: TripleGame::layer_pruning_like(12, 5),
        collapsed: 3,
    };
    let points = frontier(&mut game, &config()).unwrap();
    for method in [
        "leave-one-out",
        "sleb",
        "surrogate-shapley",
        ADAPTIVE,
        BEST_KNOWN,
    ] {
        for k in [2, 4] {
            let point = points
                .iter()
                .find(|p| p.method == method && p.k == k)
                .unwrap();
            assert!(
                point.value.is_finite() && !point.removed_blocks.contains(&3),
                "{point:?}"
            );
        }
    }
}
