//! The trained predictor: `logits = W2 · relu(W1 · x + b1) + b2`, neuron i predicted active iff logit_i > 0.
//!
//! W1 is `[rank][d_in]` and W2 `[d_out][rank]`, both f16 row-major, so every output of both layers
//! is one contiguous dot product; the single-token forward reads each weight once. Selections
//! (`predict*`) run the output layer through its [`Selector`] (8-bit levels): the same test up
//! to that rounding, at about half the bytes.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

use crate::error::{check_len, PredictorError, Result};
use crate::kernels::matvec_f16;
use crate::selector::Selector;

/// By default the f16 logits forward ([`Predictor::logits`]; selections never split) stays on
/// the calling thread: on the 2-core dev machine, splitting an 8192 × 128 output layer over
/// rayon took 83 µs against 49 µs serial (benches/forward.rs), and the engine calls this from
/// its own threads anyway. Opt in with [`Predictor::set_parallel_min_weights`].
pub const DEFAULT_PARALLEL_MIN_WEIGHTS: usize = usize::MAX;

#[derive(Debug, Clone, PartialEq)]
pub struct Predictor {
    d_in: usize,
    rank: usize,
    d_out: usize,
    w1: Vec<f16>,
    b1: Vec<f32>,
    w2: Vec<f16>,
    b2: Vec<f32>,
    /// The output layer as selections run it (8-bit; see [`Selector`]).
    selector: Selector,
    parallel_min_weights: usize,
}

