//! The `quantize` binary on the committed tiny model: a folder and a single file are written,
//! and bad requests stop with exit status 1 and a message naming the file and the problem.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> PathBuf {
    layerprune_tests::tiny_model_dir()
}

fn quantize(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quantize"))
        .args(args)
        .output()
        .expect("quantize runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn quantizes_a_folder_and_a_single_file() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("int4");
    let model = fixture();
    let result = quantize(&[
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--scheme",
        "int4",
        // The flag's name until 2026-12-04, still accepted.
        "--block-size",
        "128",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(stderr(&result).contains("quantized 44 MatMuls in 8 graphs (int4)"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["quantization"]["block_size"], 128);
    assert_eq!(
        manifest["quantization"]["operator"],
        "com.microsoft.MatMulNBits"
    );
    // Rounded three graph files at a time: the same folder, byte for byte.
    let threaded = temp.path().join("int4-threads");
    let result = quantize(&[
        "--model",
        model.to_str().unwrap(),
        "--out",
        threaded.to_str().unwrap(),
        "--scheme",
        "int4",
        "--group-size",
        "128",
        "--threads",
        "3",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let files = |dir: &std::path::Path| {
        layerprune_tests::snapshot(dir)
            .into_iter()
            .map(|(path, bytes)| (path.strip_prefix(dir).unwrap().to_path_buf(), bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(files(&out), files(&threaded));

    // One block graph as a single file: its external weights are read and the output inlines
    // everything.
    let file = temp.path().join("block.onnx");
    let block = model.join("block_000.onnx");
    let result = quantize(&[
        "--model",
        block.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
        "--scheme",
        "int8",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(stderr(&result).contains("quantized 7 MatMuls (int8)"));
    let bytes = std::fs::read(&file).unwrap();
    assert!(!bytes.windows(8).any(|w| w == b"weights/"));
    // 64×64, 64×32 ×2, 64×128 ×2, 128×64 int8 weights: at least 28 KiB inline.
    assert!(bytes.len() > 28 * 1024);
}

#[test]
fn one_graph_is_never_written_over_its_weights_or_into_its_model_folder() {
    let temp = tempfile::tempdir().unwrap();
    let model = temp.path().join("model");
    layerprune_tests::copy_tiny_model(&model);
    let before = layerprune_tests::snapshot(&model);
    let block = model.join("block_000.onnx");
    let weights = layerprune_model::graph_external_data(&block).unwrap();
    let first_weights = model.join(weights.iter().next().unwrap());
    // The graph's own weight file (read while quantizing), and the folder's manifest: inside
    // the layered folder the graph belongs to, which is an input as a whole, even with
    // --overwrite.
    let refused = |block: &Path, out: &Path, expected: &str| {
        let result = quantize(&[
            "--model",
            block.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scheme",
            "int8",
            "--overwrite",
        ]);
        assert!(!result.status.success(), "{}", out.display());
        assert!(stderr(&result).contains(expected), "{}", stderr(&result));
    };
    refused(&block, &first_weights, "is the same file as the input");
    refused(
        &block,
        &model.join("manifest.json"),
        "lies inside the input folder",
    );
    assert_eq!(layerprune_tests::snapshot(&model), before);
    // A graph on its own (no manifest beside it): its weight files are inputs by themselves.
    let alone = temp.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(&block, alone.join("block_000.onnx")).unwrap();
    layerprune_tests::copy_dir(&model.join("weights"), &alone.join("weights"));
    let weights_alone = alone.join(weights.iter().next().unwrap());
    let before = std::fs::read(&weights_alone).unwrap();
    refused(
        &alone.join("block_000.onnx"),
        &weights_alone,
        "is the same file as the input",
    );
    assert_eq!(std::fs::read(&weights_alone).unwrap(), before);
}

/// One .onnx file's --out never replaces a layerprune table or a fitted surrogate, not even
/// with --overwrite: `--out surrogate.json --overwrite` wrote the model over a fitted surrogate
/// (declared as a file of no kind, which replaced anything but a table). An earlier run's model,
/// or any other file, is replaced only with --overwrite.
#[test]
fn a_file_out_never_replaces_a_table_or_surrogate_and_another_file_only_with_overwrite() {
    use layerprune_surrogate::{fit, FitOptions, SavedSurrogate, SurrogateKind};
    let temp = tempfile::tempdir().unwrap();
    let block = fixture().join("block_000.onnx");
    let run = |out: &Path, overwrite: bool| {
        let mut args = vec![
            "--model",
            block.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scheme",
            "int8",
        ];
        if overwrite {
            args.push("--overwrite");
        }
        quantize(&args)
    };

    let surrogate = temp.path().join("surrogate.json");
    let masks: Vec<layerprune_core::Mask> = (0..16u32)
        .map(|bits| {
            layerprune_core::Mask::from_kept((0..4).map(|b| bits & (1 << b) != 0).collect())
        })
        .collect();
    let values: Vec<f64> = masks.iter().map(|m| m.num_kept() as f64 / 4.0).collect();
    let fitted = fit(
        SurrogateKind::Quadratic,
        &masks,
        &values,
        &FitOptions::default(),
    )
    .unwrap();
    SavedSurrogate::new(fitted, "utility", "test")
        .save(&surrogate)
        .unwrap();
    let tokens = temp.path().join("tokens.parquet");
    layerprune_tables::write_tokens(
        &tokens,
        &layerprune_tables::TokenTable::new(2, vec![vec![1, 2]], "test", "ids"),
        &layerprune_tables::Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    for (path, held) in [
        (
            &surrogate,
            "holds a layerprune surrogate of kind quadratic, and this writes an ONNX model over it",
        ),
        (
            &tokens,
            "holds a table of kind tokens, and this writes an ONNX model over it",
        ),
    ] {
        let before = std::fs::read(path).unwrap();
        for overwrite in [false, true] {
            let result = run(path, overwrite);
            let message = stderr(&result);
            assert_eq!(result.status.code(), Some(1), "{message}");
            assert!(
                message.contains(&format!("--out {}: {held}", path.display())),
                "{message}"
            );
            assert!(!message.contains("quantized"), "{message}");
            assert_eq!(std::fs::read(path).unwrap(), before);
        }
    }

    // An earlier run's model and a user's file alike: refused without --overwrite, replaced
    // with it.
    let model = temp.path().join("block-int8.onnx");
    assert!(run(&model, false).status.success());
    let notes = temp.path().join("notes.txt");
    std::fs::write(&notes, "the user's notes\n").unwrap();
    for path in [&model, &notes] {
        let before = std::fs::read(path).unwrap();
        let result = run(path, false);
        assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
        // Refused as an existing folder --out is, in the same words.
        assert!(
            stderr(&result).contains(&format!(
                "--out {}: already exists; pass --overwrite to replace it",
                path.display()
            )),
            "{}",
            stderr(&result)
        );
        assert_eq!(std::fs::read(path).unwrap(), before);
        let result = run(path, true);
        assert!(result.status.success(), "{}", stderr(&result));
    }
    assert_eq!(
        std::fs::read(&notes).unwrap(),
        std::fs::read(&model).unwrap()
    );
}

#[test]
fn bad_input_exits_with_status_2_and_the_reason() {
    let temp = tempfile::tempdir().unwrap();
    let model = fixture();
    let model = model.to_str().unwrap();
    let out = temp.path().join("q");
    let out = out.to_str().unwrap();

    let result = quantize(&[
        "--model",
        model,
        "--out",
        out,
        "--scheme",
        "int4",
        "--group-size",
        "48",
    ]);
    // Out of its bounds: a usage error (status 2), as every stage's bounded flags.
    assert_eq!(result.status.code(), Some(2));
    assert!(
        stderr(&result).contains("--group-size")
            && stderr(&result).contains("MatMulNBits takes one of"),
        "{}",
        stderr(&result)
    );
    assert!(!temp.path().join("q").exists());
    for (flag, value) in [
        ("--accuracy-level", "7"),
        ("--damp", "0"),
        ("--damp", "inf"),
        // GPTQ's damping is a fraction of the mean diagonal: above 1 is refused, not left to
        // overflow into "not positive definite".
        ("--damp", "1.5"),
        ("--damp", "1e308"),
    ] {
        let result = quantize(&[
            "--model", model, "--out", out, "--scheme", "int4", flag, value,
        ]);
        assert_eq!(
            result.status.code(),
            Some(2),
            "{flag} {value}: {}",
            stderr(&result)
        );
        if flag == "--damp" {
            assert!(
                stderr(&result).contains("above 0 and at most 1"),
                "{}",
                stderr(&result)
            );
        }
    }

    // The embedding graph has a Gather and no MatMul.
    let embed = fixture().join("embed.onnx");
    let result = quantize(&[
        "--model",
        embed.to_str().unwrap(),
        "--out",
        out,
        "--scheme",
        "int8",
    ]);
    assert_eq!(result.status.code(), Some(1));
    let message = stderr(&result);
    assert!(
        message.contains("embed.onnx") && message.contains("nothing to quantize"),
        "{message}"
    );

    // An empty file, or another kind of file named .onnx, is no ONNX model (not one without a
    // MatMul to quantize), said of the file; nothing is written.
    let empty = temp.path().join("e.onnx");
    std::fs::write(&empty, b"").unwrap();
    let json = temp.path().join("j.onnx");
    std::fs::write(&json, b"{\"not\": \"a model\"}\n").unwrap();
    for (model, expected) in [
        (&empty, "e.onnx: an empty file (0 bytes), not an ONNX model"),
        (&json, "j.onnx: not an ONNX model"),
    ] {
        let result = quantize(&[
            "--model",
            model.to_str().unwrap(),
            "--out",
            out,
            "--scheme",
            "int8",
        ]);
        assert_eq!(result.status.code(), Some(1));
        let message = stderr(&result);
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("nothing to quantize"), "{message}");
        assert!(!temp.path().join("q").exists());
    }

    let missing = temp.path().join("missing");
    let result = quantize(&[
        "--model",
        missing.to_str().unwrap(),
        "--out",
        out,
        "--scheme",
        "int8",
    ]);
    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("missing: no such folder or file"));

    // Flags of another scheme or method are refused, not ignored.
    for (flag, value, expected) in [
        (
            "--accuracy-level",
            "4",
            "--accuracy-level applies to --scheme int4 only",
        ),
        (
            "--group-size",
            "64",
            "--group-size applies to --scheme int4 only",
        ),
        ("--damp", "0.1", "--damp is for --method gptq"),
    ] {
        let result = quantize(&[
            "--model", model, "--out", out, "--scheme", "int8", flag, value,
        ]);
        assert_eq!(result.status.code(), Some(1));
        assert!(stderr(&result).contains(expected), "{}", stderr(&result));
    }
    // A single graph has no manifest whose hashes --no-verify would skip, nor is one graph
    // rounded on several threads.
    let graph = std::path::Path::new(model).join("block_000.onnx");
    for (flags, expected) in [
        (&["--no-verify"][..], "a single .onnx file has no manifest"),
        (&["--threads", "2"][..], "one .onnx file is one graph"),
    ] {
        let mut args = vec![
            "--model",
            graph.to_str().unwrap(),
            "--out",
            out,
            "--scheme",
            "int8",
        ];
        args.extend(flags);
        let result = quantize(&args);
        assert_eq!(result.status.code(), Some(1));
        assert!(stderr(&result).contains(expected), "{}", stderr(&result));
    }

    // An existing --out is refused before any work (GPTQ takes minutes on a real model), and
    // left as it was.
    std::fs::create_dir(out).unwrap();
    std::fs::write(temp.path().join("q").join("mine.txt"), "kept").unwrap();
    let result = quantize(&["--model", model, "--out", out, "--scheme", "int8"]);
    assert_eq!(result.status.code(), Some(1));
    assert!(
        stderr(&result).contains(&format!(
            "--out {out}: already exists; pass --overwrite to replace it"
        )),
        "{}",
        stderr(&result)
    );
    assert!(!stderr(&result).contains("quantized"));
    assert!(temp.path().join("q").join("mine.txt").is_file());

    // GPTQ's calibration tokens of another model (an id past the fixture's vocabulary of 320)
    // are refused naming the table, before any pass runs.
    let tokens = temp.path().join("other-model-tokens.parquet");
    let table = layerprune_tables::TokenTable::new(4, vec![vec![1, 2, 400, 3]], "other", "text");
    layerprune_tables::write_tokens(
        &tokens,
        &table,
        &layerprune_tables::Provenance::new("test", "0", Vec::new()),
    )
    .unwrap();
    let fresh = temp.path().join("gptq");
    let result = quantize(&[
        "--model",
        model,
        "--out",
        fresh.to_str().unwrap(),
        "--scheme",
        "int4",
        "--method",
        "gptq",
        "--tokens",
        tokens.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let message = stderr(&result);
    assert!(
        message.contains("other-model-tokens.parquet")
            && message.contains("token id 400, outside the model's vocabulary of 320"),
        "{message}"
    );
    assert!(!fresh.exists());
}

#[test]
fn a_weight_holding_nan_or_infinity_is_refused_naming_the_graph_and_tensor() {
    let temp = tempfile::tempdir().unwrap();
    let block = fixture().join("block_000.onnx");
    let weights = layerprune_model::graph_external_data(&block).unwrap();
    for (name, bad) in [("nan", f32::NAN), ("inf", f32::INFINITY)] {
        // One graph with its weight files, the first weight file's 4th value replaced.
        let alone = temp.path().join(name);
        std::fs::create_dir(&alone).unwrap();
        std::fs::copy(&block, alone.join("block_000.onnx")).unwrap();
        layerprune_tests::copy_dir(&fixture().join("weights"), &alone.join("weights"));
        let first = alone.join(weights.iter().next().unwrap());
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[12..16].copy_from_slice(&bad.to_le_bytes());
        std::fs::write(&first, bytes).unwrap();
        let out = temp.path().join(format!("{name}.onnx"));
        let result = quantize(&[
            "--model",
            alone.join("block_000.onnx").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scheme",
            "int8",
        ]);
        let message = stderr(&result);
        assert_eq!(result.status.code(), Some(1), "{message}");
        assert!(
            message.contains("block_000.onnx")
                && message.contains("tensor ")
                && message.contains(&format!("non-finite value(s), the first {bad}")),
            "{message}"
        );
        assert!(!out.exists());
    }
}

/// The help calls the model's files what every other stage does (`--no-verify`: the model
/// files', not "source files'"), and gives --accuracy-level's default, which it applies.
#[test]
fn the_help_names_the_model_files_and_every_default() {
    let output = quantize(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Skip checking the model files' sha256",
        "int8 activations on CPU) [default: 0]",
    ] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
    assert!(!help.contains("source files"), "{help}");
}

/// What a `quantize --out q --overwrite` killed part-way leaves is recovered by the next run
/// whatever process id it is named by: in a container the stage is PID 1 on every run (and the
/// id of a run killed elsewhere may belong to another live process by now). The folder it had
/// moved aside is put back (and then, without --overwrite, refused like any existing folder),
/// its half-built folders are removed, and so is an old folder left beside a finished one.
/// Until 2026-12-07 only leftovers of ids no live process had were recovered: the user's
/// folder stayed hidden as `.q.old-1-0` and model-sized `.q.tmp-1-*` folders stayed for good.
#[cfg(target_os = "linux")]
#[test]
fn a_killed_runs_folders_are_recovered_whatever_process_id_names_them() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("q");
    let model = fixture();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scheme",
            "int8",
        ];
        args.extend(extra);
        quantize(&args)
    };
    let first = run(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let earlier = layerprune_tests::snapshot(&out);
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let half_built = |name: &str| {
        let folder = temp.path().join(name);
        std::fs::create_dir_all(folder.join("weights")).unwrap();
        std::fs::write(folder.join("weights/block_000.bin"), b"half").unwrap();
    };
    // Killed as PID 1 between its two renames; this test's id (a live process) another's.
    std::fs::rename(&out, temp.path().join(".q.old-1-0")).unwrap();
    half_built(".q.tmp-1-1");
    half_built(&format!(".q.tmp-{}-0", std::process::id()));
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("already exists; pass --overwrite"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(names(), vec!["q"]);
    assert_eq!(layerprune_tests::snapshot(&out), earlier);

    // Killed as PID 1 after its new folder was in place, before deleting the old one.
    std::fs::create_dir(temp.path().join(".q.old-1-2")).unwrap();
    std::fs::write(temp.path().join(".q.old-1-2/manifest.json"), b"{}").unwrap();
    half_built(".q.tmp-1-3");
    let replaced = run(&["--overwrite"]);
    assert!(replaced.status.success(), "{}", stderr(&replaced));
    assert_eq!(names(), vec!["q"]);
    assert_eq!(layerprune_tests::snapshot(&out), earlier);
}

/// A folder's output named like one ONNX file is refused before any work: it was written as a
/// folder `model-int4.onnx` (exit 0), which a user or a deployment script takes for one file.
#[test]
fn a_folder_output_named_like_one_onnx_file_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("model-int4.ONNX");
    let result = quantize(&[
        "--model",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--scheme",
        "int4",
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    assert!(
        stderr(&result).contains("model-int4.ONNX: quantize writes a layered model folder"),
        "{}",
        stderr(&result)
    );
    assert!(!out.exists());
}
