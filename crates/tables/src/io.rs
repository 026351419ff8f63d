//! The machinery every table shares: file metadata, writing one record batch atomically, and
//! reading a file back with its kind, schema and nulls checked.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::types::UInt32Type;
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, ListArray, PrimitiveArray, RecordBatch,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;

use layerprune_core::StagedFile;

use crate::atomic::{atomic_write_staged, commit};
use crate::{guard, Provenance, TableError, TableErrorKind};

/// Version of the layout described in docs/formats.md; bumped on any incompatible change.
pub const FORMAT_VERSION: &str = "1";

/// Prefix of every metadata key this crate writes.
pub const KEY_PREFIX: &str = "layerprune.";

/// Which table a file holds (the `layerprune.table` metadata entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TableKind {
    Tokens,
    Masks,
    Evaluations,
    BlockStats,
    SurrogateMetrics,
    Scores,
    Plans,
    TaskChoices,
    TaskAccuracies,
}

impl TableKind {
    pub const ALL: [TableKind; 9] = [
        TableKind::Tokens,
        TableKind::Masks,
        TableKind::Evaluations,
        TableKind::BlockStats,
        TableKind::SurrogateMetrics,
        TableKind::Scores,
        TableKind::Plans,
        TableKind::TaskChoices,
        TableKind::TaskAccuracies,
    ];

    /// The name stored in `layerprune.table`.
    pub fn as_str(self) -> &'static str {
        match self {
            TableKind::Tokens => "tokens",
            TableKind::Masks => "masks",
            TableKind::Evaluations => "evaluations",
            TableKind::BlockStats => "block_stats",
            TableKind::SurrogateMetrics => "surrogate_metrics",
            TableKind::Scores => "scores",
            TableKind::Plans => "plans",
            TableKind::TaskChoices => "task_choices",
            TableKind::TaskAccuracies => "task_accuracies",
        }
    }

    pub fn from_name(name: &str) -> Option<TableKind> {
        TableKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The full metadata key of a short entry name (`model_id` → `layerprune.model_id`).
pub fn key(name: &str) -> String {
    format!("{KEY_PREFIX}{name}")
}

/// Metadata entries in write order: kind, format version, provenance, then the table's own.
fn metadata_entries(
    path: &Path,
    kind: TableKind,
    provenance: &Provenance,
    table_fields: Vec<(&str, String)>,
) -> Result<Vec<KeyValue>, TableError> {
    let json = |value: serde_json::Result<String>| {
        value.map_err(|e| TableError::bad(path, format!("cannot encode provenance: {e}")))
    };
    let seed = match provenance.seed {
        Some(seed) => seed.to_string(),
        None => "null".to_string(),
    };
    let mut entries = vec![
        (key("table"), kind.as_str().to_string()),
        (key("format_version"), FORMAT_VERSION.to_string()),
        (key("tool"), provenance.tool.clone()),
        (key("version"), provenance.version.clone()),
        (key("args"), json(serde_json::to_string(&provenance.args))?),
        (key("seed"), seed),
        (
            key("inputs"),
            json(serde_json::to_string(&provenance.inputs))?,
        ),
    ];
    entries.extend(
        table_fields
            .into_iter()
            .map(|(name, value)| (key(name), value)),
    );
    Ok(entries
        .into_iter()
        .map(|(k, v)| KeyValue::new(k, v))
        .collect())
}

/// Writes one table: `columns` (in schema order) as a single record batch, plus metadata.
/// Snappy compression and Parquet format 1.0 pages, which pyarrow, pandas and DuckDB all read.
pub(crate) fn write_table(
    path: &Path,
    kind: TableKind,
    provenance: &Provenance,
    table_fields: Vec<(&str, String)>,
    schema_fields: Vec<Field>,
    columns: Vec<ArrayRef>,
) -> Result<(), TableError> {
    let staged = stage_table(path, kind, provenance, table_fields, schema_fields, columns)?;
    commit(staged)
}

/// [`write_table`] up to the rename: the table written and flushed under its temporary name
/// beside `path` (`layerprune_core::atomic_write_staged`), for a stage that renames its outputs
/// together.
pub(crate) fn stage_table(
    path: &Path,
    kind: TableKind,
    provenance: &Provenance,
    table_fields: Vec<(&str, String)>,
    schema_fields: Vec<Field>,
    columns: Vec<ArrayRef>,
) -> Result<StagedFile, TableError> {
    let entries = metadata_entries(path, kind, provenance, table_fields)?;
    // The entries go both into the Parquet footer (read by DuckDB's parquet_kv_metadata,
    // pyarrow's read_metadata and this crate) and into the embedded Arrow schema, which is
    // where pyarrow's read_table (and so pandas) looks for schema metadata.
    let schema_metadata: std::collections::HashMap<String, String> = entries
        .iter()
        .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
        .collect();
    let schema = Arc::new(Schema::new_with_metadata(schema_fields, schema_metadata));
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| TableError::bad(path, format!("cannot assemble the {kind} table: {e}")))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(entries))
        .build();
    let ((), staged) = atomic_write_staged(path, |file| {
        let mut writer = ArrowWriter::try_new(file, schema, Some(properties))?;
        writer.write(&batch)?;
        writer.close()?;
        Ok(())
    })?;
    Ok(staged)
}

