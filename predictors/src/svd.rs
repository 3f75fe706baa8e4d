//! Truncated SVD by randomized range finding with power iterations (Halko, Martinsson, Tropp 2011).
//!
//! The basis is kept as orthonormal *rows* so every Gram-Schmidt step reads contiguous memory;
//! the final small problem is solved in f64 by a Jacobi eigen-decomposition of B·Bᵀ.

use crate::error::{check_len, PredictorError, Result};
use crate::gemm::{gemm, View};
use crate::rng::Rng;

/// `a ≈ u · diag(s) · vt` with `u` `m × k` and `vt` `k × n`, both row-major; `s` descending.
#[derive(Debug, Clone)]
pub struct Svd {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub u: Vec<f32>,
    pub s: Vec<f32>,
    pub vt: Vec<f32>,
}

/// The top `k` singular triplets of the row-major `m × n` matrix `a`.
///
/// `oversample` extra directions and `power_iters` passes sharpen the subspace when the spectrum
/// decays slowly, as it does for FFN weight matrices.
pub fn randomized_svd(
    a: &[f32],
    m: usize,
    n: usize,
    k: usize,
    oversample: usize,
    power_iters: usize,
    seed: u64,
) -> Result<Svd> {
    if m == 0 || n == 0 {
        return Err(PredictorError::Zero("SVD matrix dimension"));
    }
    check_len("SVD matrix (m × n)", m * n, a.len())?;
    if a.iter().any(|v| !v.is_finite()) {
        return Err(PredictorError::NonFinite("SVD matrix"));
    }
    let k = k.min(m).min(n);
    if k == 0 {
        return Err(PredictorError::Zero("SVD rank k"));
    }
    let l = (k + oversample).min(m).min(n);
    let mut rng = Rng::new(seed);

    // Qᵀ (l × m): rows span the range of A, starting from A·Ω.
    let omega_t: Vec<f32> = (0..l * n).map(|_| rng.normal() as f32).collect();
    let mut qt = vec![0f32; l * m];
    gemm(
        l,
        n,
        m,
        View::rows(&omega_t, n),
        View::t(a, n),
        0.0,
        &mut qt,
    );
    orthonormalize_rows(&mut qt, l, m, &mut rng);
    let mut zt = vec![0f32; l * n];
    for _ in 0..power_iters {
        gemm(l, m, n, View::rows(&qt, m), View::rows(a, n), 0.0, &mut zt);
        orthonormalize_rows(&mut zt, l, n, &mut rng);
        gemm(l, n, m, View::rows(&zt, n), View::t(a, n), 0.0, &mut qt);
        orthonormalize_rows(&mut qt, l, m, &mut rng);
    }
    // B = Qᵀ·A (l × n); B·Bᵀ = W·Λ·Wᵀ gives B = W·Σ·Vᵀ with Vᵀ = Σ⁻¹·Wᵀ·B.
    let mut b = vec![0f32; l * n];
    gemm(l, m, n, View::rows(&qt, m), View::rows(a, n), 0.0, &mut b);
    let mut g = vec![0f64; l * l];
    for i in 0..l {
        for j in 0..=i {
            let d = dot_f64(&b[i * n..(i + 1) * n], &b[j * n..(j + 1) * n]);
            g[i * l + j] = d;
            g[j * l + i] = d;
        }
    }
    let (eig, w) = jacobi_eigen(&mut g, l);
    let mut order: Vec<usize> = (0..l).collect();
    order.sort_by(|&x, &y| eig[y].total_cmp(&eig[x]));
    order.truncate(k);

    let s: Vec<f32> = order
        .iter()
        .map(|&i| eig[i].max(0.0).sqrt() as f32)
        .collect();
    // Wₖᵀ (k × l), then Uᵀ = Wₖᵀ·Qᵀ and Vᵀ = Σ⁻¹·Wₖᵀ·B.
    let wkt: Vec<f32> = order
        .iter()
        .flat_map(|&c| (0..l).map(move |r| (r, c)))
        .map(|(r, c)| w[r * l + c] as f32)
        .collect();
    let mut ut = vec![0f32; k * m];
    gemm(
        k,
        l,
        m,
        View::rows(&wkt, l),
        View::rows(&qt, m),
        0.0,
        &mut ut,
    );
    let mut vt = vec![0f32; k * n];
    gemm(
        k,
        l,
        n,
        View::rows(&wkt, l),
        View::rows(&b, n),
        0.0,
        &mut vt,
    );
    let floor = s[0] * 1e-6;
    for (row, &sv) in vt.chunks_exact_mut(n).zip(&s) {
        let inv = if sv > floor { 1.0 / sv } else { 0.0 };
        row.iter_mut().for_each(|v| *v *= inv);
    }
    let mut u = vec![0f32; m * k];
    for j in 0..k {
        for i in 0..m {
            u[i * k + j] = ut[j * m + i];
        }
    }
    Ok(Svd { m, n, k, u, s, vt })
}

fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..4 {
            acc[i] += x[i] as f64 * y[i] as f64;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| *x as f64 * *y as f64).sum();
    acc.iter().sum::<f64>() + tail
}

