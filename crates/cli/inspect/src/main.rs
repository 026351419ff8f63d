//! `inspect`: look inside any file the pipeline writes without writing Python. For a table
//! (Parquet): its kind, format version, provenance (tool, version, command line, input ids,
//! seed), the table-level fields (number of blocks, fixed blocks, model and dataset ids, ...),
//! the schema, the row count and the first rows. For a surrogate file or a model folder's
//! manifest (JSON): its self-description, the parameters and per-file lists by their number of
//! entries.
//!
//! After the report, the input is checked as the stages read it, and the exit status says
//! whether they would take it: a report that looks whole but of a file every stage refuses (a
//! model folder whose `context_length` is the string "128", a table of an unknown kind, a
//! graph file that no longer has its hash) exited 0, the problem only a remark in a field. Now
//! the report is printed all the same, then the problem on standard error, naming the file,
//! and the exit status is 1 (`Args`' help lists what is checked). Any Parquet file is read
//! through the table readers' structural checks (`layerprune_tables::read_head`): a damaged one
//! is an error naming it, never a hang.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use clap::Parser;
use layerprune_model::{Manifest, MANIFEST_FILE};
use layerprune_tables::TableKind;
use std::fmt::Write as _;

/// Look inside a table, a surrogate file or a model folder, and check it as the stages read it.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  inspect build/runs/smollm2-135m/evaluations.parquet\n  \
                  inspect --rows 0 plans.parquet          # metadata and schema only\n  \
                  inspect --json scores.parquet           # metadata as one JSON object\n  \
                  (a JSON file's --json: its fields, the bulky ones counted under \"summarized\", \
                  what the text report adds under \"notes\")\n  \
                  inspect surrogate-quadratic.json\n  inspect build/models/smollm2-135m\n\n\
                  Checks and exit status:\n  \
                  The report shows what can be read; then the input is checked as the stages \
                  read it.\n  \
                  0  the stages would take it\n  \
                  1  they would refuse it, or it cannot be read: the report (what could be \
                  read) is still printed,\n     \
                  and the problem follows on standard error, naming the file\n  \
                  2  a usage error (an unknown flag, a value out of its bounds)\n  \
                  What is checked:\n  \
                  model folder (or its manifest.json): the manifest's fields, every graph and \
                  weight file there\n    \
                  with the sha256 its manifest lists (what evaluate, apply-prune and quantize \
                  check;\n    \
                  --no-verify skips the hashes, as theirs does)\n  \
                  table (a layerprune.table entry): read whole by its kind's reader: format \
                  version, columns,\n    \
                  the table's fields, every row; an unknown kind is refused. An evaluation \
                  table that is a\n    \
                  checkpoint or a cache (complete = false) is a sound file (exit 0; evaluate \
                  resumes it):\n    \
                  its first line says it is incomplete (--json: \"complete\": false), and \
                  fit-surrogate, shapley,\n    \
                  score-blocks and sample-masks --pilot refuse it without --allow-incomplete\n  \
                  surrogate file: loaded as shapley and apply-prune load it\n  \
                  a Parquet or JSON file of another tool, or a manifest under another name than \
                  manifest.json:\n    \
                  shown, not checked (no stage reads it as it is), exit 0"
)]
struct Args {
    /// A table (.parquet), a surrogate file (.json) or a model folder (or its manifest.json).
    // A path, not a FILE: a model folder is one.
    #[arg(value_name = "PATH")]
    file: PathBuf,
    /// Rows to show [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u16))]
    rows: Option<u16>,
    /// Print the metadata as one JSON object (for scripts) instead of text: no rows (--rows
    /// other than 0 is for the text).
    #[arg(long)]
    json: bool,
    /// Skip hashing a model folder's files against its manifest (a 7B model's 13.5 GB take
    /// about 20 s), as `evaluate --no-verify` does; the folder's other checks still run. For a
    /// model folder only.
    #[arg(long)]
    no_verify: bool,
}

/// Appends a line to the report (built whole, then written once, so `inspect … | head` ends
/// quietly instead of failing on a closed pipe).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

fn main() -> ExitCode {
    layerprune_cli_common::run(|| {
        let args = Args::parse();
        let mut out = String::new();
        // The report is printed whether or not the input passes its checks: what could be read
        // is shown, and the problem follows on standard error (exit 1).
        let verdict = inspect(&args, &mut out);
        layerprune_cli_common::print_summary(&out)?;
        verdict
    })
}

