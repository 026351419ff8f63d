//! An Arrow IPC stream (the `save_to_disk` files of HF `datasets`) as rows of plain values, so
//! the task formats read fields by name without caring how `datasets` typed them (a class
//! label is an integer column, HellaSwag's label a string, a `Sequence` of dicts a struct of
//! lists).

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type, Int8Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;

use crate::TaskError;

/// One value of a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    Bool(bool),
    List(Vec<Cell>),
    Struct(BTreeMap<String, Cell>),
    /// A type the task formats never need (kept so a row can still be read).
    Other(String),
}

impl Cell {
    fn kind(&self) -> String {
        match self {
            Cell::Null => "null".into(),
            Cell::Text(_) => "text".into(),
            Cell::Int(_) => "an integer".into(),
            Cell::Bool(_) => "a boolean".into(),
            Cell::List(_) => "a list".into(),
            Cell::Struct(_) => "a struct".into(),
            Cell::Other(kind) => kind.clone(),
        }
    }
}

/// A row by column name.
pub type Row = BTreeMap<String, Cell>;

/// Every row of an Arrow IPC stream file, in order (the Arrow reader's panics on a malformed
/// stream contained: [`layerprune_data::arrow_reader_panicked`]).
pub fn read_rows(task: &str, path: &Path) -> Result<Vec<Row>, TaskError> {
    layerprune_core::contain_panic(|| rows(task, path)).unwrap_or_else(|panic| {
        Err(TaskError::Arrow {
            task: task.to_string(),
            path: path.to_path_buf(),
            source: layerprune_data::arrow_reader_panicked(panic),
        })
    })
}

/// The last 8 bytes of an Arrow IPC stream: the continuation marker and a metadata length of 0.
const END_OF_STREAM: [u8; 8] = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];

fn rows(task: &str, path: &Path) -> Result<Vec<Row>, TaskError> {
    let file = layerprune_core::open_input(path).map_err(|source| TaskError::Io {
        task: task.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let arrow_error = |source| TaskError::Arrow {
        task: task.to_string(),
        path: path.to_path_buf(),
        source,
    };
    // A row of a task file holds its texts, so it takes at least a bit of the file: a batch
    // claiming more rows than that (one of no columns, or of columns of Arrow's Null type, can
    // claim any count in a few bytes: found by crates/tasks/tests/fuzz.rs, a 1.6 KB file of
    // 9·10^15 rows that filled the memory) is refused before its rows are built.
    let bytes = file
        .metadata()
        .map_err(|source| TaskError::Io {
            task: task.to_string(),
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let most_rows = bytes.saturating_mul(8);
    // A stream ends with its end-of-stream marker (every writer since Arrow 0.15 writes it,
    // pyarrow's and so the datasets library's included). The reader takes a clean end of the
    // file for the stream's end, so a file cut between two batches (a copy or download
    // stopped there) would read as a smaller split: wrong accuracies over fewer questions.
    let mut tail = [0u8; 8];
    if bytes >= 8 {
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut tail, bytes - 8).map_err(
            |source| TaskError::Io {
                task: task.to_string(),
                path: path.to_path_buf(),
                source,
            },
        )?;
    }
    if tail != END_OF_STREAM {
        return Err(arrow_error(arrow_schema::ArrowError::IpcError(
            "the stream does not end with Arrow's end-of-stream marker: the file was cut short \
             (a copy or download that stopped?); fetch the task data again"
                .to_string(),
        )));
    }
    let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
        .map_err(arrow_error)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_error)?;
        let schema = batch.schema();
        // Saturating: the reader takes a batch's length of -1 for usize::MAX rows.
        let claimed = (rows.len() as u64).saturating_add(batch.num_rows() as u64);
        if claimed > most_rows {
            return Err(arrow_error(arrow_schema::ArrowError::IpcError(format!(
                "its batches claim {claimed} rows, more than its {bytes} bytes can hold"
            ))));
        }
        for index in 0..batch.num_rows() {
            let row = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(field, column)| (field.name().clone(), cell(column, index)))
                .collect();
            rows.push(row);
        }
    }
    Ok(rows)
}

