//! The f32 training twin of [`crate::Predictor`]: batched forward, weighted-BCE loss and its gradient.

use rayon::prelude::*;

use crate::error::Result;
use crate::gemm::{gemm, View};
use crate::loss::weighted_bce_row;
use crate::predictor::Predictor;
use crate::rng::Rng;
use crate::svd::Svd;

/// Same layout as the predictor: `w1` `rank × d_in`, `w2` `d_out × rank`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mlp {
    pub d_in: usize,
    pub rank: usize,
    pub d_out: usize,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

/// Activations of one batch, kept for the backward pass.
#[derive(Default)]
pub(crate) struct Workspace {
    a: Vec<f32>,
    h: Vec<f32>,
    /// Logits, then (after the loss) their gradient.
    pub z: Vec<f32>,
    dh: Vec<f32>,
    row_loss: Vec<f64>,
}

impl Mlp {
    /// Kaiming-style random weights; `b2` starts at each neuron's label log-odds when known.
    pub fn random(d_in: usize, rank: usize, d_out: usize, b2: Vec<f32>, rng: &mut Rng) -> Self {
        let s1 = (2.0 / d_in as f64).sqrt();
        let s2 = (1.0 / rank as f64).sqrt();
        Mlp {
            d_in,
            rank,
            d_out,
            w1: (0..rank * d_in)
                .map(|_| (rng.normal() * s1) as f32)
                .collect(),
            b1: vec![0.0; rank],
            w2: (0..d_out * rank)
                .map(|_| (rng.normal() * s2) as f32)
                .collect(),
            b2,
        }
    }

    /// Hidden pairs `relu(v·x) − relu(−v·x) = v·x` make the untrained net output the rank-k
    /// reconstruction `U·Σ·Vᵀ·x` of the gate pre-activation, k = rank / 2. An odd leftover unit
    /// starts random with a zero output weight.
    pub fn from_svd(svd: &Svd, rank: usize, rng: &mut Rng) -> Self {
        let (d_out, d_in) = (svd.m, svd.n);
        let k = (rank / 2).min(svd.k);
        let mut net = Mlp {
            d_in,
            rank,
            d_out,
            w1: vec![0.0; rank * d_in],
            b1: vec![0.0; rank],
            w2: vec![0.0; d_out * rank],
            b2: vec![0.0; d_out],
        };
        for j in 0..k {
            let v = &svd.vt[j * d_in..(j + 1) * d_in];
            net.w1[2 * j * d_in..(2 * j + 1) * d_in].copy_from_slice(v);
            net.w1[(2 * j + 1) * d_in..(2 * j + 2) * d_in]
                .iter_mut()
                .zip(v)
                .for_each(|(w, x)| *w = -x);
            for i in 0..d_out {
                let us = svd.u[i * svd.k + j] * svd.s[j];
                net.w2[i * rank + 2 * j] = us;
                net.w2[i * rank + 2 * j + 1] = -us;
            }
        }
        let s1 = (1.0 / d_in as f64).sqrt();
        for unit in 2 * k..rank {
            for w in &mut net.w1[unit * d_in..(unit + 1) * d_in] {
                *w = (rng.normal() * s1) as f32;
            }
        }
        net
    }

    /// The f32 image of the net that predictor `p` runs, for evaluating it with the batched GEMM
    /// forward: its f16 weights, with the output layer as its selector holds it (8-bit levels
    /// times scales), so that a threshold found on this net holds for the engine's selection.
    pub fn from_predictor(p: &Predictor) -> Self {
        let widen = |v: &[half::f16]| v.iter().map(|w| w.to_f32()).collect();
        Mlp {
            d_in: p.d_in(),
            rank: p.rank(),
            d_out: p.d_out(),
            w1: widen(p.w1()),
            b1: p.b1().to_vec(),
            w2: p.selector().dequantized(),
            b2: p.b2().to_vec(),
        }
    }