/// Gram-Schmidt applied twice ("twice is enough") to the `rows` rows of `q`, each of length `len`.
/// A row that vanishes (rank-deficient input) is replaced by a random direction.
fn orthonormalize_rows(q: &mut [f32], rows: usize, len: usize, rng: &mut Rng) {
    for i in 0..rows {
        let (done, rest) = q.split_at_mut(i * len);
        let row = &mut rest[..len];
        let norm0 = dot_f64(row, row).sqrt();
        for attempt in 0..3 {
            for _ in 0..2 {
                for j in 0..i {
                    let prev = &done[j * len..(j + 1) * len];
                    let r = dot_f64(row, prev) as f32;
                    row.iter_mut().zip(prev).for_each(|(v, p)| *v -= r * p);
                }
            }
            let norm = dot_f64(row, row).sqrt();
            if norm > 1e-6 * norm0.max(f64::MIN_POSITIVE) && norm > 0.0 || attempt == 2 {
                let inv = if norm > 0.0 { (1.0 / norm) as f32 } else { 0.0 };
                row.iter_mut().for_each(|v| *v *= inv);
                break;
            }
            row.iter_mut().for_each(|v| *v = rng.normal() as f32);
        }
    }
}

/// Cyclic Jacobi on the symmetric `n × n` matrix `a` (destroyed); returns eigenvalues and
/// eigenvectors as the columns of a row-major `n × n` matrix.
fn jacobi_eigen(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-30 * total || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r * n + p], a[r * n + q]);
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p * n + r], a[q * n + r]);
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random `rows × cols` matrix with orthonormal columns (Gram-Schmidt of Gaussian columns).
    fn orthonormal_cols(rng: &mut Rng, rows: usize, cols: usize) -> Vec<f32> {
        let mut t: Vec<f32> = (0..cols * rows).map(|_| rng.normal() as f32).collect();
        orthonormalize_rows(&mut t, cols, rows, rng);
        let mut out = vec![0f32; rows * cols];
        for j in 0..cols {
            for i in 0..rows {
                out[i * cols + j] = t[j * rows + i];
            }
        }
        out
    }

    #[test]
    fn recovers_known_low_rank_plus_noise() {
        let (m, n) = (300, 170);
        let sing = [50.0f32, 30.0, 20.0, 12.0, 8.0, 5.0];
        let r = sing.len();
        let mut rng = Rng::new(77);
        let u0 = orthonormal_cols(&mut rng, m, r);
        let v0 = orthonormal_cols(&mut rng, n, r);
        let noise = 0.01f32;
        let mut a = vec![0f32; m * n];
        let mut noise_energy = 0f64;
        for i in 0..m {
            for j in 0..n {
                let low: f32 = (0..r)
                    .map(|t| u0[i * r + t] * sing[t] * v0[j * r + t])
                    .sum();
                let e = noise * rng.normal() as f32;
                noise_energy += (e as f64).powi(2);
                a[i * n + j] = low + e;
            }
        }
        let svd = randomized_svd(&a, m, n, r, 8, 2, 1).unwrap();
        // Noise of spectral norm about noise·(√m+√n) ≈ 0.3 moves each singular value by less.
        for (got, want) in svd.s.iter().zip(&sing) {
            assert!((got - want).abs() < 0.35, "sigma {got} vs {want}");
        }
        // Eckart-Young: the best rank-r approximation is no farther from A than the planted
        // low-rank matrix (whose distance is the noise); a near-optimal one is barely closer.
        let mut err = 0f64;
        for i in 0..m {
            for j in 0..n {
                let rec: f32 = (0..r)
                    .map(|t| svd.u[i * r + t] * svd.s[t] * svd.vt[t * n + j])
                    .sum();
                err += ((rec - a[i * n + j]) as f64).powi(2);
            }
        }
        assert!(
            err <= 1.001 * noise_energy,
            "err {err} vs noise {noise_energy}"
        );
        assert!(
            err > 0.9 * noise_energy,
            "err {err} vs noise {noise_energy}"
        );
        // U and V have orthonormal columns.
        for p in 0..r {
            for q in 0..r {
                let uu: f32 = (0..m).map(|i| svd.u[i * r + p] * svd.u[i * r + q]).sum();
                let vv: f32 = (0..n).map(|j| svd.vt[p * n + j] * svd.vt[q * n + j]).sum();
                let want = if p == q { 1.0 } else { 0.0 };
                assert!((uu - want).abs() < 1e-4 && (vv - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let n = 9;
        let mut rng = Rng::new(4);
        let mut a = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = rng.normal();
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        let orig = a.clone();
        let (eig, v) = jacobi_eigen(&mut a, n);
        for c in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|j| orig[i * n + j] * v[j * n + c]).sum();
                assert!((av - eig[c] * v[i * n + c]).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(randomized_svd(&[1.0; 5], 2, 3, 1, 2, 1, 0).is_err());
        assert!(randomized_svd(&[1.0; 6], 2, 3, 0, 2, 1, 0).is_err());
        assert!(randomized_svd(&[f32::INFINITY; 6], 2, 3, 1, 2, 1, 0).is_err());
    }
}
