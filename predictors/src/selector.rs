//! The predictor's output layer as the engine runs it each token: which neurons fire.
//!
//! Neuron j fires when its logit `w2_j · h + b2_j > 0`. Here `w2_j` is held as 8-bit integers
//! `q_j` with one scale `s_j` (`w2_j ≈ s_j q_j`, `s_j = max|w2_j| / 127`), and the test is
//! `q_j · h > t_j` with the threshold `t_j = −b2_j / s_j` folded in. Why: the output layer is
//! most of a predictor's bytes (d_out × rank against rank × d_in) and the engine reads it once a
//! token per layer; at 16 + 4 bytes a neuron for rank 16 instead of 32 + 4 it costs about half
//! as much memory traffic. The rounding moves each weight by at most half a step (0.4% of the
//! neuron's largest weight); `profile` calibrates the recall threshold on these weights. (The
//! CUDA predictor kernel keeps the f16 output layer: its selections can differ from these at
//! neurons whose logit is within that rounding of zero.)
//!
//! Layout: blocks of [`LANES`] neurons, each `[rank][LANES]` bytes, so that one vector load
//! brings one hidden unit's weights for the whole block and the dot products run across lanes
//! (no horizontal sums).

use std::ops::Range;

use half::f16;

/// Neurons per block.
pub const LANES: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    rank: usize,
    d_out: usize,
    /// `[block][rank][LANES]`; lanes past `d_out` are zero.
    q: Vec<i8>,
    /// Per neuron: `s_j` (0 for a neuron whose weights are all zero).
    scale: Vec<f32>,
    /// Per neuron (padded to whole blocks): fires iff `q_j · h > threshold_j`; padding lanes
    /// hold +∞.
    threshold: Vec<f32>,
}

impl Selector {
    /// The selector of the output layer `w2` (`[d_out][rank]`) with biases `b2`.
    pub fn new(w2: &[f16], b2: &[f32], rank: usize, d_out: usize) -> Selector {
        assert!(rank > 0 && w2.len() == d_out * rank && b2.len() == d_out);
        let blocks = d_out.div_ceil(LANES);
        let mut q = vec![0i8; blocks * rank * LANES];
        let mut scale = vec![0f32; d_out];
        for (j, row) in w2.chunks_exact(rank).enumerate() {
            let max = row.iter().map(|w| w.to_f32().abs()).fold(0f32, f32::max);
            let s = max / 127.0;
            scale[j] = s;
            let (b, lane) = (j / LANES, j % LANES);
            for (k, w) in row.iter().enumerate() {
                q[(b * rank + k) * LANES + lane] = if s > 0.0 {
                    (w.to_f32() / s).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                };
            }
        }
        let mut sel = Selector {
            rank,
            d_out,
            q,
            scale,
            threshold: vec![f32::INFINITY; blocks * LANES],
        };
        sel.set_bias(b2);
        sel
    }

    /// Thresholds for new output biases (after the recall calibration shifts them).
    pub fn set_bias(&mut self, b2: &[f32]) {
        assert_eq!(b2.len(), self.d_out);
        for ((t, &s), &b) in self.threshold.iter_mut().zip(&self.scale).zip(b2) {
            *t = if s > 0.0 {
                -b / s
            } else if b > 0.0 {
                // The logit is the bias alone: always or never.
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            };
        }
    }