fn inspect(args: &Args, out: &mut String) -> Result<()> {
    if args.json && args.rows.is_some_and(|rows| rows > 0) {
        bail!("--rows shows rows in the text report; --json prints the metadata only (leave --rows out)");
    }
    if args.file.is_dir() {
        let manifest = args.file.join(MANIFEST_FILE);
        if !manifest.exists() {
            bail!(
                "{}: a folder without a manifest.json, so not a layered model folder (inspect \
                 reads model folders, tables, and surrogate files)",
                args.file.display()
            );
        }
        // A folder is read as a model folder whatever its manifest.json holds: a manifest that
        // is not JSON at all is refused as the stages refuse it, not described as some file.
        return inspect_json(&manifest, Some(&args.file), args, out);
    }
    let path = &args.file;
    // The first bytes tell the kind, before anything is read whole: a large file of neither
    // kind (a 4 GB image) is refused at once, not parsed as JSON from memory.
    let mut head = Vec::with_capacity(512);
    {
        use std::io::Read;
        let file = layerprune_core::open_input(path).map_err(|error| unreadable(path, error))?;
        file.take(512)
            .read_to_end(&mut head)
            .map_err(|error| unreadable(path, error))?;
    }
    if head.is_empty() {
        // Said as such: "neither a Parquet table nor JSON" reads as a file of some other kind.
        bail!(
            "{}: an empty file (0 bytes), neither a Parquet table nor JSON",
            path.display()
        );
    }
    let text_start = head
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or(&head)
        .iter()
        .find(|b| !b.is_ascii_whitespace());
    if head.starts_with(b"PAR1") {
        refuse_no_verify(args, path, "a table")?;
        inspect_table(path, args, out)
    } else if matches!(text_start, Some(b'{' | b'[')) {
        // An array is JSON too: inspect_json says it is not an object, rather than "not JSON".
        inspect_json(path, None, args, out)
    } else {
        bail!(
            "{}: neither a Parquet table nor JSON (inspect reads tables, and the JSON objects \
             of surrogate files and model manifests)",
            path.display()
        )
    }
}

/// An input that cannot be opened or read, in one line naming it (the OS's words, but a path
/// that is not there said in words of its own: "No such file or directory (os error 2)" under
/// the name on a line of its own read as two errors).
fn unreadable(path: &Path, error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        anyhow!("{}: no such file or folder", path.display())
    } else {
        anyhow!("{}: {error}", path.display())
    }
}

/// `--no-verify` hashes nothing but a model folder's files: given with anything else it would
/// be ignored, and a setting a run would ignore is refused (docs/reliability.md).
fn refuse_no_verify(args: &Args, path: &Path, what: &str) -> Result<()> {
    if args.no_verify {
        bail!(
            "{}: --no-verify skips a model folder's hash check, and this is {what}: leave it out",
            path.display()
        );
    }
    Ok(())
}

/// Reads a layerprune table whole with its kind's reader, the one every stage reads it with:
/// the checks a stage makes of one file (kind, format version, columns and their types, the
/// table's fields, every row). A Parquet file of another tool (no `layerprune.table` entry) is
/// not checked: no stage reads one, and inspect shows it as what it is.
fn check_table(path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
    use layerprune_tables as tables;
    if !metadata.contains_key(&tables::metadata_key("table")) {
        return Ok(());
    }
    // A `match` over every kind, so a new kind cannot go unchecked here.
    match tables::kind_of(path, metadata)? {
        TableKind::Tokens => tables::read_tokens(path).map(drop),
        TableKind::Masks => tables::read_masks(path).map(drop),
        // Not `read_complete_evaluations`: a checkpoint or a cache is a sound file, which
        // evaluate resumes and apply-prune and frontier read; the report's first line says it
        // is incomplete.
        TableKind::Evaluations => tables::read_evaluations(path).map(drop),
        TableKind::BlockStats => tables::read_block_stats(path).map(drop),
        TableKind::SurrogateMetrics => tables::read_surrogate_metrics(path).map(drop),
        TableKind::Scores => tables::read_scores(path).map(drop),
        TableKind::Plans => tables::read_plans(path).map(drop),
        TableKind::TaskChoices => tables::read_task_choices(path).map(drop),
        TableKind::TaskAccuracies => tables::read_task_accuracies(path).map(drop),
    }?;
    Ok(())
}

