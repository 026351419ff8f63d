//! `evaluate --tf32`, `--overlap`, `--cuda-graphs`, `--io-binding` and `--arena` on the
//! committed tiny model (CPU provider): the CUDA settings are refused for the CPU (and without
//! what they need) by name; states bound to the device's memory, and every arena setting, give
//! the same table as the plain path; the settings are recorded with the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerprune_tables::{read_evaluations, read_provenance, write_tokens, Provenance, TokenTable};

/// A token table in `dir` of `count` windows of `seq_len` ids.
fn tokens(dir: &Path, count: usize, seq_len: usize) -> PathBuf {
    let path = dir.join(format!("tokens-{count}x{seq_len}.parquet"));
    write_tokens(
        &path,
        &TokenTable::new(
            seq_len,
            layerprune_tests::fixture_windows(3, count, seq_len),
            &layerprune_tests::tiny_tokenizer_sha256(),
            "synthetic ids",
        ),
        &Provenance::new("test", "0", vec![]),
    )
    .unwrap();
    path
}

/// `evaluate` on the fixture and 3 windows of 16 tokens with three inline masks and `flags`,
/// into `out`.
fn evaluate(dir: &Path, out: &Path, flags: &[&str]) -> Output {
    evaluate_on(&tokens(dir, 3, 16), out, flags)
}

