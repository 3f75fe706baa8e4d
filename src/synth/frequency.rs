//! Target firing frequencies of FFN neurons and the biases that produce them.
//!
//! Neuron of rank r (0 = hottest) fires with probability p_r = c·(r+1)^−α, clipped to
//! [`P_MIN`, `P_MAX`], with c chosen so that the mean of p is 1 − sparsity. A neuron whose
//! pre-activation is `b + z`, z ~ N(0, 1), fires (z > −b) with probability Φ(b), so the bias
//! is b = Φ⁻¹(p).

/// No neuron fires more often than this (unless the requested density is above it).
pub const P_MAX: f64 = 0.99;
/// Nor less often than this: keeps biases finite for steep power laws.
pub const P_MIN: f64 = 1e-6;

/// Firing probabilities by rank, `n` of them, with mean `density` and power-law skew `alpha`.
pub fn power_law(n: usize, density: f64, alpha: f64) -> Vec<f64> {
    if density >= P_MAX {
        return vec![density.min(1.0 - P_MIN); n];
    }
    let at = |c: f64| -> Vec<f64> {
        (0..n)
            .map(|r| (c * ((r + 1) as f64).powf(-alpha)).clamp(P_MIN, P_MAX))
            .collect()
    };
    let mean = |c: f64| at(c).iter().sum::<f64>() / n as f64;
    // The mean grows with c from ≤ P_MIN to P_MAX: bisect on log c.
    let (mut lo, mut hi) = (-60.0f64, 60.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if mean(mid.exp()) < density {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at((0.5 * (lo + hi)).exp())
}

/// Φ⁻¹(p), the standard normal quantile, by Acklam's rational approximation (relative error
/// below 1.2e-9 on (0, 1)).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239e0,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838e0,
        -2.549732539343734e0,
        4.374664141464968e0,
        2.938163982698783e0,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996e0,
        3.754408661907416e0,
    ];
    const P_LOW: f64 = 0.02425;
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Share of all firings carried by the top `fraction` of neurons, for frequencies `p`.
pub fn top_share(p: &[f64], fraction: f64) -> f64 {
    let mut s = p.to_vec();
    s.sort_unstable_by(|a, b| b.total_cmp(a));
    let k = ((s.len() as f64 * fraction).round() as usize).min(s.len());
    let total: f64 = s.iter().sum();
    if total == 0.0 {
        return 0.0;
    }
    s[..k].iter().sum::<f64>() / total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_matches_tabulated_values() {
        // Φ⁻¹ values from standard normal tables.
        for (p, z) in [
            (0.5, 0.0),
            (0.9, 1.281_551_565_5),
            (0.975, 1.959_963_984_5),
            (0.01, -2.326_347_874_0),
            (0.001, -3.090_232_306_2),
            (1e-6, -4.753_424_308_8),
            (0.99, 2.326_347_874_0),
        ] {
            let got = normal_quantile(p);
            assert!((got - z).abs() < 1e-6, "Φ⁻¹({p}) = {got}, want {z}");
        }
    }

    #[test]
    fn power_law_has_the_requested_mean_and_shape() {
        for (density, alpha) in [(0.1, 0.0), (0.1, 1.0), (0.5, 1.0), (0.02, 2.0), (0.3, 0.5)] {
            let p = power_law(4096, density, alpha);
            let mean = p.iter().sum::<f64>() / p.len() as f64;
            assert!((mean - density).abs() < 1e-9, "mean {mean} for {density}");
            assert!(p.windows(2).all(|w| w[0] >= w[1]), "non-increasing in rank");
            assert!(p.iter().all(|&x| (P_MIN..=P_MAX).contains(&x)));
        }
        let uniform = power_law(1000, 0.1, 0.0);
        assert!(uniform.iter().all(|&x| (x - 0.1).abs() < 1e-9));
        assert!((top_share(&uniform, 0.2) - 0.2).abs() < 1e-9);
        // With α = 1 and 10% density, 1/(r+1) puts two thirds of the mass in the top fifth.
        let skewed = power_law(4096, 0.1, 1.0);
        assert!(top_share(&skewed, 0.2) > 0.6);
        assert!(power_law(10, 0.999, 1.0).iter().all(|&x| x == 0.999));
    }
}
