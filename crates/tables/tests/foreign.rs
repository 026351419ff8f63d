//! Tables as other tools (or hands) write them: several or no row groups, dictionary-encoded
//! and extra columns, which are read; nested or struct columns where flat ones belong, null
//! items, a footer whose row count disagrees with its row groups, metadata entries that
//! contradict the rows, which are refused with an error naming the file and what is wrong.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, ListBuilder};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt32Array};
use arrow_schema::{DataType, Field};
use layerprune_tables::{
    read_head, read_masks, read_tokens, write_masks, write_tokens, MaskRow, MaskTable, Provenance,
    TableError, TableErrorKind, TokenTable,
};

/// Writes `batches` of `schema` as a Parquet file with `metadata`, bypassing this crate's
/// writers; no batch gives a file of no row groups.
fn write_raw(
    path: &Path,
    metadata: &[(&str, &str)],
    schema: arrow_schema::SchemaRef,
    batches: &[RecordBatch],
) {
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    let properties = WriterProperties::builder()
        .set_key_value_metadata(Some(
            metadata
                .iter()
                .map(|(k, v)| KeyValue::new(k.to_string(), v.to_string()))
                .collect(),
        ))
        .build();
    let file = fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties)).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

const MASK_METADATA: [(&str, &str); 4] = [
    ("layerprune.table", "masks"),
    ("layerprune.format_version", "1"),
    ("layerprune.num_blocks", "3"),
    ("layerprune.fixed_blocks", "[]"),
];

const IDS: [&str; 4] = ["111", "011", "101", "110"];

/// The `kept` column of `IDS` with nullable items, the item `null_at` (row, block) null.
fn kept(null_at: Option<(usize, usize)>) -> ArrayRef {
    let mut kept = ListBuilder::new(BooleanBuilder::new());
    for (row, id) in IDS.iter().enumerate() {
        for (block, c) in id.chars().enumerate() {
            if null_at == Some((row, block)) {
                kept.values().append_null();
            } else {
                kept.values().append_value(c == '1');
            }
        }
        kept.append(true);
    }
    Arc::new(kept.finish())
}

