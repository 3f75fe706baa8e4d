//! Quantisation of 256-element super-blocks into the k-quant weight formats Q4_K and Q6_K.
//!
//! Each sub-block gets its own scale (and, for Q4_K, min) chosen by a small search: a range of
//! candidate scales around the naive one is tried, the codes each gives are refitted by least
//! squares, and the fit of smallest squared error wins. The per-sub-block values are then
//! stored as 6-bit (Q4_K) or 8-bit (Q6_K) multiples of one f16 super-block scale, and the codes
//! are recomputed against those stored scales, so that what the dequantiser reads is what the
//! codes were rounded for.

use super::layout::*;

/// Candidate steps (in units of one code) tried around the naive scale.
const SEARCH_STEPS: i32 = 10;
const SEARCH_DELTA: f32 = 0.1;

fn nearest(v: f32, lo: i32, hi: i32) -> i32 {
    (v.round() as i32).clamp(lo, hi)
}

/// Best `x ≈ s·q + b` with `b <= 0` and codes `q` in `0..=nmax`: returns `(s, -b)`, both >= 0.
fn fit_scale_min(x: &[f32], nmax: i32) -> (f32, f32) {
    let lo = x.iter().copied().fold(0.0f32, f32::min);
    let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi <= lo {
        // Every value equals lo (<= 0): the min alone reproduces them.
        return (0.0, -lo);
    }
    let err = |s: f32, b: f32| -> f32 {
        x.iter()
            .map(|&v| {
                let q = if s > 0.0 {
                    nearest((v - b) / s, 0, nmax)
                } else {
                    0
                };
                let e = s * q as f32 + b - v;
                e * e
            })
            .sum()
    };
    let mut best = ((hi - lo) / nmax as f32, lo);
    let mut best_err = err(best.0, best.1);
    let n = x.len() as f32;
    for k in -SEARCH_STEPS..=SEARCH_STEPS {
        let iscale = (nmax as f32 + SEARCH_DELTA * k as f32) / (hi - lo);
        let (mut sq, mut sqq, mut sx, mut sqx) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for &v in x {
            let q = nearest(iscale * (v - lo), 0, nmax) as f32;
            sq += q;
            sqq += q * q;
            sx += v;
            sqx += q * v;
        }
        let det = n * sqq - sq * sq;
        if det <= 0.0 {
            continue;
        }
        let mut s = (n * sqx - sq * sx) / det;
        let mut b = (sqq * sx - sq * sqx) / det;
        if b > 0.0 {
            // The offset is stored as a subtracted non-negative min: refit through zero.
            b = 0.0;
            s = sqx / sqq;
        }
        if s <= 0.0 {
            continue;
        }
        let e = err(s, b);
        if e < best_err {
            best = (s, b);
            best_err = e;
        }
    }
    (best.0, -best.1)
}

/// Best symmetric `x ≈ s·q` with codes in `-nmax..=nmax-1`; `s` may be negative (the code
/// range is lopsided, so the largest magnitude is best mapped to `-nmax`).
fn fit_scale(x: &[f32], nmax: i32) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax.abs() {
            amax = v;
        }
    }
    if amax == 0.0 {
        return 0.0;
    }
    let err = |s: f32| -> f32 {
        x.iter()
            .map(|&v| {
                let e = s * nearest(v / s, -nmax, nmax - 1) as f32 - v;
                e * e
            })
            .sum()
    };
    let mut best = amax / -(nmax as f32);
    let mut best_err = err(best);
    for k in -SEARCH_STEPS..=SEARCH_STEPS {
        let iscale = -(nmax as f32 + SEARCH_DELTA * k as f32) / amax;
        let (mut sqq, mut sqx) = (0.0f32, 0.0f32);
        for &v in x {
            let q = nearest(iscale * v, -nmax, nmax - 1) as f32;
            sqq += q * q;
            sqx += q * v;
        }
        if sqq == 0.0 {
            continue;
        }
        let s = sqx / sqq;
        let e = err(s);
        if e < best_err {
            best = s;
            best_err = e;
        }
    }
    best
}

