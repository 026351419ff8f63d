//! The pipeline through its libraries and files, without a model: sample masks of a game with
//! a fixed block -> "evaluate" them on a synthetic game -> fit a surrogate -> estimate Shapley
//! values -> choose and measure a plan. Every stage reads the previous stage's file, and the
//! fixed block travels in the files (never passed twice, never guessed).

use layerprune_core::synthetic::{exact_shapley, PairwiseGame};
use layerprune_core::{Game, Mask, PlayerGame, Players};
use layerprune_sampling::{
    sample, Allocation, Existing, SamplingPlan, StrataSpec, StratifiedDesign,
};
use layerprune_selection::frontier::Budget;
use layerprune_selection::{
    choose_plans, measure_plans, scores_from_table, PlanInputs, PlanMethod, PlanOptions,
    PlanSettings,
};
use layerprune_shapley::{
    estimate, DesignRow, Estimator, EstimatorInputs, EstimatorOptions, NonuniformMasks,
    RecordedDesign,
};
use layerprune_surrogate::{fit, FitOptions, SavedSurrogate, SurrogateKind};
use layerprune_tables::{
    read_evaluations, read_masks, read_scores, write_evaluations, write_masks, write_scores,
    EvaluationRow, EvaluationTable, MaskRow, MaskTable, Provenance, ScoreRow, ScoreTable,
};

const BLOCKS: usize = 8;

/// A pairwise game in which block 0 matters most (as the first block of an LLM does).
/// The methods' settings for plans at `ks`: one candidate, no random starts, seed 0.
fn settings(ks: Vec<usize>) -> PlanSettings {
    PlanSettings {
        ks,
        candidates: 1,
        random_starts: 0,
        permutation_pairs: 64,
        budget: Budget::OfSleb(1.0),
        ratio_target: None,
        race: None,
        seed: 0,
    }
}

fn game() -> PairwiseGame {
    let mut pairs = vec![vec![0.0; BLOCKS]; BLOCKS];
    for (i, j, w) in [(1, 2, 0.04), (3, 4, -0.02), (5, 6, 0.03), (0, 7, 0.01)] {
        pairs[i][j] = w;
        pairs[j][i] = w;
    }
    PairwiseGame {
        linear: vec![0.9, 0.05, 0.2, 0.01, 0.12, 0.07, 0.3, 0.02],
        pairs,
        base: 0.1,
    }
}