/// The `layerprune.*` key-value metadata of a table, in key order, with JSON values parsed.
fn table_metadata(entries: &BTreeMap<String, String>) -> serde_json::Value {
    let mut fields = serde_json::Map::new();
    for (key, text) in entries {
        let Some(key) = key.strip_prefix(layerprune_tables::KEY_PREFIX) else {
            continue;
        };
        // JSON where the entry is JSON (lists, provenance, `seed`, numbers, booleans), read back
        // to exactly its text; anything else (ids, names, a hex digest of digits only that a
        // number would round) stays the string it is.
        let value = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value @ (serde_json::Value::Array(_) | serde_json::Value::Object(_))) => value,
            Ok(value) if value.to_string().as_str() == text.as_str() => value,
            _ => serde_json::Value::String(text.clone()),
        };
        fields.insert(key.to_string(), value);
    }
    serde_json::Value::Object(fields)
}

fn inspect_table(path: &Path, args: &Args, out: &mut String) -> Result<()> {
    let wanted = if args.json {
        0
    } else {
        usize::from(args.rows.unwrap_or(10))
    };
    // The footer first, the rows after: a file whose pages are damaged still shows its kind,
    // provenance and schema before the error.
    let head = layerprune_tables::read_head(path, 0)?;
    let num_rows = head.num_rows;
    let metadata = table_metadata(&head.metadata);
    let schema = head.schema;
    if args.json {
        let mut object = serde_json::Map::new();
        object.insert("file".into(), path.display().to_string().into());
        object.insert("rows".into(), num_rows.into());
        object.insert(
            "columns".into(),
            schema
                .fields()
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "name": f.name(),
                        "type": f.data_type().to_string(),
                        "nullable": f.is_nullable(),
                    })
                })
                .collect(),
        );
        object.insert("metadata".into(), metadata);
        outln!(out, "{}", serde_json::to_string_pretty(&object)?);
        return check_table(path, &head.metadata);
    }
    // A Parquet file another tool wrote has no kind: said as such, not as a kind's name.
    let kind = metadata.get("table").and_then(|v| v.as_str()).map_or_else(
        || "Parquet file, not a layerprune table:".to_string(),
        |kind| format!("{} table,", escape_controls(kind.to_string())),
    );
    // An evaluation table that is a checkpoint or a cache says so first: its rows are not a
    // finished run's, and the stages that draw conclusions refuse it.
    let incomplete = if metadata.get("complete") == Some(&serde_json::Value::Bool(false)) {
        " (incomplete: a checkpoint or a cache, not a finished run)"
    } else {
        ""
    };
    outln!(
        out,
        "{}: {kind} {num_rows} rows{incomplete}",
        path.display()
    );
    if let serde_json::Value::Object(fields) = &metadata {
        let provenance = ["tool", "version", "args", "seed", "inputs", "table"];
        let sections: [(&str, Vec<(&String, &serde_json::Value)>); 2] = [
            (
                "provenance",
                provenance
                    .iter()
                    .filter(|k| **k != "table")
                    .filter_map(|k| fields.get_key_value(*k))
                    .collect(),
            ),
            (
                "fields",
                fields
                    .iter()
                    .filter(|(k, _)| !provenance.contains(&k.as_str()))
                    .collect(),
            ),
        ];
        // A section with nothing in it (a table of another tool has no provenance) is left out.
        for (title, entries) in sections.iter().filter(|(_, e)| !e.is_empty()) {
            outln!(out, "\n{title}:");
            for (key, value) in entries {
                outln!(
                    out,
                    "  {:<16} {}",
                    escape_controls(key.to_string()),
                    show_value(value)
                );
            }
        }
    }
    outln!(out, "\nschema:");
    // Names longer than the usual column (runner_up_removed_blocks) widen it for every row.
    let width = schema
        .fields()
        .iter()
        .map(|field| escape_controls(field.name().clone()).chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    for field in schema.fields() {
        outln!(
            out,
            "  {:<width$} {}{}",
            escape_controls(field.name().clone()),
            field.data_type(),
            if field.is_nullable() {
                " (nullable)"
            } else {
                ""
            }
        );
    }
    if wanted > 0 && num_rows > 0 {
        let rows = layerprune_tables::read_head(path, wanted)?;
        outln!(out, "\nfirst rows:");
        let names: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| escape_controls(f.name().clone()))
            .collect();
        outln!(out, "  {}", names.join("\t"));
        let shown = rows
            .batches
            .iter()
            .flat_map(|batch| (0..batch.num_rows()).map(move |row| row_text(batch, row)))
            .take(wanted);
        for row in shown {
            outln!(out, "  {row}");
        }
    }
    check_table(path, &head.metadata)
}