    /// The integer weights as f32, `[d_out][rank]` (for the calibration to see what runs).
    pub fn dequantized(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.d_out * self.rank];
        for (j, row) in w.chunks_exact_mut(self.rank).enumerate() {
            let (b, lane) = (j / LANES, j % LANES);
            for (k, w) in row.iter_mut().enumerate() {
                *w = self.q[(b * self.rank + k) * LANES + lane] as f32 * self.scale[j];
            }
        }
        w
    }

    /// Bytes held: levels and thresholds (what a selection over every neuron reads).
    pub fn n_bytes(&self) -> usize {
        self.q.len() + 4 * self.threshold.len()
    }

    /// The bytes [`Selector::select`] reads for `range` (to ask for them early).
    pub fn bytes(&self, range: Range<usize>) -> (&[i8], &[f32]) {
        let (b0, b1) = (range.start / LANES, range.end.div_ceil(LANES));
        (
            &self.q[b0 * self.rank * LANES..b1 * self.rank * LANES],
            &self.threshold[b0 * LANES..b1 * LANES],
        )
    }

    /// Appends to `active` the neurons of `range` that fire for the hidden layer `h`,
    /// ascending. Each neuron's sum is `fma(q_jk, h_k, ·)` over k in order from zero, on every
    /// path, so the SIMD and portable paths select the same neurons.
    pub fn select(&self, h: &[f32], range: Range<usize>, active: &mut Vec<u32>) {
        assert_eq!(h.len(), self.rank, "selector: hidden length");
        assert!(range.start <= range.end && range.end <= self.d_out);
        let mut j = range.start;
        // Neurons before the first whole block, one at a time.
        while j < range.end && !j.is_multiple_of(LANES) {
            self.select_one(h, j, active);
            j += 1;
        }
        let whole = (range.end - j) / LANES;
        #[cfg(target_arch = "x86_64")]
        if whole > 0 && crate::kernels::simd_available() {
            // SAFETY: AVX2/FMA (and F16C) detected; blocks j / LANES .. + whole lie inside `q` and
            // `threshold` (j + whole·LANES ≤ range.end ≤ d_out); `h` is `rank` long.
            unsafe { simd::select_blocks(self, h, j / LANES, whole, active) };
            j += whole * LANES;
        }
        while j < range.end {
            self.select_one(h, j, active);
            j += 1;
        }
    }

    /// The portable test of neuron `j`.
    fn select_one(&self, h: &[f32], j: usize, active: &mut Vec<u32>) {
        let (b, lane) = (j / LANES, j % LANES);
        let mut acc = 0f32;
        for (k, &h) in h.iter().enumerate() {
            acc = (self.q[(b * self.rank + k) * LANES + lane] as f32).mul_add(h, acc);
        }
        if acc > self.threshold[j] {
            active.push(j as u32);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::{Selector, LANES};

    /// Blocks `b0..b0 + n` of [`Selector::select`]: two 8-lane halves a block.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn select_blocks(
        s: &Selector,
        h: &[f32],
        b0: usize,
        n: usize,
        active: &mut Vec<u32>,
    ) {
        let rank = s.rank;
        let start = active.len();
        active.reserve(n * LANES);
        let out = active.as_mut_ptr().add(start);
        let mut k_out = 0usize;
        for b in b0..b0 + n {
            let q = s.q.as_ptr().add(b * rank * LANES);
            let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            for (k, &hk) in h.iter().enumerate() {
                let hv = _mm256_set1_ps(hk);
                let p = q.add(k * LANES);
                let ql =
                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)));
                let qh = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(
                    p.add(8) as *const __m128i
                )));
                lo = _mm256_fmadd_ps(ql, hv, lo);
                hi = _mm256_fmadd_ps(qh, hv, hi);
            }
            let t = s.threshold.as_ptr().add(b * LANES);
            let ml = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(lo, _mm256_loadu_ps(t)));
            let mh = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(hi, _mm256_loadu_ps(t.add(8))));
            let mask = (ml as u32) | ((mh as u32) << 8);
            // Branch-free append: whether a neuron fires is close to a coin toss.
            let base = (b * LANES) as u32;
            for i in 0..LANES as u32 {
                *out.add(k_out) = base + i;
                k_out += ((mask >> i) & 1) as usize;
            }
        }
        active.set_len(start + k_out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Every path selects what the portable test selects, for ranges that start and end
    /// inside blocks, and the selection follows the rounded logits' signs.
    #[test]
    fn paths_agree_and_follow_the_logit_sign() {
        let mut seed = 7;
        for (rank, d_out) in [(16, 200), (32, 64), (5, 37)] {
            let w2: Vec<f16> = rand(rank * d_out, &mut seed)
                .iter()
                .map(|&v| f16::from_f32(v))
                .collect();
            let b2: Vec<f32> = rand(d_out, &mut seed).iter().map(|v| v * 0.3).collect();
            let mut sel = Selector::new(&w2, &b2, rank, d_out);
            let h: Vec<f32> = rand(rank, &mut seed).iter().map(|v| v.abs()).collect();
            for range in [0..d_out, 3..d_out - 5, 16..32.min(d_out), 1..2] {
                let mut got = Vec::new();
                sel.select(&h, range.clone(), &mut got);
                let mut want = Vec::new();
                for j in range.clone() {
                    sel.select_one(&h, j, &mut want);
                }
                assert_eq!(got, want, "rank {rank}, {range:?}");
                assert!(got.iter().all(|&j| range.contains(&(j as usize))));
            }
            // Against the dequantized logits (up to rounding at the boundary).
            let wq = sel.dequantized();
            let mut all = Vec::new();
            sel.select(&h, 0..d_out, &mut all);
            let mut agree = 0;
            for j in 0..d_out {
                let z: f32 = wq[j * rank..(j + 1) * rank]
                    .iter()
                    .zip(&h)
                    .map(|(w, h)| w * h)
                    .sum::<f32>()
                    + b2[j];
                agree += usize::from((z > 0.0) == all.contains(&(j as u32)));
            }
            assert!(agree >= d_out - 1, "rank {rank}: {agree} of {d_out}");
            assert!(!all.is_empty() && all.len() < d_out);
            // New biases move the thresholds.
            sel.set_bias(&vec![100.0; d_out]);
            let mut every = Vec::new();
            sel.select(&h, 0..d_out, &mut every);
            assert_eq!(every.len(), d_out);
        }
    }

    /// A neuron with all-zero weights fires on its bias alone.
    #[test]
    fn zero_rows_follow_the_bias() {
        let w2 = vec![f16::ZERO; 2 * 4];
        let sel = Selector::new(&w2, &[0.5, -0.5], 4, 2);
        let mut a = Vec::new();
        sel.select(&[1.0, 2.0, 3.0, 4.0], 0..2, &mut a);
        assert_eq!(a, vec![0]);
    }
}
