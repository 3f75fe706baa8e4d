//! Activation predictors: per FFN layer, a small two-layer MLP guesses from the layer's normalised
//! input which neurons will fire, so the engine computes only those. Depends on nothing of the engine.
//!
//! - [`Predictor`]: f16 weights and the SIMD single-token / batched forward.
//! - [`Selector`]: the output layer as selections run it (8-bit levels, the bias folded into a
//!   threshold per neuron).
//! - [`train_layer`]: SVD-initialised, Adam-trained, threshold-calibrated predictor for one layer,
//!   climbing a ladder of ranks until the recall and sparsity targets are met (and on while a
//!   larger rank lowers the bytes a token reads).
//! - [`svd::randomized_svd`]: the truncated SVD that initialises a predictor from the gate matrix.
//! - [`metrics::Confusion`]: recall, precision and sparsity of predictions against labels.

mod adam;
pub mod bit_matrix;
mod calibrate;
pub mod dataset;
pub mod error;
mod gemm;
pub mod kernels;
mod loss;
pub mod metrics;
mod mlp;
pub mod predictor;
mod rng;
pub mod selector;
pub mod svd;
pub mod train;

pub use bit_matrix::BitMatrix;
pub use dataset::Dataset;
pub use error::{PredictorError, Result};
pub use metrics::Confusion;
pub use predictor::{Predictor, Scratch};
pub use selector::Selector;
pub use train::{
    train_layer, GateInit, LayerReport, Progress, ProgressFn, TrainConfig, TrainOutcome,
};
