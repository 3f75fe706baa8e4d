//! Dequantisation of every supported block format to f32, plus the k-quant block unpacker
//! shared with the scalar dot kernels (so both read the bit layouts in one place).
// Index loops mirror the block bit layouts, which read clearer than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::{GgmlType, QuantError, QK_K};
use half::{bf16, f16};

#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

/// 6-bit scale and min `j` (0..8) of a Q4_K/Q5_K super-block's packed 12-byte scale field.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// 6-bit scale `i` (0..16) of a Q3_K super-block's packed 12-byte scale field, minus 32.
#[inline(always)]
pub(crate) fn scale_q3k(i: usize, s: &[u8]) -> i32 {
    let low = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
    let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    (low | (high << 4)) as i32 - 32
}

/// A k-quant super-block as integers: value_i = d*sc[i/16]*q[i] - dmin*m[i/16].
pub(crate) struct KBlock {
    pub q: [i8; QK_K],
    pub sc: [i32; 16],
    pub m: [i32; 16],
    pub d: f32,
    pub dmin: f32,
}

impl KBlock {
    pub(crate) fn new() -> Self {
        KBlock {
            q: [0; QK_K],
            sc: [0; 16],
            m: [0; 16],
            d: 0.0,
            dmin: 0.0,
        }
    }

