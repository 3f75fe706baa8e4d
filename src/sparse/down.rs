//! The down projection stored neuron-major, so that one neuron's contribution (its column of
//! `down`) is one contiguous run of memory and skipping a neuron skips its bytes.
//!
//! Why a transposed copy: in GGUF each row of `down` is an output feature over all neurons, in
//! blocks of 32 neurons; with 10% of neurons active almost every block holds one, so a sparse
//! read of the original layout reads nearly everything. The copy keeps the exact weight values
//! (integer levels with the format's own group scales, see `quant::row_levels`), so the
//! sparse result equals the dense one up to f32 summation order.

use half::f16;
use rayon::prelude::*;

use crate::quant::{self, GgmlType, QMatrix};

/// Neuron-major down matrix: `n_ff` neurons × `d_model` outputs.
pub struct TransposedDown {
    pub d_model: usize,
    pub n_ff: usize,
    /// Weight type of the original matrix; the activations are rounded as the dense kernel
    /// rounds them for this type.
    pub ty: GgmlType,
    repr: Repr,
}

enum Repr {
    /// `w[j][r] = scale[j / group][r] * q[j][r] + offset[j / group][r]`.
    Levels {
        group: usize,
        q: Vec<i8>,
        scale: Vec<f32>,
        /// Absent when every offset is zero (Q4_0, Q5_0, Q8_0, Q6_K).
        offset: Option<Vec<f32>>,
    },
    /// Float weights, and the formats without a level decomposition (rounded to f16).
    Float(Vec<f16>),
}

impl TransposedDown {
    /// Build from the model's down matrix (`rows` = d_model outputs, `cols` = n_ff neurons).
    pub fn new(down: &QMatrix) -> TransposedDown {
        let (d, n) = (down.rows, down.cols);
        let repr = match quant::level_group(down.ty) {
            Some(group) => {
                let ng = n / group;
                // Row-major decomposition first (parallel over output rows), then transpose.
                let mut rq = vec![0i8; d * n];
                let mut rs = vec![0f32; d * ng];
                let mut ro = vec![0f32; d * ng];
                rq.par_chunks_mut(n)
                    .zip(rs.par_chunks_mut(ng).zip(ro.par_chunks_mut(ng)))
                    .enumerate()
                    .for_each(|(r, (q, (s, o)))| {
                        quant::row_levels(down.ty, down.row(r), q, s, o);
                    });
                let mut q = vec![0i8; n * d];
                q.par_chunks_mut(d).enumerate().for_each(|(j, col)| {
                    for (r, v) in col.iter_mut().enumerate() {
                        *v = rq[r * n + j];
                    }
                });
                let transpose_groups = |src: &[f32]| {
                    let mut out = vec![0f32; ng * d];
                    out.par_chunks_mut(d).enumerate().for_each(|(g, col)| {
                        for (r, v) in col.iter_mut().enumerate() {
                            *v = src[r * ng + g];
                        }
                    });
                    out
                };
                let scale = transpose_groups(&rs);
                let offset = ro.iter().any(|&v| v != 0.0).then(|| transpose_groups(&ro));
                Repr::Levels {
                    group,
                    q,
                    scale,
                    offset,
                }
            }
            None => {
                let mut rows = vec![0f32; d * n];
                rows.par_chunks_mut(n).enumerate().for_each(|(r, out)| {
                    quant::dequantize_row(down.ty, down.row(r), out)
                        .expect("weight type checked at load");
                });
                let mut w = vec![f16::ZERO; n * d];
                w.par_chunks_mut(d).enumerate().for_each(|(j, col)| {
                    for (r, v) in col.iter_mut().enumerate() {
                        *v = f16::from_f32(rows[r * n + j]);
                    }
                });
                Repr::Float(w)
            }
        };
        TransposedDown {
            d_model: d,
            n_ff: n,
            ty: down.ty,
            repr,
        }
    }

    /// Bytes held (for memory reports).
    pub fn n_bytes(&self) -> usize {
        match &self.repr {
            Repr::Levels {
                q, scale, offset, ..
            } => q.len() + 4 * scale.len() + offset.as_ref().map_or(0, |o| 4 * o.len()),
            Repr::Float(w) => 2 * w.len(),
        }
    }

    /// Bytes read for one active neuron (its levels plus its group's scales, amortised).
    pub fn bytes_per_neuron(&self) -> usize {
        self.n_bytes() / self.n_ff.max(1)
    }

