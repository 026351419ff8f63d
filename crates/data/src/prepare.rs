//! Source → documents → token stream → windows → token table.

use layerprune_tables::TokenTable;

use crate::{
    cut_windows, tokenize_documents, DataError, DocumentRange, TextSource, TokenizerFile,
    WindowSpec,
};

/// Everything that decides which token windows a table holds (besides the tokenizer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub source: TextSource,
    pub documents: DocumentRange,
    /// Put between documents before tokenizing ("\n\n" by default in `prepare-tokens`).
    pub separator: String,
    pub windows: WindowSpec,
}

impl TokenRequest {
    /// How the table was made, for its `source` column: file, field, range, mode, seed.
    pub fn describe(&self) -> String {
        format!(
            "{}; documents {}; separator {:?}; {}",
            self.source, self.documents, self.separator, self.windows
        )
    }
}

/// A token table and what went into it.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedTokens {
    pub table: TokenTable,
    /// Documents after the range selection.
    pub documents: usize,
    /// Tokens in the joined stream the windows were cut from.
    pub stream_tokens: usize,
}

/// Reads the source, keeps the requested documents, tokenizes them as one stream and cuts the
/// windows.
pub fn prepare_tokens(
    tokenizer: &TokenizerFile,
    request: &TokenRequest,
) -> Result<PreparedTokens, DataError> {
    let source_name = request.source.to_string();
    let documents = request
        .documents
        .select(request.source.load()?, &source_name)?;
    if documents.iter().all(|document| document.trim().is_empty()) {
        return Err(DataError::NoText {
            source_name: format!("{source_name}, documents {}", request.documents),
        });
    }
    let tokens = tokenize_documents(tokenizer, &documents, &request.separator)?;
    let windows = cut_windows(&tokens, &request.windows).map_err(|error| match error {
        DataError::TooFewTokens {
            available,
            count,
            length,
            context,
        } => DataError::TooFewTokens {
            available,
            count,
            length,
            context: format!("{context} ({source_name}, documents {})", request.documents),
        },
        other => other,
    })?;
    let seq_len = request.windows.length;
    Ok(PreparedTokens {
        table: TokenTable {
            dataset_id: layerprune_tables::dataset_id(seq_len, &windows),
            seq_len,
            windows,
            tokenizer_sha256: tokenizer.sha256().to_string(),
            source: request.describe(),
        },
        documents: documents.len(),
        stream_tokens: tokens.len(),
    })
}
