//! The stage end to end on a small synthetic game: tables in, score table out.

use layerprune_core::Design;
use std::path::Path;
use std::process::Command;

use layerprune_core::synthetic::PairwiseGame;
use layerprune_core::Game;
use layerprune_shapley::kernelshap::paired_kernel_design_pairs;
use layerprune_shapley::permutation::permutation_design_pairs;
use layerprune_shapley::{rng_from_seed, Players};
use layerprune_surrogate::{fit, FitOptions, SavedSurrogate, SurrogateKind};
use layerprune_tables::{read_scores, write_masks, MaskRow, MaskTable, Provenance};

const BLOCKS: usize = 6;
/// Block 0 is fixed (always kept); players are blocks 1..=5.
const FIXED: [usize; 1] = [0];

fn game() -> PairwiseGame {
    layerprune_tests::six_block_pairwise_game()
}

/// The game's Shapley values over the players, by enumeration.
fn truth(players: &Players) -> Vec<f64> {
    let mut sub = layerprune_shapley::PlayerGame::new(game(), players.clone()).unwrap();
    layerprune_core::synthetic::exact_shapley(&mut sub).unwrap()
}

fn write_inputs(dir: &Path, players: &Players) {
    let n = players.len();
    // Every mask over the players, so the exact estimator and every design can replay.
    let masks = layerprune_tests::write_every_player_mask(
        &dir.join("evals.parquet"),
        &mut game(),
        players,
        1280,
    );
    let provenance = Provenance::new("test", "0", vec![]);

    let mut rows = Vec::new();
    let chains = permutation_design_pairs(n, 2, &mut rng_from_seed(1));
    for chain in 0..chains.orders.len() {
        for (position, mask) in chains.chain_masks(chain).iter().enumerate() {
            rows.push(MaskRow {
                mask: players.lift(mask),
                design: Design::Permutation,
                group_id: Some(chain as i64),
                position: Some(position as u32),
            });
        }
    }
    let pairs = paired_kernel_design_pairs(n, 40, &mut rng_from_seed(2));
    for (p, s) in pairs.coalitions.iter().enumerate() {
        for (position, (mask, design)) in [
            (s.clone(), Design::Stratum),
            (s.complement(), Design::Complement),
        ]
        .into_iter()
        .enumerate()
        {
            rows.push(MaskRow {
                mask: players.lift(&mask),
                design,
                group_id: Some(100 + p as i64),
                position: Some(position as u32),
            });
        }
    }
    let mask_table = MaskTable {
        num_blocks: BLOCKS,
        fixed_blocks: FIXED.to_vec(),
        rows,
    };
    write_masks(&dir.join("masks.parquet"), &mask_table, &provenance).unwrap();

    let targets: Vec<f64> = game().values(&masks).unwrap();
    let fitted = fit(
        SurrogateKind::Quadratic,
        &masks,
        &targets,
        // A light ridge, so that its bias stays inside the 1e-4 the estimates are held to.
        &FitOptions {
            ridge_alpha: 1e-4,
            ..FitOptions::default()
        },
    )
    .unwrap();
    SavedSurrogate::new(fitted, "utility", "PPL(full)/PPL(mask)")
        .with_game(&FIXED, "model", "data")
        .save(&dir.join("surrogate.json"))
        .unwrap();
}