/// A table as read, with the SHA-256 (hex) of the file's bytes that were parsed: what a stage
/// records of the input in its provenance (`Provenance::with_input`), with no second read that
/// could see another file renamed onto the path in between.
#[derive(Clone, Debug)]
pub struct Hashed<T> {
    pub table: T,
    pub sha256: String,
    /// The file's path and metadata, for [`Hashed::provenance`].
    read_from: (PathBuf, BTreeMap<String, String>),
}

impl<T> Hashed<T> {
    /// The table `make` makes of `raw`, whose file's parsed bytes hash to `sha256`.
    pub(crate) fn make(
        raw: RawTable<'_>,
        sha256: String,
        make: impl FnOnce(RawTable<'_>) -> Result<T, TableError>,
    ) -> Result<Self, TableError> {
        let read_from = (raw.path.to_path_buf(), raw.metadata.clone());
        Ok(Hashed {
            table: make(raw)?,
            sha256,
            read_from,
        })
    }

    /// The same file's table made into another (a check of what was read).
    pub(crate) fn try_map<U>(
        self,
        make: impl FnOnce(T) -> Result<U, TableError>,
    ) -> Result<Hashed<U>, TableError> {
        Ok(Hashed {
            table: make(self.table)?,
            sha256: self.sha256,
            read_from: self.read_from,
        })
    }

    /// The provenance recorded in the bytes that were parsed ([`crate::read_provenance`] with
    /// no second read); its error's kind is `Missing` where the file records none.
    pub fn provenance(&self) -> Result<crate::Provenance, TableError> {
        let (path, metadata) = &self.read_from;
        crate::provenance_of(path, metadata)
    }
}

/// A table file as read: its metadata (full keys) and its rows.
pub(crate) struct RawTable<'p> {
    pub path: &'p Path,
    pub metadata: BTreeMap<String, String>,
    pub batches: Vec<RecordBatch>,
}

/// Runs a call into the `parquet` crate, turning a panic in it (a decoder tripping over a
/// corrupted file the structural checks let through) into an error naming the file, with
/// nothing printed by the panic hook (`layerprune_core::contain_panic`).
fn unpanicked<T>(path: &Path, call: impl FnOnce() -> T) -> Result<T, TableError> {
    layerprune_core::contain_panic(call).map_err(|message| {
        TableError::new(
            path,
            TableErrorKind::NotParquet,
            format!("not a readable Parquet file: the decoder failed ({message})"),
        )
    })
}

