//! Source → documents → token stream → windows → token table.

use layerprune_tables::TokenTable;

use crate::{
    cut_windows, tokenize_documents, Bos, DataError, DocumentRange, Keep, TextSource,
    TokenizerFile, WindowSpec,
};

/// Everything that decides which token windows a table holds (besides the tokenizer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub source: TextSource,
    pub documents: DocumentRange,
    /// Put between documents before tokenizing ("\n\n" by default in `prepare-tokens`).
    pub separator: String,
    pub windows: WindowSpec,
    /// What each window starts with; the rest of its `length` tokens come from the stream.
    pub bos: Bos,
}

impl TokenRequest {
    /// How the table was made, for its `source` column: file, field, range, mode, seed, and
    /// the tokens every window starts with (none: the text's own tokens from the first).
    pub fn describe(&self, prefix: &[u32]) -> String {
        let start = if prefix.is_empty() {
            String::new()
        } else {
            format!("; each window starts with token ids {prefix:?}")
        };
        format!(
            "{}; documents {}; separator {:?}; {}{start}",
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

/// The memory that tokenizing a text takes, per byte of the text, at most: the one call that
/// encodes the joined documents keeps byte alignments and each token's string and offsets.
/// Measured 124 bytes a byte (16.9 GB for a 136 MB JSON lines corpus, SmolLM2's tokenizer).
pub const TOKENIZING_BYTES_PER_TEXT_BYTE: usize = 128;

impl TokenRequest {
    /// The source's documents in the requested range; an error when they hold no text.
    pub fn load_documents(&self) -> Result<Vec<String>, DataError> {
        self.load_documents_within(None)
    }

    /// [`Self::load_documents`], refused (while the source is read, before the text fills the
    /// memory) when the documents joined hold more than `max_text_bytes` of text: a machine's
    /// memory over [`TOKENIZING_BYTES_PER_TEXT_BYTE`] is the most it can tokenize.
    pub fn load_documents_within(
        &self,
        max_text_bytes: Option<u64>,
    ) -> Result<Vec<String>, DataError> {
        self.source.load_kept(&Keep {
            range: self.documents,
            separator_bytes: self.separator.len(),
            max_text_bytes,
        })
    }
}

/// Reads the source, keeps the requested documents, tokenizes them as one stream and cuts the
/// windows.
pub fn prepare_tokens(
    tokenizer: &TokenizerFile,
    request: &TokenRequest,
) -> Result<PreparedTokens, DataError> {
    let documents = request.load_documents()?;
    tokens_of_documents(tokenizer, request, &documents)
}

/// [`prepare_tokens`] on documents already loaded by [`TokenRequest::load_documents`] or
/// [`TokenRequest::load_documents_within`] (the latter with the memory tokenizing them takes
/// bounded while they are read).
pub fn tokens_of_documents(
    tokenizer: &TokenizerFile,
    request: &TokenRequest,
    documents: &[String],
) -> Result<PreparedTokens, DataError> {
    let source_name = request.source.to_string();
    let tokens = tokenize_documents(tokenizer, documents, &request.separator)?;
    let prefix = request.bos.prefix(tokenizer)?;
    let seq_len = request.windows.length;
    if prefix.len() >= seq_len {
        return Err(DataError::BadWindows(format!(
            "windows of {seq_len} tokens leave no room for text after the {} token(s) \
             {prefix:?} the tokenizer puts first",
            prefix.len()
        )));
    }
    // The text part of each window is cut as a window of its own, so the positions drawn for
    // a seed depend on the text length only, and a tokenizer with no leading tokens gives
    // exactly the windows it gave before windows had a start.
    let text_windows = WindowSpec {
        length: seq_len - prefix.len(),
        ..request.windows
    };
    let windows = cut_windows(&tokens, &text_windows).map_err(|error| match error {
        DataError::TooFewTokens {
            available,
            count,
            length,
            context,
        } => DataError::TooFewTokens {
            available,
            count,
            length,
            context: format!(
                "{context} ({source_name}, documents {}{})",
                request.documents,
                if prefix.is_empty() {
                    String::new()
                } else {
                    format!("; text tokens per window, after the leading {prefix:?}")
                }
            ),
        },
        other => other,
    })?;
    let windows: Vec<Vec<u32>> = windows
        .into_iter()
        .map(|text| prefix.iter().copied().chain(text).collect())
        .collect();
    Ok(PreparedTokens {
        table: TokenTable {
            dataset_id: layerprune_tables::dataset_id(seq_len, &windows),
            seq_len,
            windows,
            tokenizer_sha256: tokenizer.sha256().to_string(),
            source: request.describe(&prefix),
        },
        documents: documents.len(),
        stream_tokens: tokens.len(),
    })
}
