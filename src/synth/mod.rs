//! Synthetic ReLU-family llama models for tests and benchmarks.
//!
//! No sparse (ReLU) model is reachable from here, so we make them: random weights arranged so
//! that FFN neurons fire at chosen power-law frequencies (mean sparsity S, skew α), through
//! low-rank gates a small predictor can learn, in a GGUF that our engine and llama.cpp load.
//! See [`projection`] for how firing rates are set.

mod corpus;
mod frequency;
mod generate;
mod marker;
mod projection;
mod rng;
mod spec;
mod vocab;

pub use corpus::SAMPLE_TEXT;
pub use frequency::{normal_quantile, power_law, top_share};
pub use generate::{write_model, Progress, SynthSummary};
pub use marker::{is_synthetic, SYNTH_KEY_PREFIX};
pub use projection::{BIAS_CHANNELS, LOW_RANK, NOISE_SHARE};
pub use spec::SynthSpec;

use crate::gguf::GgufError;
use crate::quant::QuantError;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// The requested model cannot be made as asked.
    #[error("{0}")]
    Spec(String),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
}
