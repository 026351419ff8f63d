//! The `apply-prune` binary end to end on the committed tiny model: plans measured on the
//! LLM, the pruned model folder (which must run and give the masked model's NLL), and a clear
//! failure with nothing written for every bad input.
//!
//! Needs ONNX Runtime: set ORT_DYLIB_PATH (the Makefile does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerprune_core::Mask;
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, Manifest, RuntimeOptions};
use layerprune_tables::{
    read_plans, read_tokens, write_plans, write_scores, write_tokens, PlanRow, PlanTable,
    Provenance, ScoreRow, ScoreTable, TokenTable,
};

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

fn apply_prune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apply-prune"))
        .args(args)
        .output()
        .expect("the apply-prune binary runs")
}

fn succeed(args: &[&str]) -> String {
    let output = apply_prune(args);
    assert!(
        output.status.success(),
        "apply-prune {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails, says `expected` on stderr, and writes neither `plan` nor `folder`.
fn fail(args: &[&str], expected: &str, plan: &Path, folder: Option<&Path>) {
    let output = apply_prune(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "apply-prune {args:?} succeeded");
    assert!(stderr.contains(expected), "{args:?}: stderr is {stderr}");
    assert!(!plan.exists(), "{args:?} wrote {}", plan.display());
    if let Some(folder) = folder {
        assert!(!folder.exists(), "{args:?} wrote {}", folder.display());
    }
}

/// The arguments of a run of `method` (one that measures while choosing) on the tiny model and
/// `tokens`, writing `plan`, through `cache` when given.
fn measuring_args(
    method: &str,
    k: &str,
    tokens: &Path,
    plan: &Path,
    cache: Option<&Path>,
) -> Vec<String> {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut args = vec![
        "--method".to_string(),
        method.into(),
        "--k".into(),
        k.into(),
        "--model".into(),
        s(&fixture()),
        "--tokens".into(),
        s(tokens),
        "--out".into(),
        s(plan),
    ];
    if let Some(cache) = cache {
        args.extend(["--cache".to_string(), s(cache)]);
    }
    args
}

/// Deterministic token windows inside the fixture's vocabulary of 320.
fn windows() -> Vec<Vec<u32>> {
    layerprune_tests::fixture_windows(12345, 3, 16)
}

/// A token table of `windows` (16 tokens each) at `path`, with dataset `source`.
fn write_windows(path: &Path, windows: Vec<Vec<u32>>, source: &str) {
    layerprune_tests::write_tiny_tokens(path, windows, source);
}

fn write_inputs(dir: &Path, scores: &[f64]) -> (PathBuf, PathBuf) {
    let tokens = dir.join("tokens.parquet");
    write_windows(&tokens, windows(), "test");
    let scores_path = dir.join("scores.parquet");
    write_score_table(&scores_path, scores);
    (tokens, scores_path)
}

fn write_score_table(path: &Path, scores: &[f64]) {
    let table = ScoreTable {
        num_blocks: scores.len(),
        fixed_blocks: Vec::new(),
        model_id: String::new(),
        dataset_id: String::new(),
        rows: scores
            .iter()
            .enumerate()
            .map(|(block, &estimate)| ScoreRow::point(block, estimate, "test", 17))
            .collect(),
    };
    write_scores(path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
}

fn nll_of(model_dir: &Path, mask: &Mask) -> f64 {
    window_nlls(model_dir, mask).iter().sum::<f64>() / windows().len() as f64
}

/// The mask's mean NLL on each window, straight from the evaluator.
fn window_nlls(model_dir: &Path, mask: &Mask) -> Vec<f64> {
    window_nlls_on(model_dir, mask, &windows())
}

/// The mask's mean NLL on each of `windows`, straight from the evaluator.
fn window_nlls_on(model_dir: &Path, mask: &Mask, windows: &[Vec<u32>]) -> Vec<f64> {
    let model = LayeredModel::open(model_dir, &RuntimeOptions::default()).unwrap();
    let mut evaluator = Evaluator::new(model, windows, EvalOptions::default()).unwrap();
    let result = evaluator
        .evaluate(std::slice::from_ref(mask), &mut |_, _| {})
        .unwrap()
        .remove(0);
    assert_eq!(result.window_nll_sums.len(), windows.len());
    let means = evaluator.window_nlls(&result);
    assert!((means.iter().sum::<f64>() / means.len() as f64 - result.nll()).abs() < 1e-12);
    means
}

#[test]
fn one_shot_plans_are_measured_and_the_pruned_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let pruned = dir.path().join("pruned");
    let model = fixture();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s, scores_s, plan_s, pruned_s) =
        (s(&model), s(&tokens), s(&scores), s(&plan), s(&pruned));
    let args = [
        "--scores",
        &scores_s,
        "--estimator",
        "test",
        "--k",
        "2",
        "--fixed",
        "0",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &plan_s,
        "--pruned-out",
        &pruned_s,
    ];
    succeed(&args);
    let plans = read_plans(&plan).unwrap();
    assert_eq!(plans.num_blocks, 6);
    assert_eq!(plans.rows.len(), 1);
    let row = &plans.rows[0];
    assert_eq!(row.method, "test");
    assert_eq!(row.removed_blocks, vec![2, 4]);
    assert_eq!(row.llm_evaluations, 17 + 1);
    // Only the plan itself was measured: no rival to compare it with.
    assert_eq!(row.runner_up, None);
    let mask = Mask::from_removed(6, &[2, 4]).unwrap();
    let masked_nll = nll_of(&model, &mask);
    let measured = row.measured_nll.unwrap();
    assert!(
        (measured - masked_nll).abs() < 1e-9,
        "{measured} vs {masked_nll}"
    );
    assert!((row.measured_ppl.unwrap() - measured.exp()).abs() < 1e-9);

    // The pruned folder loads (hashes verified) and runs the masked model.
    let manifest = Manifest::load(&pruned).unwrap();
    assert_eq!(manifest.num_blocks, 4);
    assert_eq!(manifest.original_indices(), vec![0, 1, 3, 5]);
    let pruned_from = &manifest.extra["pruned_from"];
    assert_eq!(pruned_from["removed_blocks"], serde_json::json!([2, 4]));
    assert_eq!(pruned_from["method"], "test");
    let original = Manifest::load(&model).unwrap();
    for block in [2, 4] {
        let graph = &original.blocks[block].file;
        assert!(!pruned.join(graph).exists(), "{graph} was copied");
        assert!(!manifest.files.contains_key(graph));
    }
    let weights: Vec<_> = std::fs::read_dir(pruned.join("weights")).unwrap().collect();
    // 6 blocks × 7 weight files + the tied embedding; two blocks' files are gone.
    assert_eq!(weights.len(), 4 * 7 + 1);
    assert!(!pruned.join("reference.json").exists());
    let pruned_nll = nll_of(&pruned, &Mask::full(4));
    assert!(
        (pruned_nll - masked_nll).abs() < 1e-6,
        "{pruned_nll} vs {masked_nll}"
    );

    // An existing folder is refused without --overwrite, and nothing is written.
    std::fs::remove_file(&plan).unwrap();
    fail(&args, "already exists", &plan, None);
    let mut overwrite = args.to_vec();
    overwrite.push("--overwrite");
    let scores_k1 = dir.path().join("scores_k1.parquet");
    write_score_table(&scores_k1, &[0.9, 0.5, 0.6, 0.7, 0.2, 0.8]);
    let scores_k1_s = s(&scores_k1);
    overwrite[1] = &scores_k1_s;
    overwrite[5] = "1";
    succeed(&overwrite);
    let manifest = Manifest::load(&pruned).unwrap();
    assert_eq!(manifest.original_indices(), vec![0, 1, 2, 3, 5]);
    assert!(
        (nll_of(&pruned, &Mask::full(5)) - nll_of(&model, &Mask::from_removed(6, &[4]).unwrap()))
            .abs()
            < 1e-6
    );
}

#[test]
fn bad_inputs_fail_clearly_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let pruned = dir.path().join("pruned");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s, scores_s, plan_s, pruned_s) =
        (s(&fixture()), s(&tokens), s(&scores), s(&plan), s(&pruned));
    let with = |k: &str, scores: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--scores",
            scores,
            "--estimator",
            "test",
            "--k",
            k,
            "--model",
            &model_s,
            "--tokens",
            &tokens_s,
            "--out",
            &plan_s,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run_fail = |args: Vec<String>, expected: &str, folder: Option<&Path>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fail(&args, expected, &plan, folder);
    };
    run_fail(
        with("6", &scores_s, &[]),
        "6 of the 6 blocks are removable (0 fixed) and one must stay, so at most 5 may be removed",
        None,
    );
    // Named as the user's --k, not as the method's failure.
    run_fail(with("6", &scores_s, &[]), "error: --k 6", None);
    run_fail(with("5", &scores_s, &["--fixed", "0"]), "1 fixed", None);
    run_fail(
        with("2", &scores_s, &["--method", "sleb"]),
        "--scores is read only by --method one-shot; --method sleb would ignore it",
        None,
    );
    run_fail(
        with("1,2", &scores_s, &["--pruned-out", &pruned_s]),
        "exactly one --k",
        Some(&pruned),
    );
    // Settings and files only another method reads would be ignored: refused, naming who reads
    // them.
    for (extra, expected) in [
        (
            &["--budget", "5"][..],
            "--budget is for --method adaptive; --method one-shot",
        ),
        (
            &["--candidates", "3"][..],
            "--candidates is for --method search",
        ),
        (
            &["--random-starts", "2"][..],
            "--random-starts is for --method search",
        ),
        (
            &["--permutation-pairs", "9"][..],
            "--permutation-pairs is for --method iterative or --method search",
        ),
        (
            &["--seed", "0"][..],
            "--seed is for --method iterative or --method search",
        ),
        (
            &["--plan-method", "sleb"][..],
            "--plan-method is for --method from-plan",
        ),
        (
            &["--plans", &plan_s][..],
            "--plans is read only by --method from-plan",
        ),
        // A method asked for by its old name: refused naming the one it has now.
        (
            &["--plan-method", "surrogate-search"][..],
            "surrogate-search is now named search",
        ),
        // A cost of the surrogate's, without a surrogate (clap's usage error).
        (
            &["--surrogate-llm-evaluations", "5"][..],
            "--surrogate <SURROGATE>",
        ),
        (
            &["--overwrite"][..],
            "--overwrite replaces an existing --pruned-out folder; it needs --pruned-out",
        ),
    ] {
        run_fail(with("2", &scores_s, extra), expected, None);
    }
    // A surrogate's cost where no plan is chosen through it (the surrogate then only predicts).
    let surrogate = dir.path().join("surrogate.json");
    run_fail(
        with(
            "2",
            &scores_s,
            &[
                "--surrogate",
                &s(&surrogate),
                "--surrogate-llm-evaluations",
                "5",
            ],
        ),
        "--surrogate-llm-evaluations is read only by --method iterative or --method search; \
         --method one-shot would ignore it",
        None,
    );
    // Without the model, the flags of a run of the model would be ignored.
    let unmeasured = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["--scores", &scores_s, "--estimator", "test", "--k", "2"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(["--out".to_string(), plan_s.clone()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    run_fail(
        unmeasured(&["--device", "cuda", "--mask-batch", "4", "--no-verify"]),
        "--device, --mask-batch, --no-verify are for running the model, and no --model is given",
        None,
    );
    run_fail(
        unmeasured(&["--threads", "2"]),
        "--threads is for running the model",
        None,
    );

    let other = dir.path().join("other.parquet");
    write_score_table(&other, &[0.1, 0.2, 0.3, 0.4]);
    run_fail(with("2", &s(&other), &[]), "4 blocks", None);

    let incomplete = dir.path().join("incomplete.parquet");
    let table = ScoreTable {
        num_blocks: 6,
        fixed_blocks: Vec::new(),
        model_id: String::new(),
        dataset_id: String::new(),
        rows: (0..5)
            .map(|block| ScoreRow {
                block,
                estimate: 0.5,
                std_error: None,
                ci_low: None,
                ci_high: None,
                estimator: "test".into(),
                llm_evaluations: 0,
            })
            .collect(),
    };
    // Refused as it is written (and read: crates/tables/tests/invariants.rs), so `inspect`
    // says what apply-prune would.
    let refused = write_scores(
        &incomplete,
        &table,
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("has no score for block 5"), "{refused}");
    run_fail(with("2", &scores_s, &["--estimator", "exact"]), "", None);

    // A pruned folder another run is writing (it holds the folder's lock) is refused at once,
    // so no plan table is paired with another run's folder.
    let running = layerprune_core::FileLock::try_acquire(&pruned).unwrap();
    run_fail(
        with("2", &scores_s, &["--pruned-out", &pruned_s]),
        "in use by another run",
        None,
    );
    assert!(!pruned.exists());
    drop(running);

    std::fs::create_dir(&pruned).unwrap();
    run_fail(
        with("2", &scores_s, &["--pruned-out", &pruned_s]),
        "already exists",
        None,
    );
    assert_eq!(std::fs::read_dir(&pruned).unwrap().count(), 0);
}

/// apply-prune of `k` blocks by the `test` estimator of `scores` on `model` (unverified: the
/// tests below damage its copies), writing the plan `out` and the folder `pruned`.
fn pruning_by_scores(
    scores: &Path,
    tokens: &Path,
    model: &Path,
    k: &str,
    out: &Path,
    pruned: &Path,
    extra: &[&str],
) -> Output {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut args = vec![
        "--scores".to_string(),
        s(scores),
        "--estimator".into(),
        "test".into(),
        "--k".into(),
        k.into(),
        "--model".into(),
        s(model),
        "--tokens".into(),
        s(tokens),
        "--no-verify".into(),
        "--out".into(),
        s(out),
        "--pruned-out".into(),
        s(pruned),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A run replacing a pruned folder that fails after writing its plan (here: a kept file of the
/// model is gone; in use, a full disk) leaves neither of its outputs: the earlier plan is put
/// back as it was (its time too, which Make compares), and where there was none, the plan it
/// wrote is removed, so that a script or rule taking an output that exists for done takes
/// nothing of the failed run; the earlier folder, moved aside before the plan was written, is
/// put back with it (until 2026-12-07 it was deleted first, so a full disk left no model).
#[test]
fn a_failed_replacement_leaves_the_earlier_plan_and_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    // Tokens that record the tokenizer file's byte hash (as tables from before 2026-12-04 do)
    // pass the tokenizer check by the manifest's hash alone, so the run below gets past it and
    // the plan without tokenizer.json and fails only where the folder needs the file.
    let listed = layerprune_tables::read_tokens(&tokens).unwrap();
    let bytes = std::fs::read(fixture().join("tokenizer.json")).unwrap();
    let by_bytes = TokenTable::new(
        16,
        listed.windows,
        &layerprune_core::sha256_hex(&bytes),
        "test",
    );
    write_tokens(
        &tokens,
        &by_bytes,
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    let model = dir.path().join("model");
    layerprune_tests::copy_dir(&fixture(), &model);
    let plan = dir.path().join("plan.parquet");
    let pruned = dir.path().join("pruned");
    let run = |k: &str| {
        pruning_by_scores(
            &scores,
            &tokens,
            &model,
            k,
            &plan,
            &pruned,
            &["--overwrite"],
        )
    };
    assert!(run("2").status.success());
    assert!(pruned.join("manifest.json").exists());

    let earlier = std::fs::read(&plan).unwrap();
    let earlier_time = std::fs::metadata(&plan).unwrap().modified().unwrap();

    // A folder where the file was: there for the folder's check (a listed file that is missing
    // is refused when the model opens, even with --no-verify), unreadable where the pruned
    // folder copies it.
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    std::fs::create_dir(model.join("tokenizer.json")).unwrap();
    let output = run("1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded without tokenizer.json");
    assert!(stderr.contains("tokenizer.json"), "stderr is {stderr}");
    assert!(
        stderr.contains("the earlier plan table is back"),
        "stderr is {stderr}"
    );
    assert_eq!(std::fs::read(&plan).unwrap(), earlier, "not the k = 2 plan");
    assert_eq!(
        std::fs::metadata(&plan).unwrap().modified().unwrap(),
        earlier_time
    );
    assert!(
        stderr.contains("the earlier pruned folder is back"),
        "stderr is {stderr}"
    );
    assert_eq!(
        Manifest::load(&pruned).unwrap().num_blocks,
        4,
        "not the k = 2 folder"
    );
    let hidden = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect()
    };
    assert!(hidden().is_empty(), "left {:?}", hidden());

    // No plan before: the one this run wrote is removed.
    std::fs::remove_file(&plan).unwrap();
    let output = run("1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded without tokenizer.json");
    assert!(
        stderr.contains("the plan table this run wrote is removed"),
        "stderr is {stderr}"
    );
    assert!(!plan.exists(), "the failed run left its plan");
    assert_eq!(Manifest::load(&pruned).unwrap().num_blocks, 4);
    assert!(hidden().is_empty(), "left {:?}", hidden());
}

/// A run replacing the plan and the pruned folder whose plan write itself fails (here: a
/// file-size limit, as a full disk) leaves both as it found them and nothing beside them: the
/// earlier plan was never replaced, and its copy aside (a hard link, which a rename onto the
/// plan left in place until 2026-12-07) is removed; the log says the plan could not be
/// written, not that the folder was not.
#[cfg(target_os = "linux")]
#[test]
fn a_plan_that_cannot_be_written_leaves_the_earlier_plan_and_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let pruned = dir.path().join("pruned");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |k: &str| {
        let mut args = vec![
            "--scores".to_string(),
            s(&scores),
            "--estimator".into(),
            "test".into(),
            "--k".into(),
            k.into(),
            "--model".into(),
            s(&fixture()),
            "--tokens".into(),
            s(&tokens),
            "--out".into(),
            s(&plan),
            "--pruned-out".into(),
            s(&pruned),
            "--overwrite".into(),
        ];
        args.insert(0, env!("CARGO_BIN_EXE_apply-prune").to_string());
        args
    };
    let first = Command::new(env!("CARGO_BIN_EXE_apply-prune"))
        .args(&args("2")[1..])
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let earlier = std::fs::read(&plan).unwrap();
    let earlier_time = std::fs::metadata(&plan).unwrap().modified().unwrap();
    assert!(earlier.len() > 1024, "a plan table fits the limit below");

    // Files of at most one block of 512 bytes (1024 in bash): a plan table is more.
    let output = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 1 && exec \"$@\"")
        .arg("sh")
        .args(args("1"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "wrote a plan over the limit");
    assert!(stderr.contains("File too large"), "stderr is {stderr}");
    assert!(
        stderr.contains(
            "the earlier plan table is left as it was (this run could not write its plan table)"
        ),
        "stderr is {stderr}"
    );
    assert!(
        stderr.contains("the earlier pruned folder is back"),
        "stderr is {stderr}"
    );
    assert_eq!(std::fs::read(&plan).unwrap(), earlier);
    assert_eq!(
        std::fs::metadata(&plan).unwrap().modified().unwrap(),
        earlier_time
    );
    assert_eq!(Manifest::load(&pruned).unwrap().num_blocks, 4);
    let hidden: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left {hidden:?}");
}

/// A cache made read-only (kept as it is) is an input to a run that finds every mask it asks
/// for in it, which leaves it untouched; a run that must add to it is refused when it saves,
/// naming it. Until 2026-12-07 (for a day) the first was refused before any work.
#[cfg(unix)]
#[test]
fn a_read_only_cache_is_read_and_refused_only_where_it_must_be_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.parquet");
    write_windows(&tokens, windows(), "test");
    let cache = dir.path().join("cache.parquet");
    let run = |k: &str, plan: &str| {
        let args = measuring_args("sleb", k, &tokens, &dir.path().join(plan), Some(&cache));
        apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert!(run("1", "first.parquet").status.success());
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o444)).unwrap();
    let kept = std::fs::read(&cache).unwrap();
    let output = run("1", "again.parquet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stderr is {stderr}");
    assert!(stderr.contains("0 run now"), "stderr is {stderr}");
    assert_eq!(std::fs::read(&cache).unwrap(), kept);

    let output = run("2", "more.parquet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "wrote a read-only cache");
    assert!(
        stderr.contains(cache.to_str().unwrap()) && stderr.contains("is read-only (mode 0444)"),
        "stderr is {stderr}"
    );
    assert_eq!(std::fs::read(&cache).unwrap(), kept);
    assert!(!dir.path().join("more.parquet").exists());
}

/// `--pruned-out --overwrite` without `--out` (how Make's `prune`, demo and quantize rules call
/// it) replaces the folder as quantize does: the earlier one stays in place until the new one
/// is renamed over it, so a run that fails writing the folder (here: a kept file of the model
/// is gone; in use, a full disk) leaves the earlier model, and nothing beside it. Until
/// 2026-12-07 the earlier folder was deleted before the write, and such a run left no model.
#[test]
fn a_failed_replacement_of_the_pruned_folder_alone_keeps_the_earlier_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (_, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let model = dir.path().join("model");
    layerprune_tests::copy_dir(&fixture(), &model);
    let pruned = dir.path().join("pruned");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let run = |k: &str| {
        let args = [
            "--scores".to_string(),
            s(&scores),
            "--estimator".into(),
            "test".into(),
            "--k".into(),
            k.into(),
            "--model".into(),
            s(&model),
            "--no-verify".into(),
            "--pruned-out".into(),
            s(&pruned),
            "--overwrite".into(),
        ];
        apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run("2");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let earlier = std::fs::read(pruned.join("manifest.json")).unwrap();

    // A folder where the file was: there for the folder's check (a listed file that is missing
    // is refused when the model opens, even with --no-verify), unreadable where the pruned
    // folder copies it.
    std::fs::remove_file(model.join("tokenizer.json")).unwrap();
    std::fs::create_dir(model.join("tokenizer.json")).unwrap();
    let output = run("1");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "succeeded without tokenizer.json");
    assert!(stderr.contains("tokenizer.json"), "stderr is {stderr}");
    assert_eq!(
        std::fs::read(pruned.join("manifest.json")).unwrap(),
        earlier,
        "not the k = 2 folder"
    );
    assert_eq!(Manifest::load(&pruned).unwrap().num_blocks, 4);
    let hidden: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left {hidden:?}");
}

/// Without --overwrite an existing --pruned-out is never removed, not even one that appears
/// only after the checks of the outputs: here the folder a replacement killed between its two
/// renames had moved aside (under a finished process's id), which the write puts back. The run
/// is refused before it writes the plan, and the folder is there, as it was.
#[cfg(target_os = "linux")]
#[test]
fn a_folder_put_back_is_not_replaced_without_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let pruned = dir.path().join("pruned");
    let run =
        |k: &str, out: &Path| pruning_by_scores(&scores, &tokens, &fixture(), k, out, &pruned, &[]);
    assert!(run("2", &dir.path().join("first.parquet")).status.success());
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::rename(&pruned, dir.path().join(format!(".pruned.old-{dead}-0"))).unwrap();

    let output = run("1", &plan);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "replaced without --overwrite");
    assert!(
        stderr.contains("already exists; pass --overwrite"),
        "stderr is {stderr}"
    );
    assert!(!plan.exists(), "the plan was written before the refusal");
    let manifest = Manifest::load(&pruned).unwrap();
    assert_eq!(manifest.num_blocks, 4, "not the k = 2 folder");
}