/// The f16 value actually stored for `v`.
fn as_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// Inverse of [`k4_scales_mins`]: eight 6-bit scales and mins into 12 bytes.
fn pack_k4_scales_mins(sc: &[u8; 8], m: &[u8; 8], out: &mut [u8]) {
    for j in 0..4 {
        out[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        out[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        out[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
    }
}

/// One Q4_K super-block: 8 sub-blocks of 32, `x = d·sc·q - dmin·m`, q in 0..=15.
pub(crate) fn quantize_q4_k(x: &[f32], b: &mut [u8]) {
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    for (j, sub) in x.chunks_exact(32).enumerate() {
        (scales[j], mins[j]) = fit_scale_min(sub, 15);
    }
    let max_scale = scales.iter().copied().fold(0.0f32, f32::max);
    let max_min = mins.iter().copied().fold(0.0f32, f32::max);
    let d = as_f16(max_scale / 63.0);
    let dmin = as_f16(max_min / 63.0);
    let code6 = |v: f32, step: f32| {
        if step > 0.0 {
            nearest(v / step, 0, 63) as u8
        } else {
            0
        }
    };
    let sc: [u8; 8] = std::array::from_fn(|j| code6(scales[j], d));
    let m: [u8; 8] = std::array::from_fn(|j| code6(mins[j], dmin));
    put_f16(b, Q4K_D, d);
    put_f16(b, Q4K_DMIN, dmin);
    pack_k4_scales_mins(&sc, &m, &mut b[Q4K_SCALES..Q4K_SCALES + 12]);
    let mut q = [0u8; 256];
    for (j, (sub, q)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
        let (dl, ml) = (d * sc[j] as f32, dmin * m[j] as f32);
        for (q, &v) in q.iter_mut().zip(sub) {
            *q = if dl > 0.0 {
                nearest((v + ml) / dl, 0, 15) as u8
            } else {
                0
            };
        }
    }
    let qs = &mut b[Q4K_QS..Q4K_QS + 128];
    for c in 0..4 {
        for l in 0..32 {
            qs[32 * c + l] = q[64 * c + l] | (q[64 * c + 32 + l] << 4);
        }
    }
}

/// One Q6_K super-block: 16 sub-blocks of 16, `x = d·sc·q`, sc a signed byte, q in -32..=31.
pub(crate) fn quantize_q6_k(x: &[f32], b: &mut [u8]) {
    let mut scales = [0.0f32; 16];
    for (j, sub) in x.chunks_exact(16).enumerate() {
        scales[j] = fit_scale(sub, 32);
    }
    let max_scale = scales.iter().fold(0.0f32, |a, s| a.max(s.abs()));
    let d = as_f16(max_scale / 127.0);
    let sc: [i8; 16] = std::array::from_fn(|j| {
        if d > 0.0 {
            nearest(scales[j] / d, -127, 127) as i8
        } else {
            0
        }
    });
    put_f16(b, Q6K_D, d);
    for (o, &s) in b[Q6K_SCALES..Q6K_SCALES + 16].iter_mut().zip(&sc) {
        *o = s as u8;
    }
    // Codes offset by +32 into 0..=63.
    let mut u = [0u8; 256];
    for (j, (sub, u)) in x.chunks_exact(16).zip(u.chunks_exact_mut(16)).enumerate() {
        let dl = d * sc[j] as f32;
        for (u, &v) in u.iter_mut().zip(sub) {
            let q = if dl != 0.0 {
                nearest(v / dl, -32, 31)
            } else {
                0
            };
            *u = (q + 32) as u8;
        }
    }
    for n in 0..2 {
        let u = &u[128 * n..128 * n + 128];
        for l in 0..32 {
            b[Q6K_QL + 64 * n + l] = (u[l] & 0xF) | ((u[l + 64] & 0xF) << 4);
            b[Q6K_QL + 64 * n + l + 32] = (u[l + 32] & 0xF) | ((u[l + 96] & 0xF) << 4);
            b[Q6K_QH + 32 * n + l] = (u[l] >> 4)
                | ((u[l + 32] >> 4) << 2)
                | ((u[l + 64] >> 4) << 4)
                | ((u[l + 96] >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_packing_inverts_the_reader() {
        let sc: [u8; 8] = [0, 63, 17, 40, 1, 62, 33, 5];
        let m: [u8; 8] = [63, 0, 8, 21, 44, 2, 59, 31];
        let mut packed = [0u8; 12];
        pack_k4_scales_mins(&sc, &m, &mut packed);
        assert_eq!(k4_scales_mins(&packed), (sc, m));
    }

    #[test]
    fn search_beats_or_equals_the_naive_scale() {
        // A sub-block with one outlier: the min/max scale wastes codes on it.
        let x: Vec<f32> = (0..32)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1 + if i == 3 { 4.0 } else { 0.0 })
            .collect();
        let sq_err = |s: f32, m: f32| -> f32 {
            x.iter()
                .map(|&v| {
                    let q = nearest((v + m) / s, 0, 15) as f32;
                    (s * q - m - v).powi(2)
                })
                .sum()
        };
        let lo = x.iter().copied().fold(0.0f32, f32::min);
        let hi = x.iter().copied().fold(f32::MIN, f32::max);
        let (s, m) = fit_scale_min(&x, 15);
        assert!(s > 0.0 && m >= 0.0);
        assert!(sq_err(s, m) <= sq_err((hi - lo) / 15.0, -lo));
    }
}
