//! `inspect` on inputs the stages refuse: the report shows what could be read, the problem
//! follows on standard error naming the file, and the exit status is 1, alike for model
//! folders, every table kind, surrogate files and what is not a layerprune file at all. Sound
//! inputs (a checkpoint among them) exit 0.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use layerprune_tables::{write_evaluations, EvaluationTable, Provenance, TableKind};

fn inspect(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(args)
        .output()
        .unwrap()
}

/// Standard output and standard error of a run that must have exited with `code`.
fn run(args: &[&OsStr], code: i32) -> (String, String) {
    let output = inspect(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(code),
        "inspect {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    (stdout, stderr)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/fixtures/tiny-llama")
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_folder(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the tiny fixture model in `dir/name`, its manifest changed by `edit`.
fn model_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value, &Path)) -> PathBuf {
    let folder = dir.join(name);
    copy_folder(&fixture(), &folder);
    let path = folder.join("manifest.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest, &folder);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    folder
}

/// The reviewer's case: `"context_length": "128"` listed the folder and exited 0, the only sign
/// a remark in `graph_bytes`, while `evaluate` refuses the folder.
#[test]
fn a_model_folder_with_a_mistyped_field_is_shown_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = model_copy(dir.path(), "ctx", |manifest, _| {
        manifest["context_length"] = "128".into();
    });
    let problem = "ctx/manifest.json: context_length is \"128\", not a positive whole number of \
                   tokens";
    let manifest = folder.join("manifest.json");
    for given in [folder.as_os_str(), manifest.as_os_str()] {
        let (stdout, stderr) = run(&[given], 1);
        // Everything that could be read is still there.
        assert!(stdout.contains("model_id "), "{stdout}");
        assert!(
            stdout.contains("  vocab_size               320"),
            "{stdout}"
        );
        assert!(stderr.contains(problem), "{stderr}");
        // The --json report too, for scripts (pipelines/keep_cache.sh reads the model id).
        let output = inspect(&[given, "--json".as_ref()]);
        assert_eq!(output.status.code(), Some(1));
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(json["model_id"].is_string(), "{json}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(problem));
    }
}

/// A graph file missing, or a file whose bytes are not those its manifest hashed: what
/// `evaluate` refuses when it opens the folder. `--no-verify` skips the hashes as evaluate's
/// does, not the rest.
#[test]
fn a_model_folder_with_a_missing_or_changed_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = model_copy(dir.path(), "missing", |manifest, folder| {
        let block = manifest["blocks"][1]["file"].as_str().unwrap();
        std::fs::remove_file(folder.join(block)).unwrap();
    });
    let (stdout, stderr) = run(&[missing.as_os_str()], 1);
    assert!(stdout.contains("model_id "), "{stdout}");
    assert!(stderr.contains("missing/block_001.onnx"), "{stderr}");
    let (_, stderr) = run(&[missing.as_os_str(), "--no-verify".as_ref()], 1);
    assert!(stderr.contains("missing/block_001.onnx"), "{stderr}");

    // One bit of a weight file changed: same size, so only its hash tells.
    let mut weight = String::new();
    let changed = model_copy(dir.path(), "changed", |manifest, folder| {
        weight = manifest["files"]
            .as_object()
            .unwrap()
            .keys()
            .find(|file| file.starts_with("weights/"))
            .unwrap()
            .clone();
        let mut bytes = std::fs::read(folder.join(&weight)).unwrap();
        bytes[0] ^= 1;
        std::fs::write(folder.join(&weight), bytes).unwrap();
    });
    let (stdout, stderr) = run(&[changed.as_os_str()], 1);
    assert!(stdout.contains("graph_bytes "), "{stdout}");
    assert!(
        stderr.contains(&format!("changed/{weight}: sha256 is")),
        "{stderr}"
    );
    run(&[changed.as_os_str(), "--no-verify".as_ref()], 0);
    // The untouched fixture passes every check.
    run(&[fixture().as_os_str()], 0);
}

/// A folder's manifest that is empty or not JSON is refused as the stages refuse it (not
/// described as some file of neither kind); a folder without one is not a model folder.
#[test]
fn a_folder_whose_manifest_is_empty_or_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = model_copy(dir.path(), "empty", |_, _| {});
    std::fs::write(folder.join("manifest.json"), "").unwrap();
    let (stdout, stderr) = run(&[folder.as_os_str()], 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("empty/manifest.json: not a valid manifest"),
        "{stderr}"
    );
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let (_, stderr) = run(&[plain.as_os_str()], 1);
    assert!(
        stderr.contains("plain: a folder without a manifest.json"),
        "{stderr}"
    );
}

/// A Parquet file with its kind, format version and one column `x`, and nothing else.
fn table_of_kind(path: &Path, kind: &str, format_version: &str) {
    use arrow_array::{Int64Array, RecordBatch};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let batch =
        RecordBatch::try_from_iter([("x", std::sync::Arc::new(Int64Array::from(vec![7])) as _)])
            .unwrap();
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            KeyValue::new("layerprune.table".into(), kind.to_string()),
            KeyValue::new(
                "layerprune.format_version".into(),
                format_version.to_string(),
            ),
        ]))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Every kind is read by its own reader: a file that names the kind but lacks its columns and
