//! Activation predictors: per FFN layer, a small two-layer MLP guesses from the layer's normalised
//! input which neurons will fire, so the engine computes only those. Depends on nothing of the engine.
//!
//! - [`Predictor`]: f16 weights and the SIMD single-token / batched forward.
//! - [`svd::randomized_svd`]: the truncated SVD that initialises a predictor from the gate matrix.
//! - [`metrics::Confusion`]: recall, precision and sparsity of predictions against labels.

pub mod bit_matrix;
pub mod dataset;
pub mod error;
mod gemm;
pub mod kernels;
pub mod metrics;
pub mod predictor;
#[allow(dead_code)] // Shuffling is used by training, next commit.
mod rng;
pub mod svd;

pub use bit_matrix::BitMatrix;
pub use dataset::Dataset;
pub use error::{PredictorError, Result};
pub use metrics::Confusion;
pub use predictor::{Predictor, Scratch};
