//! The sparse FFN projections (the gate, or up when it decides firing) of one layer.
//!
//! The normed FFN input h carries a constant 1 on the first [`BIAS_CHANNELS`] channels and a
//! unit-variance, roughly isotropic token signal on the rest. Row i of the projection is
//! `[b_i / 32, …, b_i / 32, w_i]` with |w_i| = 1, so its pre-activation is b_i + w_i·h_rest
//! ≈ b_i + N(0, 1) over tokens, and it is positive with probability Φ(b_i) = p_i.
//!
//! w_i is mostly (1 − [`NOISE_SHARE`] of its energy) a mix of a few shared directions (a
//! rank-[`LOW_RANK`] subspace of the layer) plus a little full-rank noise, as trained gates
//! are: that is what lets a low-rank predictor see which neurons fire.

use super::frequency::normal_quantile;
use super::rng::Rng;

/// Leading residual channels that hold a constant 1 and act as the bias input. One whole
/// quantisation block, so that a row's bias part is 32 equal values, which every block
/// format stores exactly, and does not disturb the scale of any other block.
pub const BIAS_CHANNELS: usize = 32;
/// Rank of the shared subspace of each projection.
pub const LOW_RANK: usize = 32;
/// Share of each row's energy outside the shared subspace.
pub const NOISE_SHARE: f32 = 0.06;

pub struct SparseProjection {
    /// Per neuron: the value of each of its bias-channel weights (its bias / 32).
    bias: Vec<f32>,
    /// `rank` rows of length `d_rest`: the shared directions.
    basis: Vec<f32>,
    rank: usize,
    d_rest: usize,
}

impl SparseProjection {
    /// A projection of `d_model` inputs whose neuron i fires with probability `freq[i]`.
    pub fn new(freq: &[f64], d_model: usize, rng: &mut Rng) -> SparseProjection {
        let d_rest = d_model - BIAS_CHANNELS;
        let rank = LOW_RANK.min(d_rest / 4).max(1);
        let mut basis = vec![0f32; rank * d_rest];
        // Random Gaussian directions of about unit norm, nearly orthogonal in high dimension.
        rng.fill_normal(&mut basis, 1.0 / (d_rest as f32).sqrt());
        let bias = freq
            .iter()
            .map(|&p| (normal_quantile(p) / BIAS_CHANNELS as f64) as f32)
            .collect();
        SparseProjection {
            bias,
            basis,
            rank,
            d_rest,
        }
    }

    /// Row `i` of the matrix, drawn from its own stream `rng`.
    pub fn fill_row(&self, i: usize, rng: &mut Rng, out: &mut [f32]) {
        let (head, rest) = out.split_at_mut(BIAS_CHANNELS);
        head.fill(self.bias[i]);
        rest.fill(0.0);
        for k in 0..self.rank {
            let u = rng.normal();
            let dir = &self.basis[k * self.d_rest..(k + 1) * self.d_rest];
            for (r, &d) in rest.iter_mut().zip(dir) {
                *r += u * d;
            }
        }
        let shared = (1.0 - NOISE_SHARE).sqrt() / norm(rest).max(1e-20);
        let noise = NOISE_SHARE.sqrt() / (self.d_rest as f32).sqrt();
        for r in rest.iter_mut() {
            *r = *r * shared + rng.normal() * noise;
        }
        let unit = 1.0 / norm(rest).max(1e-20);
        rest.iter_mut().for_each(|r| *r *= unit);
    }
}

pub fn norm(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum::<f32>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's pre-activation over random unit-variance inputs fires at the target rate, and
    /// the row is dominated by the shared subspace.
    #[test]
    fn rows_fire_at_their_frequency() {
        let d = 512;
        let freq = [0.02, 0.1, 0.5, 0.9];
        let mut rng = Rng::new(11);
        let proj = SparseProjection::new(&freq, d, &mut rng);
        let mut row = vec![0f32; d];
        let mut h = vec![1f32; d];
        let n = 20_000;
        for (i, &p) in freq.iter().enumerate() {
            proj.fill_row(i, &mut Rng::new(100 + i as u64), &mut row);
            assert!((norm(&row[BIAS_CHANNELS..]) - 1.0).abs() < 1e-4);
            let mut fired = 0;
            for _ in 0..n {
                rng.fill_normal(&mut h[BIAS_CHANNELS..], 1.0);
                let z: f32 = row.iter().zip(&h).map(|(a, b)| a * b).sum();
                fired += usize::from(z > 0.0);
            }
            let rate = fired as f64 / n as f64;
            assert!(
                (rate - p).abs() < 0.015,
                "neuron {i}: rate {rate}, want {p}"
            );
        }
        // Energy of a row inside the span of the basis: project by least squares via the
        // (nearly orthogonal) basis, normalised by its Gram diagonal.
        proj.fill_row(3, &mut Rng::new(5), &mut row);
        let rest = &row[BIAS_CHANNELS..];
        let mut inside = 0f32;
        for k in 0..proj.rank {
            let b = &proj.basis[k * proj.d_rest..(k + 1) * proj.d_rest];
            let c: f32 = b.iter().zip(rest).map(|(x, y)| x * y).sum();
            inside += c * c / b.iter().map(|x| x * x).sum::<f32>();
        }
        assert!(inside > 0.8, "shared-subspace energy {inside}");
    }
}