/// A request the plans cannot meet is refused before the model runs: no cache written, no
/// plan, no folder (a k too large, adaptive removal's budget too small, several plans for one
/// pruned folder, a fixed block the model lacks: named as such, not as a k).
#[test]
fn requests_the_plans_cannot_meet_are_refused_before_the_model_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let cache = dir.path().join("cache.parquet");
    let folder = dir.path().join("pruned");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for (method, k, extra, expected) in [
        ("adaptive", "6", &[][..], "--k 6"),
        (
            "sleb",
            "2",
            &["--fixed", "9"][..],
            "fixed block 9 is not a block of this 6-block model",
        ),
        (
            "adaptive",
            "2",
            &["--budget", "3"][..],
            "--budget 3: adaptive removal of 2 of 6",
        ),
        (
            "sleb",
            "1,2",
            &["--pruned-out", &s(&folder)][..],
            "it needs exactly one --k (got 2)",
        ),
    ] {
        let mut args = measuring_args(method, k, &tokens, &plan, Some(&cache));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fail(&args, expected, &plan, Some(&folder));
        let stderr = String::from_utf8_lossy(&apply_prune(&args).stderr).into_owned();
        assert!(!stderr.contains("--k 2"), "{args:?}: {stderr}");
        assert!(!cache.exists(), "{args:?} wrote the cache before refusing");
    }
}