/// A metadata value on one line of the report: control characters escaped as in the rows
/// (a table of another tool may hold any string: a tab, a terminal's escape sequence).
fn show_value(value: &serde_json::Value) -> String {
    match value {
        // A list of lines (a cache's partly measured masks): how many, and the first; `--json`
        // has them all.
        serde_json::Value::String(text) if text.contains('\n') => {
            let first = text.lines().next().unwrap_or_default();
            format!(
                "{} lines; the first: {}",
                text.lines().count(),
                escape_controls(first.to_string())
            )
        }
        serde_json::Value::String(text) => escape_controls(text.clone()),
        // JSON text escapes every control character already.
        other => other.to_string(),
    }
}

/// One row, tab separated; lists of booleans (masks) as 0/1 strings.
fn row_text(batch: &RecordBatch, row: usize) -> String {
    batch
        .columns()
        .iter()
        .map(|column| escape_controls(cell(column.as_ref(), row)))
        .collect::<Vec<_>>()
        .join("\t")
}

/// A cell's text with its control characters escaped (`\t`, `\n`, `\r`, `\u{..}`): a tab or
/// a line break inside a value (a task's passage, a string of another tool's table) would
/// otherwise read as another column or another row.
fn escape_controls(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn cell(column: &dyn Array, row: usize) -> String {
    if column.is_null(row) {
        return "-".into();
    }
    match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(row).to_string(),
        DataType::Float64 => format!("{}", column.as_primitive::<Float64Type>().value(row)),
        DataType::UInt32 => column.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => column.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Boolean => u8::from(column.as_boolean().value(row)).to_string(),
        DataType::List(item) => {
            let list = column.as_list::<i32>().value(row);
            match item.data_type() {
                DataType::Boolean => {
                    let bits = list.as_boolean();
                    (0..bits.len())
                        .map(|i| if bits.value(i) { '1' } else { '0' })
                        .collect()
                }
                _ => {
                    let items: Vec<String> = (0..list.len()).map(|i| cell(&list, i)).collect();
                    format!("[{}]", items.join(","))
                }
            }
        }
        // Any other type (a table of another tool, a column added later): as arrow prints it.
        other => arrow::util::display::array_value_to_string(column, row)
            .unwrap_or_else(|_| format!("<{other}>")),
    }
}

/// A model folder's `graph_bytes` in words: what evaluating it holds in memory.
fn describe_graph_bytes(value: &serde_json::Value) -> String {
    let gib = |key: &str| {
        value[key]
            .as_u64()
            .map(|bytes| bytes as f64 / (1u64 << 30) as f64)
    };
    match (gib("distinct"), gib("per_graph")) {
        (Some(distinct), Some(per_graph)) => format!(
            "{distinct:.3} GiB of graphs and weights evaluation opens, {per_graph:.3} GiB as \
             ONNX Runtime holds them (a copy a graph: what a GPU needs free)"
        ),
        _ => format!("unknown: {}", value["unknown"].as_str().unwrap_or("?")),
    }
}

