//! `evaluate --tf32`, `--overlap`, `--cuda-graphs` and `--io-binding` on the committed tiny
//! model (CPU provider): the CUDA settings are refused for the CPU (and without what they need)
//! by name; states bound to the device's memory give
//! the same table as the plain path; the settings are recorded with the run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerprune_tables::{read_evaluations, read_provenance, write_tokens, Provenance, TokenTable};

fn tokens(dir: &Path) -> PathBuf {
    let path = dir.join("tokens.parquet");
    write_tokens(
        &path,
        &TokenTable::new(
            16,
            layerprune_tests::fixture_windows(3, 3, 16),
            "test",
            "synthetic ids",
        ),
        &Provenance::new("test", "0", vec![]),
    )
    .unwrap();
    path
}

/// `evaluate` on the fixture with three inline masks and `flags`, into `out`.
fn evaluate(dir: &Path, out: &Path, flags: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--model")
        .arg(layerprune_tests::tiny_model_dir())
        .arg("--tokens")
        .arg(tokens(dir))
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
        stderr(&out).contains("cuda:0 requested but unavailable"),
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