/// A race with no fewer first windows than the tokens have measures every candidate whole: the
/// plan is the unraced method's and named so (a plan named raced would claim a race ran).
#[test]
fn a_race_that_cannot_drop_anything_names_its_plan_unraced() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let mut args = measuring_args("sleb", "2", &tokens, &plan, None);
    args.extend(["--race-se", "3", "--race-windows", "3"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    succeed(&args);
    let plans = read_plans(&plan).unwrap();
    assert_eq!(plans.rows[0].method, "sleb");
}

/// `--overwrite` replaces an earlier pruned folder, never a folder of anything else: that is
/// refused before any work, and left as it was.
#[test]
fn overwrite_never_replaces_a_folder_that_holds_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("notes.txt"), b"important").unwrap();
    let output = pruning_by_scores(
        &scores,
        &tokens,
        &fixture(),
        "2",
        &plan,
        &victim,
        &["--overwrite"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "replaced a folder of notes");
    assert!(stderr.contains("replaces only a model folder"), "{stderr}");
    assert!(!plan.exists(), "the plan was written before the refusal");
    assert_eq!(
        std::fs::read(victim.join("notes.txt")).unwrap(),
        b"important"
    );
    // An earlier run's pruned folder is replaced.
    let pruned = dir.path().join("pruned");
    for k in ["2", "1"] {
        let output = pruning_by_scores(
            &scores,
            &tokens,
            &fixture(),
            k,
            &plan,
            &pruned,
            &["--overwrite"],
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(Manifest::load(&pruned).unwrap().num_blocks, 5);
}

#[test]
fn sleb_and_from_plan_work_on_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let plan = dir.path().join("sleb.parquet");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s, plan_s) = (s(&fixture()), s(&tokens), s(&plan));
    succeed(&[
        "--method", "sleb", "--k", "1,2", "--fixed", "0", "--model", &model_s, "--tokens",
        &tokens_s, "--out", &plan_s,
    ]);
    let plans = read_plans(&plan).unwrap();
    assert_eq!(plans.rows.len(), 2);
    assert_eq!(plans.rows[0].llm_evaluations, 5);
    assert_eq!(plans.rows[1].llm_evaluations, 9);
    // Greedy: the k = 2 plan contains the k = 1 plan, and its NLL is the measured one.
    let first = plans.rows[0].removed_blocks[0];
    assert!(plans.rows[1].removed_blocks.contains(&first));
    for row in &plans.rows {
        let removed: Vec<usize> = row.removed_blocks.iter().map(|&b| b as usize).collect();
        let nll = nll_of(&fixture(), &Mask::from_removed(6, &removed).unwrap());
        assert!((row.measured_nll.unwrap() - nll).abs() < 1e-9);
        assert!(!removed.contains(&0));
    }
    // The best single removal by hand, and the runner-up of the k = 1 plan: the second best,
    // with the paired standard error of the margin over the three windows.
    let single = |b: usize| window_nlls(&fixture(), &Mask::from_removed(6, &[b]).unwrap());
    let mean = |w: &[f64]| w.iter().sum::<f64>() / w.len() as f64;
    let mut by_nll: Vec<usize> = (1..6).collect();
    by_nll.sort_by(|&a, &b| mean(&single(a)).total_cmp(&mean(&single(b))));
    assert_eq!(first as usize, by_nll[0]);
    let up = plans.rows[0]
        .runner_up
        .as_ref()
        .expect("SLEB measured every single");
    assert_eq!(up.removed_blocks, vec![by_nll[1] as u32]);
    assert!((up.nll - mean(&single(by_nll[1]))).abs() < 1e-9);
    let differences: Vec<f64> = single(by_nll[1])
        .iter()
        .zip(single(by_nll[0]))
        .map(|(a, b)| a - b)
        .collect();
    let d = mean(&differences);
    let variance = differences.iter().map(|x| (x - d).powi(2)).sum::<f64>() / 2.0;
    let se = up.margin_se.expect("three windows");
    assert!((se - (variance / 3.0).sqrt()).abs() < 1e-9, "{se}");
    assert!(up.nll >= plans.rows[0].measured_nll.unwrap());
    // The k = 2 plan's runner-up is another set of two SLEB's last step measured.
    let up = plans.rows[1].runner_up.as_ref().unwrap();
    assert_eq!(up.removed_blocks.len(), 2);
    assert!(
        up.removed_blocks.contains(&first) && up.removed_blocks != plans.rows[1].removed_blocks
    );
    assert!(up.nll >= plans.rows[1].measured_nll.unwrap());

    // from-plan of the k = 2 plan, with `extra` arguments, written through `out_flag` to a new
    // file named `name`: its rows.
    let from_plan = |name: &str, out_flag: &str, extra: &[&str]| {
        let out = s(&dir.path().join(name));
        let mut args = vec!["--method", "from-plan", "--plans", &plan_s, "--k", "2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[out_flag, &out]);
        succeed(&args);
        read_plans(Path::new(&out)).unwrap().rows
    };
    let replayed = from_plan("again.parquet", "--out", &[]);
    assert_eq!(replayed[0].removed_blocks, plans.rows[1].removed_blocks);
    assert_eq!(replayed[0].method, "sleb");
    // Measuring the plan again (held-out text in practice; here the same tokens, so the same
    // NLL) is not a cost of choosing it: the recorded count is kept.
    let remeasured = &from_plan(
        "remeasured.parquet",
        "--out",
        &["--model", &model_s, "--tokens", &tokens_s],
    )[0];
    assert_eq!(remeasured.llm_evaluations, plans.rows[1].llm_evaluations);
    assert!((remeasured.measured_nll.unwrap() - plans.rows[1].measured_nll.unwrap()).abs() < 1e-9);
    // `--plan`, the output's name before every stage's table output became `--out`, still works.
    assert_eq!(from_plan("old-name.parquet", "--plan", &[]), replayed);

    // Without --k, from-plan takes every plan of the table; one model cannot hold two plans.
    let every = dir.path().join("every.parquet");
    succeed(&[
        "--method",
        "from-plan",
        "--plans",
        &plan_s,
        "--out",
        &s(&every),
    ]);
    assert_eq!(read_plans(&every).unwrap().rows, {
        let mut rows = plans.rows.clone();
        rows.iter_mut().for_each(|row| {
            (row.measured_nll, row.measured_ppl, row.runner_up) = (None, None, None);
            row.full_model = None;
        });
        rows
    });
    let refused = dir.path().join("refused.parquet");
    let folder = dir.path().join("refused-model");
    fail(
        &[
            "--method",
            "from-plan",
            "--plans",
            &plan_s,
            "--model",
            &model_s,
            "--tokens",
            &tokens_s,
            "--out",
            &s(&refused),
            "--pruned-out",
            &s(&folder),
        ],
        "2 plans would be chosen (k = 1, 2); choose one with --k",
        &refused,
        Some(&folder),
    );
}

#[test]
fn adaptive_stays_within_its_budget_and_is_at_least_as_good_as_sleb() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s) = (s(&fixture()), s(&tokens));
    let adaptive = dir.path().join("adaptive.parquet");
    let sleb = dir.path().join("sleb.parquet");
    succeed(&[
        "--method",
        "adaptive",
        "--k",
        "1,2,3",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&adaptive),
    ]);
    succeed(&[
        "--method",
        "sleb",
        "--k",
        "1,2,3",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&sleb),
    ]);
    let adaptive = read_plans(&adaptive).unwrap();
    let sleb = read_plans(&sleb).unwrap();
    // A plan for each k asked for, in both (the pairs below stop at the shorter table).
    let ks =
        |plans: &layerprune_tables::PlanTable| plans.rows.iter().map(|r| r.k).collect::<Vec<_>>();
    assert_eq!((ks(&adaptive), ks(&sleb)), (vec![1, 2, 3], vec![1, 2, 3]));
    for (a, b) in adaptive.rows.iter().zip(&sleb.rows) {
        assert_eq!(a.method, "adaptive");
        assert_eq!(a.k, b.k);
        // The default budget is SLEB's cost at the same k (SLEB's count is cumulative).
        assert!(a.llm_evaluations <= b.llm_evaluations, "{a:?} {b:?}");
        assert!(
            a.measured_nll.unwrap() <= b.measured_nll.unwrap() + 1e-12,
            "{a:?} {b:?}"
        );
        let removed: Vec<usize> = a.removed_blocks.iter().map(|&b| b as usize).collect();
        let nll = nll_of(&fixture(), &Mask::from_removed(6, &removed).unwrap());
        assert!((a.measured_nll.unwrap() - nll).abs() < 1e-9);
        // Its runner-up is a measured set of as many blocks, its NLL the measured one.
        let up = a.runner_up.as_ref().expect("adaptive measures rivals");
        assert_eq!(up.removed_blocks.len(), removed.len());
        assert_ne!(up.removed_blocks, a.removed_blocks);
        let rival: Vec<usize> = up.removed_blocks.iter().map(|&b| b as usize).collect();
        let rival_nll = nll_of(&fixture(), &Mask::from_removed(6, &rival).unwrap());
        assert!((up.nll - rival_nll).abs() < 1e-9);
        assert!(up.margin_se.is_some_and(|se| se > 0.0));
    }
    // Too small a budget is refused with the least one named.
    let out = apply_prune(&[
        "--method",
        "adaptive",
        "--k",
        "3",
        "--budget",
        "4",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&dir.path().join("small.parquet")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 9"));
}

#[test]
fn a_perplexity_ratio_chooses_k_and_writes_that_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s) = (s(&fixture()), s(&tokens));
    let full_nll = nll_of(&fixture(), &Mask::full(6));
    let ratio_of = |removed: &[u32]| {
        let removed: Vec<usize> = removed.iter().map(|&b| b as usize).collect();
        (nll_of(&fixture(), &Mask::from_removed(6, &removed).unwrap()) - full_nll).exp()
    };
    let sleb_plans = dir.path().join("sleb.parquet");
    succeed(&[
        "--method",
        "sleb",
        "--k",
        "1,2,3,4",
        "--fixed",
        "0",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&sleb_plans),
    ]);
    let sleb_plans = read_plans(&sleb_plans).unwrap();

    // Any loss allowed: SLEB's plan at the most blocks that may go (4 of the 5 removable), for
    // SLEB's cost plus the full model.
    let plan = dir.path().join("any.parquet");
    succeed(&[
        "--method",
        "sleb",
        "--max-ppl-ratio",
        "1e6",
        "--fixed",
        "0",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&plan),
    ]);
    let any = read_plans(&plan).unwrap();
    assert_eq!(any.rows.len(), 1);
    assert_eq!(
        any.rows[0].removed_blocks,
        sleb_plans.rows[3].removed_blocks
    );
    assert_eq!(any.rows[0].llm_evaluations, 5 + 4 + 3 + 2 + 1);

    // The fixture's weights are random: removing most of its blocks lowers its perplexity, so
    // any ratio above 1 lets the most blocks go, and both methods must say so correctly. With
    // blocks 0, 1, 2 and 5 fixed, only block 3 (ratio ~1.10) and block 4 (~1.001) may go, one
    // at a time.
    for method in ["sleb", "adaptive"] {
        for (fixed, ratio, k) in [("0", "1.05", 4), ("0,1,2,5", "1.05", 1)] {
            let plan = dir.path().join(format!("{method}-{k}.parquet"));
            let pruned = dir.path().join(format!("{method}-{k}-pruned"));
            succeed(&[
                "--method",
                method,
                "--max-ppl-ratio",
                ratio,
                "--fixed",
                fixed,
                "--model",
                &model_s,
                "--tokens",
                &tokens_s,
                "--out",
                &s(&plan),
                "--pruned-out",
                &s(&pruned),
            ]);
            let row = &read_plans(&plan).unwrap().rows[0];
            assert_eq!(
                (row.method.as_str(), row.k as usize),
                (method, k),
                "{row:?}"
            );
            let within = ratio_of(&row.removed_blocks);
            assert!(within <= 1.05, "{method}: {within}");
            assert!((row.measured_nll.unwrap() - full_nll - within.ln()).abs() < 1e-9);
            assert_eq!(Manifest::load(&pruned).unwrap().num_blocks, 6 - k);
        }
    }
    let single = ratio_of(&[4]);
    assert!(single > 1.0001 && single < 1.05, "block 4 alone: {single}");

    // Refused, with nothing written: --k and a ratio together, a ratio of 1 or below, a method
    // that does not measure its plans, and a ratio no single removal meets.
    let plan = dir.path().join("refused.parquet");
    let plan_s = s(&plan);
    let with = |extra: &[&str]| {
        let mut args = vec!["--model", &model_s, "--tokens", &tokens_s, "--out", &plan_s];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let cases: [(&[&str], &str); 4] = [
        (
            &["--method", "sleb", "--k", "2", "--max-ppl-ratio", "2"],
            "cannot be used with",
        ),
        (
            &["--method", "sleb", "--max-ppl-ratio", "1"],
            "not a perplexity ratio",
        ),
        (
            &["--method", "angular-run", "--max-ppl-ratio", "2"],
            "adaptive or sleb",
        ),
        (
            &[
                "--method",
                "adaptive",
                "--max-ppl-ratio",
                "1.0001",
                "--fixed",
                "0,1,2,5",
            ],
            "no block can be removed within",
        ),
    ];
    for (extra, expected) in cases {
        let args = with(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fail(&args, expected, &plan, None);
    }
}

/// `--max-ppl-ratio-se z`: the plan's NLL increase plus z standard errors (paired over the
/// calibration windows) must be within the ratio. On the tiny model with blocks 0, 1, 2 and 5
/// fixed only block 4 can go within 1.05; a margin below its slack keeps it, one above removes
/// it, and the plan table's standard error is the one the windows give.
#[test]
fn a_ratio_with_a_margin_of_standard_errors_is_met_beyond_it() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s) = (s(&fixture()), s(&tokens));
    let full = window_nlls(&fixture(), &Mask::full(6));
    let alone = window_nlls(&fixture(), &Mask::from_removed(6, &[4]).unwrap());
    let increases: Vec<f64> = alone.iter().zip(&full).map(|(a, f)| a - f).collect();
    let n = increases.len() as f64;
    let loss = increases.iter().sum::<f64>() / n;
    let se = (increases.iter().map(|d| (d - loss).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt();
    let slack = (1.05f64.ln() - loss) / se;
    assert!(loss > 0.0 && se > 0.0 && slack > 0.0, "{loss} {se}");

    let plan = dir.path().join("plan.parquet");
    let run = |method: &str, z: f64| {
        let z = format!("{z}");
        vec![
            "--method",
            method,
            "--max-ppl-ratio",
            "1.05",
            "--max-ppl-ratio-se",
            &z,
            "--fixed",
            "0,1,2,5",
            "--model",
            &model_s,
            "--tokens",
            &tokens_s,
            "--out",
            &s(&plan),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    for method in ["sleb", "adaptive"] {
        let args = run(method, slack / 2.0);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        succeed(&args);
        let row = read_plans(&plan).unwrap().rows.remove(0);
        assert_eq!(row.removed_blocks, vec![4], "{row:?}");
        let recorded = row.full_model.as_ref().unwrap().nll_increase_se.unwrap();
        assert!((recorded - se).abs() < 1e-9, "{recorded} against {se}");
        std::fs::remove_file(&plan).unwrap();

        let args = run(method, slack * 2.0);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fail(
            &args,
            "no block can be removed within a perplexity ratio of 1.05 by",
            &plan,
            None,
        );
        // Named by the setting the model cannot meet, not as a bad option of the method.
        let stderr = String::from_utf8_lossy(&apply_prune(&args).stderr).into_owned();
        assert!(stderr.contains("error: --max-ppl-ratio 1.05"), "{stderr}");
        assert!(!stderr.contains("invalid option"), "{stderr}");
    }

    // A margin without a ratio, or not a number of standard errors: refused, nothing written.
    let base = [
        "--method",
        "sleb",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&plan),
    ];
    for (extra, expected) in [
        (
            vec!["--k", "1", "--max-ppl-ratio-se", "2"],
            "--max-ppl-ratio",
        ),
        (
            vec!["--max-ppl-ratio", "1.5", "--max-ppl-ratio-se=-1"],
            "not a number of standard errors",
        ),
        (
            vec!["--max-ppl-ratio", "1.5", "--max-ppl-ratio-se", "NaN"],
            "not a number of standard errors",
        ),
    ] {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra);
        fail(&args, expected, &plan, None);
    }
}

#[test]
fn surrogate_methods_and_angular_run_write_predicted_and_measured_plans() {
    use layerprune_surrogate::{fit, FitOptions, SavedSurrogate, SurrogateKind};
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // A quadratic surrogate of every mask's measured −NLL on the tiny model.
    let masks: Vec<Mask> = (0..64u32)
        .map(|bits| Mask::from_kept((0..6).map(|i| bits >> i & 1 == 1).collect()))
        .collect();
    let model = LayeredModel::open(&fixture(), &RuntimeOptions::default()).unwrap();
    let mut evaluator = Evaluator::new(model, &windows(), EvalOptions::default()).unwrap();
    let values: Vec<f64> = evaluator
        .evaluate(&masks, &mut |_, _| {})
        .unwrap()
        .iter()
        .map(|r| -r.nll())
        .collect();
    let fitted = fit(
        SurrogateKind::Quadratic,
        &masks,
        &values,
        &FitOptions::default(),
    )
    .unwrap();
    let surrogate = dir.path().join("surrogate.json");
    // Fitted on evaluations of its own token table (an id of its own: what iterative and search
    // record as chosen on).
    SavedSurrogate::new(fitted, "neg-nll", "−NLL, nats per token")
        .with_game(&[], "", "5a")
        .save(&surrogate)
        .unwrap();
    let tokens_id = read_tokens(&tokens).unwrap().dataset_id;
    let (model_s, tokens_s, surrogate_s) = (s(&fixture()), s(&tokens), s(&surrogate));
    let plan = dir.path().join("plan.parquet");
    let plan_s = s(&plan);
    let common = [
        "--surrogate",
        &surrogate_s,
        "--surrogate-llm-evaluations",
        "64",
        "--fixed",
        "0",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &plan_s,
    ];
    let mut iterative = vec!["--method", "iterative", "--k", "1,3"];
    iterative.extend(common);
    // The quadratic surrogate's Shapley values are exact: sampling settings would be ignored.
    for moot in [["--permutation-pairs", "4"], ["--seed", "9"]] {
        let mut args = iterative.clone();
        args.extend(moot);
        fail(&args, "has a closed form (quadratic)", &plan, None);
    }
    succeed(&iterative);
    let plans = read_plans(&plan).unwrap();
    assert_eq!(plans.rows.len(), 2);
    // Chosen through the surrogate alone, measured on the tokens.
    assert_eq!(
        chosen_and_measured_on(&plan),
        (Some("5a".to_string()), Some(tokens_id.clone()))
    );
    // The table says which value the predictions are in, and a copy of its plans keeps it.
    assert_eq!(plans.value, Some(layerprune_core::GameValue::NegNll));
    let copied = dir.path().join("copied.parquet");
    succeed(&[
        "--method",
        "from-plan",
        "--plans",
        &plan_s,
        "--k",
        "1",
        "--out",
        &s(&copied),
    ]);
    let copied = read_plans(&copied).unwrap();
    assert_eq!(copied.value, plans.value);
    assert_eq!(
        copied.rows[0].predicted_value,
        plans.rows[0].predicted_value
    );
    assert!(plans.rows[1]
        .removed_blocks
        .iter()
        .any(|b| plans.rows[0].removed_blocks == [*b]));
    for row in &plans.rows {
        assert_eq!(row.method, "iterative");
        assert_eq!(row.llm_evaluations, 64 + 1);
        let predicted = row.predicted_value.unwrap();
        // The surrogate interpolates 64 points with 22 parameters: close, not exact.
        assert!(
            (predicted + row.measured_nll.unwrap()).abs() < 0.5,
            "{row:?}"
        );
    }

    let mut search = vec!["--method", "search", "--k", "2", "--candidates", "3"];
    search.extend(common);
    // The flag's name until 2026-12-04, still accepted.
    let flag = search.len() - common.len() + 2;
    search[flag] = "--surrogate-evaluations";
    // Six blocks: every pair is predicted, no random start is drawn; a seed is said to play
    // no part (a pipeline passes one whatever the ks), and the plan is the same.
    let mut seeded = search.clone();
    seeded.extend(["--seed", "5"]);
    let output = apply_prune(&seeded);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("play no part"), "{stderr}");
    let seeded_row = read_plans(&plan).unwrap().rows.remove(0);
    succeed(&search);
    let row = read_plans(&plan).unwrap().rows.remove(0);
    assert_eq!(row.removed_blocks, seeded_row.removed_blocks);
    // The search keeps the best of its candidates measured on the tokens: chosen on both,
    // ascending.
    let both = if tokens_id.as_str() < "5a" {
        format!("{tokens_id},5a")
    } else {
        format!("5a,{tokens_id}")
    };
    assert_eq!(
        chosen_and_measured_on(&plan),
        (Some(both), Some(tokens_id.clone()))
    );
    assert_eq!(row.method, "search");
    assert_eq!(row.llm_evaluations, 64 + 3);
    // The kept plan is no worse on the LLM than the surrogate's favourite.
    let best_by_hand = (1..6)
        .flat_map(|a| (a + 1..6).map(move |b| vec![a, b]))
        .map(|removed| {
            -values[masks
                .iter()
                .position(|m| *m == Mask::from_removed(6, &removed).unwrap())
                .unwrap()]
        })
        .fold(f64::INFINITY, f64::min);
    assert!(row.measured_nll.unwrap() >= best_by_hand - 1e-9);
    assert!(!row.removed_blocks.contains(&0));

    let stats = dir.path().join("stats.parquet");
    let stats_table = layerprune_tables::BlockStatsTable {
        num_blocks: 6,
        model_id: "m".into(),
        dataset_id: "d".into(),
        rows: (0..5)
            .map(|start| layerprune_tables::BlockStatRow {
                start_block: start,
                run_length: 2,
                mean_cosine: 0.0,
                angular_distance: if start == 3 { 0.1 } else { 0.4 },
            })
            .collect(),
    };
    layerprune_tables::write_block_stats(
        &stats,
        &stats_table,
        &Provenance::new("t", "0", Vec::new()),
    )
    .unwrap();
    succeed(&[
        "--method",
        "angular-run",
        "--block-stats",
        &s(&stats),
        "--k",
        "2",
        "--out",
        &plan_s,
    ]);
    let angular = read_plans(&plan).unwrap();
    assert_eq!(angular.value, None, "nothing predicted");
    let row = &angular.rows[0];
    assert_eq!(row.removed_blocks, vec![3, 4]);
    assert_eq!(row.measured_nll, None);
    assert_eq!(row.llm_evaluations, 1);
    assert_eq!(chosen_and_measured_on(&plan), (Some("d".to_string()), None));
}