/// A quadratic surrogate's Shapley values are exact: `--samples` and `--seed` given for
/// surrogate-shapley alone would be ignored, so they are refused; with an estimator that
/// samples through the surrogate they are read.
#[test]
fn sampling_settings_a_closed_form_ignores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(["--surrogate", "surrogate.json", "--out", "scores.parquet"])
            .args(["--estimator", "surrogate-shapley"])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&["--allow-incomplete"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--allow-incomplete is for the --evaluations"),
        "{stderr}"
    );
    for flag in ["--samples", "--seed"] {
        let output = run(&[flag, "7"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} accepted");
        assert!(stderr.contains("has a closed form"), "{stderr}");
        assert!(!dir.path().join("scores.parquet").exists());
    }
    let output = run(&[
        "--estimator",
        "banzhaf-marginal",
        "--samples",
        "200",
        "--seed",
        "7",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn scores_every_estimator_from_tables_and_a_surrogate() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    let out = dir.path().join("scores.parquet");
    let status = Command::new(env!("CARGO_BIN_EXE_shapley"))
        .current_dir(dir.path())
        .args(["--evaluations", "evals.parquet", "--masks", "masks.parquet"])
        .args(["--surrogate", "surrogate.json", "--samples", "2000"])
        .args(["--estimator", "exact-shapley"])
        .args(["--estimator", "permutation-shapley"])
        .args(["--estimator", "kernelshap-paired"])
        .args(["--estimator", "regression-adjusted"])
        .args(["--estimator", "regression-adjusted-exp"])
        .args(["--estimator", "regression-adjusted-exp-chains"])
        // An old spelling still works, with a note; the same estimator again runs once.
        .args(["--estimator", "semivalue"])
        .args(["--estimator", "stratified-semivalue"])
        .args(["--estimator", "surrogate-shapley"])
        .args(["--estimator", "stratified-shapley"])
        .args(["--estimator", "regression-adjusted-stratified"])
        .args(["--estimator", "banzhaf-msr"])
        .args(["--estimator", "banzhaf-marginal", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("rank  block"), "{stdout}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains(r#"estimator "semivalue" is now called "stratified-semivalue""#),
        "{stderr}"
    );
    assert!(
        stderr.contains("stratified-semivalue is listed more than once"),
        "{stderr}"
    );
    // Timings and fit diagnostics are information, not warnings (they were logged as WARN on
    // every run of the published estimate); the duplicate is a warning, without a second label.
    let line = |text: &str| {
        stderr
            .lines()
            .find(|line| line.contains(text))
            .unwrap_or_else(|| panic!("no line with {text:?} in {stderr}"))
            .to_string()
    };
    for info in [
        "base masks through the surrogate in",
        "held-out R² of the fold surrogates",
    ] {
        let line = line(info);
        assert!(line.contains("INFO") && !line.contains("WARN"), "{line}");
    }
    let duplicate = line("is listed more than once");
    assert!(
        duplicate.contains("WARN") && !duplicate.contains("warning:"),
        "{duplicate}"
    );

    let scores = read_scores(&out).unwrap();
    // The player set travels with the scores: block 0 is fixed and has no rows.
    assert_eq!(scores.fixed_blocks, FIXED.to_vec());
    let truth = truth(&players);
    let estimators = [
        "exact-shapley",
        "exact-banzhaf",
        "permutation-shapley",
        "kernelshap-paired",
        "regression-adjusted",
        "stratified-semivalue",
        "surrogate-shapley",
        "banzhaf-marginal",
        "stratified-shapley",
        "regression-adjusted-stratified",
        "regression-adjusted-exp",
        "regression-adjusted-exp-chains",
        "banzhaf-msr",
    ];
    for name in estimators {
        let rows: Vec<_> = scores.rows.iter().filter(|r| r.estimator == name).collect();
        assert_eq!(rows.len(), 5, "{name}");
        assert_eq!(
            rows.iter().map(|r| r.block).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        // The game is pairwise: every Shapley estimator recovers it (the surrogate fits it).
        if !name.contains("banzhaf") && !name.contains("exp") && name != "stratified-semivalue" {
            for (row, t) in rows.iter().zip(&truth) {
                assert!(
                    (row.estimate - t).abs() < 1e-4,
                    "{name}: {} vs {t}",
                    row.estimate
                );
            }
        }
    }
    let permutation = scores
        .rows
        .iter()
        .find(|r| r.estimator == "permutation-shapley")
        .unwrap();
    let chains = permutation_design_pairs(5, 2, &mut rng_from_seed(1));
    assert_eq!(permutation.llm_evaluations, chains.queries().len() as u64);
    // The game is pairwise, so every antithetic pair averages to the exact values: the pairs
    // do not spread, and a sample that does not spread says nothing of its error (the pairs of
    // a game with higher-order terms can agree too), so no interval. So too for the
    // quadratic's residuals, which reproduce the game to within its ridge (they spread by
    // 1e-6 of the values and less: `RESIDUAL_RESOLUTION`; they had an interval of that width
    // until 2026-12-07). Where the units spread (the exp-polynomial's residuals, which cannot
    // reproduce a pairwise game), the interval is written.
    assert!(permutation.ci_low.is_none());
    let row_of = |name: &str| scores.rows.iter().find(|r| r.estimator == name).unwrap();
    assert!(row_of("regression-adjusted").ci_low.is_none());
    assert!(row_of("regression-adjusted-exp").ci_low.is_some());
    // The stratified estimators read every evaluated mask over the players.
    let stratified = scores
        .rows
        .iter()
        .find(|r| r.estimator == "regression-adjusted-stratified")
        .unwrap();
    assert_eq!(stratified.llm_evaluations, 1 << 5);
    // Over every coalition (uniform), maximum sample reuse is the exact Banzhaf value.
    let of = |name: &str| -> Vec<f64> {
        scores
            .rows
            .iter()
            .filter(|r| r.estimator == name)
            .map(|r| r.estimate)
            .collect()
    };
    for (msr, exact) in of("banzhaf-msr").iter().zip(of("exact-banzhaf")) {
        assert!((msr - exact).abs() < 1e-12, "{msr} vs {exact}");
    }
}

#[test]
fn missing_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(args)
            .args(["--out", "scores.parquet"])
            .output()
            .unwrap()
    };
    let output = run(&[
        "--evaluations",
        "evals.parquet",
        "--estimator",
        "permutation",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--masks"));
    let output = run(&["--evaluations", "nothere.parquet", "--estimator", "exact"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothere.parquet"));
    assert!(!dir.path().join("scores.parquet").exists());

    // A setting no estimator asked for reads would be ignored: refused, naming who reads it.
    for (flags, expected) in [
        (
            &["--seed", "9"][..],
            "--seed is read only by stratified-semivalue",
        ),
        (&["--samples", "5"][..], "--samples is read only by"),
        (
            &["--strata", "1"][..],
            "--strata is read only by stratified-semivalue",
        ),
    ] {
        let mut args = vec![
            "--evaluations",
            "evals.parquet",
            "--estimator",
            "exact-shapley",
        ];
        args.extend(flags);
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!dir.path().join("scores.parquet").exists());
    }
}

#[test]
fn inputs_of_different_games_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
        .current_dir(dir.path())
        .args(["--evaluations", "evals.parquet", "--masks", "masks.parquet"])
        // The flag's old name, still accepted; the message names it as it is now.
        .args(["--fixed-blocks", "1", "--estimator", "stratified-shapley"])
        .args(["--out", "scores.parquet"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("--fixed [1] is not the game's fixed blocks [0] (recorded in masks.parquet)"),
        "{stderr}"
    );
    assert!(!dir.path().join("scores.parquet").exists());

    // A surrogate fitted on another model's evaluations.
    let mut saved = SavedSurrogate::load(&dir.path().join("surrogate.json")).unwrap();
    saved.model_id = "another-model".into();
    saved.save(&dir.path().join("other.json")).unwrap();
    let mixed = |allow: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shapley"));
        command
            .current_dir(dir.path())
            .args([
                "--evaluations",
                "evals.parquet",
                "--surrogate",
                "other.json",
            ])
            .args([
                "--estimator",
                "surrogate-shapley",
                "--out",
                "scores.parquet",
            ]);
        if allow {
            command.arg("--allow-mixed-inputs");
        }
        command.output().unwrap()
    };
    let output = mixed(false);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another model (another-model)"), "{stderr}");
    assert!(stderr.contains("--allow-mixed-inputs"), "{stderr}");
    assert!(!dir.path().join("scores.parquet").exists());

    // Told to, it uses them together and says so.
    let output = mixed(true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("used anyway (--allow-mixed-inputs)"),
        "{stderr}"
    );
    assert!(dir.path().join("scores.parquet").exists());
}

#[test]
fn progress_comes_as_log_lines_on_stderr_in_json_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    // 150,000 base masks of 5 players: 110 batches of 1,365 through the surrogate, a long loop.
    let run = |rust_log: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_shapley"));
        command
            .current_dir(dir.path())
            .env("LAYERPRUNE_LOG", "json")
            .env_remove("RUST_LOG")
            .args(["--evaluations", "evals.parquet", "--masks", "masks.parquet"])
            .args(["--surrogate", "surrogate.json", "--samples", "150000"])
            .args(["--estimator", "stratified-semivalue"])
            .args(["--estimator", "permutation-shapley"])
            .args(["--out", "scores.parquet"]);
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    };
    let output = run(None);
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let messages = |target: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["target"] == target && e["level"] == "INFO")
            .map(|e| e["fields"]["message"].as_str().unwrap().to_string())
            .collect()
    };
    let progress = messages("layerprune_shapley::progress");
    assert_eq!(progress.len(), 10, "{events:?}");
    assert!(progress
        .iter()
        .all(|m| m.starts_with("stratified-semivalue: ")
            && m.ends_with(" of 150000 base masks valued")));
    assert_eq!(
        progress.last().unwrap(),
        "stratified-semivalue: 150000 of 150000 base masks valued"
    );
    let done = messages("layerprune_shapley::inputs");
    assert_eq!(done.len(), 2, "{events:?}");
    assert!(
        done[0].starts_with("stratified-semivalue: done in ")
            && done[0].ends_with("(1 of 2 estimators)")
    );
    assert!(
        done[1].starts_with("permutation-shapley: done in ")
            && done[1].ends_with("(2 of 2 estimators)")
    );
    // Stdout is the ranked tables whatever the logging.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("rank  block") && !stdout.contains('{'),
        "{stdout}"
    );

    // RUST_LOG=warn keeps the notes and drops the progress.
    let quiet = run(Some("warn"));
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        !stderr.contains("base masks valued") && !stderr.contains("done in"),
        "{stderr}"
    );
    assert_eq!(String::from_utf8_lossy(&quiet.stdout), stdout);
}