/// Opens `path` as Parquet and returns its key-value metadata and a reader builder, after
/// checking the file's structure (see `guard.rs`), so that no corrupted file reaches the
/// decoder with a size, count or offset that could make it hang or read out of bounds.
fn open(
    path: &Path,
) -> Result<
    (
        BTreeMap<String, String>,
        ParquetRecordBatchReaderBuilder<File>,
    ),
    TableError,
> {
    open_with_bytes(path).map(|(metadata, builder, _)| (metadata, builder))
}

/// A Parquet file opened and checked: its key-value metadata, a reader builder over the open
/// file, and the bytes the checks read.
type Opened = (
    BTreeMap<String, String>,
    ParquetRecordBatchReaderBuilder<File>,
    Vec<u8>,
);

/// [`open`], and the file's bytes that were checked: those the reader decodes, read through
/// the same open file (a file renamed onto `path` later is not among them).
fn open_with_bytes(path: &Path) -> Result<Opened, TableError> {
    let not_parquet = |message: String| {
        TableError::new(
            path,
            TableErrorKind::NotParquet,
            format!("not a readable Parquet file: {message}"),
        )
    };
    let mut file =
        layerprune_core::open_input(path).map_err(|e| TableError::io(path, "cannot open", e))?;
    guard::check_ends(&mut file, |footer| {
        match unpanicked(path, || ParquetMetaDataReader::decode_metadata(footer)) {
            Ok(Ok(metadata)) => Ok(metadata),
            Ok(Err(error)) => Err(format!("the footer is not Parquet metadata: {error}")),
            Err(error) => Err(error.message),
        }
    })
    .map_err(not_parquet)?;
    // Checked and decoded from the same bytes: read once, through the open file.
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| TableError::io(path, "cannot read", e))?;
    let footer_start = guard::check_frame(&bytes).map_err(not_parquet)?;
    // The columns' types from the Parquet schema alone, not from the Arrow schema a writer
    // may embed: the same column then reads as the same type from any writer (polars embeds
    // LargeUtf8 and LargeList, pyarrow may embed dictionaries; both are Utf8 and List here).
    let options =
        parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder = unpanicked(path, || {
        ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
    })?
    .map_err(|e| not_parquet(e.to_string()))?;
    guard::check_chunks(&bytes, footer_start, builder.metadata()).map_err(not_parquet)?;
    check_codecs(path, builder.metadata())?;
    let metadata = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    Ok((metadata, builder, bytes))
}

/// Refuses a file whose pages use a codec this build does not decode (Brotli, LZO), naming
/// the codec and the ones read, before any page is: the decoder's own error says only "disabled
/// feature".
fn check_codecs(path: &Path, metadata: &ParquetMetaData) -> Result<(), TableError> {
    let unread = metadata
        .row_groups()
        .iter()
        .flat_map(|group| group.columns())
        .map(|column| column.compression())
        .find(|codec| matches!(codec, Compression::BROTLI(_) | Compression::LZO));
    match unread {
        Some(codec) => Err(TableError::new(
            path,
            TableErrorKind::NotParquet,
            format!(
                "its pages are compressed with {}, which layerprune does not read; write it with \
                 Snappy, zstd, gzip, LZ4 or no compression (pyarrow: \
                 write_table(..., compression=\"zstd\"))",
                match codec {
                    Compression::LZO => "LZO",
                    _ => "Brotli",
                }
            ),
        )),
        None => Ok(()),
    }
}

/// All key-value metadata of a Parquet file, including entries other tools added.
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>, TableError> {
    open(path).map(|(metadata, _)| metadata)
}

/// The start of any Parquet file, for looking inside it (`inspect`): every key-value entry,
/// the schema, the row count in the footer and the first rows.
pub struct TableHead {
    pub metadata: BTreeMap<String, String>,
    pub schema: arrow_schema::SchemaRef,
    pub num_rows: i64,
    pub batches: Vec<RecordBatch>,
}