/// The `shapley` stage run with block 0 fixed writes scores for the players only and records
/// the fixed block; a one-shot plan from that table keeps block 0 without being told again.
#[test]
fn scores_of_a_game_with_fixed_blocks_plan_without_repeating_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scores.parquet");
    let table = ScoreTable {
        num_blocks: 6,
        fixed_blocks: vec![0],
        model_id: String::new(),
        dataset_id: String::new(),
        rows: (1..6u32)
            .map(|block| ScoreRow::point(block as usize, f64::from(block), "test", 9))
            .collect(),
    };
    write_scores(&path, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
    let plan = dir.path().join("plan.parquet");
    let args = [
        "--scores",
        path.to_str().unwrap(),
        "--estimator",
        "test",
        "--k",
        "2,5",
        "--out",
        plan.to_str().unwrap(),
    ];
    // k = 5 would remove the fixed block: refused, naming the player count.
    let output = apply_prune(&args);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 fixed"), "{stderr}");
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "2,5" { "2" } else { a })
        .collect();
    succeed(&args);
    let plans = read_plans(&plan).unwrap();
    assert_eq!(plans.rows[0].removed_blocks, vec![1, 2]);
}

/// Tokens of another model's vocabulary are refused before anything runs, naming the file.
#[test]
fn tokens_of_another_vocabulary_are_refused_naming_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("foreign.parquet");
    let mut foreign = windows();
    foreign[2][7] = 5000;
    write_windows(&tokens, foreign, "test");
    let plan = dir.path().join("plan.parquet");
    let args = measuring_args("sleb", "1", &tokens, &plan, None);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fail(&args, "foreign.parquet with", &plan, None);
    fail(
        &args,
        "token id 5000, outside the model's vocabulary of 320",
        &plan,
        None,
    );
    // Ids inside the vocabulary, cut by another tokenizer (as the table records it).
    let mut table = layerprune_tables::read_tokens(&tokens).unwrap();
    table.windows = windows();
    table.dataset_id = layerprune_tables::TokenTable::new(16, windows(), "", "").dataset_id;
    table.tokenizer_sha256 = "1".repeat(64);
    layerprune_tables::write_tokens(&tokens, &table, &Provenance::new("test", "0", Vec::new()))
        .unwrap();
    fail(&args, "made with another tokenizer", &plan, None);
}