#[test]
fn sample_evaluate_fit_estimate_plan_with_a_fixed_block() {
    let dir = tempfile::tempdir().unwrap();
    let provenance = Provenance::new("test", "0", Vec::new());
    let file = |name: &str| dir.path().join(name);

    // sample-masks: complement pairs over the 7 players, block 0 fixed.
    let players = Players::new(BLOCKS, &[0]).unwrap();
    let plan = SamplingPlan {
        stratified: Some(StratifiedDesign {
            strata: StrataSpec::Removed(vec![1, 2, 3, 4, 5, 6, 7]),
            total_masks: 60,
            allocation: Allocation::Equal,
        }),
        complement_pairs: true,
        anchors: true,
        ..SamplingPlan::default()
    };
    let sampled = sample(&players, &plan, Existing::default(), 7).unwrap();
    let masks = MaskTable {
        num_blocks: BLOCKS,
        fixed_blocks: players.fixed_blocks().to_vec(),
        rows: sampled
            .rows
            .iter()
            .map(|row| MaskRow {
                mask: row.mask.clone(),
                design: row.design,
                group_id: row.group_id,
                position: row.position,
            })
            .collect(),
    };
    write_masks(&file("masks.parquet"), &masks, &provenance).unwrap();

    // evaluate: the synthetic game stands in for the LLM; the fixed blocks are copied over.
    let masks = read_masks(&file("masks.parquet")).unwrap();
    assert!(masks.rows.iter().all(|row| row.mask.is_kept(0)));
    let to_value: Vec<Mask> = masks.rows.iter().map(|row| row.mask.clone()).collect();
    let values = game().values(&to_value).unwrap();
    let mut evaluations = EvaluationTable::new(BLOCKS, "model", "data");
    evaluations.fixed_blocks = masks.fixed_blocks.clone();
    evaluations.complete = true;
    let mut seen = std::collections::HashSet::new();
    evaluations
        .append(
            to_value
                .iter()
                .zip(&values)
                .filter(|(mask, _)| seen.insert((*mask).clone()))
                .map(|(mask, &value)| EvaluationRow {
                    mask: mask.clone(),
                    nll: -value,
                    ppl: (-value).exp(),
                    utility: value,
                    tokens_scored: 1,
                    seconds: 0.0,
                    window_nlls: None,
                }),
        )
        .unwrap();
    write_evaluations(&file("evaluations.parquet"), &evaluations, &provenance).unwrap();

    // fit-surrogate: a quadratic fits a pairwise game exactly; the game is recorded with it.
    let evaluations = read_evaluations(&file("evaluations.parquet")).unwrap();
    assert_eq!(evaluations.fixed_blocks, vec![0]);
    let rows: Vec<(Mask, f64)> = evaluations
        .rows
        .iter()
        .map(|row| (row.mask.clone(), row.utility))
        .collect();
    let (fit_masks, targets): (Vec<Mask>, Vec<f64>) = rows.iter().cloned().unzip();
    let fitted = fit(
        SurrogateKind::Quadratic,
        &fit_masks,
        &targets,
        // A light ridge, so that its bias stays inside the 1e-4 the Shapley values are held to.
        &FitOptions {
            ridge_alpha: 1e-5,
            ..FitOptions::default()
        },
    )
    .unwrap();
    SavedSurrogate::new(fitted, "utility", "test")
        .with_fitted_on_evaluations(rows.len() as u64)
        .with_game(&evaluations.fixed_blocks, "model", "data")
        .save(&file("surrogate.json"))
        .unwrap();

    // shapley: the player set read from the files; two estimators through the registry.
    let saved = SavedSurrogate::load(&file("surrogate.json")).unwrap();
    assert_eq!(saved.fixed_blocks, masks.fixed_blocks);
    let players = Players::new(BLOCKS, &masks.fixed_blocks).unwrap();
    let design = RecordedDesign::from_rows(
        masks.rows.iter().map(|row| DesignRow {
            design: row.design,
            group_id: row.group_id,
            position: row.position.unwrap_or(0),
            mask: &row.mask,
        }),
        &players,
    )
    .unwrap();
    assert!(!design.pairs.is_empty());
    let mut inputs = EstimatorInputs {
        evaluations: Some(&rows),
        design: Some(&design),
        surrogate: Some(&saved.surrogate),
        surrogate_evaluations: saved.fitted_on_evaluations as usize,
    };
    let options = EstimatorOptions {
        samples: 2000,
        strata: None,
        seed: 3,
        nonuniform_masks: NonuniformMasks::Refused,
    };
    let truth = exact_shapley(&mut PlayerGame::new(game(), players.clone()).unwrap()).unwrap();
    let mut score_rows = Vec::new();
    for which in [Estimator::KernelShap, Estimator::SurrogateShapley] {
        let estimated = estimate(which, &mut inputs, &players, &options).unwrap();
        let estimates = &estimated.estimates[0];
        assert_eq!(estimates.blocks, players.blocks(), "{which}");
        // KernelSHAP is exact on a pairwise game; the surrogate carries its ridge penalty.
        let tolerance = if which == Estimator::KernelShap {
            1e-9
        } else {
            1e-4
        };
        for (value, t) in estimates.values.iter().zip(&truth) {
            assert!((value - t).abs() < tolerance, "{which}: {value} vs {t}");
        }
        score_rows.extend(
            estimates
                .blocks
                .iter()
                .zip(&estimates.values)
                .map(|(&block, &value)| ScoreRow::point(block, value, which.name(), 0)),
        );
    }
    let scores = ScoreTable {
        num_blocks: BLOCKS,
        fixed_blocks: players.fixed_blocks().to_vec(),
        model_id: String::new(),
        dataset_id: String::new(),
        rows: score_rows,
    };
    write_scores(&file("scores.parquet"), &scores, &provenance).unwrap();

    // apply-prune: one-shot from the score table; the fixed block comes from the table.
    let table = read_scores(&file("scores.parquet")).unwrap();
    let scores = scores_from_table(&table, Estimator::KernelShap.name(), BLOCKS).unwrap();
    let mut game = game();
    let mut inputs = PlanInputs {
        scores: Some(&scores),
        game: Some(&mut game),
        ..PlanInputs::default()
    };
    let options = PlanOptions {
        num_blocks: BLOCKS,
        fixed: table.fixed_blocks.clone(),
        settings: settings(vec![2, 6]),
    };
    let mut plans = choose_plans(PlanMethod::OneShot, &mut inputs, &options).unwrap();
    // The k players of lowest true Shapley value, never the fixed block (the most valuable
    // block here, but k = 6 of 7 players would reach it if it were a player).
    let mut order: Vec<usize> = (0..truth.len()).collect();
    order.sort_by(|&a, &b| truth[a].total_cmp(&truth[b]));
    for plan in &plans {
        let k = plan.removed.len();
        let mut expected: Vec<usize> = order[..k].iter().map(|&p| players.blocks()[p]).collect();
        expected.sort_unstable();
        assert_eq!(plan.removed, expected);
        assert!(!plan.removed.contains(&0));
    }
    let mut game = self::game();
    measure_plans(&mut game, &mut plans, BLOCKS).unwrap();
    for plan in &plans {
        let mask = Mask::from_removed(BLOCKS, &plan.removed).unwrap();
        let value = self::game().value(&mask).unwrap();
        assert_eq!(plan.measured_nll, Some(-value));
        assert_eq!(plan.llm_evaluations, 1);
    }
}

