//! The forward's one hot loop: `out[i] = dot(w[i*cols..], x)` for f16 rows and an f32 vector.
//!
//! The AVX2+FMA+F16C version takes eight rows at a time so the eight horizontal sums share one
//! shuffle tree; `scalar` is the portable twin the SIMD path is tested against.

use half::f16;

/// `out[i] = sum_j w[i * cols + j] * x[j]` for `i < out.len()`.
///
/// Panics if `x.len() != cols` or `w.len() != out.len() * cols` (callers check shapes once, up front).
pub fn matvec_f16(w: &[f16], cols: usize, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), cols, "matvec_f16: x length");
    assert_eq!(w.len(), out.len() * cols, "matvec_f16: w length");
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma_f16c() {
            // SAFETY: the features were detected at run time; shapes were checked above.
            unsafe { avx2::matvec_f16(w, cols, x, out) };
            return;
        }
    }
    scalar::matvec_f16(w, cols, x, out)
}

/// Whether the SIMD path is used on this machine.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma_f16c()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma_f16c() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub mod scalar {
    use half::f16;

    /// Portable twin of [`super::matvec_f16`].
    pub fn matvec_f16(w: &[f16], cols: usize, x: &[f32], out: &mut [f32]) {
        assert_eq!(x.len(), cols, "matvec_f16: x length");
        assert_eq!(w.len(), out.len() * cols, "matvec_f16: w length");
        for (o, row) in out.iter_mut().zip(w.chunks_exact(cols.max(1))) {
            *o = row.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::f16;
    use std::arch::x86_64::*;

    /// Eight f16 at `p` widened to f32.
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// Lane `i` of the result is the horizontal sum of `a[i]`.
    #[inline(always)]
    unsafe fn hsum8x8(a: [__m256; 8]) -> __m256 {
        let s01 = _mm256_hadd_ps(a[0], a[1]);
        let s23 = _mm256_hadd_ps(a[2], a[3]);
        let s45 = _mm256_hadd_ps(a[4], a[5]);
        let s67 = _mm256_hadd_ps(a[6], a[7]);
        let t0 = _mm256_hadd_ps(s01, s23);
        let t1 = _mm256_hadd_ps(s45, s67);
        let lo = _mm256_permute2f128_ps(t0, t1, 0x20);
        let hi = _mm256_permute2f128_ps(t0, t1, 0x31);
        _mm256_add_ps(lo, hi)
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    fn tail_dot(w: &[f16], x: &[f32]) -> f32 {
        w.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum()
    }

    /// # Safety
    /// Needs AVX2, FMA and F16C; `x.len() == cols`, `w.len() == out.len() * cols`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn matvec_f16(w: &[f16], cols: usize, x: &[f32], out: &mut [f32]) {
        let rows = out.len();
        let body = cols & !7;
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        let mut r = 0;
        while r + 8 <= rows {
            let mut acc = [_mm256_setzero_ps(); 8];
            let base = wp.add(r * cols);
            let mut c = 0;
            while c < body {
                let xv = _mm256_loadu_ps(xp.add(c));
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(load8(base.add(k * cols + c)), xv, *a);
                }
                c += 8;
            }
            let mut sums = hsum8x8(acc);
            if body < cols {
                let mut tails = [0f32; 8];
                for (k, t) in tails.iter_mut().enumerate() {
                    let row = &w[(r + k) * cols..(r + k + 1) * cols];
                    *t = tail_dot(&row[body..], &x[body..]);
                }
                sums = _mm256_add_ps(sums, _mm256_loadu_ps(tails.as_ptr()));
            }
            _mm256_storeu_ps(out.as_mut_ptr().add(r), sums);
            r += 8;
        }
        while r < rows {
            let base = wp.add(r * cols);
            let mut acc = _mm256_setzero_ps();
            let mut c = 0;
            while c < body {
                acc = _mm256_fmadd_ps(load8(base.add(c)), _mm256_loadu_ps(xp.add(c)), acc);
                c += 8;
            }
            let row = &w[r * cols..(r + 1) * cols];
            out[r] = hsum(acc) + tail_dot(&row[body..], &x[body..]);
            r += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn simd_matches_scalar_on_awkward_shapes() {
        let mut rng = Rng::new(11);
        for &(rows, cols) in &[
            (1, 1),
            (7, 3),
            (8, 8),
            (9, 17),
            (23, 45),
            (64, 130),
            (37, 576),
        ] {
            let w: Vec<f16> = (0..rows * cols)
                .map(|_| f16::from_f64(rng.normal() * 0.5))
                .collect();
            let x: Vec<f32> = (0..cols).map(|_| rng.normal() as f32).collect();
            let mut fast = vec![0f32; rows];
            let mut slow = vec![0f32; rows];
            matvec_f16(&w, cols, &x, &mut fast);
            scalar::matvec_f16(&w, cols, &x, &mut slow);
            for i in 0..rows {
                // Exact f64 reference bounds the tolerance by the magnitudes summed.
                let mag: f64 = (0..cols)
                    .map(|j| (w[i * cols + j].to_f64() * x[j] as f64).abs())
                    .sum();
                let tol = 1e-5 * mag + 1e-6;
                assert!(
                    ((fast[i] - slow[i]) as f64).abs() <= tol,
                    "row {i} of {rows}x{cols}: simd {} scalar {}",
                    fast[i],
                    slow[i]
                );
            }
        }
    }
}