#[test]
fn estimates_that_are_not_numbers_are_refused_not_written() {
    // A surrogate whose predictions are finite but whose estimates overflow (coefficients
    // summing to 1.5e307, each prediction finite: the estimator's sums over 2000 samples of
    // marginals that differ by 5e306 are not) gives estimates that are not numbers: the stage
    // fails, naming the estimator, and writes no score table (one of NaN would be refused only
    // by apply-prune). The marginals must differ: the semivalue sums their differences from
    // the first, so those of a linear surrogate, all alike, sum to 0 (since 2026-12-07).
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("surrogate.json")).unwrap()).unwrap();
    let shapley = |surrogate: &str| {
        Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(["--evaluations", "evals.parquet", "--masks", "masks.parquet"])
            .args(["--surrogate", surrogate, "--samples", "2000"])
            .args([
                "--estimator",
                "stratified-semivalue",
                "--out",
                "scores.parquet",
            ])
            .output()
            .unwrap()
    };
    json["parameters"]["intercept"] = 0.0.into();
    json["parameters"]["linear"] = serde_json::json!(vec![1e307 / BLOCKS as f64; BLOCKS]);
    json["parameters"]["pairs"][1][2] = 5e306.into();
    json["parameters"]["pairs"][2][1] = 5e306.into();
    std::fs::write(dir.path().join("large.json"), json.to_string()).unwrap();
    let output = shapley("large.json");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stratified-semivalue: the estimate of block"),
        "{stderr}"
    );
    assert!(!dir.path().join("scores.parquet").exists());

    // Coefficients whose predictions themselves overflow (1e308 each) are refused as the file
    // is loaded, before any estimate.
    json["parameters"]["intercept"] = 1e308.into();
    json["parameters"]["linear"] = serde_json::json!(vec![1e308; BLOCKS]);
    std::fs::write(dir.path().join("huge.json"), json.to_string()).unwrap();
    let output = shapley("huge.json");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("huge.json: damaged surrogate file"),
        "{stderr}"
    );
    assert!(!dir.path().join("scores.parquet").exists());
}