fn cell(array: &ArrayRef, index: usize) -> Cell {
    if array.is_null(index) {
        return Cell::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(index).to_string()),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(index).to_string()),
        DataType::Utf8View => Cell::Text(array.as_string_view().value(index).to_string()),
        DataType::Boolean => Cell::Bool(array.as_boolean().value(index)),
        DataType::Int8 => Cell::Int(i64::from(array.as_primitive::<Int8Type>().value(index))),
        DataType::Int16 => Cell::Int(i64::from(array.as_primitive::<Int16Type>().value(index))),
        DataType::Int32 => Cell::Int(i64::from(array.as_primitive::<Int32Type>().value(index))),
        DataType::Int64 => Cell::Int(array.as_primitive::<Int64Type>().value(index)),
        DataType::UInt32 => Cell::Int(i64::from(array.as_primitive::<UInt32Type>().value(index))),
        DataType::UInt64 => match i64::try_from(array.as_primitive::<UInt64Type>().value(index)) {
            Ok(value) => Cell::Int(value),
            Err(_) => Cell::Other("an integer beyond i64".into()),
        },
        DataType::List(_) => list(&array.as_list::<i32>().value(index)),
        DataType::LargeList(_) => list(&array.as_list::<i64>().value(index)),
        DataType::Struct(_) => {
            let array = array.as_struct();
            Cell::Struct(
                array
                    .column_names()
                    .iter()
                    .zip(array.columns())
                    .map(|(name, column)| (name.to_string(), cell(column, index)))
                    .collect(),
            )
        }
        other => Cell::Other(format!("of Arrow type {other}")),
    }
}

fn list(values: &ArrayRef) -> Cell {
    Cell::List((0..values.len()).map(|i| cell(values, i)).collect())
}

/// Typed access to one row's fields, with errors naming the task, file and row.
pub struct Fields<'r> {
    pub task: &'r str,
    pub path: &'r Path,
    pub index: usize,
    pub row: &'r Row,
}

impl Fields<'_> {
    pub fn error(&self, problem: impl Into<String>) -> TaskError {
        TaskError::BadRow {
            task: self.task.to_string(),
            path: self.path.to_path_buf(),
            row: self.index,
            problem: problem.into(),
        }
    }

    pub fn get(&self, name: &str) -> Result<&Cell, TaskError> {
        match self.row.get(name) {
            None => Err(self.error(format!("no field {name:?}"))),
            Some(Cell::Null) => Err(self.error(format!("field {name:?} is null"))),
            Some(cell) => Ok(cell),
        }
    }

    pub fn text(&self, name: &str) -> Result<&str, TaskError> {
        match self.get(name)? {
            Cell::Text(text) => Ok(text),
            other => Err(self.error(format!("field {name:?} is {}, not text", other.kind()))),
        }
    }

    /// A list of strings (directly, or the `member` list of a struct of lists, as `datasets`
    /// stores a `Sequence` of dicts).
    pub fn texts(&self, name: &str, member: Option<&str>) -> Result<Vec<String>, TaskError> {
        let mut cell = self.get(name)?;
        let label = match member {
            Some(member) => format!("{name}.{member}"),
            None => name.to_string(),
        };
        if let Some(member) = member {
            cell = match cell {
                Cell::Struct(fields) => match fields.get(member) {
                    Some(Cell::Null) | None => {
                        return Err(self.error(format!("field {label:?} is missing or null")))
                    }
                    Some(inner) => inner,
                },
                other => {
                    return Err(
                        self.error(format!("field {name:?} is {}, not a struct", other.kind()))
                    )
                }
            };
        }
        let Cell::List(items) = cell else {
            return Err(self.error(format!("field {label:?} is {}, not a list", cell.kind())));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Cell::Text(text) => Ok(text.clone()),
                other => Err(self.error(format!("{label}[{i}] is {}, not text", other.kind()))),
            })
            .collect()
    }

    /// An integer, or a string holding one (HellaSwag's label, WinoGrande's answer).
    pub fn integer(&self, name: &str) -> Result<i64, TaskError> {
        match self.get(name)? {
            Cell::Int(value) => Ok(*value),
            Cell::Text(text) => text
                .trim()
                .parse()
                .map_err(|_| self.error(format!("field {name:?} is {text:?}, not an integer"))),
            other => Err(self.error(format!(
                "field {name:?} is {}, not an integer",
                other.kind()
            ))),
        }
    }

    pub fn boolean(&self, name: &str) -> Result<bool, TaskError> {
        match self.get(name)? {
            Cell::Bool(value) => Ok(*value),
            other => Err(self.error(format!("field {name:?} is {}, not a boolean", other.kind()))),
        }
    }
}
