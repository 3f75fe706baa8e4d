//! Scalar reference dot kernels: one weight row (whole blocks) against an activation row in
//! the matching format (`x` bytes of Q8_0 / Q8_1 / Q8_K, or f32 for float weights).
//!
//! These are the twins the SIMD kernels are tested against, and the fallback on CPUs without
//! them. Integer sums are formed per block exactly as ggml does so results agree closely.

use super::layout::*;

#[inline(always)]
fn i8s(b: &[u8]) -> impl Iterator<Item = i32> + '_ {
    b.iter().map(|&v| v as i8 as i32)
}

pub fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(4)
        .zip(x)
        .map(|(w, x)| f32_at(w, 0) * x)
        .sum()
}

pub fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(w, x)| f16_at(w, 0) * x)
        .sum()
}

pub fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(w, x)| bf16_at(w, 0) * x)
        .sum()
}

pub fn dot_q4_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(18).zip(x.chunks_exact(34)) {
        let mut q = [0i8; 32];
        unpack_q4(&wb[2..18], &mut q);
        let s: i32 = q
            .iter()
            .zip(i8s(&xb[2..34]))
            .map(|(&q, x)| (q as i32 - 8) * x)
            .sum();
        acc += f16_at(wb, 0) * f16_at(xb, 0) * s as f32;
    }
    acc
}

pub fn dot_q4_1_q8_1(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(20).zip(x.chunks_exact(36)) {
        let mut q = [0i8; 32];
        unpack_q4(&wb[4..20], &mut q);
        let s: i32 = q
            .iter()
            .zip(i8s(&xb[4..36]))
            .map(|(&q, x)| q as i32 * x)
            .sum();
        acc += f16_at(wb, 0) * f16_at(xb, 0) * s as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    acc
}

pub fn dot_q5_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(22).zip(x.chunks_exact(34)) {
        let mut q = [0i8; 32];
        unpack_q5(&wb[2..6], &wb[6..22], &mut q);
        let s: i32 = q
            .iter()
            .zip(i8s(&xb[2..34]))
            .map(|(&q, x)| (q as i32 - 16) * x)
            .sum();
        acc += f16_at(wb, 0) * f16_at(xb, 0) * s as f32;
    }
    acc
}

pub fn dot_q5_1_q8_1(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(24).zip(x.chunks_exact(36)) {
        let mut q = [0i8; 32];
        unpack_q5(&wb[4..8], &wb[8..24], &mut q);
        let s: i32 = q
            .iter()
            .zip(i8s(&xb[4..36]))
            .map(|(&q, x)| q as i32 * x)
            .sum();
        acc += f16_at(wb, 0) * f16_at(xb, 0) * s as f32 + f16_at(wb, 2) * f16_at(xb, 2);
    }
    acc
}

pub fn dot_q8_0_q8_0(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(34).zip(x.chunks_exact(34)) {
        let s: i32 = i8s(&wb[2..34])
            .zip(i8s(&xb[2..34]))
            .map(|(a, b)| a * b)
            .sum();
        acc += f16_at(wb, 0) * f16_at(xb, 0) * s as f32;
    }
    acc
}

/// Sum over groups of `g` codes of `scale[group] * sum(q * x)`.
#[inline(always)]
fn scaled_isum(q: &[i8; 256], x: &[u8], g: usize, scale: impl Fn(usize) -> i32) -> i32 {
    q.chunks_exact(g)
        .zip(x.chunks_exact(g))
        .enumerate()
        .map(|(j, (q, x))| {
            let s: i32 = q.iter().zip(i8s(x)).map(|(&q, x)| q as i32 * x).sum();
            scale(j) * s
        })
        .sum()
}

#[inline(always)]
fn bsum(xb: &[u8], g: usize) -> i32 {
    let off = Q8K_BSUMS + 2 * g;
    i16::from_le_bytes([xb[off], xb[off + 1]]) as i32
}

pub fn dot_q2_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(84).zip(x.chunks_exact(292)) {
        let mut q = [0i8; 256];
        unpack_q2k(wb, &mut q);
        let sc = &wb[Q2K_SCALES..Q2K_SCALES + 16];
        let xq = &xb[Q8K_QS..Q8K_QS + 256];
        let sumi = scaled_isum(&q, xq, 16, |j| (sc[j] & 0xF) as i32);
        let mins: i32 = (0..16).map(|j| (sc[j] >> 4) as i32 * bsum(xb, j)).sum();
        let dx = f32_at(xb, 0);
        acc += dx * f16_at(wb, Q2K_D) * sumi as f32 - dx * f16_at(wb, Q2K_DMIN) * mins as f32;
    }
    acc
}

pub fn dot_q3_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(110).zip(x.chunks_exact(292)) {
        let mut q = [0i8; 256];
        unpack_q3k(wb, &mut q);
        let sc = q3k_scales(&wb[Q3K_SCALES..Q3K_SCALES + 12]);
        let sumi = scaled_isum(&q, &xb[Q8K_QS..Q8K_QS + 256], 16, |j| sc[j] as i32);
        acc += f32_at(xb, 0) * f16_at(wb, Q3K_D) * sumi as f32;
    }
    acc
}

fn dot_k4_like(w: &[u8], x: &[u8], bb: usize, unpack: fn(&[u8], &mut [i8; 256])) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(bb).zip(x.chunks_exact(292)) {
        let mut q = [0i8; 256];
        unpack(wb, &mut q);
        let (sc, m) = k4_scales_mins(&wb[Q4K_SCALES..Q4K_SCALES + 12]);
        let sumi = scaled_isum(&q, &xb[Q8K_QS..Q8K_QS + 256], 32, |j| sc[j] as i32);
        let mins: i32 = (0..8)
            .map(|j| m[j] as i32 * (bsum(xb, 2 * j) + bsum(xb, 2 * j + 1)))
            .sum();
        let dx = f32_at(xb, 0);
        acc += dx * f16_at(wb, Q4K_D) * sumi as f32 - dx * f16_at(wb, Q4K_DMIN) * mins as f32;
    }
    acc
}

pub fn dot_q4_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    dot_k4_like(w, x, 144, unpack_q4k)
}

pub fn dot_q5_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    dot_k4_like(w, x, 176, unpack_q5k)
}

pub fn dot_q6_k_q8_k(w: &[u8], x: &[u8]) -> f32 {
    let mut acc = 0.0f32;
    for (wb, xb) in w.chunks_exact(210).zip(x.chunks_exact(292)) {
        let mut q = [0i8; 256];
        unpack_q6k(wb, &mut q);
        let sc = &wb[Q6K_SCALES..Q6K_SCALES + 16];
        let sumi = scaled_isum(&q, &xb[Q8K_QS..Q8K_QS + 256], 16, |j| sc[j] as i8 as i32);
        acc += f32_at(xb, 0) * f16_at(wb, Q6K_D) * sumi as f32;
    }
    acc
}

/// The scalar kernel for weights of type `ty`, for comparing against the SIMD ones.
pub fn dot_kernel(ty: super::GgmlType) -> Option<super::DotKernel> {
    super::dot::scalar_kernel(ty)
}
