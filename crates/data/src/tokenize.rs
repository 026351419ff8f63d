//! Text to token ids with a HF `tokenizer.json`.

use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use crate::DataError;

/// Whether a window (and a task's context) starts with a BOS before its text tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bos {
    /// The special tokens the model's tokenizer puts before a text
    /// ([`TokenizerFile::leading_special_ids`]): BOS for Gemma, Llama and Mistral, nothing for
    /// SmolLM2, Qwen and GPT-2. Gemma is trained to always see BOS first: without it its
    /// perplexity on book text is ~9× higher at every position, not only the first.
    #[default]
    Auto,
    /// Text tokens only (what SLEB's and the published code's windows hold after the first).
    Off,
}

impl Bos {
    /// The names the command lines take (`--bos auto|off`).
    pub const NAMES: [&'static str; 2] = ["auto", "off"];

    /// The token ids put at the start of every window (and before every task context).
    pub fn prefix(self, tokenizer: &TokenizerFile) -> Result<Vec<u32>, DataError> {
        match self {
            Bos::Auto => tokenizer.leading_special_ids(),
            Bos::Off => Ok(Vec::new()),
        }
    }
}

impl std::str::FromStr for Bos {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Bos::Auto),
            "off" => Ok(Bos::Off),
            other => Err(format!("{other:?} is not a BOS setting: auto or off")),
        }
    }
}

impl std::fmt::Display for Bos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bos::Auto => "auto",
            Bos::Off => "off",
        })
    }
}

/// A loaded `tokenizer.json`, with its id ([`layerprune_core::tokenizer_sha256`], recorded in
/// every token table, so windows are never scored by a model with another tokenizer).
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
        let bytes = layerprune_core::read_input(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let tokenizer_error = |message: String| DataError::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        // The tokenizers library panics on some malformed files (found by crates/data/tests/
        // fuzz.rs: a decoder of an unknown shape) rather than returning its error.
        let mut tokenizer = layerprune_core::contain_panic(|| Tokenizer::from_bytes(&bytes))
            .unwrap_or_else(|panic| Err(format!("the tokenizers library failed: {panic}").into()))
            .map_err(|error| tokenizer_error(format!("not a usable tokenizer.json: {error}")))?;
        tokenizer
            .with_truncation(None)
            .map_err(|error| tokenizer_error(format!("cannot switch truncation off: {error}")))?;
        tokenizer.with_padding(None);
        Ok(TokenizerFile {
            path: path.to_path_buf(),
            sha256: layerprune_core::tokenizer_sha256(&bytes),
            tokenizer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokenizer's id: [`layerprune_core::tokenizer_sha256`] of the file.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Token ids of `text`, with no special tokens (no BOS/EOS): the stream windows are cut
    /// from; a window's leading BOS, where the model wants one, is [`Bos`]'s.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, DataError> {
        self.call("cannot encode text", |tokenizer| {
            tokenizer
                .encode_fast(text, false)
                .map(|encoding| encoding.get_ids().to_vec())
        })
    }

    /// `use_tokenizer` on the tokenizer, its error or panic (the library panics on some
    /// configurations a file can hold) an error naming the file and `what` failed.
    fn call<T>(
        &self,
        what: &str,
        use_tokenizer: impl FnOnce(&Tokenizer) -> tokenizers::Result<T>,
    ) -> Result<T, DataError> {
        let message = match layerprune_core::contain_panic(|| use_tokenizer(&self.tokenizer)) {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => format!("{what}: {error}"),
            Err(panic) => format!("{what}: the tokenizers library failed: {panic}"),
        };
        Err(DataError::Tokenizer {
            path: self.path.clone(),
            message,
        })
    }

    /// The special tokens this tokenizer puts before a text when asked for special tokens: its
    /// post-processor's template (Gemma's `<bos>`, Llama-2's and Mistral's `<s>`, Llama 3's
    /// `<|begin_of_text|>`; nothing for SmolLM2, Qwen or GPT-2). Found by encoding a probe text
    /// with and without special tokens rather than by reading the template, so every kind of
    /// post-processor (template, sequence, BERT-style) is handled the way the tokenizer itself
    /// applies it.
    pub fn leading_special_ids(&self) -> Result<Vec<u32>, DataError> {
        let encode = |special: bool| {
            self.call("cannot encode a probe text", |tokenizer| {
                tokenizer
                    .encode_fast("probe", special)
                    .map(|encoding| encoding.get_ids().to_vec())
            })
        };
        let (with, without) = (encode(true)?, encode(false)?);
        let start = (0..=with.len().saturating_sub(without.len()))
            .find(|&start| with[start..].starts_with(&without))
            .ok_or_else(|| DataError::Tokenizer {
                path: self.path.clone(),
                message: format!(
                    "its special tokens change the text's own tokens ({without:?} becomes \
                     {with:?}), so the tokens it puts before a text cannot be told apart"
                ),
            })?;
        Ok(with[..start].to_vec())
    }

    /// The text of some token ids (special tokens included), for showing a window to a person.
    pub fn decode(&self, ids: &[u32]) -> Result<String, DataError> {
        self.call("cannot decode ids", |tokenizer| {
            tokenizer.decode(ids, false)
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