/// banzhaf-msr reads the evaluated masks as a uniform sample: a table of strata 0, 1 and 2
/// only (as the pipeline's published strata leave sizes out) gave a biased estimate with
/// plausible standard errors and exit 0; it is refused, saying which sizes are missing and how
/// to sample a uniform table, and nothing is written. Every mask is read (the other test).
/// `--allow-nonuniform-masks` estimates from such a table all the same (the check is a
/// heuristic, which had no way round), warning that the estimate may be biased and why.
#[test]
fn banzhaf_msr_refuses_a_table_that_is_not_a_uniform_sample() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    let at_most_two_removed: Vec<_> = layerprune_tests::every_mask(players.len())
        .into_iter()
        .filter(|mask| mask.num_kept() >= players.len() - 2)
        .collect();
    layerprune_tests::write_player_masks(
        &dir.path().join("evals.parquet"),
        &mut game(),
        &players,
        &at_most_two_removed,
        64,
    );
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(["--evaluations", "evals.parquet", "--estimator"])
            .args(extra)
            .args(["--out", "scores.parquet"])
            .output()
            .unwrap()
    };
    let output = run(&["banzhaf-msr"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for part in [
        "banzhaf-msr reads the evaluated masks as a uniform sample",
        "no mask removes 3 or 4 of the 5 players, where a uniform sample of 16 masks holds \
         about 7.5",
        "sample-masks --strata 0,1,...,5 --allocation proportional",
        "or --allow-nonuniform-masks estimates from these masks anyway",
    ] {
        assert!(stderr.contains(part), "{stderr}");
    }
    assert!(!dir.path().join("scores.parquet").exists());

    let output = run(&["banzhaf-msr", "--allow-nonuniform-masks"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("WARN")
            && stderr.contains(
                "not a uniform sample of the coalitions, as --allow-nonuniform-masks asks"
            )
            && stderr.contains("no mask removes 3 or 4 of the 5 players")
            && stderr.contains("may be biased"),
        "{stderr}"
    );
    let scores = read_scores(&dir.path().join("scores.parquet")).unwrap();
    assert!(scores.rows.iter().all(|row| row.estimator == "banzhaf-msr"));
    assert_eq!(scores.rows.len(), players.len());

    // Read only by banzhaf-msr: with another estimator it would be ignored, so it is refused.
    std::fs::remove_file(dir.path().join("scores.parquet")).unwrap();
    let output = run(&["stratified-shapley", "--allow-nonuniform-masks"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--allow-nonuniform-masks is read only by banzhaf-msr"),
        "{stderr}"
    );
    assert!(!dir.path().join("scores.parquet").exists());
}

/// `--threads` bounds the estimators' own threads and nothing else: the regression-adjusted
/// estimate from two thirds of the masks of 12 blocks (weighted Gram matrices large enough to
/// be multiplied out on several threads) is the same, bit for bit, on one thread as on two.
#[test]
fn the_same_scores_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let n: usize = 12;
    let pairs: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| match i.abs_diff(j) {
                    0 => 0.0,
                    1 => 0.3,
                    d => 0.02 / d as f64,
                })
                .collect()
        })
        .collect();
    let mut game = PairwiseGame {
        linear: (0..n).map(|i| 0.1 + 0.05 * (i % 5) as f64).collect(),
        pairs,
        base: 0.5,
    };
    // Sizes 2 to 10 sampled (a third of their masks left out), so the surrogate is fitted.
    let masks: Vec<_> = layerprune_tests::every_mask(n)
        .into_iter()
        .enumerate()
        .filter(|(at, mask)| !(2..=10).contains(&mask.num_kept()) || at % 3 != 0)
        .map(|(_, mask)| mask)
        .collect();
    let players = Players::from_blocks(n, (0..n).collect()).unwrap();
    let evaluations = dir.path().join("evals.parquet");
    layerprune_tests::write_player_masks(&evaluations, &mut game, &players, &masks, 1280);
    let scores_on = |threads: &str| {
        let out = dir.path().join(format!("scores-{threads}.parquet"));
        let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(["--evaluations", "evals.parquet"])
            .args(["--estimator", "regression-adjusted-stratified"])
            .args(["--threads", threads, "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        // The surrogate was fitted (every size complete would be the exact values).
        assert!(
            stderr.contains("held-out R²") && !stderr.contains("NaN"),
            "{stderr}"
        );
        read_scores(&out)
            .unwrap()
            .rows
            .iter()
            .map(|row| (row.block, row.estimate.to_bits()))
            .collect::<Vec<_>>()
    };
    let one = scores_on("1");
    assert_eq!(one.len(), n);
    assert_eq!(one, scores_on("2"));
}

/// `--estimator` takes one estimator's name (the score table's `estimator` column) a time, as
/// score-blocks' and apply-prune's do: the help says `<ESTIMATOR>`, not the field's plural.
#[test]
fn the_help_names_an_estimator_as_the_score_table_does() {
    let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--estimator <ESTIMATOR>"), "{help}");
    assert!(!help.contains("<ESTIMATORS>"), "{help}");
}

/// `--strata` is read as sample-masks reads it (one parser, `layerprune_sampling::parse_stratum`):
/// a negative stratum was clap's "invalid digit found in string", or an unexpected argument.
#[test]
fn a_stratum_that_is_not_a_count_of_removed_blocks_is_refused_as_sample_masks_refuses_it() {
    for strata in [["--strata=-1"].as_slice(), ["--strata", "-1"].as_slice()] {
        let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
            .args(strata)
            .args(["--evaluations", "e.parquet", "--out", "o.parquet"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("\"-1\" is not a stratum"), "{stderr}");
    }
}

/// Where the sample is too thin for every (size, player) subpopulation to have a held-out mask
/// in some fold, regression-adjusted stratified's estimates carry the surrogate's bias there:
/// said as a warning (it was information, easy to miss beside the timings), with how many
/// subpopulations and that the standard errors include an estimate of that bias (until
/// 2026-12-06 they left it out, and the warning said to read them as lower bounds). A dense
/// sample says nothing of it.
#[test]
fn a_sample_too_thin_for_the_corrections_warns_of_the_surrogate_bias() {
    let dir = tempfile::tempdir().unwrap();
    let n: usize = 12;
    let mut game = PairwiseGame {
        linear: (0..n).map(|i| 0.1 + 0.05 * (i % 5) as f64).collect(),
        pairs: (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| if i.abs_diff(j) == 1 { 0.2 } else { 0.0 })
                    .collect()
            })
            .collect(),
        base: 0.5,
    };
    let players = Players::from_blocks(n, (0..n).collect()).unwrap();
    let mut warning_of = |keep_one_in: u64, name: &str| {
        let masks: Vec<_> = layerprune_tests::every_mask(n)
            .into_iter()
            .enumerate()
            // One in `keep_one_in` of sizes 2 to 10, by a hash of the place: by the place
            // itself (`at % 2`) it would pick masks by their first player's bit.
            .filter(|(at, mask)| {
                let hashed = (*at as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                !(2..=10).contains(&mask.num_kept()) || hashed.is_multiple_of(keep_one_in)
            })
            .map(|(_, mask)| mask)
            .collect();
        let evaluations = dir.path().join(format!("{name}.parquet"));
        layerprune_tests::write_player_masks(&evaluations, &mut game, &players, &masks, 1280);
        let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .arg("--evaluations")
            .arg(&evaluations)
            .args(["--estimator", "regression-adjusted-stratified", "--out"])
            .arg(dir.path().join(format!("scores-{name}.parquet")))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        stderr
            .lines()
            .find(|line| line.contains("have no held-out mask in any fold"))
            .map(str::to_string)
    };
    let thin = warning_of(60, "thin").expect("no warning on a thin sample");
    assert!(thin.contains("WARN"), "{thin}");
    assert!(
        thin.contains("subpopulations")
            && thin.contains("the standard errors include an estimate of that bias"),
        "{thin}"
    );
    assert_eq!(warning_of(2, "dense"), None);
}

/// Writes a mask table of `pairs` complement pairs drawn from the Shapley kernel over the
/// players (block 0 fixed) to `path`.
fn write_pairs(path: &Path, players: &Players, pairs: usize, seed: u64) {
    let design = paired_kernel_design_pairs(players.len(), pairs, &mut rng_from_seed(seed));
    let mut rows = Vec::new();
    for (p, s) in design.coalitions.iter().enumerate() {
        for (position, (mask, design)) in [
            (s.clone(), Design::Stratum),
            (s.complement(), Design::Complement),
        ]
        .into_iter()
        .enumerate()
        {
            rows.push(MaskRow {
                mask: players.lift(&mask),
                design,
                group_id: Some(p as i64),
                position: Some(position as u32),
            });
        }
    }
    let table = MaskTable {
        num_blocks: BLOCKS,
        fixed_blocks: FIXED.to_vec(),
        rows,
    };
    write_masks(path, &table, &Provenance::new("test", "0", vec![])).unwrap();
}

/// `regression-adjusted` and `regression-adjusted-exp` need 2n complement pairs (each half's
/// surrogate two masks per coefficient of its additive part): fewer is refused, naming the
/// minimum and how to sample it, and nothing is written; from 2n to 4n they estimate with a
/// warning that the standard errors were measured to miss more often there. Both log their
/// surrogates' held-out R² (until 2026-12-07 only the chains and stratified variants did, and a
/// table of 12 pairs over 12 players gave estimates 20–60 SE off with no word).
#[test]
fn regression_adjusted_refuses_too_few_pairs_and_warns_of_few() {
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    write_pairs(&dir.path().join("few.parquet"), &players, 9, 3);
    write_pairs(&dir.path().join("thin.parquet"), &players, 12, 3);
    let run = |masks: &str, estimator: &str| {
        Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(["--evaluations", "evals.parquet", "--masks", masks])
            .args(["--estimator", estimator, "--out", "scores.parquet"])
            .output()
            .unwrap()
    };
    for estimator in ["regression-adjusted", "regression-adjusted-exp"] {
        let output = run("few.parquet", estimator);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "--estimator {estimator} needs at least 10 complement pairs over 5 players \
                 and the design has 9"
            )) && stderr.contains(
                "sample-masks --strata 1,2,3,4 --complement-pairs --stratified-masks 10 draws \
                 enough"
            ),
            "{stderr}"
        );
        assert!(!dir.path().join("scores.parquet").exists());

        let output = run("thin.parquet", estimator);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let line = |text: &str| {
            stderr
                .lines()
                .find(|line| line.contains(text))
                .unwrap_or_else(|| panic!("no line with {text:?} in {stderr}"))
                .to_string()
        };
        let warning = line("12 complement pairs over 5 players, fewer than 20");
        assert!(warning.contains("WARN"), "{warning}");
        let r2 = line(&format!("{estimator}: held-out R² of the fold surrogates"));
        assert!(r2.contains("INFO"), "{r2}");
        std::fs::remove_file(dir.path().join("scores.parquet")).unwrap();

        // 40 pairs, 8 per player: the run logs as above, but no warning of a thin design.
        let output = run("masks.parquet", estimator);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{estimator}: held-out R² of the fold surrogates")),
            "{stderr}"
        );
        assert!(
            !stderr
                .lines()
                .any(|line| line.contains("WARN") && line.contains("complement pairs over 5")),
            "{stderr}"
        );
        std::fs::remove_file(dir.path().join("scores.parquet")).unwrap();
    }
}

