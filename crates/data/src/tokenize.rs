//! Text to token ids with a HF `tokenizer.json`.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::DataError;

/// A loaded `tokenizer.json`, with the sha256 of its bytes (recorded in every token table, so
/// windows are never scored by a model with a different vocabulary).
pub struct TokenizerFile {
    path: PathBuf,
    sha256: String,
    tokenizer: Tokenizer,
}

impl TokenizerFile {
    /// Loads a tokenizer, switching off any truncation or padding the file configures: the
    /// token stream is cut into windows here, and a tokenizer.json that truncates at, say, 512
    /// tokens would otherwise silently shorten it.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let tokenizer_error = |message: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        let mut tokenizer = Tokenizer::from_bytes(&bytes)
            .map_err(|error| tokenizer_error(format!("not a usable tokenizer.json: {error}")))?;
        tokenizer
            .with_truncation(None)
            .map_err(|error| tokenizer_error(format!("cannot switch truncation off: {error}")))?;
        tokenizer.with_padding(None);
        Ok(TokenizerFile {
            path: path.to_path_buf(),
            sha256: layerprune_core::sha256_hex(&bytes),
            tokenizer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hex sha256 of the tokenizer.json bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Token ids of `text`, with no special tokens (no BOS/EOS), as the reference perplexities
    /// were measured.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.tokenizer
            .encode_fast(text, false)
            .map(|encoding| encoding.get_ids().to_vec())
            .map_err(|error| DataError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot encode text: {error}"),
            })
    }

    /// The text of some token ids (special tokens included), for showing a window to a person.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|error| DataError::Tokenizer {
                path: self.path.clone(),
                message: format!("cannot decode ids: {error}"),
            })
    }
}

/// The token stream of the documents joined by `separator`.
///
/// The joined text is encoded in one call rather than each document separately: a byte-level
/// BPE pre-tokenizer splits whitespace by what follows it (GPT-2's `\s+(?!\S)`), so "\n\n"
/// encoded alone can be one token while "\n\n" before a word becomes two, and concatenating
/// per-document encodings would not give the tokens of the joined text. One call is exact and
/// fast enough (about a second for WikiText-2's 1.3 MB test text in an optimised build).
pub fn tokenize_documents(
    tokenizer: &TokenizerFile,
    documents: &[String],
    separator: &str,
) -> Result<Vec<u32>, DataError> {
    tokenizer.encode(&documents.join(separator))
}