/// A surrogate file or a manifest: every top-level field but the bulky ones, then the checks
/// the stages make of it. `folder` is the model folder given, whose manifest `path` is.
fn inspect_json(path: &Path, folder: Option<&Path>, args: &Args, out: &mut String) -> Result<()> {
    let bytes = layerprune_core::read_input(path).map_err(|error| unreadable(path, error))?;
    let parsed = match String::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<serde_json::Value>(&text)
            .map(|value| (text, value))
            .map_err(|error| {
                anyhow!(
                    "{}: neither a Parquet table nor JSON: {error}",
                    path.display()
                )
            }),
        Err(_) => Err(anyhow!(
            "{}: neither a Parquet table nor JSON (a binary file that is not Parquet)",
            path.display()
        )),
    };
    let parsed = parsed.and_then(|(text, value)| match value {
        serde_json::Value::Object(fields) => Ok((text, fields)),
        _ => Err(anyhow!("{}: JSON, but not an object", path.display())),
    });
    let (text, mut fields) = match (parsed, folder) {
        (Ok(parsed), _) => parsed,
        // A model folder's manifest that is not a JSON object: the stages' own reader says why.
        (Err(error), Some(dir)) => return Err(Manifest::load(dir).err().map_or(error, Into::into)),
        (Err(error), None) => return Err(error),
    };
    let format = fields.get("format").and_then(|v| v.as_str());
    let is_manifest = format == Some(layerprune_model::FORMAT);
    let is_surrogate = format == Some(layerprune_surrogate::FORMAT_NAME);
    // A model folder's id, as every table evaluated on it records it (`model_id`): the sha256
    // of its manifest, which holds every file's hash. The text goes once hashed: a surrogate
    // file (a forest's is large) is read and parsed again by its loader below, and the text
    // and the parsed fields are not held beside what that loader holds.
    let model_id = is_manifest.then(|| layerprune_core::sha256_hex(text.as_bytes()));
    drop(text);
    // The folder a manifest is checked as: the one given, or the folder of a manifest given
    // by its path. Only a file named manifest.json is a folder's: the folder is read through
    // that name, so a manifest under another name (a copy, a download) would be checked as the
    // manifest.json beside it, or as a folder without a name (`inspect m.json` in the current
    // folder: a parent of ""). It is shown, not checked: no stage reads a manifest by another
    // name.
    let folder: Option<PathBuf> = match folder {
        Some(dir) => Some(dir.to_path_buf()),
        None if is_manifest && path.file_name() == Some(MANIFEST_FILE.as_ref()) => {
            Some(match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
        }
        None => None,
    };
    if folder.is_none() {
        refuse_no_verify(
            args,
            path,
            if is_manifest {
                NOT_A_FOLDERS_MANIFEST
            } else {
                "not a model folder"
            },
        )?;
    }
    // Read once, by the stages' reader: what the report's sizes come from and the first check.
    let loaded = folder.as_deref().map(|dir| (dir, Manifest::load(dir)));
    if let Some(id) = model_id {
        fields.insert("model_id".into(), serde_json::Value::String(id));
        // What evaluating it puts in memory (a GPU's, on CUDA): its graphs and the weight
        // files they read. A folder whose files do not add up says why instead.
        let bytes = match &loaded {
            None => Err(NOT_A_FOLDERS_MANIFEST.to_string()),
            Some((dir, manifest)) => {
                manifest
                    .as_ref()
                    .map_err(ToString::to_string)
                    .and_then(|manifest| {
                        manifest
                            .graph_bytes(dir, &manifest.evaluated_graphs())
                            .map_err(|error| error.to_string())
                    })
            }
        };
        let shown = match bytes {
            Ok(bytes) => serde_json::json!({
                "distinct": bytes.distinct,
                "per_graph": bytes.per_graph,
            }),
            Err(error) => serde_json::json!({ "unknown": error }),
        };
        fields.insert("graph_bytes".into(), shown);
    }
    report_json(path, &fields, args, out)?;
    // Shown: the parsed fields are not held while the loader parses the file again.
    drop(fields);
    // The checks, after the report: a folder as evaluate, apply-prune and quantize check it
    // when they open it (the manifest, then every listed file's hash and what the graphs
    // read), a surrogate file as shapley and apply-prune load it.
    if let Some((dir, manifest)) = loaded {
        manifest?.check_folder(dir, !args.no_verify)?;
    } else if is_surrogate {
        layerprune_surrogate::SavedSurrogate::load(path)?;
    }
    Ok(())
}

/// What a manifest under another name than manifest.json is, in its report and where
/// `--no-verify` is refused with it.
const NOT_A_FOLDERS_MANIFEST: &str =
    "a manifest not named manifest.json, so not read as a model folder's";

