use std::path::PathBuf;

/// Everything that can go wrong between a text file and a table of token windows; each
/// message names the file (and line) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: bad gzip data at line {line}: {source}", path.display())]
    Gzip {
        path: PathBuf,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: line {line} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("{}: line {line} is longer than {limit} bytes, longer than any corpus's (a file of \
             no line breaks, or an inflated gzip bomb?)", path.display())]
    LineTooLong {
        path: PathBuf,
        line: usize,
        limit: u64,
    },
    #[error("{}: line {line} is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: line {line} has no field {field:?}", path.display())]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
    },
    #[error("{}: line {line}: field {field:?} is {found}, not a string", path.display())]
    FieldNotText {
        path: PathBuf,
        line: usize,
        field: String,
        found: String,
    },
    #[error("{}: {reason}", path.display())]
    NotFound { path: PathBuf, reason: String },
    #[error("{}: not a readable Arrow IPC stream: {source}", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{}: Arrow stream has no string column {column:?} (columns: {available})", path.display())]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{}: column {column:?} holds {found}, not strings", path.display())]
    ColumnNotText {
        path: PathBuf,
        column: String,
        found: String,
    },
    #[error("{}: row {row} of column {column:?} is null", path.display())]
    NullValue {
        path: PathBuf,
        column: String,
        row: usize,
    },
    #[error(
        "{source_name} (documents {range}): the first {documents} documents kept hold at least \
         {text_bytes} bytes of text, more than the {max_text_bytes} that tokenizing can take in \
         this machine's memory (about {} bytes a byte of text); take fewer documents \
         (prepare-tokens --documents; a text file's paragraphs with --paragraphs)",
        crate::TOKENIZING_BYTES_PER_TEXT_BYTE
    )]
    TextTooLarge {
        source_name: String,
        range: String,
        documents: usize,
        text_bytes: u64,
        max_text_bytes: u64,
    },
    #[error("{source_name} holds no text (no documents, or only empty ones)")]
    NoText { source_name: String },
    #[error("document range {text:?}: {reason}")]
    BadRange { text: String, reason: String },
    #[error("document range {range} is outside the {available} documents of {source_name}")]
    RangeOutOfBounds {
        range: String,
        available: usize,
        source_name: String,
    },
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },
    #[error("windows: {0}")]
    BadWindows(String),
    #[error(
        "the token stream has {available} tokens, too few for {count} windows of {length} tokens{context}"
    )]
    TooFewTokens {
        available: usize,
        count: usize,
        length: usize,
        context: String,
    },
}
