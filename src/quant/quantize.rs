//! Quantisation of f32 rows into block formats (the reference algorithms of ggml, so that our
//! bytes match files written by llama.cpp / gguf-py), including the activation formats
//! Q8_0, Q8_1 and Q8_K used by the dot kernels. The k-quant weight formats Q4_K and Q6_K use
//! our own scale search ([`super::quantize_k`]).

use super::layout::*;
use super::quantize_k::{quantize_q4_k, quantize_q6_k};
use super::{GgmlType, QuantError};
use half::{bf16, f16};

/// Encode `src` (a whole number of blocks) into `dst` (exactly the row's byte size).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    let n = src.len();
    let bl = ty.block_len();
    if !matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Q4_K | Q6_K | Q8_K
    ) {
        return Err(QuantError::Unsupported { op: "quantize", ty });
    }
    if !n.is_multiple_of(bl) {
        return Err(QuantError::PartialBlock { ty, n, block: bl });
    }
    let need = n / bl * ty.block_bytes();
    if dst.len() != need {
        return Err(QuantError::Length {
            what: "quantize destination",
            expected: need,
            got: dst.len(),
        });
    }
    let blocks = src
        .chunks_exact(bl)
        .zip(dst.chunks_exact_mut(ty.block_bytes()));
    match ty {
        F32 => blocks.for_each(|(x, b)| b.copy_from_slice(&x[0].to_le_bytes())),
        F16 => blocks.for_each(|(x, b)| b.copy_from_slice(&f16::from_f32(x[0]).to_le_bytes())),
        BF16 => blocks.for_each(|(x, b)| b.copy_from_slice(&bf16::from_f32(x[0]).to_le_bytes())),
        Q4_0 => blocks.for_each(|(x, b)| quantize_q4_0(x, b)),
        Q4_1 => blocks.for_each(|(x, b)| quantize_q4_1(x, b)),
        Q5_0 => blocks.for_each(|(x, b)| quantize_q5_0(x, b)),
        Q5_1 => blocks.for_each(|(x, b)| quantize_q5_1(x, b)),
        Q8_0 => blocks.for_each(|(x, b)| quantize_q8_0(x, b)),
        Q8_1 => blocks.for_each(|(x, b)| quantize_q8_1(x, b)),
        Q8_K => blocks.for_each(|(x, b)| quantize_q8_k(x, b)),
        Q4_K => blocks.for_each(|(x, b)| quantize_q4_k(x, b)),
        Q6_K => blocks.for_each(|(x, b)| quantize_q6_k(x, b)),
        _ => unreachable!("checked above"),
    }
    Ok(())
}

/// The element of largest magnitude, keeping its sign (first one on ties, as ggml).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > max.abs() {
            max = v;
        }
    }
    max
}

fn inv(d: f32) -> f32 {
    if d == 0.0 {
        0.0
    } else {
        1.0 / d
    }
}

fn quantize_q4_0(x: &[f32], b: &mut [u8]) {
    let d = signed_absmax(x) / -8.0;
    let id = inv(d);
    put_f16(b, 0, d);
    let q = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
    for j in 0..16 {
        b[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

fn quantize_q4_1(x: &[f32], b: &mut [u8]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 15.0;
    let id = inv(d);
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    let q = |v: f32| (((v - min) * id + 0.5).trunc() as u8).min(15);
    for j in 0..16 {
        b[4 + j] = q(x[j]) | (q(x[j + 16]) << 4);
    }
}

/// Low nibbles into `qs`, fifth bits into the 32-bit `qh` (element j -> bit j).
fn pack5(q: &[u8; 32], qh: &mut [u8], qs: &mut [u8]) {
    let mut h = 0u32;
    for j in 0..16 {
        qs[j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
        h |= ((q[j] as u32 >> 4) & 1) << j;
        h |= ((q[j + 16] as u32 >> 4) & 1) << (j + 16);
    }
    qh.copy_from_slice(&h.to_le_bytes());
}

fn quantize_q5_0(x: &[f32], b: &mut [u8]) {
    let d = signed_absmax(x) / -16.0;
    let id = inv(d);
    put_f16(b, 0, d);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((v * id + 16.5).trunc() as u8).min(31);
    }
    let (qh, qs) = b[2..22].split_at_mut(4);
    pack5(&q, qh, qs);
}

fn quantize_q5_1(x: &[f32], b: &mut [u8]) {
    let min = x.iter().copied().fold(f32::INFINITY, f32::min);
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let d = (max - min) / 31.0;
    let id = inv(d);
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    let mut q = [0u8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (((v - min) * id + 0.5).trunc() as u8).min(31);
    }
    let (qh, qs) = b[4..24].split_at_mut(4);
    pack5(&q, qh, qs);
}

/// Q8_0: d = max|x| / 127, q = round-half-away(x / d).
pub(crate) fn quantize_q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    put_f16(b, 0, d);
    for (o, &v) in b[2..34].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// Q8_1: as Q8_0 plus s = d * sum(q), which folds the Q4_1/Q5_1 offset into one multiply.
pub(crate) fn quantize_q8_1(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = inv(d);
    let mut sum = 0i32;
    for (o, &v) in b[4..36].iter_mut().zip(x) {
        let q = (v * id).round() as i8;
        sum += q as i32;
        *o = q as u8;
    }
    put_f16(b, 0, d);
    put_f16(b, 2, sum as f32 * d);
}

/// Codes of one Q8_0/Q8_1 activation block and its scale `d`, as ggml's x86
/// `quantize_row_q8_0`/`_q8_1` make them: `x · (127 / max|x|)` rounded to nearest even. That
/// differs from the reference quantiser (`x / d` rounded half away, used for weights) by one
/// code now and then, and llama.cpp quantises its matmul inputs the x86 way on this hardware.
fn act_codes(x: &[f32], q: &mut [u8]) -> (f32, i32) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let id = if amax == 0.0 { 0.0 } else { 127.0 / amax };
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let c = (v * id).round_ties_even() as i8;
        sum += c as i32;
        *o = c as u8;
    }
    (amax / 127.0, sum)
}

/// Q8_0 block of a matmul input (see `act_codes`).
pub(crate) fn quantize_q8_0_act(x: &[f32], b: &mut [u8]) {
    let (d, _) = act_codes(x, &mut b[2..34]);
    put_f16(b, 0, d);
}

/// Q8_1 block of a matmul input (see `act_codes`), with s = d * sum(codes).
pub(crate) fn quantize_q8_1_act(x: &[f32], b: &mut [u8]) {
    let (d, sum) = act_codes(x, &mut b[4..36]);
    put_f16(b, 0, d);
    put_f16(b, 2, d * sum as f32);
}

/// Q8_K: f32 scale, 256 codes and the sums of each 16 codes (for the k-quant mins).
pub(crate) fn quantize_q8_k(x: &[f32], b: &mut [u8]) {
    let max = signed_absmax(x);
    if max == 0.0 {
        b.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    for (o, &v) in b[Q8K_QS..Q8K_QS + 256].iter_mut().zip(x) {
        *o = ((iscale * v).round_ties_even() as i32).min(127) as i8 as u8;
    }
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    for g in 0..16 {
        let s: i32 = b[Q8K_QS + 16 * g..Q8K_QS + 16 * g + 16]
            .iter()
            .map(|&q| q as i8 as i32)
            .sum();
        let off = Q8K_BSUMS + 2 * g;
        b[off..off + 2].copy_from_slice(&(s as i16).to_le_bytes());
    }
}
