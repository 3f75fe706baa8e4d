//! Quantised block formats: dequantisation, quantisation and dot-product kernels.

mod ggml_type;

pub use ggml_type::{GgmlType, QK_K};
