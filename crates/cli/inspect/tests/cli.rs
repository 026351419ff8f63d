//! `inspect` on a table written by the tables crate, on JSON, and on a file of neither kind.

use layerprune_core::Design;
use std::process::Command;

use layerprune_core::Mask;
use layerprune_tables::{
    write_evaluations, write_masks, EvaluationTable, MaskRow, MaskTable, Provenance,
};

fn inspect(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_incomplete_evaluation_table_says_so_first() {
    let dir = tempfile::tempdir().unwrap();
    let provenance = Provenance::new("evaluate", "0.1.0", vec!["evaluate".into()]);
    for complete in [false, true] {
        let path = dir.path().join(format!("evaluations-{complete}.parquet"));
        let table = EvaluationTable {
            complete,
            evaluated_on: None,
            ..EvaluationTable::new(4, "model", "dataset")
        };
        write_evaluations(&path, &table, &provenance).unwrap();
        let output = inspect(&[path.as_os_str()]);
        // A checkpoint is a sound file (evaluate resumes it): said, not refused.
        assert!(output.status.success());
        let text = String::from_utf8(output.stdout).unwrap();
        let first = text.lines().next().unwrap();
        assert!(
            first.ends_with("evaluations table, 0 rows") == complete,
            "{first}"
        );
        assert!(
            first.contains("(incomplete: a checkpoint or a cache") != complete,
            "{first}"
        );
    }
}

#[test]
fn shows_kind_provenance_fields_schema_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let table = MaskTable {
        num_blocks: 4,
        fixed_blocks: vec![0],
        rows: ["1011", "1100", "1111"]
            .iter()
            .map(|id| MaskRow {
                mask: id.parse::<Mask>().unwrap(),
                design: Design::Stratum,
                group_id: None,
                position: None,
            })
            .collect(),
    };
    let provenance = Provenance::new("sample-masks", "0.1.0", vec!["sample-masks".into()]);
    write_masks(&path, &table, &provenance.with_seed(7)).unwrap();

    let output = inspect(&[path.as_os_str(), "--rows".as_ref(), "2".as_ref()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "masks table, 3 rows",
        "tool             sample-masks",
        "seed             7",
        "fixed_blocks     [0]",
        "num_blocks       4",
        "design           Utf8",
        "1011\t1011\t1\tstratum",
        "1100\t1100\t2\tstratum",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("1111"), "only two rows asked for:\n{text}");

    let output = inspect(&[path.as_os_str(), "--json".as_ref()]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["rows"], 3);
    assert_eq!(json["metadata"]["table"], "masks");
    assert_eq!(json["metadata"]["fixed_blocks"], serde_json::json!([0]));
    // JSON entries as JSON (formats.md), numbers as numbers; ids stay strings.
    assert_eq!(json["metadata"]["seed"], serde_json::json!(7));
    assert_eq!(json["metadata"]["num_blocks"], serde_json::json!(4));
    assert_eq!(json["columns"][0]["nullable"], serde_json::json!(false));

    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01 not a table").unwrap();
    let output = inspect(&[junk.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("junk.bin: neither a Parquet table nor JSON"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A usage error (a value out of its bounds) is told apart from a bad file by its status.
    let output = inspect(&[path.as_os_str(), "--rows".as_ref(), "70000".as_ref()]);
    assert_eq!(output.status.code(), Some(2));
}

/// The damaged tables the fuzzer found (crates/tables/tests/data: page headers that hung
/// parquet 60.1, footers and pages that panicked its decoder) are errors naming the file,
/// exit 1, without a hang or a panic message: `inspect` reads through the same checks as the
/// stages.
#[test]
fn damaged_tables_are_errors_not_hangs_or_panics() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tables/tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 7, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut child = Command::new(env!("CARGO_BIN_EXE_inspect"))
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                child.kill().unwrap();
                panic!("inspect {name} hung");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(&name), "{name}: {stderr}");
        assert!(stderr.contains("not a readable Parquet file"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

/// Every column type prints as its values: the surrogate metrics' Int32 `fold` (−1 for the
/// mean over folds) was shown as `<Int32>`.
#[test]
fn every_column_type_prints_its_values() {
    use layerprune_tables::{write_surrogate_metrics, SurrogateMetricRow, SurrogateMetricsTable};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.parquet");
    let row = |fold: i32| SurrogateMetricRow {
        kind: "quadratic".into(),
        value: "utility".into(),
        fold,
        r2: 0.5,
        spearman: 0.25,
        mae: 0.125,
        n_train: 10,
        n_test: 5,
    };
    let table = SurrogateMetricsTable {
        rows: vec![row(0), row(-1)],
    };
    write_surrogate_metrics(&path, &table, &Provenance::new("test", "0", vec![])).unwrap();
    // --json prints no rows: rows asked for beside it are refused, not ignored.
    let rows = inspect(&[
        "--json".as_ref(),
        "--rows".as_ref(),
        "3".as_ref(),
        path.as_os_str(),
    ]);
    assert_eq!(rows.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&rows.stderr).contains("--json prints the metadata only"));
    let output = inspect(&[path.as_os_str()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(!text.contains("<Int32>"), "{text}");
    assert!(
        text.contains("quadratic\tutility\t-1\t0.5\t0.25\t0.125\t10\t5"),
        "{text}"
    );
}

/// A model folder shows its id, the `model_id` every table evaluated on it records.
#[test]
fn a_model_folder_shows_the_id_its_tables_record() {
    let folder =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/fixtures/tiny-llama");
    let id = layerprune_core::sha256_hex(&std::fs::read(folder.join("manifest.json")).unwrap());
    let output = inspect(&[folder.as_os_str()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains(&format!("model_id                 {id}")),
        "{text}"
    );
    // Any JSON file's long lists by their size (the exporter's reference logits: 200 kB).
    let output = inspect(&[folder.join("reference.json").as_os_str()]);
    let reference = String::from_utf8(output.stdout).unwrap();
    assert!(
        reference.contains("logits                   (2 entries; --json shows them)"),
        "{reference}"
    );
    assert!(reference.len() < 2000, "{} bytes", reference.len());
    let output = inspect(&[folder.as_os_str(), "--json".as_ref()]);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["model_id"], serde_json::json!(id));
    // The bulky lists are there by their size, as the text shows them.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_object().unwrap().len();
    assert_eq!(json["summarized"]["blocks"], serde_json::json!(6));
    assert_eq!(json["summarized"]["files"], serde_json::json!(files));
    assert!(json.get("files").is_none() && json.get("blocks").is_none());
    assert!(text.contains(&format!("files                    ({files} entries)")));
    // What evaluating it holds in memory: its tied embedding and head weights twice.
    let (distinct, per_graph) = (
        json["graph_bytes"]["distinct"].as_u64().unwrap(),
        json["graph_bytes"]["per_graph"].as_u64().unwrap(),
    );
    assert!(distinct > 1_000_000 && per_graph > distinct, "{json}");
    assert!(
        text.contains("graph_bytes              0.001 GiB of graphs and weights evaluation opens"),
        "{text}"
    );
}

/// A pruned or quantized folder keeps the exporter's `check` of the model as exported; the
/// text says so beside it, so it does not read as a check of the folder shown.
#[test]
fn the_exporters_check_of_a_pruned_or_quantized_folder_is_labelled_as_the_exports() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/fixtures/tiny-llama");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).unwrap()).unwrap();
    // The manifest in a copy of its folder: a folder's manifest is checked with its files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    for file in manifest["files"].as_object().unwrap().keys() {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let path = dir.path().join("manifest.json");
    let check_line = |manifest: &serde_json::Value| {
        std::fs::write(&path, serde_json::to_vec(manifest).unwrap()).unwrap();
        let output = inspect(&[path.as_os_str()]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        text.lines()
            .find(|line| line.trim_start().starts_with("check "))
            .unwrap_or_else(|| panic!("no check line in {text}"))
            .to_string()
    };
    assert!(!check_line(&manifest).contains("the export's"));
    manifest["pruned_from"] = serde_json::json!({"removed_blocks": [2, 4]});
    assert!(check_line(&manifest).ends_with("(the export's, before pruning)"));
    manifest["quantization"] = serde_json::json!({"scheme": "int8"});
    assert!(check_line(&manifest).ends_with("(the export's, before pruning and quantization)"));
}

/// A manifest without `context_length` (an export from before the field, as the committed
/// fixture) says so in the field's place, as what it means for the windows; one with it shows
/// the number, and `--json` shows the manifest's fields only.
#[test]
fn a_manifest_without_context_length_says_it_is_not_recorded() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/fixtures/tiny-llama");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("manifest.json")).unwrap()).unwrap();
    assert!(
        manifest.get("context_length").is_none(),
        "the fixture has it now"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    for file in manifest["files"].as_object().unwrap().keys() {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let path = dir.path().join("manifest.json");
    let report = |manifest: &serde_json::Value, extra: &[&str]| {
        std::fs::write(&path, serde_json::to_vec(manifest).unwrap()).unwrap();
        let mut args = vec![dir.path().as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        String::from_utf8(inspect(&args).stdout).unwrap()
    };
    let field = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|line| line.trim_start().starts_with("context_length "))
            .map(str::to_string)
            .collect()
    };
    let text = report(&manifest, &[]);
    assert_eq!(
        field(&text),
        [
            "  context_length           not recorded (the export predates it): windows are not \
          checked against the model's context; export the model again to record it"
        ],
        "{text}"
    );
    // In its place among the sorted fields, between `check` and `dtype`.
    let lines: Vec<&str> = text.lines().collect();
    let at = |key: &str| {
        lines
            .iter()
            .position(|line| line.trim_start().starts_with(&format!("{key} ")))
            .unwrap()
    };
    assert!(
        at("check") < at("context_length") && at("context_length") < at("dtype"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&report(&manifest, &["--json"])).unwrap();
    // The file's fields as they are; the text report's words under `notes`.
    assert!(json.get("context_length").is_none(), "{json}");
    assert!(
        json["notes"]["context_length"]
            .as_str()
            .is_some_and(|note| note.starts_with("not recorded (the export predates it)")),
        "{json}"
    );
    // A model without positions has none to record.
    manifest["architecture"] = serde_json::json!("mamba");
    let text = report(&manifest, &[]);
    assert!(
        field(&text)[0].contains("none (a model without positions"),
        "{text}"
    );
    manifest["architecture"] = serde_json::json!("llama");
    manifest["context_length"] = serde_json::json!(256);
    let text = report(&manifest, &[]);
    assert_eq!(field(&text), ["  context_length           256"], "{text}");
    let json: serde_json::Value = serde_json::from_str(&report(&manifest, &["--json"])).unwrap();
    assert!(json.get("notes").is_none(), "{json}");
}

/// A tab or a line break inside a string is escaped, so a row stays one line of its columns.
#[test]
fn control_characters_in_a_value_do_not_break_the_rows() {
    use layerprune_tables::{write_surrogate_metrics, SurrogateMetricRow, SurrogateMetricsTable};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.parquet");
    let table = SurrogateMetricsTable {
        rows: vec![SurrogateMetricRow {
            kind: "two\tcolumns\nand a row".into(),
            value: "utility".into(),
            fold: 0,
            r2: 0.5,
            spearman: 0.25,
            mae: 0.125,
            n_train: 10,
            n_test: 5,
        }],
    };
    write_surrogate_metrics(&path, &table, &Provenance::new("test", "0", vec![])).unwrap();
    let output = inspect(&[path.as_os_str()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "first rows:")
        .skip(2)
        .collect();
    assert_eq!(
        rows,
        ["  two\\tcolumns\\nand a row\tutility\t0\t0.5\t0.25\t0.125\t10\t5"],
        "{text}"
    );
}

/// A Parquet file of another tool is said to be one, without empty provenance sections; JSON
/// that is not an object is said to be JSON.
#[test]
fn files_of_other_tools_are_described_as_what_they_are() {
    use arrow_array::{Int64Array, RecordBatch};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.parquet");
    let batch =
        RecordBatch::try_from_iter([("x", std::sync::Arc::new(Int64Array::from(vec![1, 2])) as _)])
            .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let output = inspect(&[path.as_os_str()]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    let first = text.lines().next().unwrap();
    assert!(
        first.ends_with("other.parquet: Parquet file, not a layerprune table: 2 rows"),
        "{text}"
    );
    assert!(
        !text.contains("provenance:") && !text.contains("fields:"),
        "{text}"
    );
    assert!(
        text.contains("schema:") && text.contains("  1\n  2\n"),
        "{text}"
    );

    let array = dir.path().join("list.json");
    std::fs::write(&array, "[1, 2]").unwrap();
    let output = inspect(&[array.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("list.json: JSON, but not an object"),
        "{error}"
    );
}

/// A manifest is sized as a model folder's only when it is the folder's manifest.json: a copy
/// under another name is not given the sizes of the manifest.json beside it (nor an error about
/// a folder named "").
#[test]
fn only_a_folders_own_manifest_is_sized_as_the_folder() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../data/fixtures/tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    std::fs::copy(fixture.join("manifest.json"), &copy).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .arg("copy.json")
        .arg("--json")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let unknown = json["graph_bytes"]["unknown"].as_str().unwrap();
    assert!(unknown.contains("not named manifest.json"), "{unknown}");
    // The folder's own, reached from inside it.
    let output = Command::new(env!("CARGO_BIN_EXE_inspect"))
        .args(["manifest.json", "--json"])
        .current_dir(&fixture)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        json["graph_bytes"]["distinct"].as_u64().unwrap() > 0,
        "{json}"
    );
}

/// The argument may be a model folder, so the help calls it a PATH, not a FILE.
#[test]
fn the_help_calls_the_argument_a_path() {
    let output = inspect(&["--help".as_ref()]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("inspect [OPTIONS] <PATH>"), "{help}");
    assert!(!help.contains("<FILE>"), "{help}");
}

/// Names and metadata of a table of another tool may hold any character: a column name with a
/// tab or a line break, a value with a terminal's escape sequence. The text report escapes them
/// as it does the rows', so the schema stays one line a column and nothing reaches the terminal
/// raw.
#[test]
fn control_characters_in_names_and_metadata_are_escaped() {
    use arrow_array::{Int64Array, RecordBatch};
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.parquet");
    let batch = RecordBatch::try_from_iter([(
        "a\tb\nc",
        std::sync::Arc::new(Int64Array::from(vec![7])) as _,
    )])
    .unwrap();
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![
            KeyValue::new("layerprune.table".into(), "masks\u{1b}[2J".to_string()),
            KeyValue::new(
                "layerprune.note\u{7}".into(),
                "red \u{1b}[31m alert".to_string(),
            ),
            KeyValue::new(
                "layerprune.lines".into(),
                "first\u{1b}[0m\nsecond".to_string(),
            ),
        ]))
        .build();
    let file = std::fs::File::create(&path).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    // Its kind is no kind a stage reads: shown, then refused, the kind escaped in the error too.
    let output = inspect(&[path.as_os_str()]);
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains(r#"unknown table kind "masks\u{1b}[2J""#) && !error.contains('\u{1b}'),
        "{error:?}"
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("masks\\u{1b}[2J table, 1 rows"), "{text}");
    assert!(text.contains("  note\\u{7}"), "{text}");
    assert!(text.contains("red \\u{1b}[31m alert"), "{text}");
    assert!(
        text.contains("2 lines; the first: first\\u{1b}[0m"),
        "{text}"
    );
    let schema: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "schema:")
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    assert_eq!(schema, [format!("  {:<16} Int64", "a\\tb\\nc")], "{text}");
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|line| *line != "first rows:")
        .skip(1)
        .collect();
    assert_eq!(rows, ["  a\\tb\\nc", "  7"], "{text}");
}
