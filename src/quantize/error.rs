//! Errors of requantising a model file.

use std::path::PathBuf;

use crate::gguf::GgufError;
use crate::model::ModelError;
use crate::quant::{GgmlType, QuantError};

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// A type name that is not one of the output types we write.
    #[error("unknown quantisation type {name:?} (expected one of: {expected})")]
    UnknownType {
        name: String,
        expected: &'static str,
    },
    /// A weight matrix whose element type we cannot dequantise.
    #[error("tensor {name}: input type {ty} cannot be requantised")]
    UnsupportedTensor { name: String, ty: GgmlType },
    #[error("--ratio {0} is not between 0 and 1")]
    BadRatio(f64),
    #[error("input and output are the same file ({0}); the input is never overwritten")]
    SamePath(PathBuf),
    #[error("no sensitivity was measured for {0}")]
    Unmeasured(String),
    #[error("no calibration tokens to measure sensitivity on")]
    NoCalibration,
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Quant(#[from] QuantError),
    #[error(transparent)]
    Model(#[from] ModelError),
}