/// Reusable buffers for [`Predictor::logits`] and [`Predictor::predict`]; no allocation once warm.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    hidden: Vec<f32>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Predictor {
    /// Builds from raw parts: `w1` is `rank × d_in`, `w2` is `d_out × rank`, both row-major.
    pub fn from_parts(
        d_in: usize,
        rank: usize,
        d_out: usize,
        w1: Vec<f16>,
        b1: Vec<f32>,
        w2: Vec<f16>,
        b2: Vec<f32>,
    ) -> Result<Self> {
        for (name, v) in [("d_in", d_in), ("rank", rank), ("d_out", d_out)] {
            if v == 0 {
                return Err(PredictorError::Zero(name));
            }
        }
        check_len("predictor w1 (rank × d_in)", rank * d_in, w1.len())?;
        check_len("predictor b1 (rank)", rank, b1.len())?;
        check_len("predictor w2 (d_out × rank)", d_out * rank, w2.len())?;
        check_len("predictor b2 (d_out)", d_out, b2.len())?;
        if w1.iter().chain(&w2).any(|w| !w.is_finite()) {
            return Err(PredictorError::NonFinite("predictor weights"));
        }
        if b1.iter().chain(&b2).any(|b| !b.is_finite()) {
            return Err(PredictorError::NonFinite("predictor biases"));
        }
        let selector = Selector::new(&w2, &b2, rank, d_out);
        Ok(Predictor {
            d_in,
            rank,
            d_out,
            w1,
            b1,
            w2,
            b2,
            selector,
            parallel_min_weights: DEFAULT_PARALLEL_MIN_WEIGHTS,
        })
    }

    /// Like [`Predictor::from_parts`] from f32 weights, rounded to f16.
    pub fn from_f32_parts(
        d_in: usize,
        rank: usize,
        d_out: usize,
        w1: &[f32],
        b1: Vec<f32>,
        w2: &[f32],
        b2: Vec<f32>,
    ) -> Result<Self> {
        let to_f16 = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect();
        Self::from_parts(d_in, rank, d_out, to_f16(w1), b1, to_f16(w2), b2)
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }
    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn d_out(&self) -> usize {
        self.d_out
    }
    /// `rank × d_in`, row-major.
    pub fn w1(&self) -> &[f16] {
        &self.w1
    }
    pub fn b1(&self) -> &[f32] {
        &self.b1
    }
    /// `d_out × rank`, row-major.
    pub fn w2(&self) -> &[f16] {
        &self.w2
    }
    pub fn b2(&self) -> &[f32] {
        &self.b2
    }
    /// The output layer as selections run it.
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Bytes of weights and biases as stored.
    pub fn n_bytes(&self) -> usize {
        (self.w1.len() + self.w2.len()) * 2 + (self.b1.len() + self.b2.len()) * 4
    }

    /// Bytes one selection reads: the hidden layer's weights and biases, and the selector's.
    pub fn selection_bytes(&self) -> usize {
        self.w1.len() * 2 + self.b1.len() * 4 + self.selector.n_bytes()
    }

    /// Adds `delta` to every output bias (threshold calibration: a shift of -t predicts `logit > t`).
    pub fn shift_output_bias(&mut self, delta: f32) {
        self.b2.iter_mut().for_each(|b| *b += delta);
        self.selector.set_bias(&self.b2);
    }

    /// Output layers with at least this many weights are split over the rayon pool
    /// (`usize::MAX` keeps the forward on the calling thread).
    pub fn set_parallel_min_weights(&mut self, n: usize) {
        self.parallel_min_weights = n;
    }

    /// Writes the `d_out` logits for one input row into `out`.
    pub fn logits(&self, x: &[f32], scratch: &mut Scratch, out: &mut [f32]) -> Result<()> {
        let parallel =
            self.w2.len() >= self.parallel_min_weights && rayon::current_num_threads() > 1;
        self.forward(x, scratch, out, parallel)
    }

    /// The hidden layer (`rank` values) for one input row: the first half of the forward,
    /// for callers that split the output layer over their own threads with
    /// [`Predictor::predict_range`].
    pub fn hidden(&self, x: &[f32], hidden: &mut Vec<f32>) -> Result<()> {
        hidden.resize(self.rank, 0.0);
        self.hidden_rows(x, 0, hidden)
    }

    /// Hidden units `first..first + out.len()` of [`Predictor::hidden`], for callers that
    /// split the hidden layer over threads. The matvec takes rows in groups of 8, so pieces
    /// that start at multiples of 8 give exactly the bits of the whole.
    pub fn hidden_rows(&self, x: &[f32], first: usize, out: &mut [f32]) -> Result<()> {
        check_len("predictor input x (d_in)", self.d_in, x.len())?;
        if first + out.len() > self.rank {
            return Err(PredictorError::Range {
                start: first,
                end: first + out.len(),
                d_out: self.rank,
            });
        }
        let rows = first * self.d_in..(first + out.len()) * self.d_in;
        matvec_f16(&self.w1[rows], self.d_in, x, out);
        for (v, b) in out.iter_mut().zip(&self.b1[first..]) {
            *v = (*v + b).max(0.0);
        }
        Ok(())
    }

    /// Appends to `active` the neurons of `range` predicted active from `hidden` (from
    /// [`Predictor::hidden`]), ascending: the same neurons [`Predictor::predict`] selects in
    /// that range.
    pub fn predict_range(
        &self,
        hidden: &[f32],
        range: Range<usize>,
        active: &mut Vec<u32>,
    ) -> Result<()> {
        check_len("predictor hidden (rank)", self.rank, hidden.len())?;
        if range.start > range.end || range.end > self.d_out {
            return Err(PredictorError::Range {
                start: range.start,
                end: range.end,
                d_out: self.d_out,
            });
        }
        self.selector.select(hidden, range, active);
        Ok(())
    }

    /// Ascending indices of the neurons predicted active (logit > 0) for one input row.
    pub fn predict(&self, x: &[f32], scratch: &mut Scratch, active: &mut Vec<u32>) -> Result<()> {
        self.hidden(x, &mut scratch.hidden)?;
        active.clear();
        self.selector.select(&scratch.hidden, 0..self.d_out, active);
        Ok(())
    }

    fn forward(
        &self,
        x: &[f32],
        scratch: &mut Scratch,
        out: &mut [f32],
        parallel: bool,
    ) -> Result<()> {
        check_len("predictor logits out (d_out)", self.d_out, out.len())?;
        self.hidden(x, &mut scratch.hidden)?;
        let h = &scratch.hidden;
        let r = self.rank;
        if parallel {
            let threads = rayon::current_num_threads();
            let rows = self.d_out.div_ceil(threads).next_multiple_of(8);
            out.par_chunks_mut(rows)
                .zip(self.w2.par_chunks(rows * r))
                .for_each(|(o, w)| matvec_f16(w, r, h, o));
        } else {
            matvec_f16(&self.w2, r, h, out);
        }
        for (o, b) in out.iter_mut().zip(&self.b2) {
            *o += b;
        }
        Ok(())
    }

    /// Per-row active lists for `xs` (`n × d_in`, row-major), rows spread over the rayon pool.
    /// `active` is resized to `n` and its inner vectors reused.
    pub fn predict_rows(&self, xs: &[f32], active: &mut Vec<Vec<u32>>) -> Result<()> {
        let n = self.batch_rows(xs)?;
        active.resize_with(n, Vec::new);
        active
            .par_iter_mut()
            .zip(xs.par_chunks(self.d_in))
            .try_for_each_init(Scratch::new, |scratch, (act, x)| {
                self.predict(x, scratch, act)
            })
    }

    /// Ascending union of the neurons predicted active for any row of `xs` (`n × d_in`).
    pub fn predict_union(&self, xs: &[f32], active: &mut Vec<u32>) -> Result<()> {
        self.batch_rows(xs)?;
        let words = self.d_out.div_ceil(64);
        let union = xs
            .par_chunks(self.d_in)
            .try_fold(
                || (Scratch::new(), Vec::new(), vec![0u64; words]),
                |(mut scratch, mut act, mut bits), x| {
                    self.predict(x, &mut scratch, &mut act)?;
                    for &i in &act {
                        bits[i as usize / 64] |= 1 << (i % 64);
                    }
                    Ok::<_, PredictorError>((scratch, act, bits))
                },
            )
            .map(|r| r.map(|(_, _, bits)| bits))
            .try_reduce(
                || vec![0u64; words],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x |= y);
                    Ok(a)
                },
            )?;
        active.clear();
        for (wi, &w) in union.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                active.push((wi * 64) as u32 + w.trailing_zeros());
                w &= w - 1;
            }
        }
        Ok(())
    }

    fn batch_rows(&self, xs: &[f32]) -> Result<usize> {
        if !xs.len().is_multiple_of(self.d_in) {
            return Err(PredictorError::Shape {
                what: "predictor batch input (a multiple of d_in)",
                expected: xs.len().div_ceil(self.d_in) * self.d_in,
                got: xs.len(),
            });
        }
        Ok(xs.len() / self.d_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random_predictor(rng: &mut Rng, d_in: usize, rank: usize, d_out: usize) -> Predictor {
        let mut g =
            |n: usize, s: f64| -> Vec<f32> { (0..n).map(|_| (rng.normal() * s) as f32).collect() };
        let w1 = g(rank * d_in, 0.3);
        let b1 = g(rank, 0.2);
        let w2 = g(d_out * rank, 0.3);
        let b2 = g(d_out, 0.2);
        Predictor::from_f32_parts(d_in, rank, d_out, &w1, b1, &w2, b2).unwrap()
    }

    /// Independent f64 reference of the forward from the stored parts.
    fn reference_logits(p: &Predictor, x: &[f32]) -> Vec<f64> {
        let h: Vec<f64> = (0..p.rank())
            .map(|k| {
                let s: f64 = (0..p.d_in())
                    .map(|j| p.w1()[k * p.d_in() + j].to_f64() * x[j] as f64)
                    .sum();
                (s + p.b1()[k] as f64).max(0.0)
            })
            .collect();
        (0..p.d_out())
            .map(|i| {
                let s: f64 = (0..p.rank())
                    .map(|k| p.w2()[i * p.rank() + k].to_f64() * h[k])
                    .sum();
                s + p.b2()[i] as f64
            })
            .collect()
    }

    #[test]
    fn predict_range_pieces_make_up_predict() {
        let mut rng = Rng::new(11);
        for &(d_in, rank, d_out) in &[(19, 5, 1031), (64, 16, 700)] {
            let p = random_predictor(&mut rng, d_in, rank, d_out);
            let x: Vec<f32> = (0..d_in).map(|_| rng.normal() as f32).collect();
            let mut scratch = Scratch::new();
            let mut want = Vec::new();
            p.predict(&x, &mut scratch, &mut want).unwrap();
            assert!(
                !want.is_empty() && want.len() < d_out,
                "a test that can fail"
            );
            let mut hidden = Vec::new();
            p.hidden(&x, &mut hidden).unwrap();
            let mut got = Vec::new();
            for lo in (0..d_out).step_by(100) {
                let hi = (lo + 100).min(d_out);
                p.predict_range(&hidden, lo..hi, &mut got).unwrap();
            }
            assert_eq!(got, want);
        }
        let p = random_predictor(&mut Rng::new(1), 8, 2, 10);
        let err = p.predict_range(&[0.0; 2], 5..11, &mut Vec::new());
        assert!(matches!(err, Err(PredictorError::Range { end: 11, .. })));
        let err = p.predict_range(&[0.0; 3], 0..1, &mut Vec::new());
        assert!(matches!(err, Err(PredictorError::Shape { .. })));
    }

    /// Pieces of the hidden layer that start at multiples of 8 give the whole's bits.
    #[test]
    fn hidden_pieces_make_up_hidden() {
        let mut rng = Rng::new(3);
        for &(d_in, rank) in &[(40, 32), (19, 20), (64, 5)] {
            let p = random_predictor(&mut rng, d_in, rank, 50);
            let x: Vec<f32> = (0..d_in).map(|_| rng.normal() as f32).collect();
            let mut whole = Vec::new();
            p.hidden(&x, &mut whole).unwrap();
            assert!(whole.iter().any(|&v| v > 0.0));
            let mut pieces = vec![0f32; rank];
            for (i, out) in pieces.chunks_mut(8).enumerate() {
                p.hidden_rows(&x, 8 * i, out).unwrap();
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pieces), bits(&whole), "rank {rank}");
            assert!(p.hidden_rows(&x, rank - 1, &mut [0.0; 2]).is_err());
        }
    }

    #[test]
    fn forward_matches_f64_reference_serial_and_parallel() {
        let mut rng = Rng::new(5);
        for &(d_in, rank, d_out) in &[(19, 5, 1031), (64, 16, 200), (45, 33, 2049)] {
            let mut p = random_predictor(&mut rng, d_in, rank, d_out);
            let x: Vec<f32> = (0..d_in).map(|_| rng.normal() as f32).collect();
            let want = reference_logits(&p, &x);
            for min_weights in [usize::MAX, 0] {
                p.set_parallel_min_weights(min_weights);
                let mut scratch = Scratch::new();
                let mut got = vec![0f32; d_out];
                p.logits(&x, &mut scratch, &mut got).unwrap();
                for i in 0..d_out {
                    assert!((got[i] as f64 - want[i]).abs() < 1e-3 * (1.0 + want[i].abs()));
                }
                // Selection runs the 8-bit output layer: it follows the sign of the logit
                // with those weights (f64 reference), up to rounding right at zero.
                let mut active = vec![7, 7, 7];
                p.predict(&x, &mut scratch, &mut active).unwrap();
                let mut hidden = Vec::new();
                p.hidden(&x, &mut hidden).unwrap();
                let w2q = p.selector().dequantized();
                for i in 0..d_out {
                    let z: f64 = (0..rank)
                        .map(|k| w2q[i * rank + k] as f64 * hidden[k] as f64)
                        .sum::<f64>()
                        + p.b2()[i] as f64;
                    let fires = active.contains(&(i as u32));
                    assert!(fires == (z > 0.0) || z.abs() < 1e-5, "neuron {i}: {z}");
                }
                // And the f16 logits' sign but for a few neurons near zero.
                let flips = (0..d_out)
                    .filter(|&i| active.contains(&(i as u32)) != (got[i] > 0.0))
                    .count();
                assert!(
                    flips * 100 <= d_out,
                    "{flips} of {d_out} differ from the f16 logits"
                );
                assert!(!active.is_empty() && active.len() < d_out);
            }
        }
    }

    #[test]
    fn batched_forms_agree_with_single_rows() {
        let mut rng = Rng::new(9);
        let (d_in, rank, d_out, n) = (37, 12, 300, 6);
        let p = random_predictor(&mut rng, d_in, rank, d_out);
        let xs: Vec<f32> = (0..n * d_in).map(|_| rng.normal() as f32).collect();
        let mut rows = Vec::new();
        p.predict_rows(&xs, &mut rows).unwrap();
        assert_eq!(rows.len(), n);
        let mut scratch = Scratch::new();
        let mut single = Vec::new();
        let mut union = vec![false; d_out];
        for r in 0..n {
            p.predict(&xs[r * d_in..(r + 1) * d_in], &mut scratch, &mut single)
                .unwrap();
            assert_eq!(rows[r], single);
            single.iter().for_each(|&i| union[i as usize] = true);
        }
        let mut got = Vec::new();
        p.predict_union(&xs, &mut got).unwrap();
        let want: Vec<u32> = (0..d_out as u32).filter(|&i| union[i as usize]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn shape_errors_are_reported() {
        let f = |n| vec![f16::ONE; n];
        assert!(matches!(
            Predictor::from_parts(4, 2, 3, f(7), vec![0.0; 2], f(6), vec![0.0; 3]),
            Err(PredictorError::Shape {
                expected: 8,
                got: 7,
                ..
            })
        ));
        assert!(Predictor::from_parts(4, 2, 3, f(8), vec![0.0; 3], f(6), vec![0.0; 3]).is_err());
        assert!(Predictor::from_parts(4, 2, 3, f(8), vec![0.0; 2], f(5), vec![0.0; 3]).is_err());
        assert!(Predictor::from_parts(4, 2, 3, f(8), vec![0.0; 2], f(6), vec![0.0; 4]).is_err());
        assert!(matches!(
            Predictor::from_parts(4, 0, 3, f(0), vec![], f(0), vec![0.0; 3]),
            Err(PredictorError::Zero("rank"))
        ));
        assert!(
            Predictor::from_parts(4, 2, 3, f(8), vec![f32::NAN, 0.0], f(6), vec![0.0; 3]).is_err()
        );
        let p = Predictor::from_parts(4, 2, 3, f(8), vec![0.0; 2], f(6), vec![0.0; 3]).unwrap();
        assert_eq!(p.n_bytes(), (8 + 6) * 2 + (2 + 3) * 4);
        let mut s = Scratch::new();
        let mut out = vec![0.0; 3];
        assert!(p.logits(&[1.0; 5], &mut s, &mut out).is_err());
        assert!(p.logits(&[1.0; 4], &mut s, &mut out[..2]).is_err());
        assert!(p.predict_rows(&[1.0; 9], &mut Vec::new()).is_err());
        assert!(p.predict_union(&[1.0; 7], &mut Vec::new()).is_err());
    }
}