/// Reads the metadata, the schema and at most `rows` rows of any Parquet file (a layerprune
/// table or not), through the same structural checks and panic containment as the table
/// readers, so a damaged file is an error naming it, never a hang or a panic.
pub fn read_head(path: &Path, rows: usize) -> Result<TableHead, TableError> {
    let (metadata, builder) = open(path)?;
    let num_rows = builder.metadata().file_metadata().num_rows();
    let schema = builder.schema().clone();
    let batches = if rows == 0 || num_rows == 0 {
        Vec::new()
    } else {
        unpanicked(path, || {
            builder
                .with_batch_size(rows)
                .with_limit(rows)
                .build()?
                .collect::<Result<Vec<_>, _>>()
        })?
        .map_err(|e| TableError::new(path, TableErrorKind::NotParquet, e.to_string()))?
    };
    Ok(TableHead {
        metadata,
        schema,
        num_rows,
        batches,
    })
}

/// Which table a file holds, from its `layerprune.table` entry.
pub fn read_table_kind(path: &Path) -> Result<TableKind, TableError> {
    let metadata = read_metadata(path)?;
    kind_of(path, &metadata)
}

/// The table kind a file's metadata (as [`read_metadata`] gives it) names, refused unless it is a
/// layerprune table of a known kind.
pub fn kind_of(path: &Path, metadata: &BTreeMap<String, String>) -> Result<TableKind, TableError> {
    let name = metadata.get(&key("table")).ok_or_else(|| {
        TableError::new(
            path,
            TableErrorKind::WrongTable,
            "not a layerprune table (no layerprune.table metadata entry)",
        )
    })?;
    TableKind::from_name(name).ok_or_else(|| {
        TableError::new(
            path,
            TableErrorKind::WrongTable,
            format!("unknown table kind {name:?} in layerprune.table"),
        )
    })
}

/// Columns renamed within this format version, as (table, current name, former name): a file
/// written before the rename is read with its former column under the current name, so runs
/// made by earlier builds stay readable. Writers use the current names only.
const RENAMED_COLUMNS: &[(TableKind, &str, &str)] = &[
    // 2026-12-04: one name, "value", for which function of the NLL values a mask.
    (TableKind::SurrogateMetrics, "value", "target"),
    (TableKind::Plans, "predicted_value", "predicted_utility"),
    // 2026-12-05: the surrogate's kind under the name `fit-surrogate --kind` and its files use.
    (TableKind::SurrogateMetrics, "kind", "surrogate"),
];

/// Columns replaced by one of another meaning, as (table, current name, former name, what
/// changed): a file with the former is refused with why, not read as if it held the current.
const REPLACED_COLUMNS: &[(TableKind, &str, &str, &str)] = &[(
    TableKind::TaskChoices,
    "norm_chars",
    "norm_bytes",
    "written before 2026-12-06, when acc_norm divided by the choice's UTF-8 bytes where \
     lm-eval divides by its characters; score the tasks again",
)];

/// `schema` with the former names of `kind`'s renamed columns replaced by their current ones,
/// where the file has the former and not the current; `None` when nothing is renamed.
fn current_names(kind: TableKind, schema: &Schema) -> Option<Schema> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut renamed = false;
    for &(_, current, former) in RENAMED_COLUMNS.iter().filter(|(k, ..)| *k == kind) {
        if schema.field_with_name(current).is_ok() {
            continue;
        }
        if let Ok(index) = schema.index_of(former) {
            fields[index] = fields[index].clone().with_name(current);
            renamed = true;
        }
    }
    renamed.then(|| Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Reads a whole table, checking its kind, format version and that every column of `expected`
/// is present with its type. Extra columns are allowed (added by other tools) and ignored.
/// Columns under a former name ([`RENAMED_COLUMNS`]) are read under their current one.
pub(crate) fn read_table<'p>(
    path: &'p Path,
    kind: TableKind,
    expected: &[Field],
) -> Result<RawTable<'p>, TableError> {
    read_table_digested(path, kind, expected, false).map(|(raw, _)| raw)
}

