//! The `score-blocks` binary: each baseline method as a score table, and clear failures.

use std::path::Path;
use std::process::{Command, Output};

use layerprune_tables::{
    read_evaluations, read_scores, write_block_stats, write_evaluations, BlockStatRow,
    BlockStatsTable, EvaluationRow, EvaluationTable, Provenance,
};

fn score_blocks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_score-blocks"))
        .args(args)
        .output()
        .expect("the score-blocks binary runs")
}

/// Runs score-blocks, which must succeed.
fn score_blocks_ok(args: &[&str]) {
    let output = score_blocks(args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write_stats(path: &Path, num_blocks: usize, skip: Option<usize>) {
    let rows = (0..num_blocks)
        .filter(|&b| Some(b) != skip)
        .map(|b| {
            let cosine = 0.5 + 0.1 * b as f64;
            BlockStatRow {
                start_block: b as u32,
                run_length: 1,
                mean_cosine: cosine,
                angular_distance: cosine.acos() / std::f64::consts::PI,
            }
        })
        .collect();
    let table = BlockStatsTable {
        num_blocks,
        model_id: "model".into(),
        dataset_id: "data".into(),
        rows,
    };
    write_block_stats(path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
}

fn write_single_removals(path: &Path, num_blocks: usize) {
    write_game_single_removals(path, num_blocks, &[]);
}

/// The single removals of a game whose `fixed` blocks are never removed.
fn write_game_single_removals(path: &Path, num_blocks: usize, fixed: &[usize]) {
    let rows = (0..num_blocks)
        .filter(|b| !fixed.contains(b))
        .map(|b| {
            let nll = 3.0 + (b * 7 % num_blocks) as f64;
            EvaluationRow {
                mask: layerprune_core_mask(num_blocks, b),
                nll,
                ppl: nll.exp(),
                utility: (3.0 - nll).exp(),
                tokens_scored: 10,
                seconds: 0.0,
                window_nlls: None,
            }
        })
        .collect();
    let table = EvaluationTable {
        num_blocks,
        model_id: "model".into(),
        dataset_id: "data".into(),
        fixed_blocks: fixed.to_vec(),
        full_model_nll: Some(3.0),
        complete: true,
        evaluated_on: None,
        rows,
        partial_windows: Vec::new(),
    };
    write_evaluations(path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
}

fn layerprune_core_mask(num_blocks: usize, removed: usize) -> layerprune_core::Mask {
    layerprune_core::Mask::from_removed(num_blocks, &[removed]).unwrap()
}

#[test]
fn every_method_writes_one_score_per_block() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.parquet");
    let evals = dir.path().join("evals.parquet");
    let out = dir.path().join("scores.parquet");
    write_stats(&stats, 5, None);
    write_single_removals(&evals, 5);
    score_blocks_ok(&[
        "--estimator",
        "block-influence",
        "--estimator",
        "angular",
        "--estimator",
        "leave-one-out",
        "--estimator",
        "reverse",
        // The flag's name until 2026-12-04, still accepted.
        "--method",
        "random",
        "--block-stats",
        stats.to_str().unwrap(),
        "--evaluations",
        evals.to_str().unwrap(),
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let table = read_scores(&out).unwrap();
    assert_eq!(table.num_blocks, 5);
    assert_eq!(table.rows.len(), 25);
    let of = |name: &str| -> Vec<(u32, f64, u64)> {
        table
            .rows
            .iter()
            .filter(|r| r.estimator == name)
            .map(|r| (r.block, r.estimate, r.llm_evaluations))
            .collect()
    };
    let influence = of("block-influence");
    assert!((influence[2].1 - 0.3).abs() < 1e-12);
    assert_eq!(influence[0].2, 1);
    assert_eq!(of("angular")[0].2, 1);
    let loo = of("leave-one-out");
    assert_eq!(loo[1].1, 3.0 + 2.0);
    assert_eq!(loo[0].2, 5);
    assert_eq!(of("reverse")[4].1, -4.0);
    assert_eq!(of("random").len(), 5);
}

#[test]
fn fixed_blocks_get_no_score_and_are_recorded_so_selection_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.parquet");
    let evals = dir.path().join("evals.parquet");
    let out = dir.path().join("scores.parquet");
    write_stats(&stats, 5, None);
    // A game with block 0 fixed (sample-masks --fixed 0 --anchors): no row removes block 0.
    write_game_single_removals(&evals, 5, &[0]);
    score_blocks_ok(&[
        "--estimator",
        "leave-one-out",
        "--estimator",
        "block-influence",
        "--block-stats",
        stats.to_str().unwrap(),
        "--evaluations",
        evals.to_str().unwrap(),
        "--fixed",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    let table = read_scores(&out).unwrap();
    // The game's fixed block and the one given, in the table, so apply-prune keeps both.
    assert_eq!(table.fixed_blocks, vec![0, 4]);
    for estimator in ["leave-one-out", "block-influence"] {
        let blocks: Vec<u32> = table
            .rows
            .iter()
            .filter(|r| r.estimator == estimator)
            .map(|r| r.block)
            .collect();
        assert_eq!(blocks, vec![1, 2, 3], "{estimator}");
    }
    // Leave-one-out costs one pass per block it scores (3: blocks 0 and 4 are not players).
    let loo = table.rows.iter().find(|r| r.estimator == "leave-one-out");
    assert_eq!(loo.unwrap().llm_evaluations, 3);
    // A block fixed by --fixed needs no single removal: a table without block 4's scores the
    // others the same.
    let partial = dir.path().join("partial.parquet");
    let mut game = layerprune_tables::read_evaluations(&evals).unwrap();
    game.rows.retain(|row| row.mask.removed_blocks() != [4]);
    write_evaluations(&partial, &game, &Provenance::new("test", "0", Vec::new())).unwrap();
    let partly_out = dir.path().join("partly.parquet");
    score_blocks_ok(&[
        "--estimator",
        "leave-one-out",
        "--evaluations",
        partial.to_str().unwrap(),
        "--fixed",
        "4",
        "--out",
        partly_out.to_str().unwrap(),
    ]);
    let partly = read_scores(&partly_out).unwrap();
    let loo_rows = |t: &layerprune_tables::ScoreTable| -> Vec<(u32, f64)> {
        t.rows
            .iter()
            .filter(|r| r.estimator == "leave-one-out")
            .map(|r| (r.block, r.estimate))
            .collect()
    };
    assert_eq!(loo_rows(&partly), loo_rows(&table));

    // A fixed block outside the model is refused.
    let output = score_blocks(&[
        "--estimator",
        "reverse",
        "--num-blocks",
        "5",
        "--fixed",
        "5",
        "--out",
        dir.path().join("bad.parquet").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "--fixed: fixed block 5 is out of range: a model of 5 blocks has blocks 0 to 4"
        ),
        "{stderr}"
    );
    // --allow-incomplete with no evaluation table to allow would be ignored: refused.
    let output = score_blocks(&[
        "--estimator",
        "reverse",
        "--num-blocks",
        "5",
        "--allow-incomplete",
        "--out",
        dir.path().join("bad.parquet").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--allow-incomplete is for the --evaluations"),
        "{stderr}"
    );
}

/// A single removal that collapsed the model (NLL +∞, as an evaluation table records it) is
/// the most important block by leave-one-out: it scores +∞ (it was refused as "not a finite
/// number", under a message asking for every single removal).
#[test]
fn a_collapsed_single_removal_scores_infinity() {
    let dir = tempfile::tempdir().unwrap();
    let evals = dir.path().join("evals.parquet");
    let out = dir.path().join("scores.parquet");
    write_single_removals(&evals, 4);
    let mut table = read_evaluations(&evals).unwrap();
    let row = &mut table.rows[1];
    assert_eq!(row.mask.removed_blocks(), vec![1]);
    (row.nll, row.ppl, row.utility) = (f64::INFINITY, f64::INFINITY, 0.0);
    write_evaluations(&evals, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
    score_blocks_ok(&[
        "--estimator",
        "leave-one-out",
        "--evaluations",
        evals.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let scores = read_scores(&out).unwrap();
    let estimates: Vec<f64> = scores.rows.iter().map(|r| r.estimate).collect();
    assert_eq!(estimates[1], f64::INFINITY, "{estimates:?}");
    assert!(
        estimates
            .iter()
            .enumerate()
            .all(|(b, e)| b == 1 || e.is_finite()),
        "{estimates:?}"
    );
}

#[test]
fn incomplete_or_mismatched_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.parquet");
    let evals = dir.path().join("evals.parquet");
    let out = dir.path().join("scores.parquet");
    write_stats(&stats, 5, Some(3));
    let run = |args: &[&str], expected: &str| {
        let output = score_blocks(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!out.exists());
    };
    let out_s = out.to_str().unwrap();
    run(
        &[
            "--estimator",
            "angular",
            "--block-stats",
            stats.to_str().unwrap(),
            "--out",
            out_s,
        ],
        "block 3 has no score",
    );
    // A seed without the random scores it seeds would be ignored.
    run(
        &[
            "--estimator",
            "reverse",
            "--num-blocks",
            "6",
            "--seed",
            "3",
            "--out",
            out_s,
        ],
        "--seed seeds the random scores, and --estimator random is not asked for",
    );
    write_single_removals(&evals, 6);
    // Both inputs that disagree are named (the first was "another input").
    run(
        &[
            "--estimator",
            "reverse",
            "--block-stats",
            stats.to_str().unwrap(),
            "--evaluations",
            evals.to_str().unwrap(),
            "--out",
            out_s,
        ],
        &format!(
            "--evaluations {}: the evaluation table is for a model of 6 blocks, but \
             --block-stats {} says 5",
            evals.display(),
            stats.display()
        ),
    );
    run(
        &[
            "--estimator",
            "reverse",
            "--num-blocks",
            "4",
            "--block-stats",
            stats.to_str().unwrap(),
            "--out",
            out_s,
        ],
        "the block statistics table is for a model of 5 blocks, but --num-blocks says 4",
    );
    run(
        &[
            "--estimator",
            "leave-one-out",
            "--num-blocks",
            "4",
            "--out",
            out_s,
        ],
        "--evaluations",
    );
    run(
        &[
            "--estimator",
            "block-influence",
            "--num-blocks",
            "5",
            "--out",
            out_s,
        ],
        "--estimator block-influence needs --block-stats",
    );
    // One model, but statistics and evaluations of two token tables.
    let other_text = dir.path().join("other-text.parquet");
    let mut table = read_evaluations(&evals).unwrap();
    table.num_blocks = 5;
    table.rows.truncate(5);
    for (b, row) in table.rows.iter_mut().enumerate() {
        row.mask = layerprune_core_mask(5, b);
    }
    table.dataset_id = "other text".into();
    write_evaluations(
        &other_text,
        &table,
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    write_stats(&stats, 5, None);
    let both = |extra: &[&str]| -> Output {
        let mut args = vec![
            "--estimator",
            "angular",
            "--estimator",
            "leave-one-out",
            "--block-stats",
            stats.to_str().unwrap(),
            "--evaluations",
            other_text.to_str().unwrap(),
            "--out",
            out_s,
        ];
        args.extend_from_slice(extra);
        score_blocks(&args)
    };
    let output = both(&[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "--evaluations {}: the evaluations were measured on another token table (other \
             text) than --block-stats {} (data); give --allow-mixed-inputs to use them together",
            other_text.display(),
            stats.display()
        )),
        "{stderr}"
    );
    assert!(!out.exists());
    // Told to, it scores them together, says so, and records the block statistics' ids.
    let output = both(&["--allow-mixed-inputs"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("used anyway (--allow-mixed-inputs)"),
        "{stderr}"
    );
    let table = read_scores(&out).unwrap();
    assert_eq!(
        (table.model_id.as_str(), table.dataset_id.as_str()),
        ("model", "data")
    );
    std::fs::remove_file(&out).unwrap();
    // Where only one table is given, it would allow nothing.
    run(
        &[
            "--estimator",
            "angular",
            "--block-stats",
            stats.to_str().unwrap(),
            "--allow-mixed-inputs",
            "--out",
            out_s,
        ],
        "--allow-mixed-inputs is for --block-stats and --evaluations of another model or token \
         table than each other, and this run compares no two tables (only --block-stats is \
         given); leave it out",
    );
}

/// A user's likely slips get a message that says what to give: a method's own table (not the
/// --num-blocks that no table-less run could use instead), the single removals leave-one-out
/// needs, and the kind of table a flag reads.
#[test]
fn slips_are_told_what_to_give() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.parquet");
    let evals = dir.path().join("evals.parquet");
    let out = dir.path().join("scores.parquet");
    let out_s = out.to_str().unwrap();
    write_stats(&stats, 4, None);
    let fails = |args: &[&str], expected: &str, unexpected: Option<&str>| {
        let output = score_blocks(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        if let Some(unexpected) = unexpected {
            assert!(!stderr.contains(unexpected), "{stderr}");
        }
        assert!(!out.exists());
    };
    fails(
        &["--estimator", "angular", "--out", out_s],
        "--estimator angular needs --block-stats",
        Some("--num-blocks"),
    );
    fails(
        &["--estimator", "leave-one-out", "--out", out_s],
        "--estimator leave-one-out needs --evaluations",
        Some("--num-blocks"),
    );
    // Block 2's single removal missing (an evaluation table of other masks).
    write_single_removals(&evals, 4);
    let mut table = read_evaluations(&evals).unwrap();
    table.rows.remove(2);
    write_evaluations(&evals, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
    fails(
        &[
            "--estimator",
            "leave-one-out",
            "--evaluations",
            evals.to_str().unwrap(),
            "--out",
            out_s,
        ],
        "leave-one-out needs the evaluation of every single-block removal (sample-masks --anchors",
        None,
    );
    // Tables given to each other's flags: the message names both kinds, in plain words.
    fails(
        &[
            "--estimator",
            "angular",
            "--block-stats",
            evals.to_str().unwrap(),
            "--out",
            out_s,
        ],
        "holds a table of kind evaluations, where one of kind block_stats was expected",
        None,
    );
}

#[test]
fn a_reader_that_stopped_reading_is_not_an_error() {
    // `score-blocks … | head -0` under `set -o pipefail`: stdout is a pipe nobody reads. The
    // table is written; the summary has nowhere to go, which is no failure (it was a panic,
    // exit 101, with `println!`).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores.parquet");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_score-blocks"))
        .args([
            "--estimator",
            "reverse",
            "--num-blocks",
            "400",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(read_scores(&out).unwrap().rows.len(), 400);
}

/// `--estimator` takes one estimator's name (the score table's `estimator` column) a time, as
/// shapley's and apply-prune's do: the help says `<ESTIMATOR>`, not the field's plural.
#[test]
fn the_help_names_an_estimator_as_the_score_table_does() {
    let output = score_blocks(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--estimator <ESTIMATOR>"), "{help}");
    assert!(!help.contains("<ESTIMATORS>"), "{help}");
}
