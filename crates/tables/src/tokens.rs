//! The token table: the evaluation data as fixed-length windows of token ids.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, UInt32Array};
use arrow_schema::{DataType, Field};

use crate::io::{list_of, read_table, to_u32, u32_list_column, write_table, TableKind};
use crate::{Provenance, TableError};

/// Windows of token ids, all `seq_len` long, as written by `prepare-tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenTable {
    /// [`dataset_id`] of `seq_len` and `windows`.
    pub dataset_id: String,
    pub seq_len: usize,
    pub windows: Vec<Vec<u32>>,
    /// Hex sha256 of the tokenizer file the ids come from.
    pub tokenizer_sha256: String,
    /// Free text naming where the text came from (corpus, split, file).
    pub source: String,
}

impl TokenTable {
    /// A table whose `dataset_id` is computed from the windows.
    pub fn new(
        seq_len: usize,
        windows: Vec<Vec<u32>>,
        tokenizer_sha256: &str,
        source: &str,
    ) -> Self {
        TokenTable {
            dataset_id: dataset_id(seq_len, &windows),
            seq_len,
            windows,
            tokenizer_sha256: tokenizer_sha256.to_string(),
            source: source.to_string(),
        }
    }
}

/// The id of a token dataset: hex sha256 over `seq_len` as a little-endian u32 followed by
/// every token id of every window, in window order, each as a little-endian u32. Two datasets
/// have the same id exactly when they hold the same windows in the same order.
pub fn dataset_id(seq_len: usize, windows: &[Vec<u32>]) -> String {
    let total: usize = windows.iter().map(Vec::len).sum();
    let mut bytes = Vec::with_capacity(4 * (1 + total));
    // Sequence lengths are far below 2^32; the cast is the documented encoding.
    bytes.extend_from_slice(&(seq_len as u32).to_le_bytes());
    for window in windows {
        for token in window {
            bytes.extend_from_slice(&token.to_le_bytes());
        }
    }
    layerprune_core::sha256_hex(&bytes)
}

fn fields() -> Vec<Field> {
    vec![
        Field::new("window_index", DataType::UInt32, false),
        Field::new("tokens", list_of(DataType::UInt32), false),
    ]
}

/// Checks what a token table promises: every window `seq_len` long and the id matching.
fn check(path: &Path, table: &TokenTable) -> Result<(), TableError> {
    if let Some((index, window)) = table
        .windows
        .iter()
        .enumerate()
        .find(|(_, window)| window.len() != table.seq_len)
    {
        return Err(TableError::bad(
            path,
            format!(
                "window {index} has {} tokens, seq_len is {}",
                window.len(),
                table.seq_len
            ),
        ));
    }
    let computed = dataset_id(table.seq_len, &table.windows);
    if computed != table.dataset_id {
        return Err(TableError::bad(
            path,
            format!(
                "dataset_id {} does not match the windows (they hash to {computed})",
                table.dataset_id
            ),
        ));
    }
    Ok(())
}

pub fn write_tokens(
    path: &Path,
    table: &TokenTable,
    provenance: &Provenance,
) -> Result<(), TableError> {
    check(path, table)?;
    let window_index = (0..table.windows.len())
        .map(|i| to_u32(path, "window index", i))
        .collect::<Result<Vec<_>, _>>()?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(window_index)),
        u32_list_column(table.windows.iter().map(Vec::as_slice)),
    ];
    let table_fields = vec![
        ("dataset_id", table.dataset_id.clone()),
        ("seq_len", table.seq_len.to_string()),
        ("num_windows", table.windows.len().to_string()),
        ("tokenizer_sha256", table.tokenizer_sha256.clone()),
        ("source", table.source.clone()),
    ];
    write_table(
        path,
        TableKind::Tokens,
        provenance,
        table_fields,
        fields(),
        columns,
    )
}

pub fn read_tokens(path: &Path) -> Result<TokenTable, TableError> {
    let raw = read_table(path, TableKind::Tokens, &fields())?;
    let mut windows = Vec::with_capacity(raw.num_rows());
    for chunk in raw.chunks() {
        let index = chunk.required::<UInt32Array>("window_index")?;
        let tokens = chunk.required_list("tokens")?;
        for row in 0..chunk.num_rows() {
            if index.value(row) as usize != windows.len() {
                return Err(chunk.row_error(
                    row,
                    format!(
                        "window index {} out of order (expected {})",
                        index.value(row),
                        windows.len()
                    ),
                ));
            }
            windows.push(chunk.u32s(tokens, "tokens", row)?);
        }
    }
    let table = TokenTable {
        dataset_id: raw.meta("dataset_id")?.to_string(),
        seq_len: raw.meta_parse("seq_len")?,
        windows,
        tokenizer_sha256: raw.meta("tokenizer_sha256")?.to_string(),
        source: raw.meta("source")?.to_string(),
    };
    check(path, &table)?;
    // Written by every build and read by tools that look at the metadata only (pyarrow's
    // read_metadata, DuckDB's parquet_kv_metadata): a count that disagrees with the rows is
    // refused like any other entry that contradicts the file.
    if raw.meta_optional("num_windows").is_some() {
        let declared: usize = raw.meta_parse("num_windows")?;
        if declared != table.windows.len() {
            return Err(TableError::bad(
                path,
                format!(
                    "metadata entry layerprune.num_windows = {declared}, but the table has {} \
                     windows",
                    table.windows.len()
                ),
            ));
        }
    }
    Ok(table)
}