/// A mask table of `IDS` as pyarrow writes it (every column nullable), `change`d.
fn mask_batch(change: impl FnOnce(&mut Vec<(&'static str, ArrayRef)>)) -> RecordBatch {
    let removed: Vec<u32> = IDS
        .iter()
        .map(|id| id.matches('0').count() as u32)
        .collect();
    let mut columns: Vec<(&'static str, ArrayRef)> = vec![
        ("mask_id", Arc::new(StringArray::from(IDS.to_vec()))),
        ("kept", kept(None)),
        ("num_removed", Arc::new(UInt32Array::from(removed))),
        (
            "design",
            Arc::new(StringArray::from(vec!["anchor"; IDS.len()])),
        ),
        (
            "group_id",
            Arc::new(Int64Array::from(vec![None; IDS.len()])),
        ),
        (
            "position",
            Arc::new(UInt32Array::from(vec![None; IDS.len()])),
        ),
    ];
    change(&mut columns);
    RecordBatch::try_from_iter(columns).unwrap()
}

fn refused(result: Result<impl std::fmt::Debug, TableError>, path: &Path) -> TableError {
    let error = result.unwrap_err();
    assert_eq!(error.path, path);
    assert!(error.to_string().starts_with(&path.display().to_string()));
    error
}

#[test]
fn row_groups_dictionaries_and_extra_columns_of_other_writers_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let batch = mask_batch(|_| {});
    // No row group at all (a writer that closed before any row), then several.
    write_raw(&path, &MASK_METADATA, batch.schema(), &[]);
    assert_eq!(read_masks(&path).unwrap().rows.len(), 0);
    write_raw(
        &path,
        &MASK_METADATA,
        batch.schema(),
        &[batch.clone(), batch.slice(1, 2)],
    );
    let ids: Vec<String> = read_masks(&path)
        .unwrap()
        .rows
        .iter()
        .map(|row| row.mask.id())
        .collect();
    assert_eq!(ids, ["111", "011", "101", "110", "011", "101"]);
    // A dictionary-encoded mask_id (pandas categoricals) and extra columns of types no table
    // has (a dictionary of bytes, a decimal, a date) are read and the extras ignored.
    let batch = mask_batch(|columns| {
        let dictionary: arrow_array::DictionaryArray<arrow_array::types::Int32Type> =
            IDS.iter().copied().collect();
        columns[0].1 = Arc::new(dictionary);
        let labels: arrow_array::DictionaryArray<arrow_array::types::Int8Type> =
            ["x", "y", "x", "y"].into_iter().collect();
        columns.push(("label", Arc::new(labels)));
        let decimal = arrow_array::Decimal128Array::from(vec![1i128, 2, 3, 4])
            .with_precision_and_scale(38, 2)
            .unwrap();
        columns.push(("amount", Arc::new(decimal)));
        columns.push((
            "day",
            Arc::new(arrow_array::Date32Array::from(vec![1, 2, 3, 4])),
        ));
    });
    write_raw(&path, &MASK_METADATA, batch.schema(), &[batch]);
    assert_eq!(read_masks(&path).unwrap().rows.len(), 4);
}

#[test]
fn nested_or_struct_columns_where_flat_ones_belong_are_refused_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let nested = mask_batch(|columns| {
        let mut lists = ListBuilder::new(ListBuilder::new(BooleanBuilder::new()));
        for id in IDS {
            for c in id.chars() {
                lists.values().values().append_value(c == '1');
                lists.values().append(true);
            }
            lists.append(true);
        }
        columns[1].1 = Arc::new(lists.finish());
    });
    write_raw(&path, &MASK_METADATA, nested.schema(), &[nested]);
    let error = refused(read_masks(&path), &path);
    assert_eq!(error.kind, TableErrorKind::WrongType);
    assert!(
        error.message.contains("column \"kept\" has type List(List"),
        "{error}"
    );
    let structure = mask_batch(|columns| {
        let field = Arc::new(Field::new("count", DataType::UInt32, true));
        let values: ArrayRef = Arc::new(UInt32Array::from(vec![0, 1, 1, 1]));
        columns[2].1 = Arc::new(arrow_array::StructArray::from(vec![(field, values)]));
    });
    write_raw(&path, &MASK_METADATA, structure.schema(), &[structure]);
    let error = refused(read_masks(&path), &path);
    assert_eq!(error.kind, TableErrorKind::WrongType);
    assert!(
        error
            .message
            .contains("column \"num_removed\" has type Struct"),
        "{error}"
    );
}

/// A null inside a list is reported at the row that holds it: the message gave the item's
/// index among all the column's items (row 10 for block 1 of row 3).
#[test]
fn a_null_item_of_a_list_is_refused_naming_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let batch = mask_batch(|columns| columns[1].1 = kept(Some((3, 1))));
    write_raw(&path, &MASK_METADATA, batch.schema(), &[batch]);
    let error = refused(read_masks(&path), &path);
    assert_eq!(error.kind, TableErrorKind::BadValue);
    assert_eq!(error.message, "row 3: column \"kept\" holds a null item");
}

/// Replaces the file-level row count (300) in `path`'s footer by 0, leaving the row groups'
/// counts and every byte's position as they were.
fn declare_no_rows(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let len = bytes.len();
    let footer_len = u32::from_le_bytes(bytes[len - 8..len - 4].try_into().unwrap()) as usize;
    let footer_start = len - 8 - footer_len;
    // FileMetaData's field 3 (num_rows, i64: header 0x16) comes before the row groups' own;
    // 300 is the varint d8 04 (zigzag 600), and 80 00 is 0 in as many bytes.
    let at = footer_start
        + bytes[footer_start..]
            .windows(3)
            .position(|w| w == [0x16, 0xd8, 0x04])
            .unwrap();
    bytes[at + 1..at + 3].copy_from_slice(&[0x80, 0x00]);
    fs::write(path, bytes).unwrap();
}