/// fields was shown with exit 0, and every stage refuses it.
#[test]
fn a_table_of_every_kind_is_checked_by_its_reader() {
    let dir = tempfile::tempdir().unwrap();
    for kind in TableKind::ALL {
        let name = format!("{kind}.parquet");
        let path = dir.path().join(&name);
        table_of_kind(&path, kind.as_str(), "1");
        let (stdout, stderr) = run(&[path.as_os_str()], 1);
        assert!(
            stdout.starts_with(&format!("{}: {kind} table, 1 rows", path.display())),
            "{stdout}"
        );
        assert!(stdout.contains("  x                Int64"), "{stdout}");
        assert!(stderr.contains(&format!("{name}: ")), "{stderr}");
        // --json and --rows 0 decode no row to show, and are checked all the same.
        run(&[path.as_os_str(), "--json".as_ref()], 1);
        run(&[path.as_os_str(), "--rows".as_ref(), "0".as_ref()], 1);
    }
}

/// A kind no build knows, and a format version this build does not read: shown, then refused.
#[test]
fn a_table_of_an_unknown_kind_or_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = dir.path().join("unknown.parquet");
    table_of_kind(&unknown, "frobs", "1");
    let (stdout, stderr) = run(&[unknown.as_os_str()], 1);
    assert!(stdout.contains("frobs table, 1 rows"), "{stdout}");
    assert!(stdout.contains("first rows:\n  x\n  7\n"), "{stdout}");
    assert!(
        stderr.contains("unknown.parquet: unknown table kind \"frobs\" in layerprune.table"),
        "{stderr}"
    );
    let future = dir.path().join("future.parquet");
    table_of_kind(&future, "masks", "9");
    let (_, stderr) = run(&[future.as_os_str()], 1);
    assert!(
        stderr.contains("future.parquet: format version \"9\""),
        "{stderr}"
    );
}

/// A file whose footer reads but whose pages do not (the fuzzer's decoder-panic files): its
/// kind, provenance and schema are shown before the error, and `--rows 0`, which decodes no
/// page to show, exited 0 on it.
#[test]
fn a_table_with_damaged_pages_shows_its_footer_then_is_refused() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tables/tests/data/panic-masks-byte-stream-split-index.parquet");
    for rows in ["0", "10"] {
        let (stdout, stderr) = run(&[file.as_os_str(), "--rows".as_ref(), rows.as_ref()], 1);
        assert!(stdout.contains("masks table, 5 rows"), "{stdout}");
        assert!(stdout.contains("\nschema:\n"), "{stdout}");
        assert!(
            stderr.contains("panic-masks-byte-stream-split-index.parquet: not a readable Parquet"),
            "{stderr}"
        );
    }
}

/// A truncated table and an empty file are errors naming the file and saying what is wrong.
#[test]
fn a_truncated_table_or_an_empty_file_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.parquet");
    write_evaluations(
        &whole,
        &EvaluationTable::new(4, "model", "dataset"),
        &Provenance::new("evaluate", "0", vec![]),
    )
    .unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (_, stderr) = run(&[truncated.as_os_str()], 1);
    assert!(
        stderr.contains("truncated.parquet: not a readable Parquet file"),
        "{stderr}"
    );
    let empty = dir.path().join("empty.parquet");
    std::fs::write(&empty, "").unwrap();
    let (_, stderr) = run(&[empty.as_os_str()], 1);
    assert!(
        stderr.contains("empty.parquet: an empty file (0 bytes)"),
        "{stderr}"
    );
    let (_, stderr) = run(&[dir.path().join("absent.parquet").as_os_str()], 1);
    assert!(
        stderr.contains("absent.parquet: no such file or folder"),
        "{stderr}"
    );
    // The error is one line: the OS's words are not a "caused by" of their own.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A checkpoint or a cache (`complete` = false) is a sound file, which evaluate resumes: exit 0,
/// its first line and `--json` saying it is incomplete (make renames a checkpoint to the table
/// only when `inspect --json` says `"complete": true`, and tells the user why not otherwise).
#[test]
fn a_checkpoint_is_sound_and_says_it_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evaluations.partial.parquet");
    let table = EvaluationTable {
        complete: false,
        ..EvaluationTable::new(4, "model", "dataset")
    };
    write_evaluations(&path, &table, &Provenance::new("evaluate", "0", vec![])).unwrap();
    let (stdout, _) = run(&[path.as_os_str()], 0);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("(incomplete: a checkpoint or a cache, not a finished run)"),
        "{stdout}"
    );
    let (stdout, _) = run(&[path.as_os_str(), "--json".as_ref()], 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["metadata"]["complete"], serde_json::json!(false));
}