/// Windows longer than the model takes (its manifest's `context_length`) are refused before
/// the model is opened, in evaluate's words: the token table with the model, then the cause,
/// never the table's source description as a cause of its own.
#[test]
fn windows_longer_than_the_models_context_are_refused_in_one_line_of_context() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    layerprune_tests::copy_tiny_model_with_manifest(&model, |manifest| {
        manifest["context_length"] = 8.into();
    });
    let tokens = dir.path().join("long.parquet");
    write_windows(&tokens, windows(), "a source description");
    let plan = dir.path().join("plan.parquet");
    let mut args = measuring_args("sleb", "1", &tokens, &plan, None);
    args[5] = model.to_str().unwrap().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = apply_prune(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let model_s = model.display().to_string();
    assert!(
        stderr.contains(&format!(
            "apply-prune: error: --tokens {} with {model_s}\n  caused by: {model_s} was made \
             for sequences of at most 8 tokens",
            tokens.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("caused by:").count(), 1, "{stderr}");
    assert!(!stderr.contains("a source description"), "{stderr}");
    // Refused before the model's graphs were opened.
    assert!(!stderr.contains("opened the"), "{stderr}");
    assert!(!plan.exists());
}

/// Scores measured on another model are refused before anything runs.
#[test]
fn scores_of_another_model_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let mut table = layerprune_tables::read_scores(&scores).unwrap();
    table.model_id = "another-model".into();
    write_scores(&scores, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
    let plan = dir.path().join("plan.parquet");
    let model = fixture();
    let mut args = vec![
        "--scores",
        scores.to_str().unwrap(),
        "--estimator",
        "test",
        "--k",
        "2",
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--out",
        plan.to_str().unwrap(),
    ];
    fail(
        &args,
        "measured on another model (another-model)",
        &plan,
        None,
    );
    // Told to, it plans from them (on the scores' order).
    args.push("--allow-mixed-inputs");
    succeed(&args);
    assert_eq!(read_plans(&plan).unwrap().rows[0].removed_blocks.len(), 2);

    // Chosen without a model, a plan table records the model its inputs are of, and
    // from-plan refuses to apply it to another model unless told to.
    let chosen = dir.path().join("chosen.parquet");
    succeed(&[
        "--scores",
        scores.to_str().unwrap(),
        "--estimator",
        "test",
        "--k",
        "2",
        "--out",
        chosen.to_str().unwrap(),
    ]);
    let recorded = layerprune_tables::read_provenance(&chosen).unwrap().inputs;
    assert_eq!(
        recorded.get("model").map(String::as_str),
        Some("another-model")
    );
    let measured = dir.path().join("measured.parquet");
    let mut from_plan = vec![
        "--method",
        "from-plan",
        "--plans",
        chosen.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--tokens",
        tokens.to_str().unwrap(),
        "--out",
        measured.to_str().unwrap(),
    ];
    fail(
        &from_plan,
        "the plans were chosen on another model (another-model)",
        &measured,
        None,
    );
    from_plan.push("--allow-mixed-inputs");
    succeed(&from_plan);
}

#[test]
fn a_cache_of_evaluations_makes_reruns_and_other_ks_cheap_and_changes_no_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let cache = dir.path().join("cache.parquet");
    let run =
        |k: &str, name: &str, cache: Option<&Path>| -> (layerprune_tables::PlanTable, String) {
            let plan = dir.path().join(name);
            let args = measuring_args("adaptive", k, &tokens, &plan, cache);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = apply_prune(&args);
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{args:?}: {stderr}");
            (read_plans(&plan).unwrap(), stderr)
        };

    // A cached run chooses and reports exactly what an uncached one does, and keeps every mask
    // it asked for with its windows.
    let (uncached, _) = run("2", "uncached-2.parquet", None);
    let (cached, _) = run("2", "cached-2.parquet", Some(&cache));
    assert_eq!(cached.rows, uncached.rows);
    assert!(cached.rows[0].runner_up.is_some());
    let kept = layerprune_tables::read_evaluations(&cache).unwrap();
    // Beside the plan, the full model on the same windows: the cache's own row of it.
    let full = cached.rows[0]
        .full_model
        .as_ref()
        .expect("the full model is measured first");
    let full_row = kept
        .rows
        .iter()
        .find(|row| row.mask == Mask::full(6))
        .unwrap();
    assert!((full.nll - full_row.nll).abs() < 1e-9);
    // Removing blocks of a random-weight model may lower the NLL as well as raise it: the
    // windows disagree, so the increase has a standard error.
    assert!(full.nll_increase_se.unwrap() > 0.0);
    assert!(kept.rows.len() as u64 >= cached.rows[0].llm_evaluations);
    for row in &kept.rows {
        let windows = row
            .window_nlls
            .as_ref()
            .expect("the cache keeps each window's NLL");
        assert_eq!(windows.len(), 3);
        let mean = windows.iter().sum::<f64>() / 3.0;
        assert!((mean - row.nll).abs() < 1e-9, "{}", row.mask);
    }

    // Again: nothing is run and the cache is not rewritten.
    let bytes = std::fs::read(&cache).unwrap();
    let (again, log) = run("2", "again-2.parquet", Some(&cache));
    assert_eq!(again.rows, uncached.rows);
    assert!(log.contains(", 0 run now"), "{log}");
    assert_eq!(std::fs::read(&cache).unwrap(), bytes);

    // Another k reuses what k = 2 measured (the singles at least) and adds the rest.
    let (uncached3, _) = run("3", "uncached-3.parquet", None);
    let (cached3, log) = run("3", "cached-3.parquet", Some(&cache));
    assert_eq!(cached3.rows, uncached3.rows);
    let singles_and_full = 7;
    let from_cache: usize = log
        .split(" of the ")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no cache count in {log}"));
    assert!(from_cache >= singles_and_full, "{log}");
    let grown = layerprune_tables::read_evaluations(&cache).unwrap();
    assert!(grown.rows.len() > kept.rows.len());
    assert_eq!(grown.rows[..kept.rows.len()], kept.rows[..]);

    // A run killed part-way left a shorter cache: the next run completes it to the same plan.
    let mut partial = grown.clone();
    partial.rows.truncate(5);
    let provenance = Provenance::new("test", "0", Vec::new());
    layerprune_tables::write_evaluations(&cache, &partial, &provenance).unwrap();
    let (resumed, _) = run("3", "resumed-3.parquet", Some(&cache));
    assert_eq!(resumed.rows, uncached3.rows);

    // An `evaluate` run's finished table given as the cache: what this run measures is added,
    // and the table is a cache from then on (not complete, so a surrogate or an estimator does
    // not take the added masks for its sample), with a warning that says so.
    let finished_path = dir.path().join("finished.parquet");
    let finished = layerprune_tables::EvaluationTable {
        complete: true,
        ..partial.clone()
    };
    let evaluate = Provenance::new("evaluate", "0", Vec::new());
    layerprune_tables::write_evaluations(&finished_path, &finished, &evaluate).unwrap();
    let (from_finished, log) = run("3", "finished-3.parquet", Some(&finished_path));
    assert_eq!(from_finished.rows, uncached3.rows);
    assert!(log.contains("finished evaluation table"), "{log}");
    let after = layerprune_tables::read_evaluations(&finished_path).unwrap();
    assert!(!after.complete);
    assert!(after.rows.len() > finished.rows.len());

    // A cache of another token table is refused, naming it, and left as it was.
    let other_tokens = dir.path().join("other-tokens.parquet");
    write_windows(
        &other_tokens,
        layerprune_tests::fixture_windows(7, 3, 16),
        "other",
    );
    let bytes = std::fs::read(&cache).unwrap();
    let refused = dir.path().join("refused.parquet");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = measuring_args("adaptive", "2", &other_tokens, &refused, Some(&cache));
    let out = apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&s(&cache)) && stderr.contains("dataset"),
        "{stderr}"
    );
    assert!(!refused.exists());
    assert_eq!(std::fs::read(&cache).unwrap(), bytes);

    // The cache is never one of the inputs, and needs the model it keeps evaluations of.
    let args = measuring_args("adaptive", "2", &tokens, &refused, Some(&tokens));
    fail(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "--cache",
        &refused,
        None,
    );
    let scores = dir.path().join("scores.parquet");
    fail(
        &[
            "--scores",
            &s(&scores),
            "--k",
            "2",
            "--cache",
            &s(&cache),
            "--out",
            &s(&refused),
        ],
        "--cache",
        &refused,
        None,
    );
}

/// A `--cache` whose lock cannot be taken is no fault of the file, which holds what earlier
/// runs measured: the refusal names the lock and never advises removing the cache, as it does
/// for a file this run cannot use.
#[test]
fn a_cache_whose_lock_cannot_be_taken_is_never_to_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cache = dir.path().join("cache.parquet");
    std::fs::write(&cache, b"not a table").unwrap();
    // Something no run made where the lock file goes: the lock cannot be created.
    let lock = dir.path().join(".cache.parquet.lock");
    std::fs::create_dir(&lock).unwrap();
    let plan = dir.path().join("plan.parquet");
    let args = measuring_args("adaptive", "2", &tokens, &plan, Some(&cache));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = apply_prune(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--cache {}: its lock ({}) could not be taken",
            s(&cache),
            s(&lock)
        )) && stderr.contains("in the way"),
        "{stderr}"
    );
    assert!(!stderr.contains("remove the file"), "{stderr}");
    assert!(lock.is_dir() && !plan.exists());
    assert_eq!(std::fs::read(&cache).unwrap(), b"not a table");

    // With the lock taken, the same file is one this run cannot use: that may be removed.
    std::fs::remove_dir(&lock).unwrap();
    let out = apply_prune(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--cache {}: not an evaluation cache this run can use; give another --cache, or \
             remove the file to measure afresh",
            s(&cache)
        )),
        "{stderr}"
    );
    assert!(!plan.exists());
}

/// Two runs through one cache (`make -j` choosing two plans): the second waits while the first
/// holds it, says so, and then reads what the first measured instead of rewriting the file
/// without it.
#[test]
fn a_run_waits_for_another_using_its_cache_then_reads_what_it_measured() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    // The first run's cache, complete.
    let measured = dir.path().join("measured.parquet");
    let first_plan = dir.path().join("first.parquet");
    let first = measuring_args("sleb", "2", &tokens, &first_plan, Some(&measured));
    succeed(&first.iter().map(String::as_str).collect::<Vec<_>>());

    // The first run is still going: it holds the cache while the second starts.
    let cache = dir.path().join("cache.parquet");
    let running = layerprune_core::FileLock::try_acquire(&cache).unwrap();
    let second_plan = dir.path().join("second.parquet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_apply-prune"))
        .args(measuring_args(
            "sleb",
            "2",
            &tokens,
            &second_plan,
            Some(&cache),
        ))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            lines_tx.send(line.unwrap()).unwrap();
        }
    });
    let mut log = Vec::new();
    loop {
        let line = lines_rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("no word of waiting: {log:?}"));
        let waiting = line.contains("another run is using this cache");
        log.push(line);
        if waiting {
            break;
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "it did not wait");
    // The first run's last write, then its end.
    std::fs::copy(&measured, &cache).unwrap();
    drop(running);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    log.extend(lines_rx.try_iter());
    assert!(status.success(), "{log:?}");
    let log = log.join("\n");
    assert!(log.contains(", 0 run now"), "{log}");
    assert_eq!(
        read_plans(&second_plan).unwrap().rows,
        read_plans(&first_plan).unwrap().rows
    );
}