    /// `out = Σ_{j in active} a[j] · column j`, with `a` indexed by neuron (only the active
    /// entries are read). `active` must be ascending. `group_sums`, when given, replaces the
    /// sum of `a` over each scale group in the offset term. `tmp` is scratch.
    pub fn accumulate(
        &self,
        active: &[u32],
        a: &[f32],
        group_sums: Option<&[f32]>,
        out: &mut [f32],
        tmp: &mut Vec<f32>,
    ) {
        let d = self.d_model;
        assert_eq!(out.len(), d);
        out.fill(0.0);
        match &self.repr {
            Repr::Float(w) => {
                for &j in active {
                    let j = j as usize;
                    axpy_f16(out, a[j], &w[j * d..(j + 1) * d]);
                }
            }
            Repr::Levels {
                group,
                q,
                scale,
                offset,
            } => {
                tmp.clear();
                tmp.resize(d, 0.0);
                let mut i = 0;
                while i < active.len() {
                    // All active neurons of one scale group share the final scaling.
                    let g = active[i] as usize / group;
                    let mut sum_a = 0f32;
                    tmp.fill(0.0);
                    while i < active.len() && active[i] as usize / group == g {
                        let j = active[i] as usize;
                        axpy_i8(tmp, a[j], &q[j * d..(j + 1) * d]);
                        sum_a += a[j];
                        i += 1;
                    }
                    if let Some(sums) = group_sums {
                        // Q8_1 activations carry their own block sum (f16, from the unrounded
                        // scale), and the dense kernel multiplies the offsets by that.
                        sum_a = sums[g];
                    }
                    let s = &scale[g * d..(g + 1) * d];
                    match offset {
                        Some(o) => scale_offset_add(out, tmp, s, &o[g * d..(g + 1) * d], sum_a),
                        None => scale_add(out, tmp, s),
                    }
                }
            }
        }
    }
}

// The loops below are written for the auto-vectoriser; each has an AVX2+FMA entry point chosen
// at run time and a plain one, computing the same expression.

macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn simd($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features the function was compiled for.
                    return unsafe { simd($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

#[inline(always)]
fn axpy_i8_body(y: &mut [f32], a: f32, q: &[i8]) {
    for (y, &q) in y.iter_mut().zip(q) {
        *y = (q as f32).mul_add(a, *y);
    }
}

#[inline(always)]
fn axpy_f16_body(y: &mut [f32], a: f32, w: &[f16]) {
    for (y, w) in y.iter_mut().zip(w) {
        *y = w.to_f32().mul_add(a, *y);
    }
}

#[inline(always)]
fn scale_add_body(out: &mut [f32], t: &[f32], s: &[f32]) {
    for ((o, &t), &s) in out.iter_mut().zip(t).zip(s) {
        *o = t.mul_add(s, *o);
    }
}

#[inline(always)]
fn scale_offset_add_body(out: &mut [f32], t: &[f32], s: &[f32], off: &[f32], sum_a: f32) {
    for (((o, &t), &s), &m) in out.iter_mut().zip(t).zip(s).zip(off) {
        *o = m.mul_add(sum_a, t.mul_add(s, *o));
    }
}

dispatch!(axpy_i8, axpy_i8_body, (y: &mut [f32], a: f32, q: &[i8]));
dispatch!(axpy_f16, axpy_f16_body, (y: &mut [f32], a: f32, w: &[f16]));
dispatch!(scale_add, scale_add_body, (out: &mut [f32], t: &[f32], s: &[f32]));
dispatch!(
    scale_offset_add,
    scale_offset_add_body,
    (out: &mut [f32], t: &[f32], s: &[f32], off: &[f32], sum_a: f32)
);

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Sparse accumulation equals the dense product of the dequantised matrix with the
    /// activation vector zeroed outside the active set, for level and float layouts.
    #[test]
    fn accumulate_matches_dense_reference() {
        let (d, n) = (96, 256);
        let w = rand(d * n, 7);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::F16,
        ] {
            let rb = n / ty.block_len() * ty.block_bytes();
            let mut data = vec![0u8; d * rb];
            for r in 0..d {
                quant::quantize_row(ty, &w[r * n..(r + 1) * n], &mut data[r * rb..(r + 1) * rb])
                    .unwrap();
            }
            let m = QMatrix::new(ty, d, n, &data).unwrap();
            let t = TransposedDown::new(&m);
            let a = rand(n, 11);
            let active: Vec<u32> = (0..n as u32).filter(|j| j % 3 == 0 || j % 7 == 1).collect();
            let mut dense_w = vec![0f32; n];
            let mut want = vec![0f64; d];
            for (r, want) in want.iter_mut().enumerate() {
                quant::dequantize_row(ty, m.row(r), &mut dense_w).unwrap();
                *want = active
                    .iter()
                    .map(|&j| dense_w[j as usize] as f64 * a[j as usize] as f64)
                    .sum();
            }
            let mut out = vec![0f32; d];
            t.accumulate(&active, &a, None, &mut out, &mut Vec::new());
            for r in 0..d {
                assert!(
                    (out[r] as f64 - want[r]).abs() < 1e-4 * (1.0 + want[r].abs()),
                    "{ty} row {r}: {} vs {}",
                    out[r],
                    want[r]
                );
            }
        }
    }
}
