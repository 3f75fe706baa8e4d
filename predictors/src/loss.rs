//! Weighted binary cross-entropy on logits, with its gradient, written to vectorise.
//!
//! Per element this needs one exp and one log; through libm they cost more than the GEMMs of a
//! training step, so both are short polynomials here (relative error below 1e-6).

/// For one row of logits `z` with 0/1 labels `y`: returns Σ pw·y·softplus(−z) + (1−y)·softplus(z)
/// and overwrites `z` with `scale ×` its derivative.
pub(crate) fn weighted_bce_row(z: &mut [f32], y: &[f32], pos_weight: f32, scale: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { bce_row_avx2(z, y, pos_weight, scale) };
        }
    }
    bce_row(z, y, pos_weight, scale)
}

/// The same loop compiled for AVX2+FMA, which the compiler vectorises eight lanes wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bce_row_avx2(z: &mut [f32], y: &[f32], pos_weight: f32, scale: f32) -> f64 {
    bce_row(z, y, pos_weight, scale)
}

#[inline(always)]
fn bce_row(z: &mut [f32], y: &[f32], pos_weight: f32, scale: f32) -> f64 {
    let mut acc = [0f32; 8];
    let mut zc = z.chunks_exact_mut(8);
    let mut yc = y.chunks_exact(8);
    for (zs, ys) in (&mut zc).zip(&mut yc) {
        for k in 0..8 {
            let (l, g) = element(zs[k], ys[k], pos_weight, scale);
            acc[k] += l;
            zs[k] = g;
        }
    }
    let mut tail = 0f32;
    for (zv, &yv) in zc.into_remainder().iter_mut().zip(yc.remainder()) {
        let (l, g) = element(*zv, yv, pos_weight, scale);
        tail += l;
        *zv = g;
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + tail as f64
}

#[inline(always)]
fn element(z: f32, y: f32, pw: f32, scale: f32) -> (f32, f32) {
    let e = exp_neg(z.abs());
    let inv = 1.0 / (1.0 + e);
    let sig = if z >= 0.0 { inv } else { e * inv };
    let sp_pos = z.max(0.0) + ln_1p_unit(e);
    let sp_neg = sp_pos - z;
    let w = y * pw;
    let loss = w * sp_neg + (1.0 - y) * sp_pos;
    let grad = (w * (sig - 1.0) + (1.0 - y) * sig) * scale;
    (loss, grad)
}

/// e^(−a) for a ≥ 0: 2^(−a·log2 e) split into an integer power (built in the exponent bits) and
/// a fractional power from a degree-6 polynomial.
#[inline(always)]
pub(crate) fn exp_neg(a: f32) -> f32 {
    let y = (a * std::f32::consts::LOG2_E).min(126.0);
    // Round half up by truncating a positive number: a plain conversion that vectorises, where
    // `round` would be a libm call without SSE4.1.
    // SAFETY: y + 0.5 is in [0, 126.5] (`min` also maps NaN to 126), so it fits an i32.
    let m: i32 = unsafe { (y + 0.5).to_int_unchecked() };
    let n = -m;
    // 2^f = e^(f ln2) for f in [-0.5, 0.5]: Taylor to degree 6 truncates below 2e-7.
    let f = m as f32 - y;
    let t = f * std::f32::consts::LN_2;
    let p = 1.0
        + t * (1.0
            + t * (0.5
                + t * (1.0 / 6.0 + t * (1.0 / 24.0 + t * (1.0 / 120.0 + t * (1.0 / 720.0))))));
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    p * scale
}

/// ln(1 + e) for e in [0, 1]: with s = e / (2 + e) ≤ 1/3, ln(1 + e) = 2·atanh(s), odd series.
#[inline(always)]
pub(crate) fn ln_1p_unit(e: f32) -> f32 {
    let s = e / (2.0 + e);
    let s2 = s * s;
    2.0 * s
        * (1.0
            + s2 * (1.0 / 3.0
                + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0))))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn polynomials_match_libm() {
        for i in 0..20000 {
            let a = i as f32 * 0.004; // 0 .. 80; beyond, e^-a is within a few ulps of f32 underflow
            let want = (-a as f64).exp();
            let got = exp_neg(a) as f64;
            // f32 rounding of the argument a·log2(e) alone costs about a·1e-7 relative.
            let tol = (1e-6 + a as f64 * 1.2e-7) * want;
            assert!((got - want).abs() <= tol, "exp(-{a}): {got} vs {want}");
        }
        for i in 0..=10000 {
            let e = i as f32 / 10000.0;
            let want = (e as f64).ln_1p();
            assert!((ln_1p_unit(e) as f64 - want).abs() <= 1e-6 * want.max(1e-30));
        }
    }

    #[test]
    fn row_loss_and_gradient_match_the_definition() {
        let mut rng = Rng::new(12);
        let n = 37;
        let z: Vec<f32> = (0..n).map(|_| (rng.normal() * 6.0) as f32).collect();
        let y: Vec<f32> = (0..n).map(|_| (rng.uniform() < 0.3) as u8 as f32).collect();
        let (pw, scale) = (4.0, 0.25);
        let mut g = z.clone();
        let loss = weighted_bce_row(&mut g, &y, pw, scale);
        let mut want = 0f64;
        for i in 0..n {
            let zi = z[i] as f64;
            let sp = |v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p();
            let sig = 1.0 / (1.0 + (-zi).exp());
            let (l, d) = if y[i] > 0.5 {
                (pw as f64 * sp(-zi), pw as f64 * (sig - 1.0))
            } else {
                (sp(zi), sig)
            };
            want += l;
            assert!((g[i] as f64 - d * scale as f64).abs() < 1e-6);
        }
        assert!((loss - want).abs() < 1e-5 * want);
    }
}
