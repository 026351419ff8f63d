//! The binary end to end: text and a tokenizer in, a token table with provenance out.

use std::path::Path;
use std::process::Command;

/// A word-level tokenizer: "w0" … "w99" are ids 0 … 99, anything else is [UNK] (100).
fn write_tokenizer(folder: &Path) -> std::path::PathBuf {
    let mut vocab = serde_json::Map::new();
    for id in 0..100u32 {
        vocab.insert(format!("w{id}"), id.into());
    }
    vocab.insert("[UNK]".into(), 100.into());
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    let path = folder.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    path
}

fn prepare_tokens(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_prepare-tokens"))
        .args(args)
        .output()
        .unwrap()
}

/// prepare-tokens of 2 windows of 2 tokens of `text` into `out`, with `extra` arguments.
fn two_windows_of_two(
    tokenizer: &Path,
    text: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "--tokenizer",
        tokenizer.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--windows",
        "2",
        "--seq-len",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    prepare_tokens(&args)
}

/// prepare-tokens of 2 windows of `seq_len` tokens of `text`, tokenized for the model folder
/// `model`, into `out`.
fn two_windows_for_model(
    model: &Path,
    text: &Path,
    seq_len: &str,
    out: &Path,
) -> std::process::Output {
    prepare_tokens(&[
        "--model",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
        "--windows",
        "2",
        "--seq-len",
        seq_len,
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn writes_the_table_and_reports_it() {
    let folder = tempfile::tempdir().unwrap();
    let model_folder = folder.path().join("model");
    std::fs::create_dir(&model_folder).unwrap();
    write_tokenizer(&model_folder);
    let lines: Vec<String> = (0..100)
        .map(|id| format!("{{\"doc\": {{\"text\": \"w{id}\"}}}}"))
        .collect();
    let jsonl = folder.path().join("docs.jsonl");
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let out = folder.path().join("tokens.parquet");
    let model = model_folder.to_str().unwrap();
    // Never into the model folder: a table there could replace the manifest or a graph.
    let inside = model_folder.join("manifest.json");
    let refused = prepare_tokens(&[
        "--model",
        model,
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--field",
        "doc.text",
        "--out",
        inside.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("inside the input folder"), "{stderr}");
    assert!(!inside.exists());
    let output = prepare_tokens(&[
        "--model",
        model,
        "--jsonl",
        jsonl.to_str().unwrap(),
        "--field",
        "doc.text",
        "--documents",
        "10:50",
        "--windows",
        "4",
        // The flag's name until 2026-12-04, still accepted.
        "--length",
        "5",
        "--mode",
        "random",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let table = layerprune_tables::read_tokens(&out).unwrap();
    assert_eq!((table.seq_len, table.windows.len()), (5, 4));
    // Documents 10..50 only, one token each, windows in stream order without overlap.
    let ids = table.windows.concat();
    assert!(ids.iter().all(|id| (10..50).contains(id)), "{ids:?}");
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    assert!(stdout.contains(&table.dataset_id), "{stdout}");
    assert!(stdout.contains("40 documents"), "{stdout}");

    let provenance = layerprune_tables::read_provenance(&out).unwrap();
    assert_eq!(provenance.tool, "prepare-tokens");
    assert_eq!(provenance.seed, Some(3));
    assert_eq!(
        provenance.inputs.get("tokenizer"),
        Some(&table.tokenizer_sha256)
    );
}

#[test]
fn a_short_stream_fails_with_status_1_and_writes_nothing() {
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = write_tokenizer(folder.path());
    let text = folder.path().join("short.txt");
    std::fs::write(&text, "w1 w2 w3").unwrap();
    let out = folder.path().join("tokens.parquet");
    let output = two_windows_of_two(&tokenizer, &text, &out, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("3 tokens") && stderr.contains("short.txt"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// A setting of the other window mode is refused, not ignored: `--seed` places random windows
/// only, `--offset` starts consecutive ones only.
#[test]
fn a_setting_of_the_other_mode_is_refused() {
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = write_tokenizer(folder.path());
    let text = folder.path().join("text.txt");
    std::fs::write(&text, "w1 w2 w3 w4 w5 w6 w7 w8").unwrap();
    let out = folder.path().join("tokens.parquet");
    let run = |extra: &[&str]| two_windows_of_two(&tokenizer, &text, &out, extra);
    for (extra, expected) in [
        (&["--seed", "3"][..], "--seed is for --mode random"),
        (
            &["--mode", "consecutive", "--seed", "0"][..],
            "--seed is for --mode random",
        ),
        (
            &["--mode", "random", "--offset", "2"][..],
            "--offset is for --mode consecutive",
        ),
        // And a setting of another source: --field names the text of --jsonl's lines.
        (&["--field", "text"][..], "--field is for --jsonl"),
        // A separator between the documents of a text that is one document.
        (
            &["--separator", "XYZ"][..],
            "--separator goes between documents, and --text without --paragraphs is one document",
        ),
    ] {
        let output = run(extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!out.exists());
    }
    for extra in [
        &["--offset", "2"][..],
        &["--mode", "random", "--seed", "3"][..],
    ] {
        let output = run(extra);
        assert!(
            output.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::remove_file(&out).unwrap();
    }
}

/// `--model` reads the tokenizer the manifest names, as `evaluate` does (a layered folder need not
/// call it tokenizer.json), so the table's tokens are checked against that same file.
#[test]
fn a_model_folder_s_tokenizer_is_the_one_its_manifest_names() {
    let folder = tempfile::tempdir().unwrap();
    let model = folder.path().join("model");
    std::fs::create_dir(&model).unwrap();
    let fixture = layerprune_tests::tiny_model_dir();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
        }
    }
    std::fs::rename(
        model.join("tokenizer.json"),
        model.join("llama-tokenizer.json"),
    )
    .unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("manifest.json")).unwrap()).unwrap();
    manifest["tokenizer"] = "llama-tokenizer.json".into();
    let files = manifest["files"].as_object_mut().unwrap();
    let hash = files.remove("tokenizer.json").unwrap();
    files.insert("llama-tokenizer.json".into(), hash);
    std::fs::write(
        model.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let text = fox_text(folder.path());
    let out = folder.path().join("tokens.parquet");
    let output = two_windows_for_model(&model, &text, "8", &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = layerprune_tables::read_tokens(&out).unwrap();
    assert_eq!(
        table.tokenizer_sha256,
        layerprune_tests::tiny_tokenizer_sha256()
    );
}

#[test]
fn windows_longer_than_the_model_runs_are_refused_before_tokenizing() {
    let folder = tempfile::tempdir().unwrap();
    let model = folder.path().join("model");
    layerprune_tests::copy_tiny_model_with_manifest(&model, |manifest| {
        manifest["context_length"] = 8.into();
    });
    let text = fox_text(folder.path());
    let out = folder.path().join("tokens.parquet");
    let run = |seq_len: &str| two_windows_for_model(&model, &text, seq_len, &out);
    let output = run("9");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("at most 8 tokens (context_length") && stderr.contains("--seq-len 8"),
        "{stderr}"
    );
    // The setting to change under make, whose runs give prepare-tokens its --seq-len.
    assert!(stderr.contains("(make: SEQ_LEN=8)"), "{stderr}");
    assert!(!out.exists());
    let output = run("8");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A text of a few fox sentences in `folder`, for the model-folder tests.
fn fox_text(folder: &Path) -> std::path::PathBuf {
    let text = folder.join("text.txt");
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog ".repeat(20),
    )
    .unwrap();
    text
}

/// `--windows` and `--seq-len` are said in the token table's own words (`num_windows`,
/// `seq_len`), as the stages that read the table say them.
#[test]
fn the_help_names_the_token_tables_fields() {
    let output = prepare_tokens(&["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in ["`num_windows`", "`seq_len`"] {
        assert!(help.contains(expected), "{expected:?} not in:\n{help}");
    }
}

/// A stage with no loop that stops part-way (here, one waiting for a FIFO's writer) ends at
/// once on SIGTERM, as by default. Until 2026-12-08 a workspace build gave every stage the
/// model-running stages' handler (cargo features are unified across the workspace): it said it
/// would stop at its next batch and went on waiting, or ran to the end and exited 0.
#[test]
fn sigterm_ends_a_stage_that_runs_no_model_at_once() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let folder = tempfile::tempdir().unwrap();
    let tokenizer = write_tokenizer(folder.path());
    let fifo = folder.path().join("text.fifo");
    layerprune_tests::make_fifo(&fifo);
    let out = folder.path().join("tokens.parquet");
    let mut child = Command::new(env!("CARGO_BIN_EXE_prepare-tokens"))
        .args(["--tokenizer", tokenizer.to_str().unwrap()])
        .args(["--text", fifo.to_str().unwrap()])
        .args(["--windows", "2", "--seq-len", "2"])
        .args(["--out", out.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Sent once it waits for the FIFO's writer (said after a second).
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting for its writer") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{said}");
        said += &line;
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("prepare-tokens still waits 30 s after SIGTERM: {said}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.signal(), Some(15), "{status:?}: {said}");
    assert!(!out.exists());
}

/// A folder whose manifest.json is there but is not a regular file is a damaged layered
/// folder: refused as every other stage refuses it, naming manifest.json and what it is, not
/// taken for a Hugging Face folder (whose tokenizer.json the copy also holds) with the
/// manifest's window-length checks skipped.
#[test]
fn a_manifest_that_is_not_a_regular_file_is_refused_not_passed_over() {
    let folder = tempfile::tempdir().unwrap();
    let text = fox_text(folder.path());
    let mut cases = vec![("folder", "is a folder, not a regular file")];
    #[cfg(unix)]
    cases.extend([
        ("device", "is a device, not a regular file"),
        ("fifo", "is a named pipe (FIFO), not a regular file"),
        (
            "dangling",
            "a symbolic link to manifest-gone.json, which is not there",
        ),
    ]);
    // The manifest.json of case `name`.
    let make = |name: &str, path: &Path| match name {
        "folder" => std::fs::create_dir(path).unwrap(),
        #[cfg(unix)]
        "device" => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        #[cfg(unix)]
        "fifo" => layerprune_tests::make_fifo(path),
        #[cfg(unix)]
        "dangling" => std::os::unix::fs::symlink("manifest-gone.json", path).unwrap(),
        _ => unreachable!("{name}"),
    };
    for (name, said) in cases {
        let model = folder.path().join(name);
        layerprune_tests::copy_tiny_model_with_manifest(&model, |_| {});
        let manifest = model.join("manifest.json");
        std::fs::remove_file(&manifest).unwrap();
        make(name, &manifest);
        let out = folder.path().join(format!("{name}.parquet"));
        let output = two_windows_for_model(&model, &text, "8", &out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&manifest.display().to_string()) && stderr.contains(said),
            "{name}: {stderr}"
        );
        assert!(!out.exists(), "{name}");
    }
}
