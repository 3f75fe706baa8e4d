//! Scalar reference dot kernels: the twin every SIMD kernel is tested against, and the
//! fallback on CPUs without SIMD support. Each takes one weight row and a prepared activation.
// Index loops mirror the block bit layouts, which read clearer than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::dequant::{f16_at, KBlock};
use super::qvec::{ActKind, QuantizedVec};
use super::{GgmlType, QK_K};
use half::{bf16, f16};

/// Dot product of one row of weight type `ty` with `x` (prepared for `ty`).
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f32 {
    check_dot_args(ty, row, x);
    use GgmlType::*;
    match ty {
        F32 => dot_f32(row, &x.f),
        F16 => dot_f16(row, &x.f),
        BF16 => dot_bf16(row, &x.f),
        Q4_0 | Q5_0 | Q8_0 => dot_q_q8_0(ty, row, x),
        Q4_1 | Q5_1 => dot_q_q8_1(ty, row, x),
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => dot_k_q8k(ty, row, x),
        _ => unreachable!("no dot kernel for {ty}"),
    }
}

/// The contract every dot kernel relies on (SIMD kernels read memory unchecked after it).
#[inline]
pub(crate) fn check_dot_args(ty: GgmlType, row: &[u8], x: &QuantizedVec) {
    assert!(super::has_dot(ty), "no dot kernel for {ty}");
    assert_eq!(
        x.kind,
        ActKind::for_weight(ty),
        "activation prepared for another type"
    );
    let ok = ty
        .row_bytes(x.len)
        .map(|rb| rb == row.len())
        .unwrap_or(false);
    assert!(
        ok,
        "row of {} bytes does not match {} {ty} elements",
        row.len(),
        x.len
    );
}

pub fn dot_f32(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(4)
        .zip(x)
        .map(|(c, &v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
        .sum()
}

pub fn dot_f16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, &v)| f16::from_le_bytes([c[0], c[1]]).to_f32() * v)
        .sum()
}

pub fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    row.chunks_exact(2)
        .zip(x)
        .map(|(c, &v)| bf16::from_le_bytes([c[0], c[1]]).to_f32() * v)
        .sum()
}

/// Integer weights of a 32-block of Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 (without the Q4_0/Q5_0 bias
/// removed for the min formats), and the byte offset after the scale fields.
#[inline(always)]
pub(crate) fn unpack_q32(ty: GgmlType, b: &[u8], q: &mut [i32; 32]) {
    use GgmlType::*;
    match ty {
        Q8_0 => {
            for (q, &v) in q.iter_mut().zip(&b[2..34]) {
                *q = v as i8 as i32;
            }
        }
        _ => {
            let (off, five) = match ty {
                Q4_0 => (2, false),
                Q4_1 => (4, false),
                Q5_0 => (2, true),
                _ => (4, true),
            };
            let qh = if five {
                u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
            } else {
                0
            };
            let qs = &b[off + if five { 4 } else { 0 }..];
            let bias = match ty {
                Q4_0 => 8,
                Q5_0 => 16,
                _ => 0,
            };
            for j in 0..16 {
                q[j] = ((qs[j] & 0xF) as u32 | (((qh >> j) & 1) << 4)) as i32 - bias;
                q[j + 16] = ((qs[j] >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32 - bias;
            }
        }
    }
}

/// Q4_0/Q5_0/Q8_0 weights against Q8_0 activations: sum_b d_w*d_x*sum(q_w*q_x).
pub fn dot_q_q8_0(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f32 {
    let bb = ty.block_bytes();
    let mut q = [0i32; 32];
    let mut sum = 0.0f32;
    for (i, b) in row.chunks_exact(bb).enumerate() {
        unpack_q32(ty, b, &mut q);
        let xq = &x.qs[32 * i..32 * i + 32];
        let sumi: i32 = q.iter().zip(xq).map(|(&a, &b)| a * b as i32).sum();
        sum += f16_at(b, 0) * x.d[i] * sumi as f32;
    }
    sum
}

/// Q4_1/Q5_1 weights against Q8_1 activations: adds m_w * d_x*sum(q_x) per block.
pub fn dot_q_q8_1(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f32 {
    let bb = ty.block_bytes();
    let mut q = [0i32; 32];
    let mut sum = 0.0f32;
    for (i, b) in row.chunks_exact(bb).enumerate() {
        unpack_q32(ty, b, &mut q);
        let xq = &x.qs[32 * i..32 * i + 32];
        let sumi: i32 = q.iter().zip(xq).map(|(&a, &b)| a * b as i32).sum();
        sum += f16_at(b, 0) * x.d[i] * sumi as f32 + f16_at(b, 2) * x.s[i];
    }
    sum
}

/// k-quant weights against Q8_K activations, via the shared integer unpacking.
pub fn dot_k_q8k(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f32 {
    let bb = ty.block_bytes();
    let mut kb = KBlock::new();
    let mut sum = 0.0f32;
    for (i, b) in row.chunks_exact(bb).enumerate() {
        kb.unpack(ty, b);
        let xq = &x.qs[QK_K * i..QK_K * (i + 1)];
        let bs = &x.bsums[16 * i..16 * i + 16];
        let mut sumi = 0i32;
        let mut summ = 0i32;
        for k in 0..16 {
            let s: i32 = (16 * k..16 * k + 16)
                .map(|j| kb.q[j] as i32 * xq[j] as i32)
                .sum();
            sumi += kb.sc[k] * s;
            summ += kb.m[k] * bs[k] as i32;
        }
        sum += x.d[i] * (kb.d * sumi as f32 - kb.dmin * summ as f32);
    }
    sum
}
