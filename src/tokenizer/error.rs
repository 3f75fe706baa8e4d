//! Errors raised while building a tokenizer from GGUF metadata.

use crate::gguf::GgufError;

/// Why a tokenizer could not be built. Encoding and decoding never fail: unknown ids decode to
/// nothing and any `&str` can be encoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("GGUF metadata lacks {0}")]
    Missing(&'static str),
    #[error("GGUF metadata {key} is malformed: {msg}")]
    Malformed { key: &'static str, msg: String },
    #[error("unsupported tokenizer model {0:?} (supported: \"gpt2\", \"llama\")")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer {0:?}")]
    UnsupportedPre(String),
}