#[test]
fn raced_sleb_charges_the_windows_it_measured_and_keeps_whole_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    // Eight windows: a race has rounds of 3, 6 and 8 windows.
    let tokens = dir.path().join("tokens.parquet");
    let windows = layerprune_tests::fixture_windows(777, 8, 16);
    write_windows(&tokens, windows.clone(), "test");
    // A method's plans for k = 1, 2, 3 and what it said on stderr.
    let run_method = |method: &str, name: &str, extra: &[&str]| {
        let plan = dir.path().join(format!("{name}.parquet"));
        let cache = dir.path().join(format!("{name}-cache.parquet"));
        let mut args = measuring_args(method, "1,2,3", &tokens, &plan, Some(&cache));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = apply_prune(&args);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        (read_plans(&plan).unwrap(), stderr)
    };
    let run = |name: &str, extra: &[&str]| run_method("sleb", name, extra).0;
    // A plan's NLL is the model's on its mask over the 8 windows.
    let assert_measured = |row: &layerprune_tables::PlanRow| {
        let removed: Vec<usize> = row.removed_blocks.iter().map(|&b| b as usize).collect();
        let mask = Mask::from_removed(6, &removed).unwrap();
        let nll = window_nlls_on(&fixture(), &mask, &windows)
            .iter()
            .sum::<f64>()
            / 8.0;
        assert!(
            (row.measured_nll.unwrap() - nll).abs() < 1e-6,
            "{row:?}: {nll}"
        );
    };
    let rows = |name: &str| {
        layerprune_tables::read_evaluations(&dir.path().join(format!("{name}-cache.parquet")))
            .unwrap()
            .rows
    };
    let plain = run("plain", &[]);
    // A plan for each k asked for: every table below is compared with it pair by pair, which
    // stops at the shorter one, so each must have as many.
    assert_eq!(plain.rows.len(), 3);
    // The tiny random model's removals nearly all lie within its windows' spread: at the
    // default three standard errors the race drops little and keeps SLEB's plans.
    let patient = run("patient", &["--race-se", "3"]);
    assert_eq!(patient.rows.len(), plain.rows.len());
    for (p, r) in plain.rows.iter().zip(&patient.rows) {
        assert_eq!(
            (r.method.as_str(), p.method.as_str()),
            ("sleb-raced", "sleb")
        );
        assert_eq!(r.removed_blocks, p.removed_blocks, "k = {}", r.k);
        assert!((r.measured_nll.unwrap() - p.measured_nll.unwrap()).abs() < 1e-6);
        assert!(r.llm_evaluations <= p.llm_evaluations, "{r:?} {p:?}");
    }
    assert!(rows("patient").len() <= rows("plain").len());
    // A quarter of a standard error drops candidates: charged less, fewer rows kept, each with
    // every window; every plan is a measured mask whose NLL is the model's.
    let hasty = run("hasty", &["--race-se", "0.25", "--race-windows", "2"]);
    assert_eq!(hasty.rows.len(), plain.rows.len());
    let mut cheaper = false;
    for (p, r) in plain.rows.iter().zip(&hasty.rows) {
        assert_eq!(r.method, "sleb-raced");
        assert!(r.llm_evaluations <= p.llm_evaluations, "{r:?} {p:?}");
        cheaper |= r.llm_evaluations < p.llm_evaluations;
        assert_measured(r);
    }
    assert!(cheaper, "the race dropped nothing: {:?}", hasty.rows);
    assert!(rows("hasty").len() < rows("plain").len());
    assert!(rows("hasty")
        .iter()
        .all(|row| row.window_nlls.as_ref().is_some_and(|w| w.len() == 8)));
    // Adaptive removal raced the same way: its own plan name, within its budget, each plan a
    // measured mask (the model's NLL), some masks measured on a few windows only and only whole
    // rows in the cache.
    let budget = ["--budget", "12"];
    let (adaptive, _) = run_method("adaptive", "adaptive", &budget);
    let hasty_race = ["--race-se", "0.25", "--race-windows", "2"];
    let (raced, stderr) = run_method(
        "adaptive",
        "adaptive-raced",
        &[&budget[..], &hasty_race].concat(),
    );
    assert!(
        stderr.contains("measured on some windows only"),
        "the race dropped nothing: {stderr}"
    );
    assert!(
        stderr.contains("windows of masks measured in part"),
        "{stderr}"
    );
    assert_eq!(adaptive.rows.len(), 3);
    assert_eq!(raced.rows.len(), adaptive.rows.len());
    for (a, r) in adaptive.rows.iter().zip(&raced.rows) {
        assert_eq!(
            (a.method.as_str(), r.method.as_str()),
            ("adaptive", "adaptive-raced")
        );
        assert!(r.llm_evaluations <= 12, "{r:?}");
        assert_measured(r);
    }
    assert!(rows("adaptive-raced")
        .iter()
        .all(|row| row.window_nlls.as_ref().is_some_and(|w| w.len() == 8)));
    // The windows of the masks it dropped are kept with the cache: run again through it, the
    // same plans, nothing run, the cache not rewritten.
    let cache = dir.path().join("adaptive-raced-cache.parquet");
    let partial = layerprune_tables::read_evaluations(&cache)
        .unwrap()
        .partial_windows;
    assert!(!partial.is_empty());
    let before = std::fs::read(&cache).unwrap();
    let (again, stderr) = run_method(
        "adaptive",
        "adaptive-raced",
        &[&budget[..], &hasty_race].concat(),
    );
    assert!(stderr.contains(", 0 run now"), "{stderr}");
    assert_eq!(std::fs::read(&cache).unwrap(), before);
    assert_eq!(again.rows.len(), raced.rows.len());
    for (a, r) in again.rows.iter().zip(&raced.rows) {
        assert_eq!(
            (&a.removed_blocks, a.llm_evaluations, a.measured_nll),
            (&r.removed_blocks, r.llm_evaluations, r.measured_nll)
        );
    }
    // `evaluate`'s runtime flags, the same here: a race's rounds with four masks a block call
    // and the states bound through ONNX Runtime's IoBinding are the same arithmetic on the CPU
    // (bit for bit), so the same race, plans and charges.
    let (batched, _) = run_method(
        "adaptive",
        "adaptive-raced-batched",
        &[
            &budget[..],
            &hasty_race,
            &["--mask-batch", "4", "--io-binding", "on"],
        ]
        .concat(),
    );
    assert_eq!(batched.rows.len(), raced.rows.len());
    for (b, r) in batched.rows.iter().zip(&raced.rows) {
        assert_eq!(
            (&b.removed_blocks, b.llm_evaluations, b.measured_nll),
            (&r.removed_blocks, r.llm_evaluations, r.measured_nll)
        );
    }

    // Refusals, naming the flag; nothing written.
    let plan = dir.path().join("refused.parquet");
    for (extra, expected) in [
        (
            &["--cuda-graphs", "on"][..],
            "--cuda-graphs on: CUDA graphs are a setting",
        ),
        (
            &["--overlap", "on"][..],
            "--overlap on: overlapping the host",
        ),
        (&["--tf32", "on"][..], "--tf32 on: TF32 is a setting"),
        (&["--race-se", "0"][..], "positive number"),
        (&["--race-se=-1"][..], "positive number"),
        (&["--race-windows", "2"][..], "needs --race-se"),
        (
            &["--race-se", "3", "--race-windows", "1"][..],
            "--race-windows",
        ),
    ] {
        let mut args = measuring_args("sleb", "2", &tokens, &plan, None);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fail(&args, expected, &plan, None);
    }
    let mut args = measuring_args("iterative", "2", &tokens, &plan, None);
    args.extend(["--race-se".to_string(), "3".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fail(&args, "needs --method sleb or adaptive", &plan, None);
}

/// A plan is reproducible: the same command gives the same plan table, bit for bit (blocks,
/// NLLs, evaluations charged, runner-up, full model), whatever the number of threads ONNX
/// Runtime runs on and however many masks go through a block together; so does a race, whose
/// drops follow from the NLLs (a quarter of a standard error here, so it drops some).
#[test]
fn the_same_run_chooses_the_same_plans_on_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.parquet");
    write_windows(
        &tokens,
        layerprune_tests::fixture_windows(777, 8, 16),
        "test",
    );
    let run = |name: &str, extra: &[&str]| {
        let plan = dir.path().join(format!("{name}.parquet"));
        let mut args = measuring_args("adaptive", "1,2,3", &tokens, &plan, None);
        args.extend(
            ["--budget", "12", "--race-se", "0.25", "--race-windows", "2"]
                .iter()
                .chain(extra)
                .map(|a| a.to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        succeed(&args);
        read_plans(&plan).unwrap()
    };
    let one = run("one-thread", &["--threads", "1"]);
    assert_eq!(one.rows.len(), 3);
    assert!(one.rows.iter().all(|row| row.runner_up.is_some()));
    for (name, extra) in [
        ("two-threads", &["--threads", "2"][..]),
        ("batched", &["--threads", "2", "--mask-batch", "4"][..]),
        ("again", &["--threads", "1"][..]),
    ] {
        assert_eq!(run(name, extra), one, "{name}");
    }
}

/// A k listed twice is one plan: a plan table has one plan per method and k, so that
/// `--method from-plan` can take it.
#[test]
fn a_k_listed_twice_is_one_plan() {
    let dir = tempfile::tempdir().unwrap();
    let (_, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let (scores_s, plan_s) = (scores.to_str().unwrap(), plan.to_str().unwrap());
    succeed(&[
        "--scores",
        scores_s,
        "--estimator",
        "test",
        "--k",
        "2,3,2",
        "--out",
        plan_s,
    ]);
    let ks: Vec<usize> = read_plans(&plan)
        .unwrap()
        .rows
        .iter()
        .map(|r| r.removed_blocks.len())
        .collect();
    assert_eq!(ks, vec![2, 3]);
}

/// `--scores` without `--estimator` (the one-shot default method): the message lists the
/// estimators the table holds, one of which is the value to give (it said only "needs
/// --estimator").
#[test]
fn a_score_table_without_estimator_names_its_estimators() {
    let dir = tempfile::tempdir().unwrap();
    let (_, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let plan = dir.path().join("plan.parquet");
    let scores_s = scores.to_str().unwrap();
    fail(
        &[
            "--scores",
            scores_s,
            "--k",
            "2",
            "--out",
            plan.to_str().unwrap(),
        ],
        &format!(
            "--method one-shot needs --estimator: which of the estimators in --scores {scores_s} \
             to rank the blocks by (test)"
        ),
        &plan,
        None,
    );
}

/// apply-prune with `env` set (e.g. ORT_DYLIB_PATH, to show the model never runs).
fn apply_prune_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apply-prune"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the apply-prune binary runs")
}

/// A pipeline writes the pruned folder from the plan as chosen (from-plan without --tokens)
/// in a step of its own, so that a new evaluation text, which only measures the plan again,
/// leaves the folder alone: such a run opens no model (here ONNX Runtime cannot even be
/// loaded), writes the very folder a measuring run writes, and refuses what it cannot write
/// before writing anything.
#[test]
fn a_recorded_plan_is_written_as_a_pruned_folder_without_running_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let chosen = dir.path().join("chosen.parquet");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s, chosen_s) = (s(&fixture()), s(&tokens), s(&chosen));
    succeed(&[
        "--method", "sleb", "--k", "1,2", "--model", &model_s, "--tokens", &tokens_s, "--out",
        &chosen_s,
    ]);
    let recorded = read_plans(&chosen).unwrap();

    let measured_folder = dir.path().join("measured-pruned");
    let measured = dir.path().join("measured.parquet");
    succeed(&[
        "--method",
        "from-plan",
        "--plans",
        &chosen_s,
        "--plan-method",
        "sleb",
        "--k",
        "2",
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&measured),
        "--pruned-out",
        &s(&measured_folder),
    ]);

    // No ONNX Runtime to load: a run that opened the model would fail.
    let no_runtime = [("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")];
    let folder = dir.path().join("pruned");
    let from_plan = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--method",
            "from-plan",
            "--plans",
            &chosen_s,
            "--plan-method",
            "sleb",
            "--k",
            "2",
            "--model",
            &model_s,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        apply_prune_with(&args, &no_runtime)
    };
    let output = run(&from_plan(&["--pruned-out", &s(&folder), "--threads", "1"]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The same folder, file for file, as the run that measured the plan wrote: no plan table
    // beside it.
    let relative = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        layerprune_tests::snapshot(root)
            .into_iter()
            .map(|(path, bytes)| (path.strip_prefix(root).unwrap().to_path_buf(), bytes))
            .collect()
    };
    assert_eq!(relative(&folder), relative(&measured_folder));
    let manifest = Manifest::load(&folder).unwrap();
    let removed: Vec<usize> = recorded.rows[1]
        .removed_blocks
        .iter()
        .map(|&b| b as usize)
        .collect();
    assert_eq!(manifest.num_blocks, 6 - removed.len());
    assert!(manifest
        .blocks
        .iter()
        .all(|block| !removed.contains(&block.original_index)));
    let mut entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            "chosen.parquet",
            "measured-pruned",
            "measured.parquet",
            "pruned",
            "scores.parquet",
            "tokens.parquet"
        ]
    );

    // With --out, the plan as recorded (not measured here), for the model pruned.
    let out = dir.path().join("as-chosen.parquet");
    let again = dir.path().join("again");
    let output = run(&from_plan(&["--out", &s(&out), "--pruned-out", &s(&again)]));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = read_plans(&out).unwrap();
    let mut expected = recorded.rows[1].clone();
    (
        expected.measured_nll,
        expected.measured_ppl,
        expected.runner_up,
    ) = (None, None, None);
    expected.full_model = None;
    assert_eq!(written.rows, vec![expected]);
    let model_id = layerprune_model::model_id(&fixture()).unwrap();
    let inputs = layerprune_tables::read_input_ids(&out).unwrap();
    assert_eq!(inputs.get("model"), Some(&model_id));
    // No token table: `dataset` is what a table's plans were measured on, and these were not
    // (the earlier table's, where it was measured, may be held-out text rather than what its
    // plans were chosen on).
    assert_eq!(inputs.get("dataset"), None);
    assert_eq!(relative(&again), relative(&folder));

    // Refused before anything is written, with the reason.
    let refused_plan = dir.path().join("refused.parquet");
    let refused = dir.path().join("refused-pruned");
    let refused_s = s(&refused);
    let check_refused = |args: Vec<String>, expected: &str| {
        let output = run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: stderr is {stderr}");
        assert!(
            !refused.exists() && !refused_plan.exists(),
            "{args:?} wrote"
        );
    };
    let pruned_out = ["--pruned-out", refused_s.as_str()];
    let with = |flag: &str, value: &str, extra: &[&str]| -> Vec<String> {
        let mut args = from_plan(&[]);
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = value.to_string();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    check_refused(
        with("--plan-method", "adaptive", &pruned_out),
        "no plan removes 2 blocks with method adaptive (the methods of those that do: sleb)",
    );
    check_refused(
        with("--k", "3", &pruned_out),
        "no plan removes 3 blocks with method sleb",
    );
    check_refused(
        with("--k", "1,2", &pruned_out),
        "it needs exactly one --k (got 2)",
    );
    let kept = recorded.rows[1].removed_blocks[0].to_string();
    check_refused(
        with("--k", "2", &[&pruned_out[..], &["--fixed", &kept]].concat()),
        &format!("removes fixed block {kept}"),
    );
    check_refused(
        with("--k", "2", &[&pruned_out[..], &["--fixed", "9"]].concat()),
        "fixed block 9 is not a block of this 6-block model",
    );
    let other_model = dir.path().join("five-blocks");
    layerprune_tests::copy_tiny_model_with_manifest(&other_model, |manifest| {
        manifest["num_blocks"] = 5.into();
        manifest["blocks"].as_array_mut().unwrap().pop();
    });
    check_refused(
        with("--model", &s(&other_model), &pruned_out),
        "the plan table is for a model of 6 blocks",
    );
    // A setting of a run of the model that would not run.
    check_refused(
        from_plan(&[&pruned_out[..], &["--device", "cuda", "--mask-batch", "2"]].concat()),
        "--device, --mask-batch are for running the model, and no --tokens is given",
    );
    check_refused(
        from_plan(
            &[
                &pruned_out[..],
                &["--cache", &s(&dir.path().join("c.parquet"))],
            ]
            .concat(),
        ),
        "--cache keeps the evaluations of --model on --tokens",
    );
    // The model given for nothing, and a measurement that would not be kept.
    check_refused(
        from_plan(&["--out", &s(&refused_plan)]),
        "--model without --tokens would not be used",
    );
    check_refused(
        from_plan(&[&pruned_out[..], &["--tokens", &tokens_s]].concat()),
        "only --out keeps the measurement",
    );
    let output = apply_prune(&["--method", "from-plan", "--plans", &chosen_s, "--k", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--out"),
        "{stderr}"
    );
    // Measuring too, a plan the table lacks is refused before the model is opened (no ONNX
    // Runtime here) or its cache written.
    let cache = dir.path().join("cache.parquet");
    check_refused(
        with(
            "--plan-method",
            "adaptive",
            &[
                "--tokens",
                &tokens_s,
                "--cache",
                &s(&cache),
                "--out",
                &s(&refused_plan),
            ],
        ),
        "no plan removes 2 blocks with method adaptive",
    );
    assert!(!cache.exists());
}

/// The fixed blocks and each k are checked against the model's manifest before its files are
/// hashed or its graphs opened: a request that cannot be met is named as such, not hidden
/// behind a damaged file of the model (nor does it wait for the hashing of a large one).
#[test]
fn fixed_blocks_and_ks_are_refused_before_the_model_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, scores) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let model = dir.path().join("model");
    layerprune_tests::copy_tiny_model(&model);
    // A block graph whose bytes no longer match the manifest's sha256.
    let block = model.join("block_003.onnx");
    let mut bytes = std::fs::read(&block).unwrap();
    bytes.push(0);
    std::fs::write(&block, bytes).unwrap();
    let plan = dir.path().join("plan.parquet");
    let folder = dir.path().join("pruned");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s, scores_s, plan_s, folder_s) =
        (s(&model), s(&tokens), s(&scores), s(&plan), s(&folder));
    for (extra, expected) in [
        (
            &["--method", "sleb", "--k", "2", "--fixed", "9"][..],
            "fixed block 9 is not a block of this 6-block model",
        ),
        (&["--method", "adaptive", "--k", "6"][..], "--k 6"),
        (
            &[
                "--scores",
                &scores_s,
                "--estimator",
                "test",
                "--k",
                "5",
                "--fixed",
                "0",
            ][..],
            "1 fixed",
        ),
    ] {
        for pruned in [false, true] {
            let mut args: Vec<&str> = extra.to_vec();
            args.extend(["--model", &model_s, "--tokens", &tokens_s, "--out", &plan_s]);
            if pruned {
                args.extend(["--pruned-out", &folder_s]);
            }
            fail(&args, expected, &plan, Some(&folder));
            let stderr = String::from_utf8_lossy(&apply_prune(&args).stderr).into_owned();
            assert!(!stderr.contains("sha256"), "{args:?}: {stderr}");
        }
    }
    // Once the request is sound, the damaged file is found.
    fail(
        &[
            "--method", "sleb", "--k", "2", "--model", &model_s, "--tokens", &tokens_s, "--out",
            &plan_s,
        ],
        "block_003.onnx",
        &plan,
        None,
    );
}

