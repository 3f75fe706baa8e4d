//! Helpers shared by the quant integration tests: a seeded generator of random non-zero data
//! and random valid blocks of every format.
#![allow(dead_code)]

use powerinfer::quant::{quantize_row, GgmlType};

/// xorshift64*: deterministic, dependency-free randomness for tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1), never exactly zero.
    pub fn f32(&mut self) -> f32 {
        let v = (self.u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
        if v == 0.0 {
            0.25
        } else {
            v
        }
    }
    /// Values with a different scale per 32 elements, so blocks differ in range.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        let mut scale = 1.0;
        for i in 0..n {
            if i % 32 == 0 {
                scale = 0.05 + 2.0 * self.f32().abs();
            }
            out.push(self.f32() * scale);
        }
        out
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
}

/// Byte offsets of the f16 scale fields of each block format (set to sane values so random
/// blocks do not hold infinities or NaNs).
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q4_K | Q5_K => &[0, 2],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A random row of `n` elements of type `ty`: quantised random values for float types,
/// random bytes with sane scales for block types.
pub fn random_row(rng: &mut Rng, ty: GgmlType, n: usize) -> Vec<u8> {
    let rb = ty.row_bytes(n).expect("whole blocks");
    if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        let mut out = vec![0u8; rb];
        quantize_row(ty, &rng.vec(n), &mut out).unwrap();
        return out;
    }
    let mut out = rng.bytes(rb);
    for b in out.chunks_exact_mut(ty.block_bytes()) {
        for &off in f16_fields(ty) {
            let d = half::f16::from_f32(0.001 + 0.05 * rng.f32().abs());
            b[off..off + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    out
}

pub fn read_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
