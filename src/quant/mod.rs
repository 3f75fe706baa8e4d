//! Quantised block formats: dequantisation, quantisation and dot-product kernels.
//!
//! Weights stay in their GGUF block format; activations are quantised once per matrix-vector
//! product into the format ggml pairs with each weight type ([`QuantizedVec`]), and rows are
//! reduced with integer dot kernels (SIMD where the CPU has it, [`scalar`] otherwise).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx2_rows;
mod dequantize;
mod dot;
mod error;
mod ggml_type;
mod layout;
mod levels;
mod matrix;
mod matvec;
mod quantize;
mod quantize_k;
mod qvec;
pub mod scalar;

pub use dequantize::dequantize_row;
pub use dot::{dot_kernel, scalar_quantizer, vec_dot, DotKernel};
pub use error::QuantError;
pub use ggml_type::{GgmlType, QK_K};
pub use levels::{level_group, row_levels};
pub use matrix::QMatrix;
pub(crate) use matvec::prefetch;
pub use matvec::{
    gather_matvec, gather_matvec_serial, matmul, matvec, matvec_many, matvec_q, MATVEC_MANY_MAX,
};
pub use quantize::quantize_row;
pub use qvec::{activation_type, round_activations, QuantizedVec};