/// [`read_table`], and the SHA-256 (hex) of the bytes it parsed: what a stage records of its
/// input in its provenance, without reading the file a second time (a table renamed into place
/// between two reads would have had the other file's hash recorded).
pub(crate) fn read_table_hashed<'p>(
    path: &'p Path,
    kind: TableKind,
    expected: &[Field],
) -> Result<(RawTable<'p>, String), TableError> {
    let (raw, sha256) = read_table_digested(path, kind, expected, true)?;
    Ok((raw, sha256.expect("asked for")))
}

fn read_table_digested<'p>(
    path: &'p Path,
    kind: TableKind,
    expected: &[Field],
    hash: bool,
) -> Result<(RawTable<'p>, Option<String>), TableError> {
    let (metadata, builder, bytes) = open_with_bytes(path)?;
    // Hashed here and let go before the rows are decoded, as before.
    let sha256 = hash.then(|| layerprune_core::sha256_hex(&bytes));
    drop(bytes);
    let found = kind_of(path, &metadata)?;
    if found != kind {
        return Err(TableError::new(
            path,
            TableErrorKind::WrongTable,
            format!("holds a table of kind {found}, where one of kind {kind} was expected"),
        ));
    }
    let version = metadata.get(&key("format_version"));
    if version.map(String::as_str) != Some(FORMAT_VERSION) {
        return Err(TableError::new(
            path,
            TableErrorKind::WrongTable,
            match version {
                Some(version) => format!(
                    "format version {version:?} (metadata entry {}), this build reads version \
                     {FORMAT_VERSION:?} only",
                    key("format_version")
                ),
                None => format!(
                    "metadata entry {} is missing (a table of this format has version \
                     {FORMAT_VERSION:?})",
                    key("format_version")
                ),
            },
        ));
    }
    let renamed = current_names(kind, builder.schema()).map(Arc::new);
    let schema = renamed.clone().unwrap_or_else(|| builder.schema().clone());
    for field in expected {
        let Ok(actual) = schema.field_with_name(field.name()) else {
            let replaced = REPLACED_COLUMNS.iter().find(|(k, current, former, _)| {
                *k == kind && *current == field.name() && schema.field_with_name(former).is_ok()
            });
            return Err(TableError::new(
                path,
                TableErrorKind::Missing,
                match replaced {
                    Some((_, current, former, why)) => {
                        format!("column {current:?} is missing: it has {former:?}, {why}")
                    }
                    None => format!("column {:?} is missing", field.name()),
                },
            ));
        };
        if !same_type(field.data_type(), actual.data_type()) {
            return Err(TableError::new(
                path,
                TableErrorKind::WrongType,
                format!(
                    "column {:?} has type {}, expected {}",
                    field.name(),
                    actual.data_type(),
                    field.data_type()
                ),
            ));
        }
    }
    let mut batches = unpanicked(path, || builder.build()?.collect::<Result<Vec<_>, _>>())?
        .map_err(|e| TableError::new(path, TableErrorKind::NotParquet, e.to_string()))?;
    if let Some(schema) = renamed {
        // The same columns in the same order: only their names change.
        batches = batches
            .into_iter()
            .map(|batch| RecordBatch::try_new(schema.clone(), batch.columns().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| TableError::new(path, TableErrorKind::NotParquet, e.to_string()))?;
    }
    Ok((
        RawTable {
            path,
            metadata,
            batches,
        },
        sha256,
    ))
}

/// Types compare equal ignoring the name and nullability of list item fields, which differ
/// between writers without changing what the column holds.
fn same_type(expected: &DataType, actual: &DataType) -> bool {
    match (expected, actual) {
        (DataType::List(e), DataType::List(a)) => same_type(e.data_type(), a.data_type()),
        _ => expected == actual,
    }
}

/// A list column's type with non-null items.
pub(crate) fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

impl<'p> RawTable<'p> {
    /// An optional metadata entry (short name): one later versions added.
    pub fn meta_optional(&self, name: &str) -> Option<&str> {
        self.metadata.get(&key(name)).map(String::as_str)
    }

    /// A required metadata entry (short name).
    pub fn meta(&self, name: &str) -> Result<&str, TableError> {
        self.metadata
            .get(&key(name))
            .map(String::as_str)
            .ok_or_else(|| {
                TableError::new(
                    self.path,
                    TableErrorKind::Missing,
                    format!("metadata entry {} is missing", key(name)),
                )
            })
    }

    /// A required metadata entry parsed with `FromStr`.
    pub fn meta_parse<T: std::str::FromStr>(&self, name: &str) -> Result<T, TableError>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.meta(name)?;
        text.parse().map_err(|e| {
            TableError::bad(
                self.path,
                format!("metadata entry {} = {text:?}: {e}", key(name)),
            )
        })
    }

    /// The table's `num_blocks` metadata entry: a number of blocks up to
    /// [`layerprune_core::MAX_BLOCKS`] (what a model may have); a larger one would size every
    /// count of players and masks made from the table.
    pub fn meta_num_blocks(&self) -> Result<usize, TableError> {
        let num_blocks: usize = self.meta_parse("num_blocks")?;
        if num_blocks > layerprune_core::MAX_BLOCKS {
            return Err(TableError::bad(
                self.path,
                format!(
                    "metadata entry {} = {num_blocks}: more blocks than a model may have (at \
                     most {})",
                    key("num_blocks"),
                    layerprune_core::MAX_BLOCKS
                ),
            ));
        }
        Ok(num_blocks)
    }

    /// A required metadata entry holding JSON.
    pub fn meta_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, TableError> {
        let text = self.meta(name)?;
        serde_json::from_str(text).map_err(|e| {
            TableError::bad(
                self.path,
                format!("metadata entry {} = {text:?}: {e}", key(name)),
            )
        })
    }

    /// The record batches with the row number of their first row.
    pub fn chunks(&self) -> impl Iterator<Item = Chunk<'_>> {
        let mut first_row = 0;
        self.batches.iter().map(move |batch| {
            let chunk = Chunk {
                path: self.path,
                batch,
                first_row,
            };
            first_row += batch.num_rows();
            chunk
        })
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// One record batch of a table being read, with typed, null-checked column access.
pub(crate) struct Chunk<'a> {
    pub path: &'a Path,
    pub batch: &'a RecordBatch,
    /// Row number (in the whole file) of this batch's first row, for error messages.
    pub first_row: usize,
}