/// A cache this run cannot use is refused as the cache: the error names --cache and the file,
/// says what differs (device and settings, model, token table, number of blocks, or not a
/// table at all) and what to do, and blames neither --tokens nor a model or token table that
/// are the same; nothing is written and the cache is left as it was.
#[test]
fn a_cache_it_cannot_use_is_refused_naming_the_cache_and_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cache = dir.path().join("cache.parquet");
    let measured = dir.path().join("measured.parquet");
    let args = measuring_args("sleb", "1", &tokens, &measured, Some(&cache));
    succeed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let table = layerprune_tables::read_evaluations(&cache).unwrap();
    let provenance = Provenance::new("test", "0", Vec::new());
    let written = |name: &str, table: &layerprune_tables::EvaluationTable| {
        let path = dir.path().join(name);
        layerprune_tables::write_evaluations(&path, table, &provenance).unwrap();
        path
    };
    let other_model = written(
        "other-model.parquet",
        &layerprune_tables::EvaluationTable {
            model_id: "another-model".into(),
            ..table.clone()
        },
    );
    let five_blocks = written(
        "five-blocks.parquet",
        &layerprune_tests::evaluation_table(5, &[("11111", 2.0)]),
    );
    let not_parquet = dir.path().join("not-parquet.parquet");
    std::fs::write(&not_parquet, b"not parquet").unwrap();
    // A cache cut short (a copy that stopped part-way): damaged, unlike a user's file.
    let cut_short = dir.path().join("cut-short.parquet");
    let whole = std::fs::read(&cache).unwrap();
    std::fs::write(&cut_short, &whole[..whole.len() / 2]).unwrap();
    let other_tokens = dir.path().join("other-tokens.parquet");
    write_windows(
        &other_tokens,
        layerprune_tests::fixture_windows(7, 3, 16),
        "other",
    );

    let refused = dir.path().join("refused.parquet");
    let mut basic = measuring_args("sleb", "1", &tokens, &refused, Some(&cache));
    basic.extend(["--graph-optimization".into(), "basic".into()]);
    for (args, file, problem) in [
        // The same model and token table, measured with other settings: the reported defect.
        (
            basic,
            &cache,
            "cannot resume: its rows were measured on cpu, this run measures on cpu, graph \
             optimization basic (the same model and token table, but their NLLs differ",
        ),
        (
            measuring_args("sleb", "1", &tokens, &refused, Some(&other_model)),
            &other_model,
            "cannot resume: its rows were measured on another model (model id another-model, \
             this run's is ",
        ),
        (
            measuring_args("sleb", "1", &other_tokens, &refused, Some(&cache)),
            &cache,
            "cannot resume: its rows were measured on another token table (dataset id ",
        ),
        (
            measuring_args("sleb", "1", &tokens, &refused, Some(&five_blocks)),
            &five_blocks,
            "cannot resume: its rows are masks of 5 blocks, this run's model has 6",
        ),
        (
            measuring_args("sleb", "1", &tokens, &refused, Some(&not_parquet)),
            &not_parquet,
            "not a readable Parquet file",
        ),
        (
            measuring_args("sleb", "1", &tokens, &refused, Some(&cut_short)),
            &cut_short,
            "not a readable Parquet file",
        ),
    ] {
        let before = std::fs::read(file).unwrap();
        let out = apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        // The chain: the flag and file with what to do, then the file with what differs; a
        // table that cannot be read (cut short) in the words every stage gives a damaged
        // checkpoint, a user's file that is no Parquet file at all as any file not this run's
        // (until 2026-12-07 it was "damaged", as if it had held rows).
        let advice = if file == &cut_short {
            "cannot be read, so it cannot be resumed; remove it (the rows it held are measured \
             again), or give another --cache"
        } else {
            "not an evaluation cache this run can use; give another --cache, or remove the file \
             to measure afresh"
        };
        let top = format!(
            "apply-prune: error: --cache {}: {advice}\n  caused by: {}: {problem}",
            s(file),
            s(file)
        );
        assert!(
            stderr.contains(&top),
            "{args:?}: expected {top:?} in {stderr}"
        );
        assert!(
            !stderr.contains("--tokens") && !stderr.contains("must be for the same"),
            "{args:?}: blames what is not wrong: {stderr}"
        );
        assert!(!refused.exists());
        assert_eq!(std::fs::read(file).unwrap(), before);
    }

    // Not refusals: a cache whose writer stopped part-way (an `evaluate` checkpoint, not
    // complete) is resumed like any other, and a table of another kind is refused as an output
    // before the model is opened, naming --cache too.
    let checkpoint = written(
        "checkpoint.parquet",
        &layerprune_tables::EvaluationTable {
            complete: false,
            rows: table.rows[..2].to_vec(),
            ..table.clone()
        },
    );
    let args = measuring_args("sleb", "1", &tokens, &refused, Some(&checkpoint));
    succeed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::remove_file(&refused).unwrap();
    let scores = dir.path().join("scores.parquet");
    let args = measuring_args("sleb", "1", &tokens, &refused, Some(&scores));
    fail(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &format!("--cache {}: holds a table of kind scores", s(&scores)),
        &refused,
        None,
    );
}