/// The reader sizes its batches by the footer's row count: one saying 0 made a table of 300
/// masks read as an empty table, with no error.
#[test]
fn a_footer_whose_row_count_disagrees_with_its_row_groups_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let rows = (0..300)
        .map(|i| MaskRow {
            mask: layerprune_core::Mask::from_removed(9, &[i % 9]).unwrap(),
            design: layerprune_core::Design::Stratum,
            group_id: None,
            position: None,
        })
        .collect();
    let table = MaskTable {
        num_blocks: 9,
        fixed_blocks: vec![],
        rows,
    };
    let provenance = Provenance::new("test", "1", vec![]);
    write_masks(&path, &table, &provenance).unwrap();
    assert_eq!(read_masks(&path).unwrap().rows.len(), 300);
    declare_no_rows(&path);
    let error = refused(read_masks(&path), &path);
    assert_eq!(error.kind, TableErrorKind::NotParquet);
    assert!(
        error
            .message
            .contains("the footer says the file has 0 rows, its row groups hold 300"),
        "{error}"
    );
    // inspect's reader too.
    refused(read_head(&path, 5).map(|head| head.num_rows), &path);
}

#[test]
fn a_token_table_whose_window_count_disagrees_with_its_rows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.parquet");
    let table = TokenTable::new(2, vec![vec![1, 2], vec![3, 4]], "tok", "text");
    write_tokens(&path, &table, &Provenance::new("test", "1", vec![])).unwrap();
    let metadata = layerprune_tables::read_metadata(&path).unwrap();
    let batches: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            fs::File::open(&path).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut entries: Vec<(&str, &str)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for entry in &mut entries {
        if entry.0 == "layerprune.num_windows" {
            entry.1 = "3";
        }
    }
    write_raw(&path, &entries, batches[0].schema(), &batches);
    let error = refused(read_tokens(&path), &path);
    assert!(
        error
            .message
            .contains("layerprune.num_windows = 3, but the table has 2 windows"),
        "{error}"
    );
}

#[test]
fn fixed_blocks_listed_in_any_order_read_as_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let batch = mask_batch(|_| {});
    let mut metadata = MASK_METADATA;
    // Another tool's list repeating a block: block 0 fixed all the same.
    metadata[3].1 = "[0, 0]";
    write_raw(
        &path,
        &metadata,
        batch.schema(),
        std::slice::from_ref(&batch),
    );
    let error = refused(read_masks(&path), &path);
    assert!(error.message.contains("removes block 0"), "{error}");
    // The full mask alone keeps them.
    let batch = batch.slice(0, 1);
    metadata[3].1 = "[2, 0, 2]";
    write_raw(&path, &metadata, batch.schema(), &[batch]);
    assert_eq!(read_masks(&path).unwrap().fixed_blocks, vec![0, 2]);
}

#[test]
fn another_format_version_or_none_is_refused_saying_which() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("masks.parquet");
    let batch = mask_batch(|_| {});
    let mut metadata = MASK_METADATA.to_vec();
    metadata[1].1 = "2";
    write_raw(
        &path,
        &metadata,
        batch.schema(),
        std::slice::from_ref(&batch),
    );
    let error = refused(read_masks(&path), &path);
    assert_eq!(error.kind, TableErrorKind::WrongTable);
    assert_eq!(
        error.message,
        "format version \"2\" (metadata entry layerprune.format_version), this build reads \
         version \"1\" only"
    );
    metadata.remove(1);
    write_raw(&path, &metadata, batch.schema(), &[batch]);
    let error = refused(read_masks(&path), &path);
    assert!(
        error
            .message
            .starts_with("metadata entry layerprune.format_version is missing"),
        "{error}"
    );
}
