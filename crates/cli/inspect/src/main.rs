//! `inspect`: look inside any file the pipeline writes without writing Python. For a table
//! (Parquet): its kind, format version, provenance (tool, version, command line, input ids,
//! seed), the table-level fields (number of blocks, fixed blocks, model and dataset ids, ...),
//! the schema, the row count and the first rows. For a surrogate file or a model folder's
//! manifest (JSON): its self-description, the parameters and per-file lists by their number of
//! entries.
//!
//! Reading stops after the rows shown, so inspecting a large evaluation table is instant. Any
//! Parquet file is read through the table readers' structural checks
//! (`layerprune_tables::read_head`): a damaged one is an error naming it, never a hang.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use clap::Parser;
use std::fmt::Write as _;

/// Look inside a table, a surrogate file or a model folder.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  inspect build/runs/smollm2-135m/evaluations.parquet\n  \
                  inspect --rows 0 plans.parquet          # metadata and schema only\n  \
                  inspect --json scores.parquet           # metadata as one JSON object\n  \
                  inspect surrogate-quadratic.json\n  inspect build/models/smollm2-135m"
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
        inspect(&args, &mut out)?;
        layerprune_cli_common::print_summary(&out)
    })
}

fn inspect(args: &Args, out: &mut String) -> Result<()> {
    if args.json && args.rows.is_some_and(|rows| rows > 0) {
        bail!("--rows shows rows in the text report; --json prints the metadata only (leave --rows out)");
    }
    let path = if args.file.is_dir() {
        let manifest = args.file.join(layerprune_model::MANIFEST_FILE);
        if !manifest.exists() {
            bail!(
                "{}: a folder without a manifest.json, so not a layered model folder (inspect \
                 reads model folders, tables, and surrogate files)",
                args.file.display()
            );
        }
        manifest
    } else {
        args.file.clone()
    };
    // The first bytes tell the kind, before anything is read whole: a large file of neither
    // kind (a 4 GB image) is refused at once, not parsed as JSON from memory.
    let mut head = Vec::with_capacity(512);
    {
        use std::io::Read;
        let file =
            layerprune_core::open_input(&path).with_context(|| format!("{}", path.display()))?;
        file.take(512)
            .read_to_end(&mut head)
            .with_context(|| format!("{}", path.display()))?;
    }
    let text_start = head
        .strip_prefix("\u{feff}".as_bytes())
        .unwrap_or(&head)
        .iter()
        .find(|b| !b.is_ascii_whitespace());
    if head.starts_with(b"PAR1") {
        inspect_table(&path, args, out)
    } else if matches!(text_start, Some(b'{' | b'[')) {
        // An array is JSON too: inspect_json says it is not an object, rather than "not JSON".
        inspect_json(&path, args, out)
    } else {
        bail!(
            "{}: neither a Parquet table nor JSON (inspect reads tables, and the JSON objects \
             of surrogate files and model manifests)",
            path.display()
        )
    }
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
    let head = layerprune_tables::read_head(path, wanted)?;
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
        return Ok(());
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
    if head.batches.is_empty() {
        return Ok(());
    }
    let mut shown = 0;
    outln!(out, "\nfirst rows:");
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| escape_controls(f.name().clone()))
        .collect();
    outln!(out, "  {}", names.join("\t"));
    for batch in &head.batches {
        for row in 0..batch.num_rows() {
            outln!(out, "  {}", row_text(batch, row));
            shown += 1;
            if shown == wanted {
                return Ok(());
            }
        }
    }
    Ok(())
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

/// A surrogate file or a manifest: every top-level field but the bulky ones.
fn inspect_json(path: &Path, args: &Args, out: &mut String) -> Result<()> {
    let bytes = layerprune_core::read_input(path).with_context(|| format!("{}", path.display()))?;
    let Ok(text) = String::from_utf8(bytes) else {
        bail!(
            "{}: neither a Parquet table nor JSON (a binary file that is not Parquet)",
            path.display()
        );
    };
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: neither a Parquet table nor JSON", path.display()))?;
    let serde_json::Value::Object(mut fields) = value else {
        bail!("{}: JSON, but not an object", path.display());
    };
    // A model folder's id, as every table evaluated on it records it (`model_id`): the sha256
    // of its manifest, which holds every file's hash.
    if fields.get("format").and_then(|v| v.as_str()) == Some("layerprune-layered-onnx") {
        let id = layerprune_core::sha256_hex(text.as_bytes());
        fields.insert("model_id".into(), serde_json::Value::String(id));
        // What evaluating it puts in memory (a GPU's, on CUDA): its graphs and the weight
        // files they read. A folder whose files do not add up says why instead.
        // Only for the folder's own manifest.json: the folder is read through that file, so a
        // manifest under another name (a copy, a download) would be shown the sizes of the
        // manifest.json beside it, or an error about a folder without a name (`inspect m.json`
        // in the current folder: a parent of "").
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let shown = if path.file_name() != Some(layerprune_model::MANIFEST_FILE.as_ref()) {
            serde_json::json!({
                "unknown": "a manifest not named manifest.json, so not read as a model folder's"
            })
        } else {
            let bytes = layerprune_model::Manifest::load(dir)
                .and_then(|manifest| manifest.graph_bytes(dir, &manifest.evaluated_graphs()));
            match bytes {
                Ok(bytes) => serde_json::json!({
                    "distinct": bytes.distinct,
                    "per_graph": bytes.per_graph,
                }),
                Err(error) => serde_json::json!({ "unknown": error.to_string() }),
            }
        };
        fields.insert("graph_bytes".into(), shown);
    }
    // Parameters and per-file lists can be megabytes; they are summarised by size.
    const BULKY: [&str; 4] = ["parameters", "files", "blocks", "graphs"];
    let entries = |value: &serde_json::Value| match value {
        serde_json::Value::Array(items) => Some(items.len()),
        serde_json::Value::Object(items) => Some(items.len()),
        _ => None,
    };
    if args.json {
        // The bulky fields by their number of entries, under `summarized`, so a script sees
        // that they exist (and how many blocks or files) without a field changing its type.
        let mut shown = serde_json::Map::new();
        let mut summarized = serde_json::Map::new();
        for (key, value) in &fields {
            if BULKY.contains(&key.as_str()) {
                summarized.insert(key.clone(), entries(value).into());
            } else {
                shown.insert(key.clone(), value.clone());
            }
        }
        if !summarized.is_empty() {
            shown.insert("summarized".into(), summarized.into());
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
    for (key, value) in &fields {
        let key = escape_controls(key.clone());
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
    Ok(())
}
