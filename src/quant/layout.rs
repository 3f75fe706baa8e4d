//! Shared helpers that decode the packed fields of the block formats (llama.cpp layouts).
//!
//! Dequantisation, the scalar dot kernels and the SIMD kernels all read blocks through these
//! so that the bit layouts are written down once.

use half::{bf16, f16};

/// Little-endian f16 at `off`, widened to f32.
#[inline(always)]
pub fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Little-endian bf16 at `off`, widened to f32.
#[inline(always)]
pub fn bf16_at(b: &[u8], off: usize) -> f32 {
    bf16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline(always)]
pub fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// Q4_K/Q5_K: the eight 6-bit scales and eight 6-bit mins packed into 12 bytes.
#[inline(always)]
pub fn k4_scales_mins(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = q[j] & 63;
            m[j] = q[j + 4] & 63;
        } else {
            sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// Q3_K: the sixteen 6-bit scales packed into 12 bytes, already offset by -32.
#[inline(always)]
pub fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + (j % 4)] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

// Byte offsets of the fields of each block.
pub const Q2K_SCALES: usize = 0;
pub const Q2K_QS: usize = 16;
pub const Q2K_D: usize = 80;
pub const Q2K_DMIN: usize = 82;
pub const Q3K_HMASK: usize = 0;
pub const Q3K_QS: usize = 32;
pub const Q3K_SCALES: usize = 96;
pub const Q3K_D: usize = 108;
pub const Q4K_D: usize = 0;
pub const Q4K_DMIN: usize = 2;
pub const Q4K_SCALES: usize = 4;
pub const Q4K_QS: usize = 16;
pub const Q5K_QH: usize = 16;
pub const Q5K_QS: usize = 48;
pub const Q6K_QL: usize = 0;
pub const Q6K_QH: usize = 128;
pub const Q6K_SCALES: usize = 192;
pub const Q6K_D: usize = 208;
pub const Q8K_QS: usize = 4;
pub const Q8K_BSUMS: usize = 260;

/// Integer codes of a Q2_K super-block (0..=3); scale index of element `e` is `e / 16`.
#[inline(always)]
pub fn unpack_q2k(b: &[u8], q: &mut [i8; 256]) {
    let qs = &b[Q2K_QS..Q2K_QS + 64];
    for n in 0..2 {
        for j in 0..4 {
            for l in 0..32 {
                q[128 * n + 32 * j + l] = ((qs[32 * n + l] >> (2 * j)) & 3) as i8;
            }
        }
    }
}

/// Integer codes of a Q3_K super-block (-4..=3); scale index of element `e` is `e / 16`.
#[inline(always)]
pub fn unpack_q3k(b: &[u8], q: &mut [i8; 256]) {
    let hm = &b[Q3K_HMASK..Q3K_HMASK + 32];
    let qs = &b[Q3K_QS..Q3K_QS + 64];
    for n in 0..2 {
        for j in 0..4 {
            let bit = 1u8 << (4 * n + j);
            for l in 0..32 {
                let low = ((qs[32 * n + l] >> (2 * j)) & 3) as i8;
                q[128 * n + 32 * j + l] = low - if hm[l] & bit != 0 { 0 } else { 4 };
            }
        }
    }
}

/// Integer codes of a Q4_K super-block (0..=15); scale index of element `e` is `e / 32`.
#[inline(always)]
pub fn unpack_q4k(b: &[u8], q: &mut [i8; 256]) {
    let qs = &b[Q4K_QS..Q4K_QS + 128];
    for c in 0..4 {
        for l in 0..32 {
            let v = qs[32 * c + l];
            q[64 * c + l] = (v & 0xF) as i8;
            q[64 * c + 32 + l] = (v >> 4) as i8;
        }
    }
}

/// Integer codes of a Q5_K super-block (0..=31); scale index of element `e` is `e / 32`.
#[inline(always)]
pub fn unpack_q5k(b: &[u8], q: &mut [i8; 256]) {
    let qh = &b[Q5K_QH..Q5K_QH + 32];
    let qs = &b[Q5K_QS..Q5K_QS + 128];
    for c in 0..4 {
        for l in 0..32 {
            let v = qs[32 * c + l];
            let h0 = ((qh[l] >> (2 * c)) & 1) << 4;
            let h1 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            q[64 * c + l] = ((v & 0xF) | h0) as i8;
            q[64 * c + 32 + l] = ((v >> 4) | h1) as i8;
        }
    }
}

/// Integer codes of a Q6_K super-block (-32..=31); scale index of element `e` is `e / 16`.
#[inline(always)]
pub fn unpack_q6k(b: &[u8], q: &mut [i8; 256]) {
    let ql = &b[Q6K_QL..Q6K_QL + 128];
    let qh = &b[Q6K_QH..Q6K_QH + 64];
    for n in 0..2 {
        let (ql, qh) = (&ql[64 * n..], &qh[32 * n..]);
        let y = &mut q[128 * n..128 * n + 128];
        for l in 0..32 {
            let h = qh[l];
            y[l] = ((ql[l] & 0xF) | ((h & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((h >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((h >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((h >> 6) & 3) << 4)) as i8 - 32;
        }
    }
}

/// Integer codes of a Q4_0/Q4_1 block (0..=15, without the -8 offset).
#[inline(always)]
pub fn unpack_q4(qs: &[u8], q: &mut [i8; 32]) {
    for j in 0..16 {
        q[j] = (qs[j] & 0xF) as i8;
        q[j + 16] = (qs[j] >> 4) as i8;
    }
}

/// Integer codes of a Q5_0/Q5_1 block (0..=31, without the -16 offset).
#[inline(always)]
pub fn unpack_q5(qh: &[u8], qs: &[u8], q: &mut [i8; 32]) {
    let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    for j in 0..16 {
        let h0 = (((h >> j) & 1) << 4) as u8;
        let h1 = (((h >> (j + 16)) & 1) << 4) as u8;
        q[j] = ((qs[j] & 0xF) | h0) as i8;
        q[j + 16] = ((qs[j] >> 4) | h1) as i8;
    }
}
