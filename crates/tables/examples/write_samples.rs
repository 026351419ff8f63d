//! Writes one small sample file of every table into the folder given as the first argument,
//! for checking that other readers (pyarrow, pandas, DuckDB: tests/python/test_formats.py)
//! read them unchanged.
//!
//! `cargo run -p layerprune-tables --example write_samples -- <folder>`

use layerprune_core::Design;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use layerprune_core::{GameValue, Mask};
use layerprune_tables::input_role;
use layerprune_tables::*;

fn main() -> ExitCode {
    let Some(folder) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write_samples <folder>");
        return ExitCode::from(2);
    };
    match write_samples(&folder) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("write_samples: error: {error}");
            ExitCode::from(2)
        }
    }
}

fn mask(id: &str) -> Result<Mask, Box<dyn std::error::Error>> {
    Ok(id.parse()?)
}

fn write_samples(folder: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(folder)?;
    let num_blocks = 4;
    let tokens = TokenTable::new(
        3,
        vec![vec![1, 2, 3], vec![4, 5, 6]],
        &"ab".repeat(32),
        "sample text",
    );
    let model_id = layerprune_core::sha256_hex(b"sample manifest");
    let provenance = |tool: &str| {
        Provenance::new(
            tool,
            "0.1.0",
            vec![tool.to_string(), "--sample".to_string()],
        )
        .with_seed(7)
        .with_input(input_role::DATASET, &tokens.dataset_id)
    };
    write_tokens(
        &folder.join("tokens.parquet"),
        &tokens,
        &Provenance::new("prepare-tokens", "0.1.0", vec!["prepare-tokens".into()]),
    )?;

    let masks = MaskTable {
        num_blocks,
        fixed_blocks: vec![0],
        rows: vec![
            MaskRow {
                mask: mask("1111")?,
                design: Design::Anchor,
                group_id: None,
                position: None,
            },
            MaskRow {
                mask: mask("1010")?,
                design: Design::Complement,
                group_id: Some(1),
                position: None,
            },
            MaskRow {
                mask: mask("1101")?,
                design: Design::Permutation,
                group_id: Some(2),
                position: Some(3),
            },
        ],
    };
    write_masks(
        &folder.join("masks.parquet"),
        &masks,
        &provenance("sample-masks"),
    )?;

    let full_nll = 2.0_f64;
    let evaluation = |id: &str, nll: f64| -> Result<EvaluationRow, Box<dyn std::error::Error>> {
        Ok(EvaluationRow {
            mask: mask(id)?,
            nll,
            ppl: nll.exp(),
            utility: full_nll.exp() / nll.exp(),
            tokens_scored: 6,
            seconds: 0.25,
            // The two windows of the token table, 3 scored tokens each: their mean is `nll`.
            window_nlls: Some(vec![nll - 0.5, nll + 0.5]),
        })
    };
    let mut evaluations = EvaluationTable::new(num_blocks, &model_id, &tokens.dataset_id);
    evaluations.full_model_nll = Some(full_nll);
    evaluations.complete = true;
    evaluations.append([
        evaluation("1111", full_nll)?,
        evaluation("1010", 3.5)?,
        evaluation("1101", 2.25)?,
    ])?;
    write_evaluations(
        &folder.join("evaluations.parquet"),
        &evaluations,
        &provenance("evaluate").with_input(input_role::MODEL, &model_id),
    )?;

    let block_stats = BlockStatsTable {
        num_blocks,
        model_id: model_id.clone(),
        dataset_id: tokens.dataset_id.clone(),
        rows: (0..num_blocks as u32)
            .map(|block| {
                let mean_cosine = 0.9 - 0.1 * f64::from(block);
                BlockStatRow {
                    start_block: block,
                    run_length: 1,
                    mean_cosine,
                    angular_distance: mean_cosine.acos() / std::f64::consts::PI,
                }
            })
            .collect(),
    };
    write_block_stats(
        &folder.join("block_stats.parquet"),
        &block_stats,
        &provenance("evaluate"),
    )?;

    let metrics = SurrogateMetricsTable {
        rows: vec![
            SurrogateMetricRow {
                kind: "quadratic".into(),
                value: "utility".into(),
                fold: 0,
                r2: 0.8,
                spearman: 0.9,
                mae: 0.05,
                n_train: 8,
                n_test: 2,
            },
            SurrogateMetricRow {
                kind: "quadratic".into(),
                value: "utility".into(),
                fold: -1,
                r2: 0.75,
                spearman: 0.85,
                mae: 0.06,
                n_train: 8,
                n_test: 2,
            },
        ],
    };
    write_surrogate_metrics(
        &folder.join("surrogate_metrics.parquet"),
        &metrics,
        &provenance("fit-surrogate"),
    )?;

    let scores = ScoreTable {
        num_blocks,
        fixed_blocks: Vec::new(),
        model_id: String::new(),
        dataset_id: String::new(),
        rows: (0..num_blocks as u32)
            .map(|block| ScoreRow {
                block,
                estimate: 0.1 * f64::from(block + 1),
                std_error: (block > 0).then_some(0.01),
                ci_low: (block > 0).then_some(0.1 * f64::from(block + 1) - 0.02),
                ci_high: (block > 0).then_some(0.1 * f64::from(block + 1) + 0.02),
                estimator: "permutation-shapley".into(),
                llm_evaluations: 3,
            })
            .collect(),
    };
    write_scores(
        &folder.join("scores.parquet"),
        &scores,
        &provenance("shapley"),
    )?;

    let plans = PlanTable {
        num_blocks,
        value: Some(GameValue::Utility),
        rows: vec![
            // The masks of two evaluated rows ("1101", "1010"): the plans join them on mask_id.
            PlanRow {
                method: "permutation-shapley".into(),
                k: 1,
                removed_blocks: vec![2],
                predicted_value: Some(0.9),
                measured_nll: Some(2.1),
                measured_ppl: Some(2.1_f64.exp()),
                llm_evaluations: 3,
                runner_up: Some(RunnerUp {
                    removed_blocks: vec![1],
                    nll: 2.3,
                    margin_se: Some(0.05),
                }),
                full_model: Some(FullModel {
                    nll: 1.9,
                    nll_increase_se: Some(0.04),
                }),
            },
            PlanRow {
                method: "permutation-shapley".into(),
                k: 2,
                removed_blocks: vec![1, 3],
                predicted_value: None,
                measured_nll: None,
                measured_ppl: None,
                llm_evaluations: 3,
                runner_up: None,
                full_model: None,
            },
        ],
    };
    write_plans(
        &folder.join("plans.parquet"),
        &plans,
        &provenance("apply-prune"),
    )?;

    // A zero-shot task run (evaluate --tasks): one two-choice question under two masks, and
    // the accuracies derived from it.
    let choice =
        |id: &str, choice: u32, loglik: f64| -> Result<TaskChoiceRow, Box<dyn std::error::Error>> {
            Ok(TaskChoiceRow {
                mask: mask(id)?,
                task: "boolq".into(),
                question: 5,
                choice,
                gold: 1,
                loglik,
                continuation_tokens: 2,
                norm_chars: 3,
            })
        };
    let choices = TaskChoiceTable {
        num_blocks,
        model_id: model_id.clone(),
        dataset_id: "sample questions".into(),
        scoring: LEGACY_SCORING.into(),
        evaluated_on: None,
        complete: true,
        rows: vec![
            choice("1111", 0, -2.5)?,
            choice("1111", 1, -1.5)?,
            choice("1010", 0, -1.0)?,
            choice("1010", 1, -3.0)?,
        ],
    };
    write_task_choices(
        &folder.join("task_choices.parquet"),
        &choices,
        &provenance("evaluate"),
    )?;
    let accuracy = |id: &str,
                    acc: f64,
                    gold_nll: f64|
     -> Result<TaskAccuracyRow, Box<dyn std::error::Error>> {
        Ok(TaskAccuracyRow {
            mask: mask(id)?,
            task: "boolq".into(),
            questions: 1,
            acc,
            acc_low: 0.0,
            acc_high: 1.0,
            acc_norm: acc,
            acc_norm_low: 0.0,
            acc_norm_high: 1.0,
            gold_nll,
            gold_tokens: 2,
        })
    };
    let accuracies = TaskAccuracyTable {
        num_blocks,
        model_id,
        dataset_id: "sample questions".into(),
        complete: true,
        rows: vec![accuracy("1111", 1.0, 0.75)?, accuracy("1010", 0.0, 1.5)?],
    };
    write_task_accuracies(
        &folder.join("task_accuracies.parquet"),
        &accuracies,
        &provenance("evaluate"),
    )?;
    Ok(())
}
