//! An activation vector prepared once for dot products with rows of one weight type
//! (llama.cpp's pairing: Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for k-quants,
//! f32 for float weights). Buffers are reused across `set` calls: no allocation per token.

use super::quantize::{quantize_block_q8, quantize_block_q8k};
use super::{GgmlType, QK_K};

/// Which activation encoding a weight type is multiplied with.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    F32,
    Q8_0,
    Q8_1,
    Q8_K,
}

impl ActKind {
    pub fn for_weight(ty: GgmlType) -> ActKind {
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 => ActKind::Q8_0,
            Q4_1 | Q5_1 => ActKind::Q8_1,
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => ActKind::Q8_K,
            _ => ActKind::F32,
        }
    }

    fn block(self) -> usize {
        match self {
            ActKind::F32 => 1,
            ActKind::Q8_0 | ActKind::Q8_1 => 32,
            ActKind::Q8_K => QK_K,
        }
    }
}

#[derive(Clone, Debug)]
pub struct QuantizedVec {
    pub(crate) kind: ActKind,
    pub(crate) len: usize,
    /// F32 kind: the values (padded to `len`).
    pub(crate) f: Vec<f32>,
    /// Quantised values, zero-padded to whole blocks.
    pub(crate) qs: Vec<i8>,
    /// Scale per block (f32, unlike ggml's f16, for accuracy and speed).
    pub(crate) d: Vec<f32>,
    /// Q8_1: d * sum(q) per block.
    pub(crate) s: Vec<f32>,
    /// Q8_K: sum of each 16 values.
    pub(crate) bsums: Vec<i16>,
}

/// The Q8_0/Q8_1 block quantiser: AVX2 where available (bit-identical to the scalar one).
#[inline]
fn quantize_q8_fast(x: &[f32], q: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        assert!(x.len() == 32 && q.len() == 32);
        // SAFETY: the CPU supports the kernel's features; lengths checked above.
        return unsafe { super::avx2::quantize_block_q8(x, q) };
    }
    quantize_block_q8(x, q)
}

/// The Q8_K super-block quantiser: AVX2 where available (bit-identical to the scalar one).
#[inline]
fn quantize_q8k_fast(x: &[f32], q: &mut [i8], bsums: &mut [i16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::avx2::available() {
        // SAFETY: the CPU supports the kernel's features; the kernel asserts the lengths.
        return unsafe { super::avx2::quantize_block_q8k(x, q, bsums) };
    }
    quantize_block_q8k(x, q, bsums)
}

impl QuantizedVec {
    pub fn new(ty: GgmlType, x: &[f32]) -> Self {
        let mut v = QuantizedVec {
            kind: ActKind::F32,
            len: 0,
            f: Vec::new(),
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
        };
        v.set(ty, x);
        v
    }

    /// Re-prepares for weight type `ty` and input `x`, reusing the buffers.
    pub fn set(&mut self, ty: GgmlType, x: &[f32]) {
        let kind = ActKind::for_weight(ty);
        self.kind = kind;
        self.len = x.len();
        self.f.clear();
        self.qs.clear();
        self.d.clear();
        self.s.clear();
        self.bsums.clear();
        if kind == ActKind::F32 {
            self.f.extend_from_slice(x);
            return;
        }
        let bl = kind.block();
        let nb = x.len().div_ceil(bl);
        self.qs.resize(nb * bl, 0);
        self.d.resize(nb, 0.0);
        let mut pad = [0.0f32; QK_K];
        if kind == ActKind::Q8_1 {
            self.s.resize(nb, 0.0);
        }
        if kind == ActKind::Q8_K {
            self.bsums.resize(nb * 16, 0);
        }
        for b in 0..nb {
            let xs = &x[b * bl..x.len().min((b + 1) * bl)];
            let xs = if xs.len() < bl {
                pad[..xs.len()].copy_from_slice(xs);
                pad[xs.len()..bl].fill(0.0);
                &pad[..bl]
            } else {
                xs
            };
            let q = &mut self.qs[b * bl..(b + 1) * bl];
            match kind {
                ActKind::Q8_K => {
                    self.d[b] = quantize_q8k_fast(xs, q, &mut self.bsums[b * 16..b * 16 + 16]);
                }
                _ => {
                    self.d[b] = quantize_q8_fast(xs, q);
                    if kind == ActKind::Q8_1 {
                        let sum: i32 = q.iter().map(|&v| v as i32).sum();
                        self.s[b] = sum as f32 * self.d[b];
                    }
                }
            }
        }
    }

    /// Number of logical elements (before padding).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn kind(&self) -> ActKind {
        self.kind
    }

    /// The 8-bit values (zero-padded to whole blocks; empty for float weights).
    pub fn quants(&self) -> &[i8] {
        &self.qs
    }

    /// The per-block scales (empty for float weights).
    pub fn scales(&self) -> &[f32] {
        &self.d
    }

    /// The values the kernels actually multiply with (after 8-bit rounding), for tests and
    /// error analysis.
    pub fn dequantized(&self) -> Vec<f32> {
        match self.kind {
            ActKind::F32 => self.f.clone(),
            kind => {
                let bl = kind.block();
                (0..self.len)
                    .map(|i| self.d[i / bl] * self.qs[i] as f32)
                    .collect()
            }
        }
    }
}