    /// Unpacks one block of `ty` (a k-quant weight type).
    pub(crate) fn unpack(&mut self, ty: GgmlType, b: &[u8]) {
        match ty {
            GgmlType::Q2_K => {
                let (scales, qs) = (&b[0..16], &b[16..80]);
                self.d = f16_at(b, 80);
                self.dmin = f16_at(b, 82);
                for k in 0..16 {
                    self.sc[k] = (scales[k] & 0xF) as i32;
                    self.m[k] = (scales[k] >> 4) as i32;
                }
                for n in 0..2 {
                    for j in 0..4 {
                        for l in 0..32 {
                            self.q[n * 128 + j * 32 + l] = ((qs[n * 32 + l] >> (2 * j)) & 3) as i8;
                        }
                    }
                }
            }
            GgmlType::Q3_K => {
                let (hm, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
                self.d = f16_at(b, 108);
                self.dmin = 0.0;
                for k in 0..16 {
                    self.sc[k] = scale_q3k(k, scales);
                    self.m[k] = 0;
                }
                for n in 0..2 {
                    for j in 0..4 {
                        let bit = 1u8 << (n * 4 + j);
                        for l in 0..32 {
                            let low = ((qs[n * 32 + l] >> (2 * j)) & 3) as i8;
                            let sub = if hm[l] & bit != 0 { 0 } else { 4 };
                            self.q[n * 128 + j * 32 + l] = low - sub;
                        }
                    }
                }
            }
            GgmlType::Q4_K | GgmlType::Q5_K => {
                self.d = f16_at(b, 0);
                self.dmin = f16_at(b, 2);
                let scales = &b[4..16];
                for j in 0..8 {
                    let (s, m) = scale_min_k4(j, scales);
                    self.sc[2 * j] = s as i32;
                    self.sc[2 * j + 1] = s as i32;
                    self.m[2 * j] = m as i32;
                    self.m[2 * j + 1] = m as i32;
                }
                let (qh, ql): (Option<&[u8]>, &[u8]) = if ty == GgmlType::Q5_K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for j in 0..4 {
                    for l in 0..32 {
                        let mut lo = ql[32 * j + l] & 0xF;
                        let mut hi = ql[32 * j + l] >> 4;
                        if let Some(qh) = qh {
                            lo |= ((qh[l] >> (2 * j)) & 1) << 4;
                            hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4;
                        }
                        self.q[64 * j + l] = lo as i8;
                        self.q[64 * j + 32 + l] = hi as i8;
                    }
                }
            }
            GgmlType::Q6_K => {
                let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
                self.d = f16_at(b, 208);
                self.dmin = 0.0;
                for k in 0..16 {
                    self.sc[k] = scales[k] as i8 as i32;
                    self.m[k] = 0;
                }
                for n in 0..2 {
                    let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
                    let y = &mut self.q[128 * n..];
                    for l in 0..32 {
                        let h = qh[l];
                        y[l] = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8 - 32;
                        y[l + 32] = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
                        y[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
                        y[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
                    }
                }
            }
            GgmlType::Q8_K => {
                self.d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.dmin = 0.0;
                for (q, &v) in self.q.iter_mut().zip(&b[4..260]) {
                    *q = v as i8;
                }
                self.sc = [1; 16];
                self.m = [0; 16];
            }
            _ => unreachable!("KBlock::unpack on {ty}"),
        }
    }
}

/// Dequantises one row (`src` holds whole blocks) into `dst` (`dst.len()` elements).
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let n = dst.len();
    let bl = ty.block_len();
    let bb = ty.block_bytes();
    let expected = ty.row_bytes(n).ok_or(QuantError::NotBlockAligned {
        what: "dequantize_row",
        ty,
        n,
        block: bl,
    })?;
    if src.len() != expected {
        return Err(QuantError::BadLength {
            what: "dequantize_row source bytes",
            expected,
            got: src.len(),
        });
    }
    use GgmlType::*;
    match ty {
        F32 => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        F16 => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        BF16 => {
            for (y, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *y = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        Q4_0 | Q4_1 | Q5_0 | Q5_1 => {
            let has_min = matches!(ty, Q4_1 | Q5_1);
            let five = matches!(ty, Q5_0 | Q5_1);
            for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                let mut off = 2;
                let m = if has_min {
                    off += 2;
                    f16_at(b, 2)
                } else {
                    0.0
                };
                let qh = if five {
                    off += 4;
                    u32::from_le_bytes([b[off - 4], b[off - 3], b[off - 2], b[off - 1]])
                } else {
                    0
                };
                let qs = &b[off..off + 16];
                let bias = match ty {
                    Q4_0 => 8,
                    Q5_0 => 16,
                    _ => 0,
                };
                for j in 0..16 {
                    let h0 = ((qh >> j) & 1) << 4;
                    let h1 = ((qh >> (j + 16)) & 1) << 4;
                    let x0 = ((qs[j] & 0xF) as u32 | h0) as i32 - bias;
                    let x1 = ((qs[j] >> 4) as u32 | h1) as i32 - bias;
                    if has_min {
                        y[j] = x0 as f32 * d + m;
                        y[j + 16] = x1 as f32 * d + m;
                    } else {
                        y[j] = x0 as f32 * d;
                        y[j + 16] = x1 as f32 * d;
                    }
                }
            }
        }
        Q8_0 | Q8_1 => {
            let off = if ty == Q8_0 { 2 } else { 4 };
            for (y, b) in dst.chunks_exact_mut(32).zip(src.chunks_exact(bb)) {
                let d = f16_at(b, 0);
                for (v, &q) in y.iter_mut().zip(&b[off..off + 32]) {
                    *v = q as i8 as f32 * d;
                }
            }
        }
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => {
            let mut kb = KBlock::new();
            for (y, b) in dst.chunks_exact_mut(QK_K).zip(src.chunks_exact(bb)) {
                kb.unpack(ty, b);
                if ty == Q8_K {
                    for (v, &q) in y.iter_mut().zip(&kb.q) {
                        *v = kb.d * q as f32;
                    }
                    continue;
                }
                for k in 0..16 {
                    let dl = kb.d * kb.sc[k] as f32;
                    let ml = kb.dmin * kb.m[k] as f32;
                    for i in 16 * k..16 * k + 16 {
                        y[i] = dl * kb.q[i] as f32 - ml;
                    }
                }
            }
        }
        I8 | I16 | I32 | I64 | F64 => {
            return Err(QuantError::Unsupported {
                op: "dequantize_row",
                ty,
            })
        }
    }
    Ok(())
}