/// A search plan keeps its best measured candidate, and with it that candidate's prediction,
/// not the prediction of the surrogate's favourite it replaced.
#[test]
fn a_search_plan_keeps_the_prediction_of_the_candidate_it_keeps() {
    use layerprune_core::synthetic::AdditiveGame;
    use layerprune_selection::{Candidate, Plan};
    // Blocks 3 and 4 cost least on the LLM; the surrogate favoured 1 and 2.
    let mut game = AdditiveGame::new(vec![1.0, 0.5, 0.5, 0.1, 0.1, 1.0], 0.0);
    let candidate = |removed: Vec<usize>, predicted: f64| Candidate {
        removed_blocks: removed,
        predicted,
    };
    let mut plans = vec![Plan {
        method: "search".into(),
        removed: vec![1, 2],
        predicted: Some(-1.0),
        measured_nll: None,
        llm_evaluations: 0,
        candidates: vec![candidate(vec![1, 2], -1.0), candidate(vec![3, 4], -2.0)],
        runner_up: None,
        full_model: None,
        cost_is_recorded: false,
    }];
    // A plan of an earlier table (from-plan) is measured, its recorded cost kept; a plan not
    // measured while choosing is charged the one evaluation that measures it.
    let plain = |removed: Vec<usize>, llm_evaluations: u64, cost_is_recorded: bool| Plan {
        cost_is_recorded,
        ..Plan::new("sleb", removed, llm_evaluations)
    };
    plans.push(plain(vec![0, 5], 9, true));
    plans.push(plain(vec![0, 1], 9, false));
    measure_plans(&mut game, &mut plans, 6).unwrap();
    assert_eq!(plans[0].removed, vec![3, 4]);
    assert_eq!(plans[0].predicted, Some(-2.0));
    assert_eq!(plans[0].measured_nll, Some(-(1.0 + 0.5 + 0.5 + 1.0)));
    assert_eq!(plans[0].llm_evaluations, 2);
    assert_eq!(plans[1].measured_nll, Some(-(0.5 + 0.5 + 0.1 + 0.1)));
    assert_eq!(plans[1].llm_evaluations, 9);
    assert_eq!(plans[2].llm_evaluations, 10);
}

/// `--plan-method` names a plan by the method its table records; a table written before the
/// names were made one by the names its methods have now (`search` for `surrogate-search`),
/// and the plan taken is recorded by that name. One it does not find is refused with the
/// methods there are, by the names it takes.
#[test]
fn from_plan_takes_an_old_tables_plan_by_its_current_name_and_says_which_there_are() {
    let row = |method: &str, removed: Vec<u32>| layerprune_tables::PlanRow {
        method: method.into(),
        k: removed.len() as u32,
        removed_blocks: removed,
        predicted_value: None,
        measured_nll: Some(2.0),
        measured_ppl: Some(2f64.exp()),
        llm_evaluations: 5,
        runner_up: None,
        full_model: None,
    };
    let table = layerprune_tables::PlanTable {
        num_blocks: 6,
        value: None,
        rows: vec![
            row("surrogate-search", vec![1, 2]),
            row("sleb", vec![3, 4]),
            row("iterative-surrogate", vec![1, 2, 3]),
        ],
    };
    let options = |ks: Vec<usize>| PlanOptions {
        num_blocks: 6,
        fixed: vec![],
        settings: settings(ks),
    };
    let choose = |method: &str, ks: Vec<usize>| {
        let mut inputs = PlanInputs {
            earlier_plans: Some(&table),
            plan_method: Some(method),
            ..PlanInputs::default()
        };
        choose_plans(PlanMethod::FromPlan, &mut inputs, &options(ks))
    };
    let plans = choose("search", vec![2]).unwrap();
    assert_eq!(plans[0].removed, vec![1, 2]);
    assert_eq!(plans[0].method, "search");
    assert!(choose("surrogate-search", vec![2]).is_err());
    // Without ks, every plan of the method: k = 3 by its --method name.
    let plans = choose("iterative", vec![]).unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].removed, vec![1, 2, 3]);
    assert_eq!(plans[0].method, "iterative");

    let error = choose("adaptive", vec![2]).unwrap_err().to_string();
    assert!(
        error.contains("with method adaptive (the methods of those that do: search, sleb)"),
        "{error}"
    );
    let error = choose("adaptive", vec![]).unwrap_err().to_string();
    assert!(
        error.contains("(its methods: search, sleb, iterative)"),
        "{error}"
    );
    // A plan the table does not hold is said as that, not as a malformed option.
    for (method, ks, said) in [
        ("sleb", vec![3], "no plan removes 3 blocks with method sleb"),
        (
            "adaptive",
            vec![2],
            "no plan removes 2 blocks with method adaptive",
        ),
        (
            "adaptive",
            vec![],
            "the plan table holds no plan with method adaptive",
        ),
    ] {
        let error = choose(method, ks).unwrap_err();
        assert!(
            matches!(error, layerprune_selection::SelectionError::NoSuchPlan(_)),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(error.starts_with(said), "{error}");
        assert!(!error.contains("invalid option"), "{error}");
    }
}
