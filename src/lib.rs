//! powerinfer: a local LLM inference engine that exploits activation sparsity.
//!
//! Layout: `gguf` reads and writes model files, `quant` holds the block formats and their
//! kernels, `tokenizer` builds tokenizers from GGUF metadata, `model` the architectures,
//! `backend` the compute backends, `sparse` the hybrid FFN executor, `generate` the decoding
//! loop and `server` the HTTP API.

pub mod backend;
pub mod bench;
pub mod corpus;
pub mod generate;
pub mod gguf;
pub mod huge_vec;
pub mod model;
pub mod page_size;
pub mod parallel;
pub mod paths;
pub mod perplexity;
pub mod profile;
pub mod quant;
pub mod quantize;
pub mod server;
pub mod sparse;
pub mod synth;
pub mod tokenizer;