    /// The parameters in a fixed order (w1, b1, w2, b2), for the optimiser.
    pub fn params_mut(&mut self) -> [&mut [f32]; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    pub fn to_predictor(&self) -> Result<Predictor> {
        Predictor::from_f32_parts(
            self.d_in,
            self.rank,
            self.d_out,
            &self.w1,
            self.b1.clone(),
            &self.w2,
            self.b2.clone(),
        )
    }

    /// Logits of `n` rows of `x` into `ws.z` (`n × d_out`).
    pub fn forward(&self, x: &[f32], n: usize, ws: &mut Workspace) {
        let (r, d_out) = (self.rank, self.d_out);
        ws.a.resize(n * r, 0.0);
        ws.h.resize(n * r, 0.0);
        ws.z.resize(n * d_out, 0.0);
        gemm(
            n,
            self.d_in,
            r,
            View::rows(x, self.d_in),
            View::t(&self.w1, self.d_in),
            0.0,
            &mut ws.a,
        );
        for (row_a, row_h) in ws.a.chunks_exact_mut(r).zip(ws.h.chunks_exact_mut(r)) {
            for ((a, h), b) in row_a.iter_mut().zip(row_h.iter_mut()).zip(&self.b1) {
                *a += b;
                *h = a.max(0.0);
            }
        }
        gemm(
            n,
            r,
            d_out,
            View::rows(&ws.h, r),
            View::t(&self.w2, r),
            0.0,
            &mut ws.z,
        );
        ws.z.par_chunks_mut(d_out).for_each(|row| {
            row.iter_mut().zip(&self.b2).for_each(|(z, b)| *z += b);
        });
    }

    /// Mean weighted BCE over the `n × d_out` logits, `y` holding 0/1 labels; positives weigh
    /// `pos_weight`. Writes the gradient into `grad` (same layout as the parameters).
    pub fn loss_and_grad(
        &self,
        x: &[f32],
        y: &[f32],
        n: usize,
        pos_weight: f32,
        ws: &mut Workspace,
        grad: &mut Mlp,
    ) -> f64 {
        let (r, d_out) = (self.rank, self.d_out);
        self.forward(x, n, ws);
        let scale = 1.0 / (n * d_out) as f32;
        ws.row_loss.resize(n, 0.0);
        // Loss, and dL/dz in place of z.
        ws.z.par_chunks_mut(d_out)
            .zip(y.par_chunks(d_out))
            .zip(ws.row_loss.par_iter_mut())
            .for_each(|((zr, yr), loss)| *loss = weighted_bce_row(zr, yr, pos_weight, scale));
        let loss = ws.row_loss.iter().sum::<f64>() * scale as f64;
        let dz = &ws.z;
        // dW2 = dZᵀ·H, db2 = Σ rows of dZ.
        gemm(
            d_out,
            n,
            r,
            View::t(dz, d_out),
            View::rows(&ws.h, r),
            0.0,
            &mut grad.w2,
        );
        grad.b2.iter_mut().for_each(|g| *g = 0.0);
        for row in dz.chunks_exact(d_out) {
            grad.b2.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
        // dH = dZ·W2, masked by the relu into dA.
        ws.dh.resize(n * r, 0.0);
        gemm(
            n,
            d_out,
            r,
            View::rows(dz, d_out),
            View::rows(&self.w2, r),
            0.0,
            &mut ws.dh,
        );
        for (d, a) in ws.dh.iter_mut().zip(&ws.a) {
            if *a <= 0.0 {
                *d = 0.0;
            }
        }
        gemm(
            r,
            n,
            self.d_in,
            View::t(&ws.dh, r),
            View::rows(x, self.d_in),
            0.0,
            &mut grad.w1,
        );
        grad.b1.iter_mut().for_each(|g| *g = 0.0);
        for row in ws.dh.chunks_exact(r) {
            grad.b1.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
        loss
    }

    pub fn zeros_like(&self) -> Mlp {
        Mlp {
            d_in: self.d_in,
            rank: self.rank,
            d_out: self.d_out,
            w1: vec![0.0; self.w1.len()],
            b1: vec![0.0; self.b1.len()],
            w2: vec![0.0; self.w2.len()],
            b2: vec![0.0; self.b2.len()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::randomized_svd;

    fn loss_only(net: &Mlp, x: &[f32], y: &[f32], n: usize, pw: f32) -> f64 {
        // f64 loss straight from the definition, independent of the batched path.
        let mut total = 0f64;
        for s in 0..n {
            let xs = &x[s * net.d_in..(s + 1) * net.d_in];
            let h: Vec<f64> = (0..net.rank)
                .map(|k| {
                    let a: f64 = (0..net.d_in)
                        .map(|j| net.w1[k * net.d_in + j] as f64 * xs[j] as f64)
                        .sum();
                    (a + net.b1[k] as f64).max(0.0)
                })
                .collect();
            for i in 0..net.d_out {
                let z: f64 = (0..net.rank)
                    .map(|k| net.w2[i * net.rank + k] as f64 * h[k])
                    .sum::<f64>()
                    + net.b2[i] as f64;
                let sp = |v: f64| v.max(0.0) + (-v.abs()).exp().ln_1p();
                total += if y[s * net.d_out + i] > 0.5 {
                    pw as f64 * sp(-z)
                } else {
                    sp(z)
                };
            }
        }
        total / (n * net.d_out) as f64
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (d_in, rank, d_out, n, pw) = (7, 5, 6, 4, 3.0);
        let mut rng = Rng::new(21);
        let mut net = Mlp::random(d_in, rank, d_out, vec![0.0; d_out], &mut rng);
        net.b1
            .iter_mut()
            .for_each(|b| *b = rng.normal() as f32 * 0.3);
        net.b2
            .iter_mut()
            .for_each(|b| *b = rng.normal() as f32 * 0.3);
        let x: Vec<f32> = (0..n * d_in).map(|_| rng.normal() as f32).collect();
        let y: Vec<f32> = (0..n * d_out)
            .map(|_| (rng.uniform() < 0.4) as u8 as f32)
            .collect();
        let mut ws = Workspace::default();
        let mut grad = net.zeros_like();
        let loss = net.loss_and_grad(&x, &y, n, pw, &mut ws, &mut grad);
        assert!((loss - loss_only(&net, &x, &y, n, pw)).abs() < 1e-5);
        let grads: Vec<Vec<f32>> = grad.params_mut().iter().map(|g| g.to_vec()).collect();
        let h = 1e-3f32;
        for (p, g) in grads.iter().enumerate() {
            for (i, &gi) in g.iter().enumerate() {
                let mut plus = net.clone();
                plus.params_mut()[p][i] += h;
                let mut minus = net.clone();
                minus.params_mut()[p][i] -= h;
                let fd = (loss_only(&plus, &x, &y, n, pw) - loss_only(&minus, &x, &y, n, pw))
                    / (2.0 * h as f64);
                assert!(
                    (fd - gi as f64).abs() < 1e-4 + 1e-2 * fd.abs(),
                    "param {p}[{i}]: analytic {gi} vs numeric {fd}"
                );
            }
        }
    }

    #[test]
    fn svd_init_outputs_the_rank_k_reconstruction() {
        let (d_out, d_in, rank) = (40, 24, 10);
        let mut rng = Rng::new(8);
        let gate: Vec<f32> = (0..d_out * d_in).map(|_| rng.normal() as f32).collect();
        let svd = randomized_svd(&gate, d_out, d_in, rank / 2, 6, 2, 3).unwrap();
        let net = Mlp::from_svd(&svd, rank, &mut rng);
        let n = 5;
        let x: Vec<f32> = (0..n * d_in).map(|_| rng.normal() as f32).collect();
        let mut ws = Workspace::default();
        net.forward(&x, n, &mut ws);
        let k = rank / 2;
        for s in 0..n {
            let xs = &x[s * d_in..(s + 1) * d_in];
            let vx: Vec<f64> = (0..k)
                .map(|j| {
                    (0..d_in)
                        .map(|c| svd.vt[j * d_in + c] as f64 * xs[c] as f64)
                        .sum()
                })
                .collect();
            for i in 0..d_out {
                let want: f64 = (0..k)
                    .map(|j| svd.u[i * k + j] as f64 * svd.s[j] as f64 * vx[j])
                    .sum();
                let got = ws.z[s * d_out + i] as f64;
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
        // And that reconstruction is close to the gate itself along its top directions:
        // the error is the discarded spectrum, well below the gate's own output.
        let gx: f64 = (0..d_out)
            .map(|i| {
                (0..d_in)
                    .map(|c| gate[i * d_in + c] as f64 * x[c] as f64)
                    .sum::<f64>()
                    .powi(2)
            })
            .sum();
        let err: f64 = (0..d_out)
            .map(|i| {
                let g: f64 = (0..d_in)
                    .map(|c| gate[i * d_in + c] as f64 * x[c] as f64)
                    .sum();
                (g - ws.z[i] as f64).powi(2)
            })
            .sum();
        assert!(
            err < gx,
            "rank-{k} reconstruction no better than zero: {err} vs {gx}"
        );
    }
}
