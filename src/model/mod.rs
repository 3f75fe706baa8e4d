//! Model architectures: configuration from GGUF metadata, weights, and one decoder forward
//! pass shared by llama, qwen2 and gemma3 (their differences are switches in the config and
//! optional tensors).

mod activations;
mod config;
mod layer;
mod multi;
mod observer;
mod state;
mod transformer;
mod weights;

pub use config::{Arch, FfnKind, ModelConfig, RopeStyle, FFN_ACTIVATION_KEY};
pub use multi::DecodeBatch;
pub use observer::{FfnObserver, FfnTaps};
pub use state::State;
pub use transformer::{layer_uploads, Model, SparseModel};
pub use weights::{LayerWeights, Weights};

use crate::gguf::GgufError;
use crate::quant::QuantError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, gemma3)")]
    UnsupportedArch(String),
    #[error("model configuration: {0}")]
    Config(String),
    #[error("tensor {0:?} missing from the model file")]
    MissingTensor(String),
    #[error("tensor {name:?}: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("context overflow: {need} tokens do not fit in the context of {n_ctx}")]
    ContextOverflow { need: usize, n_ctx: usize },
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadToken { id: u32, vocab: usize },
    #[error("empty input: nothing to evaluate")]
    EmptyInput,
    #[error("FFN mode {0} needs a profile sidecar: run `powerinfer profile` on the model, then pass --sparse")]
    NoSidecar(&'static str),
    #[error("backend {backend} cannot run {what}")]
    Unsupported { backend: String, what: String },
}
