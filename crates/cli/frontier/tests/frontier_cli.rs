//! The `frontier` binary on the committed tiny model: the CSV's rows and columns, held-out
//! perplexities that are the model's own, a second run that runs nothing (every mask comes
//! from the caches) and writes the same CSV, and refusals of bad input.
//!
//! Needs ONNX Runtime: set ORT_DYLIB_PATH (the Makefile does).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerprune_core::Mask;
use layerprune_runtime::{EvalOptions, Evaluator, LayeredModel, RuntimeOptions};
use layerprune_tables::{write_tokens, Provenance, TokenTable};

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

fn frontier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frontier"))
        .args(args)
        .output()
        .expect("the frontier binary runs")
}

/// A run that succeeds (its stderr shown otherwise), and what it said on stderr.
fn succeed(args: &[&str]) -> String {
    let output = frontier(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "frontier {args:?}: {stderr}");
    stderr
}

/// A run refused (exit status 1; its stderr shown otherwise), and what it said on stderr.
fn refused(args: &[&str]) -> String {
    let output = frontier(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "frontier {args:?}: {stderr}");
    stderr
}

/// `args` with the last one (the --out-dir) replaced by `out`, then `extra`.
fn with_out_dir<'a>(args: &[&'a str], out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.to_vec();
    *args.last_mut().unwrap() = out;
    args.extend(extra);
    args
}

fn windows(seed: u64, count: usize) -> Vec<Vec<u32>> {
    layerprune_tests::fixture_windows(seed, count, 16)
}

fn write(dir: &Path, name: &str, windows: Vec<Vec<u32>>) -> String {
    let path = dir.join(name);
    write_tokens(
        &path,
        &TokenTable::new(
            16,
            windows,
            &layerprune_tests::tiny_tokenizer_sha256(),
            name,
        ),
        &Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn nll_of(windows: &[Vec<u32>], removed: &[usize]) -> f64 {
    let model = LayeredModel::open(&fixture(), &RuntimeOptions::default()).unwrap();
    let mut evaluator = Evaluator::new(model, windows, EvalOptions::default()).unwrap();
    let mask = Mask::from_removed(6, removed).unwrap();
    evaluator
        .evaluate(std::slice::from_ref(&mask), &mut |_, _| {})
        .unwrap()[0]
        .nll()
}

/// `--shapley-masks 0` takes surrogate-shapley out of the default methods (a --methods naming
/// it is refused, below); a run playing no adaptive method says nothing of budgets (it logged
/// each default budget raised to the least, as `1sleb`, until 2026-12-07).
#[test]
fn shapley_masks_0_plays_the_other_methods_and_budgets_are_said_only_where_played() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = write(dir.path(), "c0.parquet", windows(1, 3));
    let model = fixture().to_str().unwrap().to_string();
    let calibration = format!("c0={c0}");
    let run = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "--model",
            &model,
            "--calibration",
            &calibration,
            "--k",
            "1",
            "--out-dir",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let stderr = succeed(&args);
        let csv = std::fs::read_to_string(out.join("frontier.csv")).unwrap();
        let methods: std::collections::BTreeSet<String> = csv
            .lines()
            .skip(1)
            .map(|line| line.split(',').next().unwrap().to_string())
            .collect();
        (stderr, methods)
    };
    let (_, methods) = run("all", &["--shapley-masks", "0", "--budgets", "least"]);
    assert!(!methods.contains("surrogate-shapley"), "{methods:?}");
    for method in ["reverse", "sleb", "adaptive", "adaptive-raced"] {
        assert!(methods.contains(method), "{method}: {methods:?}");
    }
    let (stderr, methods) = run("reverse", &["--methods", "reverse", "--shapley-masks", "0"]);
    assert!(methods.contains("reverse"), "{methods:?}");
    assert!(!stderr.contains("budget"), "{stderr}");
}

