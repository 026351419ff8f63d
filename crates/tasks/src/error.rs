use std::path::PathBuf;

/// Everything that can go wrong between a task file and scored questions; each message names
/// the task, the file and, for a bad question, its row.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{task}: cannot read {}: {source}", path.display())]
    Io {
        task: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{task}: {}: not a readable Arrow IPC stream: {source}", path.display())]
    Arrow {
        task: String,
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{task}: {}: row {row}: {problem}", path.display())]
    BadRow {
        task: String,
        path: PathBuf,
        row: usize,
        problem: String,
    },
    #[error("{task}: {}: {problem}", path.display())]
    BadFile {
        task: String,
        path: PathBuf,
        problem: String,
    },
    #[error("unknown task {0:?} (known: piqa, hellaswag, winogrande, arc_easy, arc_challenge, boolq, openbookqa)")]
    UnknownTask(String),
    #[error("{task}: row {row}: cannot tokenize: {message}")]
    Tokenizer {
        task: String,
        row: usize,
        message: String,
    },
}