/// `kernelshap-paired` from fewer than 4n complement pairs: its sandwich SEs rest on m − n + 1
/// residual degrees of freedom and were measured to miss (95 % intervals holding the truth
/// 60–97 % of the time below 2n pairs, 86–94 % from 2n to 3n). Below 2n the scores have no
/// interval, from 2n to 4n a widened one (Student's t), each with a warning that says so and
/// how to sample enough; from 4n pairs neither. Until 2026-12-07 any table of n pairs or more
/// got the plain sandwich SEs without a word.
#[test]
fn kernelshap_withholds_or_widens_its_standard_errors_from_few_pairs_and_says_so() {
    use layerprune_shapley::synthetic::TripleGame;
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    // Third-order terms among the players: the fit is not exact, and its SEs are not 0.
    let mut triple = TripleGame {
        pairwise: game(),
        triples: vec![([1, 2, 3], 0.12), ([2, 4, 5], 0.08)],
    };
    let evaluations = dir.path().join("triple.parquet");
    layerprune_tests::write_every_player_mask(&evaluations, &mut triple, &players, 1280);
    write_pairs(&dir.path().join("few.parquet"), &players, 9, 3);
    write_pairs(&dir.path().join("thin.parquet"), &players, 12, 3);
    write_pairs(&dir.path().join("enough.parquet"), &players, 40, 3);
    let run = |masks: &str| {
        let out = dir.path().join(format!("scores-{masks}"));
        let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .arg("--evaluations")
            .arg(&evaluations)
            .args([
                "--masks",
                masks,
                "--estimator",
                "kernelshap-paired",
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "{stderr}");
        let warnings: Vec<String> = stderr
            .lines()
            .filter(|line| line.contains("WARN") && line.contains("complement pairs over 5"))
            .map(str::to_string)
            .collect();
        (read_scores(&out).unwrap().rows, warnings)
    };

    let (rows, warnings) = run("few.parquet");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(
            "--estimator kernelshap-paired reads 9 complement pairs over 5 players, fewer than \
             20 (4 per player), and fewer than 10 (2 per player): it reports no standard errors"
        ) && warnings[0]
            .contains("sample-masks --strata 1,2,3,4 --complement-pairs --stratified-masks 20"),
        "{}",
        warnings[0]
    );
    assert!(rows
        .iter()
        .all(|r| r.std_error.is_none() && r.ci_low.is_none()));

    let (rows, warnings) = run("thin.parquet");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains(
            "--estimator kernelshap-paired reads 12 complement pairs over 5 players, fewer than \
             20 (4 per player): its standard errors are widened 1.18 times, to Student's t \
             interval of the fit's 8 residual degrees of freedom"
        ),
        "{}",
        warnings[0]
    );
    assert!(rows
        .iter()
        .all(|r| r.std_error.is_some() && r.ci_low.is_some()));

    let (rows, warnings) = run("enough.parquet");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(rows
        .iter()
        .all(|r| r.std_error.is_some() && r.ci_low.is_some()));
}