#[test]
fn writes_every_method_resumes_from_its_caches_and_refuses_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = write(dir.path(), "c0.parquet", windows(1, 3));
    let c1 = write(dir.path(), "c1.parquet", windows(2, 3));
    let held_windows = windows(3, 4);
    let held = write(dir.path(), "held.parquet", held_windows.clone());
    let out = dir.path().join("run");
    let model = fixture().to_str().unwrap().to_string();
    let args = [
        "--model",
        &model,
        "--calibration",
        &format!("c0={c0}"),
        "--calibration",
        &format!("c1={c1}"),
        "--heldout",
        &format!("held={held}"),
        "--k",
        "1,2",
        "--budgets",
        "least,sleb,40",
        "--out-dir",
        out.to_str().unwrap(),
    ];
    succeed(&args);
    let csv = std::fs::read_to_string(out.join("frontier.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "method,k,calibration_set,llm_evaluations,removed_blocks,calibration_ppl,held_ppl,recommended,budget,budget_spec"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    for set in ["c0", "c1"] {
        for method in [
            "full",
            "block-influence",
            "angular",
            "reverse",
            "leave-one-out",
            "sleb",
            "sleb-raced",
            "surrogate-shapley",
            "best-known",
        ] {
            assert!(
                rows.iter().any(|r| r[0] == method && r[2] == set),
                "no {method} row for {set}"
            );
        }
        // One row per distinct budget, raced and not: at k = 1 `least` and `sleb` are both 7
        // evaluations, one run named by both.
        for method in ["adaptive", "adaptive-raced"] {
            let runs: Vec<(&str, &str, &str)> = rows
                .iter()
                .filter(|r| r[0] == method && r[2] == set)
                .map(|r| (r[1], r[8], r[9]))
                .collect();
            assert_eq!(runs.len(), 5, "{method}");
            assert!(runs.contains(&("1", "7", "least sleb")), "{runs:?}");
            assert!(runs.contains(&("1", "40", "40")), "{runs:?}");
            assert_eq!(runs.iter().filter(|r| r.0 == "2").count(), 3, "{runs:?}");
        }
    }
    // The recommended method's rows, and only those, say so.
    assert!(rows
        .iter()
        .all(|r| (r[7] == "true") == (r[0] == "adaptive-raced")));
    // A held-out perplexity is the model's own on the held-out windows.
    let sleb = rows.iter().find(|r| r[0] == "sleb" && r[1] == "2").unwrap();
    let removed: Vec<usize> = sleb[4].split(' ').map(|b| b.parse().unwrap()).collect();
    let ppl: f64 = sleb[6].parse().unwrap();
    let expected = nll_of(&held_windows, &removed).exp();
    assert!(
        (ppl - expected).abs() < 1e-3 * expected,
        "{ppl} vs {expected}"
    );

    // Again: nothing runs, the same CSV.
    let stderr = succeed(&args);
    assert!(stderr.contains("0 masks run now"), "{stderr}");
    assert!(!stderr.contains(" 1 masks run now"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("frontier.csv")).unwrap(),
        csv
    );

    // `evaluate`'s runtime flags, the same here: from empty caches with four masks a block
    // call (a race's rounds batched) and the states bound through IoBinding, the same CSV (the
    // same arithmetic on the CPU, bit for bit).
    let batched_out = dir.path().join("batched");
    let batched_dir = batched_out.to_str().unwrap();
    let flags = ["--mask-batch", "4", "--io-binding", "on"];
    succeed(&with_out_dir(&args, batched_dir, &flags));
    assert_eq!(
        std::fs::read_to_string(batched_out.join("frontier.csv")).unwrap(),
        csv
    );
    // A CUDA setting on the CPU is refused before any work, naming the flag.
    let cuda_out = dir.path().join("cuda");
    let cuda_dir = cuda_out.to_str().unwrap();
    let refused = frontier(&with_out_dir(&args, cuda_dir, &["--cuda-graphs", "on"]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--cuda-graphs on: CUDA graphs"));
    assert!(!cuda_out.exists());

    // A held-out table that shares a window with a calibration set is refused.
    let overlap = write(dir.path(), "overlap.parquet", windows(1, 2));
    let refused = frontier(&[
        "--model",
        &model,
        "--calibration",
        &format!("c0={c0}"),
        "--heldout",
        &format!("o={overlap}"),
        "--out-dir",
        dir.path().join("other").to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("disjoint"));
    assert!(!dir.path().join("other").exists());
}

#[test]
fn plays_only_the_methods_asked_for_and_refuses_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = write(dir.path(), "c0.parquet", windows(1, 3));
    let out = dir.path().join("run");
    let model = fixture().to_str().unwrap().to_string();
    let run = |methods: &str, out: &Path| {
        frontier(&[
            "--model",
            &model,
            "--calibration",
            &format!("c0={c0}"),
            "--k",
            "2",
            "--methods",
            methods,
            "--budgets",
            "least",
            "--out-dir",
            out.to_str().unwrap(),
        ])
    };
    let output = run("leave-one-out,adaptive", &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let csv = std::fs::read_to_string(out.join("frontier.csv")).unwrap();
    let mut methods: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    methods.sort_unstable();
    assert_eq!(methods, ["adaptive", "best-known", "full", "leave-one-out"]);
    // Only what they asked for ran: the full model, the 6 singles, leave-one-out's plan and
    // adaptive's one greedy step beyond it (least budget: 6 + 2), no SLEB path, no Shapley masks.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ran: usize = stderr
        .split("masks run now")
        .next()
        .and_then(|head| head.rsplit("; ").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {stderr}"));
    assert!(ran <= 1 + 6 + 2, "{ran} masks ran: {stderr}");

    let other = dir.path().join("other");
    let refused = run("sleb,shortgpt", &other);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("unknown method \"shortgpt\""), "{stderr}");
    assert!(!other.exists());
}

#[test]
fn a_path_that_is_not_utf8_is_used_and_recorded_lossily() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let c0 = write(dir.path(), "c0.parquet", windows(1, 2));
    let out = dir.path().join(std::ffi::OsStr::from_bytes(b"run-\xff"));
    let output = Command::new(env!("CARGO_BIN_EXE_frontier"))
        .args(["--model", fixture().to_str().unwrap(), "--calibration"])
        .arg(format!("c0={c0}"))
        .args([
            "--k",
            "1",
            "--methods",
            "reverse,surrogate-shapley",
            "--shapley-masks",
            "8",
            "--seed",
            "7",
            "--out-dir",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.join("frontier.csv").is_file());
    let provenance =
        layerprune_tables::read_provenance(&out.join("cache-calibration-c0.parquet")).unwrap();
    assert!(
        provenance.args.iter().any(|a| a.contains("run-\u{fffd}")),
        "{:?}",
        provenance.args
    );
    // The seed of the Shapley method's masks is recorded, as every seeded stage's is.
    assert_eq!(provenance.seed, Some(7));
}

/// A k, method or budget listed twice is played once (one row each in frontier.csv); a set
/// name given to two token tables, or a k the model cannot lose, is refused before any work.
#[test]
fn repeated_values_are_played_once_and_impossible_ones_refused_first() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = write(dir.path(), "c0.parquet", windows(1, 3));
    let c1 = write(dir.path(), "c1.parquet", windows(2, 3));
    let model = fixture().to_str().unwrap().to_string();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap().to_string();
    let calibration = format!("c0={c0}");
    let args = [
        "--model",
        &model,
        "--calibration",
        &calibration,
        "--k",
        "2,2",
        "--methods",
        "leave-one-out,adaptive,leave-one-out",
        "--budgets",
        "least,least",
        "--out-dir",
        &out_s,
    ];
    succeed(&args);
    let csv = std::fs::read_to_string(out.join("frontier.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    for method in ["leave-one-out", "adaptive"] {
        let of_method: Vec<&&str> = rows
            .iter()
            .filter(|l| l.starts_with(&format!("{method},")))
            .collect();
        assert_eq!(of_method.len(), 1, "{csv}");
        assert!(!of_method[0].contains("least least"), "{csv}");
    }

    let other = dir.path().join("other");
    let other_s = other.to_str().unwrap();
    let same_name = format!("c0={c1}");
    for (extra, expected) in [
        (
            vec!["--calibration", same_name.as_str()],
            "the name c0 is given to two token tables",
        ),
        (vec!["--k", "6"], "at most 5 may be removed"),
        (vec!["--k", "0,2"], "0 is not in 1..=10000"),
    ] {
        let mut refused = with_out_dir(&args, other_s, &extra);
        if extra[0] == "--k" {
            // The last --k wins in clap: replace 2,2 by the one given.
            let at = refused.iter().position(|a| *a == "2,2").unwrap();
            refused[at] = extra[1];
            refused.truncate(refused.len() - 2);
        }
        let output = frontier(&refused);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A value out of its bounds is a usage error (2), the others are refusals (1).
        let status = if extra[1] == "0,2" { 2 } else { 1 };
        assert_eq!(output.status.code(), Some(status), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!other.exists(), "nothing written before the refusal");
    }
}

/// Refused before any folder is made, naming the flag: a held-out set whose column would be
/// the calibration perplexity's, only the Shapley method with no masks, a budget below what
/// adaptive removal needs, a token table of another model's vocabulary; and a model that fails
/// its hash check leaves no empty folder.
#[test]
fn what_cannot_run_is_refused_before_the_folder_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = format!("c0={}", write(dir.path(), "c0.parquet", windows(1, 3)));
    let held = format!(
        "calibration={}",
        write(dir.path(), "h.parquet", windows(2, 3))
    );
    let mut foreign_windows = windows(3, 3);
    foreign_windows[1][4] = 4000;
    let foreign = format!(
        "wt={}",
        write(dir.path(), "foreign.parquet", foreign_windows)
    );
    let empty = format!("none={}", write(dir.path(), "empty.parquet", Vec::new()));
    let model = fixture().to_str().unwrap().to_string();
    let broken = dir.path().join("broken");
    layerprune_tests::copy_tiny_model(&broken);
    let graph = broken.join("block_002.onnx");
    let mut bytes = std::fs::read(&graph).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&graph, bytes).unwrap();
    let broken_s = broken.to_str().unwrap().to_string();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let base = |model: &str| -> Vec<String> {
        [
            "--model",
            model,
            "--calibration",
            &c0,
            "--k",
            "1,2",
            "--out-dir",
            out_s,
        ]
        .map(String::from)
        .to_vec()
    };
    for (model, extra, expected) in [
        (
            &model,
            vec!["--heldout", &held, "--methods", "reverse"],
            "would make its column",
        ),
        // A method asked for that --shapley-masks 0 does not play, alone or beside another
        // (which left it out of frontier.csv without a word until 2026-12-07).
        (
            &model,
            vec!["--methods", "surrogate-shapley", "--shapley-masks", "0"],
            "--methods names surrogate-shapley, which --shapley-masks 0 does not play",
        ),
        (
            &model,
            vec![
                "--methods",
                "reverse,surrogate-shapley",
                "--shapley-masks",
                "0",
            ],
            "--methods names surrogate-shapley, which --shapley-masks 0 does not play",
        ),
        (
            &model,
            vec!["--methods", "adaptive", "--budgets", "7"],
            "--budgets 7: adaptive removal of 2 of 6 removable blocks needs at least 8",
        ),
        (
            &model,
            vec!["--heldout", &foreign, "--methods", "reverse"],
            "token id 4000, outside the model's vocabulary of 320",
        ),
        (&broken_s, vec!["--methods", "reverse"], "block_002.onnx"),
        // A setting of a method not played would be ignored.
        (
            &model,
            vec!["--methods", "sleb", "--budgets", "least"],
            "--budgets is a setting of the adaptive or adaptive-raced method",
        ),
        (
            &model,
            vec!["--methods", "reverse", "--shapley-masks", "10"],
            "--shapley-masks is a setting of the surrogate-shapley method",
        ),
        (
            &model,
            vec!["--methods", "reverse", "--seed", "3"],
            "--seed is a setting of the surrogate-shapley method",
        ),
        (
            &model,
            vec!["--shapley-masks", "0", "--seed", "3"],
            "--seed seeds the masks of surrogate-shapley, which --shapley-masks 0 does not play",
        ),
        // A table of no windows: named, before the calibration set runs.
        (
            &model,
            vec!["--heldout", &empty, "--methods", "reverse"],
            "--heldout none=",
        ),
    ] {
        let mut args = base(model);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = refused(&args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        if expected.starts_with("token id") {
            assert!(stderr.contains("--heldout wt="), "{stderr}");
        }
        assert!(!out.exists(), "{args:?} left {out_s}");
    }
    // A method asked for by its old name: refused as a bad value (clap's exit status 2),
    // naming the name it has now.
    let mut args = base(&model);
    args.extend(["--methods".to_string(), "shapley".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = frontier(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("shapley is now named surrogate-shapley"),
        "{stderr}"
    );
    assert!(!out.exists(), "{out_s}");
    // An old name of a method the frontier does not play is only unknown: its new name would
    // be refused too.
    let mut args = base(&model);
    args.extend(["--methods".to_string(), "published".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = String::from_utf8_lossy(&frontier(&args).stderr).to_string();
    assert!(stderr.contains("unknown method \"published\""), "{stderr}");
    assert!(!stderr.contains("now named"), "{stderr}");
}

/// `--out-dir` is never a layered model folder (a pruned folder apply-prune wrote) nor inside
/// one: refused before anything is written there, naming the flag and the folder.
#[test]
fn an_out_dir_that_is_or_lies_in_a_model_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = format!("c0={}", write(dir.path(), "c0.parquet", windows(1, 3)));
    let pruned = dir.path().join("pruned");
    layerprune_tests::copy_tiny_model(&pruned);
    let before: Vec<_> = std::fs::read_dir(&pruned)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let model = fixture().to_str().unwrap().to_string();
    let inner = pruned.join("frontier");
    for (out, said) in [
        (
            &pruned,
            format!("--out-dir {}: is a layered model folder", pruned.display()),
        ),
        (
            &inner,
            format!(
                "--out-dir {}: lies inside {}",
                inner.display(),
                pruned.display()
            ),
        ),
    ] {
        let args = [
            "--model",
            &model,
            "--calibration",
            &c0,
            "--k",
            "1",
            "--methods",
            "reverse",
            "--out-dir",
            out.to_str().unwrap(),
        ];
        let stderr = refused(&args);
        assert!(stderr.contains(&said), "{stderr}");
        assert!(
            stderr.contains("refusing to write into a model folder"),
            "{stderr}"
        );
        let after: Vec<_> = std::fs::read_dir(&pruned)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(after, before, "{out:?} wrote into the model folder");
    }
}

/// Windows longer than the model takes (its manifest's `context_length`) are refused before
/// the model is opened, in evaluate's words: the set's table with the model, then the cause,
/// never the table's source description as a cause of its own.
#[test]
fn windows_longer_than_the_models_context_are_refused_in_one_line_of_context() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    layerprune_tests::copy_tiny_model_with_manifest(&model, |manifest| {
        manifest["context_length"] = 8.into();
    });
    let model_s = model.to_str().unwrap();
    let c0 = write(dir.path(), "c0.parquet", windows(1, 3));
    let held = write(dir.path(), "held.parquet", windows(2, 3));
    let out = dir.path().join("run");
    for (flag, set, path) in [("--calibration", "c0", &c0), ("--heldout", "held", &held)] {
        // The other set of windows the model takes (the refused one named first either way).
        let short = dir.path().join("short.parquet");
        layerprune_tests::write_tiny_tokens(
            &short,
            layerprune_tests::fixture_windows(3, 3, 8),
            "short",
        );
        let short = short.to_str().unwrap();
        let (calibration, heldout) = if flag == "--calibration" {
            (format!("c0={c0}"), format!("held={short}"))
        } else {
            (format!("c0={short}"), format!("held={held}"))
        };
        let args = [
            "--model",
            model_s,
            "--calibration",
            &calibration,
            "--heldout",
            &heldout,
            "--k",
            "1",
            "--methods",
            "reverse",
            "--out-dir",
            out.to_str().unwrap(),
        ];
        let stderr = refused(&args);
        assert!(
            stderr.contains(&format!(
                "frontier: error: {flag} {set}={path} with {model_s}\n  caused by: {model_s} was \
                 made for sequences of at most 8 tokens"
            )),
            "{stderr}"
        );
        assert_eq!(stderr.matches("caused by:").count(), 1, "{stderr}");
        assert!(!stderr.contains("opened the"), "{stderr}");
        assert!(!out.exists());
    }
}

/// Only a finished run has frontier.csv (the sets done so far go to frontier.partial.csv, removed
/// at the end), and a cache left by another token table under a set's name is refused before any
/// set runs: the finished table of the earlier run stays as it was.
#[test]
fn a_cache_of_other_tokens_is_refused_before_any_set_runs() {
    let dir = tempfile::tempdir().unwrap();
    let c0 = format!("c0={}", write(dir.path(), "c0.parquet", windows(1, 3)));
    let c1 = format!("c1={}", write(dir.path(), "c1.parquet", windows(2, 3)));
    let other = format!("c1={}", write(dir.path(), "other.parquet", windows(3, 3)));
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let args = |second: &str| -> Vec<String> {
        [
            "--model",
            fixture().to_str().unwrap(),
            "--calibration",
            &c0,
            "--calibration",
            second,
            "--k",
            "1",
            "--methods",
            "reverse,leave-one-out",
            "--out-dir",
            out_s,
        ]
        .map(String::from)
        .to_vec()
    };
    let first = args(&c1);
    succeed(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let csv = out.join("frontier.csv");
    assert!(!out.join("frontier.partial.csv").exists());
    let finished = std::fs::read(&csv).unwrap();
    let cache_c0 = std::fs::read(out.join("cache-calibration-c0.parquet")).unwrap();

    let second = args(&other);
    let stderr = refused(&second.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        stderr.contains("cache-calibration-c1.parquet") && stderr.contains("--calibration c1="),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&csv).unwrap(), finished);
    assert_eq!(
        std::fs::read(out.join("cache-calibration-c0.parquet")).unwrap(),
        cache_c0,
        "set c0 did not run"
    );
    assert!(!out.join("frontier.partial.csv").exists());

    // The same sets measured with other settings: refused as the set's cache, saying that the
    // model and tokens are the same, what differs, and one thing to do (not a second, "give
    // another file", which no frontier flag can).
    let mut basic = first.clone();
    basic.extend(["--graph-optimization".into(), "basic".into()]);
    let stderr = refused(&basic.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = format!(
        "frontier: error: the cache of --calibration {c0} is not one this run can use (remove it, or choose \
         another --out-dir)\n  caused by: {}: cannot resume: its rows were measured on cpu, this \
         run measures on cpu, graph optimization basic (the same model and token table, but \
         their NLLs differ",
        out.join("cache-calibration-c0.parquet").display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in {stderr}"
    );
    assert!(!stderr.contains("give another file"), "{stderr}");
    assert_eq!(std::fs::read(&csv).unwrap(), finished);

    // The pipelines' --replace-cache-measured-otherwise: the caches are started again, said,
    // and hold the new settings' measurements after the run.
    basic.push("--replace-cache-measured-otherwise".into());
    let output = frontier(&basic.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("starting the cache again"), "{stderr}");
    let cache =
        layerprune_tables::read_evaluations(&out.join("cache-calibration-c0.parquet")).unwrap();
    assert_eq!(
        cache.evaluated_on.as_deref(),
        Some("cpu, graph optimization basic")
    );

    // A cache damaged outside the stage (a copy cut short): its first line names the cache
    // and says to remove it, in the words every stage gives a damaged checkpoint or cache.
    let cache_c0 = out.join("cache-calibration-c0.parquet");
    let whole = std::fs::read(&cache_c0).unwrap();
    std::fs::write(&cache_c0, &whole[..whole.len() / 2]).unwrap();
    let stderr = refused(&basic.iter().map(String::as_str).collect::<Vec<_>>());
    let expected = format!(
        "frontier: error: the cache {} of --calibration {c0}: cannot be read, so it cannot be \
         resumed; remove it (the rows it held are measured again), or choose another --out-dir\n",
        cache_c0.display()
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in {stderr}"
    );
    assert_eq!(std::fs::read(&cache_c0).unwrap(), &whole[..whole.len() / 2]);
}

/// The two token-table flags keep their roles' names, so their help says what each is in the
/// words of the other stages and of frontier.csv: a token table (prepare-tokens, the --tokens
/// of evaluate and apply-prune) given as NAME=PATH, and the columns NAME ends up in.
#[test]
fn the_help_says_what_each_token_table_is_and_where_its_name_goes() {
    let output = frontier(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--calibration <NAME=PATH>",
        "--heldout <NAME=PATH>",
        "`calibration_set`",
        "`NAME_ppl`",
        "sample-masks --stratified-masks",
    ] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
    assert_eq!(
        help.matches("prepare-tokens; the --tokens of").count(),
        2,
        "{help}"
    );
    assert!(
        !help.contains("<CALIBRATION>") && !help.contains("<HELDOUT>"),
        "{help}"
    );
    // The defaults the help states are the library's (written by hand in the flags' docs).
    use layerprune_evaluation::frontier::{DEFAULT_BUDGETS, DEFAULT_SHAPLEY_MASKS};
    let budgets: Vec<String> = DEFAULT_BUDGETS.iter().map(|b| b.to_string()).collect();
    for default in [
        format!("[default: {}]", budgets.join(",")),
        format!("[default: {DEFAULT_SHAPLEY_MASKS}]"),
    ] {
        assert!(help.contains(&default), "{default:?} not in:\n{help}");
    }
}
