//! Quantised block formats: dequantisation, quantisation and dot-product kernels.
//!
//! Weights stay in their GGUF block format; activations are quantised once per product into
//! the matching 8-bit format (`QuantizedVec`) so the inner loops are integer dot products.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
mod dequant;
mod error;
mod ggml_type;
mod matvec;
mod qmatrix;
mod quantize;
mod qvec;
pub mod scalar;

pub use dequant::dequantize_row;
pub use error::QuantError;
pub use ggml_type::{GgmlType, QK_K};
pub use matvec::{gather_matvec, matmul, matvec, matvec_q};
pub use qmatrix::QMatrix;
pub use quantize::quantize_row;
pub use qvec::{ActKind, QuantizedVec};

/// Whether `ty` can be the weight type of a dot product / matrix product.
pub fn has_dot(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
    )
}

/// Dot product of one weight row of type `ty` with `x` (prepared for `ty`), using the best
/// kernel this CPU supports. Panics if `x` was prepared for another type or lengths differ.
#[inline]
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        scalar::check_dot_args(ty, row, x);
        if let Some(v) = avx2::vec_dot(ty, row, x) {
            return v;
        }
    }
    scalar::vec_dot(ty, row, x)
}

/// Dots of one weight row with four prepared activations (prefill): where a batched kernel
/// exists each weight block is unpacked once for all four; otherwise four `vec_dot`s.
#[inline]
pub fn vec_dot_x4(ty: GgmlType, row: &[u8], xs: [&QuantizedVec; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        for x in xs {
            scalar::check_dot_args(ty, row, x);
        }
        if xs.iter().all(|x| x.len() == xs[0].len()) {
            if let Some(v) = avx2::vec_dot_x4(ty, row, xs) {
                return v;
            }
        }
    }
    xs.map(|x| vec_dot(ty, row, x))
}
