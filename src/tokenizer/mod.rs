//! Tokenizers built from GGUF metadata alone, reproducing llama.cpp's token ids.
//!
//! Two families are supported: byte-level BPE (`tokenizer.ggml.model = "gpt2"`, with the
//! pre-tokenizer named by `tokenizer.ggml.pre`) and SentencePiece BPE (`"llama"`). Special
//! tokens are split out of the text first; see [`Tokenizer::encode`].

mod api;
mod bpe;
mod byte_level;
mod error;
mod fast_hash;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
mod unicode_data;

pub use api::{token_type, Tokenizer};
pub use error::TokenizerError;
pub use stream::StreamDecoder;