impl<'a> Chunk<'a> {
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// A column that may hold nulls, as its concrete array type.
    pub fn nullable<T: Array + 'static>(&self, name: &str) -> Result<&'a T, TableError> {
        let column = self.batch.column_by_name(name).ok_or_else(|| {
            TableError::new(
                self.path,
                TableErrorKind::Missing,
                format!("column {name:?} is missing"),
            )
        })?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| {
            TableError::new(
                self.path,
                TableErrorKind::WrongType,
                format!("column {name:?} has unexpected type {}", column.data_type()),
            )
        })
    }

    /// A column that must not hold nulls.
    pub fn required<T: Array + 'static>(&self, name: &str) -> Result<&'a T, TableError> {
        let column = self.nullable::<T>(name)?;
        self.no_nulls(column, name)?;
        Ok(column)
    }

    fn no_nulls(&self, column: &dyn Array, name: &str) -> Result<(), TableError> {
        if column.null_count() == 0 {
            return Ok(());
        }
        let row = (0..column.len()).find(|&i| column.is_null(i)).unwrap_or(0);
        Err(TableError::bad(
            self.path,
            format!("column {name:?} is null in row {}", self.first_row + row),
        ))
    }

    /// A required list column whose items must not be null either.
    pub fn required_list(&self, name: &str) -> Result<&'a ListArray, TableError> {
        let column = self.required::<ListArray>(name)?;
        let items = column.values();
        if items.null_count() == 0 {
            return Ok(column);
        }
        if let Some(item) = (0..items.len()).find(|&i| items.is_null(i)) {
            // The row whose list holds that item (the item's own index is no row number).
            let offsets = column.value_offsets();
            let row = offsets
                .partition_point(|&offset| offset as usize <= item)
                .saturating_sub(1);
            return Err(self.row_error(row, format!("column {name:?} holds a null item")));
        }
        Ok(column)
    }

    /// Row `row` of a list-of-booleans column.
    pub fn bools(
        &self,
        column: &ListArray,
        name: &str,
        row: usize,
    ) -> Result<Vec<bool>, TableError> {
        let values = column.value(row);
        let values = values
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| {
                TableError::new(
                    self.path,
                    TableErrorKind::WrongType,
                    format!("column {name:?} does not hold booleans"),
                )
            })?;
        Ok(values.iter().map(|v| v.unwrap_or(false)).collect())
    }

    /// Row `row` of a list column of primitive `T` (`UInt32Type`, `Float64Type`, …); a null
    /// item is refused.
    pub fn primitives<T: ArrowPrimitiveType>(
        &self,
        column: &ListArray,
        name: &str,
        row: usize,
    ) -> Result<Vec<T::Native>, TableError> {
        let values = column.value(row);
        let values = values
            .as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .ok_or_else(|| {
                TableError::new(
                    self.path,
                    TableErrorKind::WrongType,
                    format!("column {name:?} does not hold {} values", T::DATA_TYPE),
                )
            })?;
        if values.null_count() > 0 {
            return Err(self.row_error(row, format!("column {name:?} holds a null item")));
        }
        Ok(values.values().to_vec())
    }

    /// Row `row` of a list-of-u32 column.
    pub fn u32s(&self, column: &ListArray, name: &str, row: usize) -> Result<Vec<u32>, TableError> {
        self.primitives::<UInt32Type>(column, name, row)
    }

    /// A value of a nullable column as an Option.
    pub fn opt<T, A: Array>(column: &A, row: usize, get: impl Fn(&A, usize) -> T) -> Option<T> {
        (!column.is_null(row)).then(|| get(column, row))
    }

    /// An error about row `row` of this chunk.
    pub fn row_error(&self, row: usize, message: impl std::fmt::Display) -> TableError {
        TableError::bad(
            self.path,
            format!("row {}: {message}", self.first_row + row),
        )
    }
}

