//! `evaluate check-runtime-flags`: --device and the runtime flags alone, refused as a run
//! refuses them (the same words, the same exit status) and taken silently otherwise, without
//! a model, tokens or an output, and without ONNX Runtime. The Snakemake workflow asks it when
//! it loads instead of keeping a copy of the rules (tests/workflow: the refusals by key).

use std::process::{Command, Output};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `evaluate check-runtime-flags` with `flags`, without ONNX Runtime's library.
fn check(flags: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("check-runtime-flags")
        .args(flags.split_whitespace())
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("evaluate runs")
}

/// A run of `evaluate` on the fixture model with `flags` (its token table is missing: every
/// flag here is refused before the inputs are read).
fn run(flags: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_evaluate"))
        .arg("--model")
        .arg(layerprune_tests::tiny_model_dir())
        .arg("--tokens")
        .arg(dir.path().join("tokens.parquet"))
        .arg("--out")
        .arg(dir.path().join("out.parquet"))
        .args(flags.split_whitespace())
        .output()
        .expect("evaluate runs")
}

/// What a refusal says first: the error itself (clap follows it with usage, which names the
/// mode or the run).
fn first_line(out: &Output) -> String {
    stderr(out).lines().next().unwrap_or_default().to_string()
}

#[test]
fn the_flags_a_run_refuses_are_refused_alike() {
    for (flags, status, says) in [
        // RuntimeFlags::check (exit status 1): every refusal it has.
        (
            "--tf32 on",
            1,
            "evaluate: error: --tf32 on: TF32 is a setting of the CUDA",
        ),
        (
            "--overlap on",
            1,
            "evaluate: error: --overlap on: overlapping",
        ),
        (
            "--device cuda --overlap on --io-binding off",
            1,
            "--io-binding off returns",
        ),
        (
            "--cuda-graphs on",
            1,
            "evaluate: error: --cuda-graphs on: CUDA graphs",
        ),
        (
            "--device cuda:1 --cuda-graphs on --overlap off",
            1,
            "--overlap off or",
        ),
        (
            "--arena keep-exact",
            1,
            "evaluate: error: --arena keep-exact: growing",
        ),
        (
            "--device cuda --arena off",
            1,
            "evaluate: error: --arena off: the CUDA provider",
        ),
        (
            "--device cuda --cuda-graphs on --arena shrink",
            1,
            "--arena shrink with --cuda-graphs on",
        ),
        // clap (exit status 2): flags none of the stages has, values out of range or none of
        // a flag's, flags that exclude each other.
        (
            "--tf-32 on",
            2,
            "error: unexpected argument '--tf-32' found",
        ),
        (
            "--mask-batch 0",
            2,
            "error: invalid value '0' for '--mask-batch <MASK_BATCH>'",
        ),
        (
            "--graph-optimization fast",
            2,
            "error: invalid value 'fast'",
        ),
        (
            "--tf32",
            2,
            "error: a value is required for '--tf32 <TF32>'",
        ),
        (
            "--device gpu",
            2,
            "error: invalid value 'gpu' for '--device <DEVICE>'",
        ),
        (
            "--mask-batch 1 --no-prefix-reuse",
            2,
            "cannot be used with '--no-prefix-reuse'",
        ),
        (
            "--cache-mb 1125899906842624",
            2,
            "error: invalid value '1125899906842624'",
        ),
    ] {
        let checked = check(flags);
        let ran = run(flags);
        assert_eq!(
            checked.status.code(),
            Some(status),
            "{flags}: {}",
            stderr(&checked)
        );
        assert_eq!(ran.status.code(), Some(status), "{flags}: {}", stderr(&ran));
        assert!(
            first_line(&checked).contains(says),
            "{flags}: {}",
            stderr(&checked)
        );
        assert_eq!(first_line(&checked), first_line(&ran), "{flags}");
        assert!(checked.stdout.is_empty(), "{flags}");
    }
}

#[test]
fn the_flags_a_run_takes_pass_silently() {
    for flags in [
        "",
        "--device cpu --cache-mb 64 --mask-batch 4 --io-binding on --arena shrink --tf32 off",
        "--graph-optimization=basic --batch-windows 2 --no-prefix-reuse",
        // Whether the device is there is not asked: no GPU, no CUDA build, no library here.
        "--device cuda:3 --tf32 on --cuda-graphs on --arena keep-exact --mask-batch 8",
    ] {
        let checked = check(flags);
        assert_eq!(
            checked.status.code(),
            Some(0),
            "{flags}: {}",
            stderr(&checked)
        );
        assert!(
            checked.stdout.is_empty() && checked.stderr.is_empty(),
            "{flags}"
        );
    }
    // A run takes them as far as the flags go: it stops at the missing token table.
    let ran = run("--mask-batch 4 --io-binding on --arena shrink --tf32 off");
    assert_eq!(ran.status.code(), Some(1));
    assert!(stderr(&ran).contains("tokens.parquet"), "{}", stderr(&ran));
}

#[test]
fn a_runs_other_flags_are_no_runtime_flags() {
    // A run takes them; as runtime flags (a workflow's, given to every stage that runs the
    // model) they are refused.
    for flag in ["--chunk 3", "--out x.parquet", "--quiet"] {
        let checked = check(flag);
        assert_eq!(
            checked.status.code(),
            Some(2),
            "{flag}: {}",
            stderr(&checked)
        );
        let name = flag.split(' ').next().unwrap();
        assert!(
            first_line(&checked).contains(&format!("unexpected argument '{name}' found")),
            "{flag}: {}",
            stderr(&checked)
        );
    }
}

#[test]
fn the_mode_is_its_first_word_alone() {
    // Anywhere else it is an argument a run does not take.
    let out = run("check-runtime-flags");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unexpected argument 'check-runtime-flags'"));
    // Its usage names it.
    let out = check("--bogus");
    assert!(
        stderr(&out).contains("Usage: evaluate check-runtime-flags [OPTIONS]"),
        "{}",
        stderr(&out)
    );
    let help = check("--help");
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--mask-batch"));
    // A run's usage names the mode too (it showed only in the last example until 2026-12-07).
    let help = run("--help");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains(
            "Usage: evaluate [OPTIONS] --out <OUT>\n       evaluate check-runtime-flags [OPTIONS]"
        ),
        "{}",
        String::from_utf8_lossy(&help.stdout)
    );
}