/// `--replace-cache-measured-otherwise` (the pipelines'): a cache of the same model and tokens
/// measured with other settings is started again with a warning, and replaced only once this run
/// has measured something, so a run that fails before (a CUDA request that cannot be met) keeps
/// it; a cache of another model is still refused; without --cache the flag is a usage error.
#[test]
fn a_cache_measured_otherwise_is_replaced_only_once_something_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let cache = dir.path().join("cache.parquet");
    let plan = dir.path().join("plan.parquet");
    let args = measuring_args("sleb", "1", &tokens, &plan, Some(&cache));
    succeed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let on_cpu = layerprune_tables::read_evaluations(&cache).unwrap();
    std::fs::remove_file(&plan).unwrap();
    let with = |extra: &[&str]| {
        let mut args = measuring_args("sleb", "1", &tokens, &plan, Some(&cache));
        args.push("--replace-cache-measured-otherwise".into());
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };

    // A device that cannot be had: refused before anything is measured, the cache as it was.
    let before = std::fs::read(&cache).unwrap();
    let out = apply_prune(
        &with(&["--device", "cuda"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&cache).unwrap(), before);

    // Other arithmetic: started again, said, and the file now holds this run's measurements.
    let stderr = succeed_stderr(
        &with(&["--graph-optimization", "basic"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        stderr.contains("this run measures on cpu, graph optimization basic")
            && stderr.contains("starting the cache again"),
        "{stderr}"
    );
    let again = layerprune_tables::read_evaluations(&cache).unwrap();
    assert_eq!(
        again.evaluated_on.as_deref(),
        Some("cpu, graph optimization basic")
    );
    assert_eq!(again.rows.len(), on_cpu.rows.len());
    std::fs::remove_file(&plan).unwrap();

    // Another model's cache is refused as ever.
    let other = dir.path().join("other-model.parquet");
    layerprune_tables::write_evaluations(
        &other,
        &layerprune_tables::EvaluationTable {
            model_id: "another-model".into(),
            ..on_cpu.clone()
        },
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    let mut args = measuring_args("sleb", "1", &tokens, &plan, Some(&other));
    args.push("--replace-cache-measured-otherwise".into());
    let out = apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another model"));

    let mut args = measuring_args("sleb", "1", &tokens, &plan, None);
    args.push("--replace-cache-measured-otherwise".into());
    let out = apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plan table's provenance: what its plans were chosen on (`chosen_on`) and where they were
/// measured (`dataset`).
fn chosen_and_measured_on(path: &Path) -> (Option<String>, Option<String>) {
    let mut inputs = layerprune_tables::read_input_ids(path).unwrap();
    (inputs.remove("chosen_on"), inputs.remove("dataset"))
}

/// Runs apply-prune, which must succeed: its stderr, where the warnings are.
fn succeed_stderr(args: &[&str]) -> String {
    let output = apply_prune(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{args:?}: {stderr}");
    stderr
}

/// What `apply-prune --method from-plan` warns of when it measures plans on the tokens they
/// were chosen on.
const NOT_HELD_OUT: &str = "measured on the tokens they were chosen on: the measurement is not \
                            held out";

/// Plans chosen on calibration tokens and measured on held-out ones say both: `chosen_on` is
/// what the choice read, kept through every copy (from-plan, with or without tokens of its
/// own), and `dataset` is where the table's plans were measured. Measuring them on the tokens
/// they were chosen on is said, not refused.
#[test]
fn plans_measured_on_held_out_tokens_record_what_they_were_chosen_on() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let held_out = dir.path().join("held-out.parquet");
    write_windows(
        &held_out,
        layerprune_tests::fixture_windows(777, 2, 16),
        "held-out",
    );
    let tokens_id = read_tokens(&tokens).unwrap().dataset_id;
    let held_out_id = read_tokens(&held_out).unwrap().dataset_id;
    assert_ne!(tokens_id, held_out_id);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let model_s = s(&fixture());

    // Adaptive removal measures masks on the tokens to choose: chosen and measured on them.
    let chosen = dir.path().join("chosen.parquet");
    let args = measuring_args("adaptive", "1", &tokens, &chosen, None);
    succeed(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        chosen_and_measured_on(&chosen),
        (Some(tokens_id.clone()), Some(tokens_id.clone()))
    );

    // from-plan of `plans`, with `extra` arguments, writing `name`: its stderr.
    let from_plan = |plans: &Path, name: &str, extra: &[&str]| -> (PathBuf, String) {
        let out = dir.path().join(name);
        let (plans_s, out_s) = (s(plans), s(&out));
        let mut args = vec![
            "--method",
            "from-plan",
            "--plans",
            &plans_s,
            "--out",
            &out_s,
        ];
        args.extend_from_slice(extra);
        let stderr = succeed_stderr(&args);
        (out, stderr)
    };
    let held_out_s = s(&held_out);
    let (measured, stderr) = from_plan(
        &chosen,
        "measured.parquet",
        &["--model", &model_s, "--tokens", &held_out_s],
    );
    assert_eq!(
        chosen_and_measured_on(&measured),
        (Some(tokens_id.clone()), Some(held_out_id.clone()))
    );
    assert!(!stderr.contains(NOT_HELD_OUT), "{stderr}");
    // A copy of that table without measuring: chosen on the calibration tokens still, measured
    // on nothing.
    let (copied, _) = from_plan(&measured, "copied.parquet", &[]);
    assert_eq!(
        chosen_and_measured_on(&copied),
        (Some(tokens_id.clone()), None)
    );
    // Measured on the very tokens the plans were chosen on: written, with a warning.
    let tokens_s = s(&tokens);
    let (again, stderr) = from_plan(
        &copied,
        "again.parquet",
        &["--model", &model_s, "--tokens", &tokens_s],
    );
    assert!(stderr.contains(NOT_HELD_OUT), "{stderr}");
    assert_eq!(
        chosen_and_measured_on(&again),
        (Some(tokens_id.clone()), Some(tokens_id.clone()))
    );
}

/// A one-shot plan is chosen on its score table's dataset, whatever tokens then measure it;
/// a score table that records no dataset (random scores) gives no `chosen_on`.
#[test]
fn one_shot_plans_record_the_dataset_of_their_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, no_dataset) = write_inputs(dir.path(), &[0.9, 0.5, 0.1, 0.7, 0.2, 0.8]);
    let tokens_id = read_tokens(&tokens).unwrap().dataset_id;
    let scores = dir.path().join("scored.parquet");
    let table = ScoreTable {
        dataset_id: "c0ffee".into(),
        ..layerprune_tables::read_scores(&no_dataset).unwrap()
    };
    write_scores(&scores, &table, &Provenance::new("test", "0", Vec::new())).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (model_s, tokens_s) = (s(&fixture()), s(&tokens));
    let plan = dir.path().join("plan.parquet");
    let plan_s = s(&plan);
    let one_shot = |scores: &Path, measured: bool| {
        let scores_s = s(scores);
        let mut args = vec![
            "--scores",
            &scores_s,
            "--estimator",
            "test",
            "--k",
            "2",
            "--out",
            &plan_s,
        ];
        if measured {
            args.extend(["--model", &model_s, "--tokens", &tokens_s]);
        }
        succeed(&args);
    };
    one_shot(&scores, true);
    assert_eq!(
        chosen_and_measured_on(&plan),
        (Some("c0ffee".to_string()), Some(tokens_id.clone()))
    );
    // Measured on those tokens again: they were not what the plan was chosen on, so no warning.
    let again = dir.path().join("again.parquet");
    let stderr = succeed_stderr(&[
        "--method",
        "from-plan",
        "--plans",
        &plan_s,
        "--model",
        &model_s,
        "--tokens",
        &tokens_s,
        "--out",
        &s(&again),
    ]);
    assert!(!stderr.contains(NOT_HELD_OUT), "{stderr}");
    assert_eq!(
        chosen_and_measured_on(&again),
        (Some("c0ffee".to_string()), Some(tokens_id.clone()))
    );
    // Not measured: chosen on the scores' dataset, measured on none.
    one_shot(&scores, false);
    assert_eq!(
        chosen_and_measured_on(&plan),
        (Some("c0ffee".to_string()), None)
    );
    one_shot(&no_dataset, true);
    assert_eq!(chosen_and_measured_on(&plan), (None, Some(tokens_id)));
}

/// A plan table written before `chosen_on` was recorded: its `dataset` is what its plans were
/// chosen on where its command line shows a method that measured them on those tokens while
/// choosing (SLEB, adaptive), and nothing is known of any other (a one-shot plan measured on
/// tokens it did not choose by, a from-plan table measured on other text).
#[test]
fn a_table_written_before_chosen_on_was_recorded_is_read_by_its_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let table = PlanTable {
        num_blocks: 6,
        value: None,
        rows: vec![PlanRow {
            method: "adaptive".into(),
            k: 1,
            removed_blocks: vec![2],
            predicted_value: None,
            measured_nll: Some(5.0),
            measured_ppl: Some(5f64.exp()),
            llm_evaluations: 6,
            runner_up: None,
            full_model: None,
        }],
    };
    let old_table = |name: &str, args: &[&str]| -> PathBuf {
        let path = dir.path().join(name);
        let args = args.iter().map(|a| a.to_string()).collect();
        let provenance = Provenance::new("apply-prune", "0.1.0", args).with_game("", "d1");
        write_plans(&path, &table, &provenance).unwrap();
        path
    };
    let copy = |plans: &Path| -> Option<String> {
        let out = dir.path().join("copy.parquet");
        succeed(&[
            "--method",
            "from-plan",
            "--plans",
            &s(plans),
            "--out",
            &s(&out),
        ]);
        chosen_and_measured_on(&out).0
    };
    for (name, args, chosen_on) in [
        (
            "adaptive.parquet",
            &[
                "apply-prune",
                "--method",
                "adaptive",
                "--k",
                "1",
                "--tokens",
                "t",
            ][..],
            Some("d1"),
        ),
        (
            "sleb.parquet",
            &["/bin/apply-prune", "--method=sleb", "--tokens", "t"],
            Some("d1"),
        ),
        (
            "one-shot.parquet",
            &[
                "apply-prune",
                "--scores",
                "s",
                "--estimator",
                "e",
                "--tokens",
                "t",
            ],
            None,
        ),
        (
            "from-plan.parquet",
            &["apply-prune", "--method", "from-plan", "--tokens", "t"],
            None,
        ),
        (
            "search.parquet",
            &["apply-prune", "--method", "search", "--tokens", "t"],
            None,
        ),
    ] {
        assert_eq!(
            copy(&old_table(name, args)).as_deref(),
            chosen_on,
            "{args:?}"
        );
    }
}

/// What is wrong with `--tokens` or `--cache` is said before the model is opened, which hashes
/// every weight file and, on CUDA, takes the device's memory for its sessions: on a copy of the
/// model whose block graph fails its hash (which opening refuses), each bad input is reported
/// instead of the model, with nothing written.
#[test]
fn tokens_and_cache_are_refused_before_the_model_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (tokens, _) = write_inputs(dir.path(), &[0.0; 6]);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let broken = dir.path().join("broken");
    layerprune_tests::copy_tiny_model(&broken);
    let block = broken.join("block_002.onnx");
    let mut bytes = std::fs::read(&block).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&block, bytes).unwrap();
    let plan = dir.path().join("plan.parquet");
    let on_broken = |tokens: &Path, cache: Option<&Path>| -> Vec<String> {
        let mut args = measuring_args("sleb", "1", tokens, &plan, cache);
        let model = args.iter().position(|a| a == "--model").unwrap() + 1;
        args[model] = s(&broken);
        args
    };
    let refusal = |args: Vec<String>| -> String {
        let out = apply_prune(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!plan.exists(), "{args:?} wrote {}", plan.display());
        stderr
    };

    // Sound inputs: the model is opened, and refused.
    let cache = dir.path().join("cache.parquet");
    let message = refusal(on_broken(&tokens, Some(&cache)));
    assert!(
        message.contains("block_002.onnx") && message.contains("sha256"),
        "{message}"
    );
    assert!(!cache.exists(), "{message}");

    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, b"").unwrap();
    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let scores = dir.path().join("scores.parquet");
    let mut outside = windows();
    outside[2][7] = 5000;
    let outside_vocabulary = dir.path().join("outside.parquet");
    write_windows(&outside_vocabulary, outside, "test");
    let mut foreign = read_tokens(&tokens).unwrap();
    foreign.tokenizer_sha256 = "0".repeat(64);
    let foreign_tokens = dir.path().join("foreign-tokens.parquet");
    write_tokens(
        &foreign_tokens,
        &foreign,
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    let not_a_table = dir.path().join("not-a-table.parquet");
    std::fs::write(&not_a_table, b"not a table").unwrap();
    // A cache of this model measured on another token table.
    let other_tokens_cache = dir.path().join("other-cache.parquet");
    let model_id = layerprune_runtime::model_id(&broken).unwrap();
    let other = layerprune_tables::EvaluationTable::new(6, &model_id, "other-dataset");
    layerprune_tables::write_evaluations(
        &other_tokens_cache,
        &other,
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    let other_tokens_cache_bytes = std::fs::read(&other_tokens_cache).unwrap();
    for (tokens, cache, expected) in [
        (empty.as_path(), None, "empty.parquet"),
        (&folder, None, "a-folder"),
        (&scores, None, "scores.parquet"),
        (
            &outside_vocabulary,
            None,
            "outside the model's vocabulary of 320",
        ),
        (&foreign_tokens, None, "made with another tokenizer"),
        (
            &tokens,
            Some(not_a_table.as_path()),
            "not an evaluation cache this run can use",
        ),
        (&tokens, Some(other_tokens_cache.as_path()), "dataset"),
    ] {
        let message = refusal(on_broken(tokens, cache));
        assert!(message.contains(expected), "{expected}: {message}");
        assert!(!message.contains("block_002.onnx"), "{expected}: {message}");
    }
    assert_eq!(std::fs::read(&not_a_table).unwrap(), b"not a table");
    assert_eq!(
        std::fs::read(&other_tokens_cache).unwrap(),
        other_tokens_cache_bytes
    );
}