/// A list-of-booleans column with non-null items.
pub(crate) fn bool_list_column<'r>(rows: impl Iterator<Item = &'r [bool]>) -> ArrayRef {
    let mut builder =
        arrow_array::builder::ListBuilder::new(arrow_array::builder::BooleanBuilder::new())
            .with_field(Arc::new(Field::new("item", DataType::Boolean, false)));
    for row in rows {
        builder.values().append_slice(row);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

/// A list-of-u32 column with non-null items.
pub(crate) fn u32_list_column<'r>(rows: impl Iterator<Item = &'r [u32]>) -> ArrayRef {
    list_column_opt::<UInt32Type>(rows.map(Some))
}

/// A nullable list column of primitive `T` with non-null items: `None` rows are null.
pub(crate) fn list_column_opt<'r, T: ArrowPrimitiveType>(
    rows: impl Iterator<Item = Option<&'r [T::Native]>>,
) -> ArrayRef {
    let mut builder =
        arrow_array::builder::ListBuilder::new(arrow_array::builder::PrimitiveBuilder::<T>::new())
            .with_field(Arc::new(Field::new("item", T::DATA_TYPE, false)));
    for row in rows {
        if let Some(values) = row {
            builder.values().append_slice(values);
        }
        builder.append(row.is_some());
    }
    Arc::new(builder.finish())
}

/// Converts a count to the u32 stored in a column, or says which value does not fit.
pub(crate) fn to_u32(path: &Path, what: &str, value: usize) -> Result<u32, TableError> {
    u32::try_from(value)
        .map_err(|_| TableError::bad(path, format!("{what} = {value} does not fit in UInt32")))
}