/// A surrogate file is loaded as the stages load it: a damaged one (its player count not its
/// model's) or one of a newer format is shown, then refused.
#[test]
fn a_surrogate_file_the_stages_refuse_is_refused() {
    use layerprune_core::Mask;
    let dir = tempfile::tempdir().unwrap();
    let masks: Vec<Mask> = (0..16)
        .map(|bits| format!("{bits:04b}").parse().unwrap())
        .collect();
    let values: Vec<f64> = masks.iter().map(|m| m.num_kept() as f64).collect();
    let fitted = layerprune_surrogate::fit(
        layerprune_surrogate::SurrogateKind::Quadratic,
        &masks,
        &values,
        &layerprune_surrogate::FitOptions::default(),
    )
    .unwrap();
    let sound = dir.path().join("surrogate.json");
    layerprune_surrogate::SavedSurrogate::new(fitted, "utility", "the number kept")
        .save(&sound)
        .unwrap();
    run(&[sound.as_os_str()], 0);
    let mut file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sound).unwrap()).unwrap();
    let damaged = dir.path().join("damaged.json");
    file["num_players"] = 3.into();
    std::fs::write(&damaged, file.to_string()).unwrap();
    let (stdout, stderr) = run(&[damaged.as_os_str()], 1);
    assert!(stdout.contains("layerprune-surrogate"), "{stdout}");
    assert!(
        stderr.contains("damaged.json: damaged surrogate file: num_players is 3"),
        "{stderr}"
    );
    let newer = dir.path().join("newer.json");
    file["format_version"] = 7.into();
    std::fs::write(&newer, file.to_string()).unwrap();
    let (_, stderr) = run(&[newer.as_os_str(), "--json".as_ref()], 1);
    assert!(
        stderr.contains("newer.json: surrogate format version 7 is not supported"),
        "{stderr}"
    );
}

/// What is not a layerprune file is shown as what it is and not checked (no stage reads it):
/// JSON of another format, a manifest under another name. `--no-verify` anywhere but a model
/// folder would be ignored, so it is refused.
#[test]
fn files_of_other_tools_are_not_checked_and_no_verify_is_for_folders() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"format": "something else", "a": 1}"#).unwrap();
    run(&[other.as_os_str()], 0);
    let copy = dir.path().join("copy.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("manifest.json")).unwrap()).unwrap();
    manifest["context_length"] = "128".into();
    std::fs::write(&copy, manifest.to_string()).unwrap();
    let (stdout, _) = run(&[copy.as_os_str()], 0);
    assert!(stdout.contains("not read as a model folder's"), "{stdout}");
    for path in [&other, &copy] {
        let (_, stderr) = run(&[path.as_os_str(), "--no-verify".as_ref()], 1);
        assert!(stderr.contains("--no-verify skips a model folder's hash check"));
    }
    let table = dir.path().join("masks.parquet");
    table_of_kind(&table, "masks", "1");
    let (stdout, stderr) = run(&[table.as_os_str(), "--no-verify".as_ref()], 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(
            "masks.parquet: --no-verify skips a model folder's hash check, and this is a table"
        ),
        "{stderr}"
    );
}

/// A path that is not UTF-8 is read like any other and named lossily in the report and in an
/// error.
#[cfg(unix)]
#[test]
fn a_path_that_is_not_utf8_is_read_and_named() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(OsStr::from_bytes(b"run-\xff"));
    std::fs::create_dir(&folder).unwrap();
    let sound = folder.join("evaluations.parquet");
    write_evaluations(
        &sound,
        &EvaluationTable::new(4, "model", "dataset"),
        &Provenance::new("evaluate", "0", vec![]),
    )
    .unwrap();
    let (stdout, _) = run(&[sound.as_os_str()], 0);
    assert!(
        stdout.contains("run-\u{fffd}/evaluations.parquet: evaluations table, 0 rows"),
        "{stdout}"
    );
    let refused = folder.join("frobs.parquet");
    table_of_kind(&refused, "frobs", "1");
    let (_, stderr) = run(&[refused.as_os_str()], 1);
    assert!(
        stderr.contains("run-\u{fffd}/frobs.parquet: unknown table kind"),
        "{stderr}"
    );
    let model = model_copy(&folder, "ctx", |manifest, _| {
        manifest["context_length"] = "128".into();
    });
    let (_, stderr) = run(&[model.as_os_str()], 1);
    assert!(
        stderr.contains("run-\u{fffd}/ctx/manifest.json: context_length is \"128\""),
        "{stderr}"
    );
}

/// The help says what is checked and what each exit status means.
#[test]
fn the_help_documents_the_checks_and_the_exit_status() {
    let (help, _) = run(&["--help".as_ref()], 0);
    for expected in [
        "Checks and exit status:",
        "1  they would refuse it, or it cannot be read",
        "complete = false",
        "--no-verify",
        "shown, not checked",
    ] {
        assert!(
            help.contains(expected),
            "{expected:?} missing from:\n{help}"
        );
    }
}