/// [`evaluate`] on the windows of `tokens`.
fn evaluate_on(tokens: &Path, out: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--model")
        .arg(layerprune_tests::tiny_model_dir())
        .arg("--tokens")
        .arg(tokens)
        .args(["--mask", "110111", "--mask", "011110", "--mask", "100001"])
        .arg("--out")
        .arg(out)
        .arg("--summary")
        .arg(out.with_extension("json"))
        .arg("--quiet")
        .args(flags)
        .output()
        .expect("evaluate runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `evaluate` with each of `refusals`' flags fails before any work, its message naming
/// `setting` and the refusal's reason, and writes nothing.
fn assert_refused(setting: &str, refusals: &[(&[&str], &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.parquet");
    for (flags, says) in refusals {
        let out = evaluate(dir.path(), &out_file, flags);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(setting), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!out_file.exists());
    }
}

/// `flags` pass the checks for CUDA: what fails is the CPU build's missing CUDA provider, and
/// nothing is written.
fn assert_accepted_for_cuda(flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.parquet");
    let out = evaluate(dir.path(), &out_file, flags);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--device cuda (cuda:0) requested but unavailable"),
        "{}",
        stderr(&out)
    );
    assert!(!out_file.exists());
}

#[test]
fn tf32_on_for_the_cpu_is_refused_by_name_before_any_work() {
    assert_refused(
        "--tf32 on",
        &[
            (&["--tf32", "on"], "CUDA"),
            (&["--device", "cpu", "--tf32", "on"], "CUDA"),
        ],
    );
    // Not a value: a usage error (clap, exit status 2).
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.parquet");
    let out = evaluate(dir.path(), &out_file, &["--tf32", "maybe"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_accepted_for_cuda(&["--device", "cuda:0", "--tf32", "on"]);
}

#[test]
fn overlap_on_is_refused_by_name_for_the_cpu_and_without_bound_states() {
    assert_refused(
        "--overlap on",
        &[
            (&["--overlap", "on"], "--device is cpu"),
            (
                &[
                    "--device",
                    "cuda:0",
                    "--overlap",
                    "on",
                    "--io-binding",
                    "off",
                ],
                "--io-binding off",
            ),
        ],
    );
    // Off is what the CPU does anyway, and the summary says it.
    assert_summary_says(&["--overlap", "off"], "\"overlap\": false");
}

#[test]
fn cuda_graphs_on_is_refused_by_name_for_the_cpu_and_without_overlap() {
    assert_refused(
        "--cuda-graphs on",
        &[
            (&["--cuda-graphs", "on"], "--device is cpu"),
            (
                &[
                    "--device",
                    "cuda:0",
                    "--cuda-graphs",
                    "on",
                    "--overlap",
                    "off",
                ],
                "--overlap off",
            ),
            (
                &[
                    "--device",
                    "cuda:0",
                    "--cuda-graphs",
                    "on",
                    "--io-binding",
                    "off",
                ],
                "--io-binding off",
            ),
        ],
    );
    assert_accepted_for_cuda(&["--device", "cuda:0", "--cuda-graphs", "on"]);
    assert_summary_says(&["--cuda-graphs", "off"], "\"cuda_graphs\": false");
}

/// `evaluate` with `flags` succeeds, and its summary holds `text`.
fn assert_summary_says(flags: &[&str], text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.parquet");
    let out = evaluate(dir.path(), &out_file, flags);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = std::fs::read_to_string(out_file.with_extension("json")).unwrap();
    assert!(summary.contains(text), "{summary}");
}

#[test]
fn bound_states_give_the_same_table_and_the_settings_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.parquet");
    let bound = dir.path().join("bound.parquet");
    let out = evaluate(dir.path(), &plain, &["--tf32", "off"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = evaluate(
        dir.path(),
        &bound,
        &["--io-binding", "on", "--mask-batch", "2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let (plain_table, bound_table) = (
        read_evaluations(&plain).unwrap(),
        read_evaluations(&bound).unwrap(),
    );
    assert_eq!(plain_table.rows.len(), 3);
    // The pairs below stop at the shorter table: the bound run's must have every row.
    assert_eq!(bound_table.rows.len(), plain_table.rows.len());
    assert_eq!(plain_table.full_model_nll, bound_table.full_model_nll);
    for (p, b) in plain_table.rows.iter().zip(&bound_table.rows) {
        assert_eq!(p.mask, b.mask);
        assert_eq!(p.nll.to_bits(), b.nll.to_bits(), "mask {}", p.mask);
    }

    // The summary (pretty JSON) says how the run was made.
    let summary = |path: &Path| std::fs::read_to_string(path.with_extension("json")).unwrap();
    assert!(summary(&plain).contains("\"io_binding\": false"));
    assert!(summary(&plain).contains("\"tf32\": false"));
    assert!(summary(&bound).contains("\"io_binding\": true"));
    assert!(summary(&bound).contains("\"tf32\": null"));
    // GPU memory is read on CUDA only.
    assert!(summary(&plain).contains("\"device_memory\": null"));
    // The command line, flags included, is the table's provenance.
    let args = read_provenance(&plain).unwrap().args;
    assert!(args.windows(2).any(|w| w == ["--tf32", "off"]), "{args:?}");
}

#[test]
fn every_arena_gives_the_same_table_and_the_summary_says_what_they_held() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough that a block's attention scores pass an arena's first region, which ONNX
    // Runtime never gives back.
    let tokens = tokens(dir.path(), 4, 128);
    let run = |name: &str, flags: &[&str]| {
        let out_file = dir.path().join(format!("{name}.parquet"));
        let out = evaluate_on(&tokens, &out_file, flags);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out_file.with_extension("json")).unwrap(),
        )
        .unwrap();
        (read_evaluations(&out_file).unwrap(), summary)
    };
    let (keep, keep_summary) = run("keep", &[]);
    assert!(!keep.rows.is_empty());
    assert_eq!(keep_summary["arena"], "keep");
    let reserved = |summary: &serde_json::Value| summary["arena_use"]["reserved_mib"].as_f64();
    assert!(reserved(&keep_summary).unwrap() > 0.0, "{keep_summary}");
    assert_eq!(keep_summary["arena_use"]["shrinks"], 0);
    for (name, flags, arena) in [
        ("shrink", &["--arena", "shrink"][..], "shrink"),
        ("off", &["--arena", "off"][..], "off"),
        // The default with masks batched on the CPU.
        ("batched", &["--mask-batch", "2"][..], "off"),
        (
            "batched-keep",
            &["--mask-batch", "2", "--arena", "keep"][..],
            "keep",
        ),
    ] {
        let (table, summary) = run(name, flags);
        assert_eq!(summary["arena"], arena, "{name}");
        // The pairs below stop at the shorter table: each run's must have every row.
        assert_eq!(table.rows.len(), keep.rows.len(), "{name}");
        for (k, other) in keep.rows.iter().zip(&table.rows) {
            assert_eq!(k.mask, other.mask);
            assert_eq!(
                k.nll.to_bits(),
                other.nll.to_bits(),
                "{name}, mask {}",
                k.mask
            );
        }
        match arena {
            // No arena, nothing to read.
            "off" => assert!(summary["arena_use"].is_null(), "{summary}"),
            // Every run gave its free regions back: less held than kept.
            "shrink" => {
                assert!(
                    summary["arena_use"]["shrinks"].as_u64().unwrap() > 0,
                    "{summary}"
                );
                assert!(reserved(&summary).unwrap() < reserved(&keep_summary).unwrap());
            }
            _ => assert_eq!(summary["arena_use"]["shrinks"], 0, "{summary}"),
        }
    }
}

#[test]
fn arena_settings_the_device_cannot_have_are_refused_by_name() {
    assert_refused(
        "--arena off",
        &[(
            &["--device", "cuda:0", "--arena", "off"],
            "always allocates device memory",
        )],
    );
    assert_refused(
        "--arena shrink",
        &[(
            &[
                "--device",
                "cuda:0",
                "--cuda-graphs",
                "on",
                "--arena",
                "shrink",
            ],
            "--cuda-graphs on",
        )],
    );
    assert_refused(
        "--arena keep-exact",
        &[
            (&["--arena", "keep-exact"], "--device is cpu"),
            (&["--mask-batch", "8", "--arena", "keep-exact"], "CUDA"),
        ],
    );
    assert_accepted_for_cuda(&["--device", "cuda:0", "--arena", "keep-exact"]);
}

/// The task subsample's settings mean nothing to a perplexity run: given without --tasks they
/// are refused by name, not silently dropped.
#[test]
fn task_settings_without_tasks_are_refused() {
    assert_refused(
        "--seed",
        &[
            (
                &["--seed", "3"],
                "is for a run over zero-shot tasks (--tasks)",
            ),
            // Given, even as the default.
            (
                &["--seed", "0"],
                "is for a run over zero-shot tasks (--tasks)",
            ),
        ],
    );
    assert_refused(
        "--task-subsample",
        &[(&["--task-subsample", "10"], "zero-shot tasks")],
    );
}

#[test]
fn every_graph_optimization_level_gives_the_same_nlls_and_the_table_records_a_level_not_the_default(
) {
    let dir = tempfile::tempdir().unwrap();
    let run = |level: &str| {
        let out_file = dir.path().join(format!("{level}.parquet"));
        let out = evaluate(dir.path(), &out_file, &["--graph-optimization", level]);
        assert!(out.status.success(), "{level}: {}", stderr(&out));
        let summary = std::fs::read_to_string(out_file.with_extension("json")).unwrap();
        assert!(
            summary.contains(&format!("\"graph_optimization\": \"{level}\"")),
            "{summary}"
        );
        read_evaluations(&out_file).unwrap()
    };
    let layout = run("layout");
    assert!(!layout.rows.is_empty());
    assert_eq!(layout.evaluated_on.as_deref(), Some("cpu"));
    for level in ["off", "basic", "extended", "all"] {
        let table = run(level);
        assert_eq!(
            table.evaluated_on.as_deref(),
            Some(format!("cpu, graph optimization {level}").as_str())
        );
        // The pairs below stop at the shorter table: each level's must have every row.
        assert_eq!(table.rows.len(), layout.rows.len(), "{level}");
        for (a, b) in layout.rows.iter().zip(&table.rows) {
            assert_eq!(a.mask, b.mask);
            assert!(
                (a.nll - b.nll).abs() < 1e-5 * a.nll.abs(),
                "{level}, mask {}: {} against {} at layout",
                a.mask,
                b.nll,
                a.nll
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = evaluate(
        dir.path(),
        &dir.path().join("out.parquet"),
        &["--graph-optimization", "most"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--graph-optimization"),
        "{}",
        stderr(&out)
    );
}
