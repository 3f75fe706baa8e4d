//! Reference quantisation of f32 rows into block formats (llama.cpp's `_ref` rounding), and the
//! per-block activation quantisers that `QuantizedVec` uses.
// Index loops mirror the block bit layouts, which read clearer than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{GgmlType, QuantError, QK_K};
use half::{bf16, f16};

/// Q8_0/Q8_1 activation block: returns the scale, writes 32 rounded values.
#[inline]
pub(crate) fn quantize_block_q8(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    d
}

/// Q8_K activation super-block: returns the scale, writes 256 values and 16 partial sums.
#[inline]
pub(crate) fn quantize_block_q8k(x: &[f32], q: &mut [i8], bsums: &mut [i16]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = ((iscale * v).round() as i32).min(127) as i8;
    }
    for (s, c) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = c.iter().map(|&v| v as i16).sum();
    }
    1.0 / iscale
}

/// Quantises `src` into whole blocks of `ty` in `dst` (exactly `ty.row_bytes(src.len())` bytes).
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let n = src.len();
    let expected = ty.row_bytes(n).ok_or(QuantError::NotBlockAligned {
        what: "quantize_row",
        ty,
        n,
        block: ty.block_len(),
    })?;
    if dst.len() != expected {
        return Err(QuantError::BadLength {
            what: "quantize_row destination bytes",
            expected,
            got: dst.len(),
        });
    }
    let bb = ty.block_bytes();
    use GgmlType::*;
    match ty {
        F32 => {
            for (c, v) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        F16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        BF16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        Q4_0 => {
            for (b, x) in dst.chunks_exact_mut(bb).zip(src.chunks_exact(32)) {
                let mut amax = 0.0f32;
                let mut max = 0.0f32;
                for &v in x {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                b[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5).trunc() as u8).min(15);
                for j in 0..16 {
                    b[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
                }
            }
        }
        Q4_1 => {
            for (b, x) in dst.chunks_exact_mut(bb).zip(src.chunks_exact(32)) {
                let min = x.iter().copied().fold(f32::INFINITY, f32::min);
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                b[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                b[2..4].copy_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5).trunc() as u8).min(15);
                for j in 0..16 {
                    b[4 + j] = q(x[j]) | (q(x[j + 16]) << 4);
                }
            }
        }
        Q8_0 | Q8_1 => {
            let off = if ty == Q8_0 { 2 } else { 4 };
            let mut q = [0i8; 32];
            for (b, x) in dst.chunks_exact_mut(bb).zip(src.chunks_exact(32)) {
                let d = quantize_block_q8(x, &mut q);
                b[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
                if ty == Q8_1 {
                    let sum: i32 = q.iter().map(|&v| v as i32).sum();
                    b[2..4].copy_from_slice(&f16::from_f32(sum as f32 * d).to_le_bytes());
                }
                for (o, &v) in b[off..].iter_mut().zip(&q) {
                    *o = v as u8;
                }
            }
        }
        Q8_K => {
            let mut q = [0i8; QK_K];
            let mut bs = [0i16; 16];
            for (b, x) in dst.chunks_exact_mut(bb).zip(src.chunks_exact(QK_K)) {
                let d = quantize_block_q8k(x, &mut q, &mut bs);
                b[0..4].copy_from_slice(&d.to_le_bytes());
                for (o, &v) in b[4..260].iter_mut().zip(&q) {
                    *o = v as u8;
                }
                for (o, v) in b[260..292].chunks_exact_mut(2).zip(&bs) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        _ => {
            return Err(QuantError::Unsupported {
                op: "quantize_row",
                ty,
            })
        }
    }
    Ok(())
}