/// The report of a JSON object's fields, as text or (`--json`) as JSON.
fn report_json(
    path: &Path,
    fields: &serde_json::Map<String, serde_json::Value>,
    args: &Args,
    out: &mut String,
) -> Result<()> {
    // Parameters and per-file lists can be megabytes; they are summarised by size.
    const BULKY: [&str; 4] = ["parameters", "files", "blocks", "graphs"];
    let entries = |value: &serde_json::Value| match value {
        serde_json::Value::Array(items) => Some(items.len()),
        serde_json::Value::Object(items) => Some(items.len()),
        _ => None,
    };
    // A manifest without `context_length` (exported before 2026-12-06, as the committed
    // fixture) is said to have none, in its place among the fields: the stages then check no
    // window against the model's context, which nothing else in the report shows.
    let mut no_context = (fields.get("format").and_then(|v| v.as_str())
        == Some(layerprune_model::FORMAT)
        && !fields.contains_key(CONTEXT_LENGTH))
    .then(|| {
        let architecture = fields.get("architecture").and_then(|v| v.as_str());
        if architecture.is_some_and(|a| a.starts_with("mamba")) {
            "none (a model without positions: windows are checked against fixed_seq_len only)"
        } else {
            "not recorded (the export predates it): windows are not checked against the \
             model's context; export the model again to record it"
        }
    });
    if args.json {
        // The bulky fields by their number of entries, under `summarized`, so a script sees
        // that they exist (and how many blocks or files) without a field changing its type.
        let mut shown = serde_json::Map::new();
        let mut summarized = serde_json::Map::new();
        for (key, value) in fields {
            if BULKY.contains(&key.as_str()) {
                summarized.insert(key.clone(), entries(value).into());
            } else {
                shown.insert(key.clone(), value.clone());
            }
        }
        if !summarized.is_empty() {
            shown.insert("summarized".into(), summarized.into());
        }
        // What the text report says of a field the file lacks, under `notes` (the file's own
        // fields are shown as they are).
        if let Some(note) = no_context.filter(|_| !fields.contains_key("notes")) {
            shown.insert("notes".into(), serde_json::json!({ CONTEXT_LENGTH: note }));
        }
        outln!(out, "{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    let kind = escape_controls(
        fields
            .get("format")
            .and_then(|v| v.as_str())
            .unwrap_or("JSON file")
            .to_string(),
    );
    outln!(out, "{}: {kind}", path.display());
    // Pruning and quantizing keep the exporter's `check`, which describes the model as
    // exported (docs/model-format.md): said beside it, so it does not read as a check of this one.
    let rewritten_by: Vec<&str> = [("pruned_from", "pruning"), ("quantization", "quantization")]
        .into_iter()
        .filter(|(field, _)| fields.contains_key(*field))
        .map(|(_, what)| what)
        .collect();
    let say_no_context = |out: &mut String, note: Option<&str>| {
        if let Some(note) = note {
            outln!(out, "  {CONTEXT_LENGTH:<24} {note}");
        }
    };
    for (key, value) in fields {
        let key = escape_controls(key.clone());
        if key.as_str() > CONTEXT_LENGTH {
            say_no_context(out, no_context.take());
        }
        if BULKY.contains(&key.as_str()) {
            let size = entries(value).map_or("present".to_string(), |n| format!("{n} entries"));
            outln!(out, "  {key:<24} ({size})");
        } else if key == "graph_bytes" {
            outln!(out, "  {key:<24} {}", describe_graph_bytes(value));
        } else if key == "check" && !rewritten_by.is_empty() {
            outln!(
                out,
                "  {key:<24} {} (the export's, before {})",
                show_value(value),
                rewritten_by.join(" and ")
            );
        } else {
            // Any other long list or object (an exporter's reference logits) by its size too:
            // `--json` shows it whole.
            let shown = show_value(value);
            match entries(value) {
                Some(n) if shown.len() > 200 => {
                    outln!(out, "  {key:<24} ({n} entries; --json shows them)");
                }
                _ => {
                    outln!(out, "  {key:<24} {shown}");
                }
            }
        }
    }
    say_no_context(out, no_context);
    Ok(())
}

/// The manifest field of the longest sequence the checkpoint was made for
/// (`layerprune_model::Manifest::context_length`).
const CONTEXT_LENGTH: &str = "context_length";
