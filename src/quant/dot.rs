//! Dot-kernel selection: the best kernel for each weight type on this CPU, chosen once.

use super::quantize::{quantize_q8_0_act, quantize_q8_1_act, quantize_q8_k};
use super::{activation_type, scalar, GgmlType, QuantizedVec};

/// A dot kernel for one weight type: a weight row (whole blocks) against an activation row
/// of the same number of blocks, f32 for float weights and Q8_* bytes otherwise.
#[derive(Clone, Copy, Debug)]
pub enum DotKernel {
    F(fn(&[u8], &[f32]) -> f32),
    Q(fn(&[u8], &[u8]) -> f32),
}

impl DotKernel {
    /// Panics if `x` is not in the format this kernel's weight type pairs with.
    #[inline(always)]
    pub fn dot(self, row: &[u8], x: &QuantizedVec) -> f32 {
        match self {
            DotKernel::F(f) => f(row, x.floats()),
            DotKernel::Q(f) => f(row, x.bytes()),
        }
    }
}

/// Scalar kernel for weights of type `ty`.
pub(crate) fn scalar_kernel(ty: GgmlType) -> Option<DotKernel> {
    use DotKernel::*;
    use GgmlType::*;
    Some(match ty {
        F32 => F(scalar::dot_f32),
        F16 => F(scalar::dot_f16),
        BF16 => F(scalar::dot_bf16),
        Q4_0 => Q(scalar::dot_q4_0_q8_0),
        Q4_1 => Q(scalar::dot_q4_1_q8_1),
        Q5_0 => Q(scalar::dot_q5_0_q8_0),
        Q5_1 => Q(scalar::dot_q5_1_q8_1),
        Q8_0 => Q(scalar::dot_q8_0_q8_0),
        Q2_K => Q(scalar::dot_q2_k_q8_k),
        Q3_K => Q(scalar::dot_q3_k_q8_k),
        Q4_K => Q(scalar::dot_q4_k_q8_k),
        Q5_K => Q(scalar::dot_q5_k_q8_k),
        Q6_K => Q(scalar::dot_q6_k_q8_k),
        _ => return None,
    })
}

/// The fastest kernel this CPU supports for weights of type `ty` (`None` if the type has no
/// dot product).
pub fn dot_kernel(ty: GgmlType) -> Option<DotKernel> {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = super::avx2::kernel(ty) {
        return Some(k);
    }
    scalar_kernel(ty)
}

/// Fastest block quantiser for an activation format.
pub(crate) fn activation_quantizer(act: GgmlType) -> fn(&[f32], &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(q) = super::avx2::quantizer(act) {
        return q;
    }
    scalar_quantizer(act)
}

/// The portable quantiser of an activation format (the bytes of ggml's x86 activation
/// quantisers).
pub fn scalar_quantizer(act: GgmlType) -> fn(&[f32], &mut [u8]) {
    match act {
        GgmlType::Q8_0 => quantize_q8_0_act,
        GgmlType::Q8_1 => quantize_q8_1_act,
        GgmlType::Q8_K => quantize_q8_k,
        _ => unreachable!("{act} is not an activation format"),
    }
}

/// Checks that `x` matches a weight row of type `ty` with `row_len` bytes (internal contract
/// of the hot paths: a mismatch is a programming error).
#[inline]
pub(crate) fn check_pair(ty: GgmlType, row_len: usize, x: &QuantizedVec) {
    let act = activation_type(ty);
    assert_eq!(
        act,
        Some(x.activation_type()),
        "activation vector prepared for {} cannot be used with {ty} weights",
        x.activation_type()
    );
    assert_eq!(
        row_len / ty.block_bytes() * ty.block_len(),
        x.len(),
        "weight row of {row_len} bytes of {ty} does not match a vector of {} elements",
        x.len()
    );
}

/// Dot product of one weight row of type `ty` with a prepared vector.
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f32 {
    check_pair(ty, row.len(), x);
    let k = dot_kernel(ty).unwrap_or_else(|| panic!("no dot kernel for {ty}"));
    k.dot(row, x)
}