/// A design mask the evaluation table lacks (the evaluations of another mask table) is refused
/// naming both files; it said only "mask 000100 was not evaluated (it is not in the recorded
/// table)". An evaluation table with no rows is said to have none, naming it, whichever
/// estimator reads it; stratified-shapley said "none keeps 0 of the 5 players".
#[test]
fn a_mask_the_evaluations_lack_and_an_empty_table_name_their_files() {
    use layerprune_tables::{read_complete_evaluations, write_evaluations, Incomplete};
    let dir = tempfile::tempdir().unwrap();
    let players = Players::from_blocks(BLOCKS, (1..BLOCKS).collect()).unwrap();
    write_inputs(dir.path(), &players);
    let mut table =
        read_complete_evaluations(&dir.path().join("evals.parquet"), Incomplete::Refuse).unwrap();
    // A mask of the first chain (its second, one player removed) taken out of the table.
    let chains = permutation_design_pairs(players.len(), 2, &mut rng_from_seed(1));
    let lacking = players.lift(&chains.chain_masks(0)[1]);
    table.rows.retain(|row| row.mask != lacking);
    let provenance = Provenance::new("test", "0", vec![]);
    write_evaluations(&dir.path().join("short.parquet"), &table, &provenance).unwrap();
    table.rows.clear();
    write_evaluations(&dir.path().join("empty.parquet"), &table, &provenance).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_shapley"))
            .current_dir(dir.path())
            .args(args)
            .args(["--out", "scores.parquet"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        assert!(!dir.path().join("scores.parquet").exists());
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = run(&[
        "--evaluations",
        "short.parquet",
        "--masks",
        "masks.parquet",
        "--estimator",
        "permutation-shapley",
    ]);
    assert!(
        stderr.contains(
            "short.parquet does not hold every mask that the design of masks.parquet reads"
        ) && stderr.contains(&format!("mask {lacking} was not evaluated")),
        "{stderr}"
    );
    for (estimator, masks) in [
        ("stratified-shapley", None),
        ("permutation-shapley", Some("masks.parquet")),
        ("kernelshap-paired", Some("masks.parquet")),
    ] {
        let mut args = vec!["--evaluations", "empty.parquet", "--estimator", estimator];
        if let Some(masks) = masks {
            args.extend(["--masks", masks]);
        }
        let stderr = run(&args);
        assert!(
            stderr.contains("empty.parquet: the evaluation table has no rows")
                && !stderr.contains("none keeps"),
            "{estimator}: {stderr}"
        );
    }
}
