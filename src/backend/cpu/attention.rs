//! Causal multi-head attention over the KV cache, with grouped-query heads and an optional
//! sliding window.
//!
//! An online softmax (flash-attention style), run in passes over each KV head's positions
//! (see [`attention`]) that give every head exactly the one-pass operations. The numerics
//! follow llama.cpp's CPU flash attention on purpose: the cache holds f16, the
//! query is rounded to f16 before its dot products, and the value accumulator is kept at f16
//! precision. Greedy decoding is a chain of arg-maxes, and near-ties flip on rounding, so
//! matching the reference's rounding is what makes our greedy text equal llama.cpp's.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{CpuKvCache, CpuTensor};
use crate::backend::AttnParams;

/// `out` row i = attention of query row i (at position `pos0 + i`) over cached positions.
///
/// The work is cut into units of one query row and `hpu` heads that share a KV head (the
/// largest divisor of the group size that still leaves two units per thread). A unit runs
/// in three passes over its positions, each head getting exactly the operations of the
/// one-pass online softmax in their order:
/// 1. the scores of all its heads, each key read once for all of them;
/// 2. per head, the running maximum and its rescale and weight factors (one `exp` each);
/// 3. per head, the value accumulator, held in registers across positions.
///
/// Why passes: in one pass each position's value update waited on that position's score,
/// `exp` and the previous update (a chain of ~50 cycles through two f16 round trips); apart,
/// the scores and `exp`s have no chain at all and the accumulator's chain is only the update.
pub fn attention(
    q: &CpuTensor,
    cache: &CpuKvCache,
    layer: usize,
    pos0: usize,
    p: AttnParams,
    out: &mut CpuTensor,
) {
    let hd = p.head_dim;
    let group = p.n_head / p.n_head_kv;
    assert_eq!(cache.head_dim(), hd, "KV cache head width");
    out.resize(q.rows, p.n_head * hd);
    let threads = crate::parallel::threads();
    let hpu = (1..=group)
        .rev()
        .find(|&h| group.is_multiple_of(h) && q.rows * p.n_head / h >= 2 * threads)
        .unwrap_or(1);
    let units_per_row = p.n_head / hpu;
    // A few tasks per thread, each a run of units.
    let units = q.rows * units_per_row;
    let per_task = units.div_ceil(4 * threads);
    crate::parallel::for_chunks_mut(&mut out.data, per_task * hpu * hd, |t, run| {
        SCRATCH.with_borrow_mut(|s| {
            for (n, o) in run.chunks_exact_mut(hpu * hd).enumerate() {
                let unit = t * per_task + n;
                let (i, h0) = (unit / units_per_row, unit % units_per_row * hpu);
                let pos = pos0 + i;
                let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let g = h0 / group;
                let kv = Kv {
                    keys: cache.head_k(layer, g),
                    values: cache.head_v(layer, g),
                    hd,
                    lo,
                    n: pos + 1 - lo,
                };
                unit_attention(&q.row(i)[h0 * hd..(h0 + hpu) * hd], &kv, p.scale, s, o);
            }
        })
    });
}

/// One KV head's cached keys and values (position `j`'s at `j * hd`, `hd` long), over
/// positions `lo..lo + n`.
struct Kv<'a> {
    keys: &'a [f16],
    values: &'a [f16],
    hd: usize,
    lo: usize,
    n: usize,
}

impl Kv<'_> {
    fn range(&self, jj: usize) -> std::ops::Range<usize> {
        let a = (self.lo + jj) * self.hd;
        a..a + self.hd
    }

    fn key(&self, jj: usize) -> &[f16] {
        &self.keys[self.range(jj)]
    }

    fn value(&self, jj: usize) -> &[f16] {
        &self.values[self.range(jj)]
    }

    /// Ask for position `jj`'s key and value, if there is one.
    #[inline(always)]
    fn prefetch(&self, jj: usize) {
        if jj < self.n {
            crate::quant::prefetch(self.key(jj));
            crate::quant::prefetch(self.value(jj));
        }
    }
}

/// A thread's scratch for its units, kept between calls.
#[derive(Default)]
struct Scratch {
    qs: Vec<f32>,
    /// Per head, per position: the score, then (pass 2) the rescale factor.
    rescale: Vec<f32>,
    weight: Vec<f32>,
    /// Per head, the softmax denominator.
    sums: Vec<f32>,
    tmp: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Attention of the `q.len() / hd` heads of `q` over `kv`, into `out` (as long as `q`).
fn unit_attention(q: &[f32], kv: &Kv, scale: f32, s: &mut Scratch, out: &mut [f32]) {
    let (hd, n) = (kv.hd, kv.n);
    let hpu = q.len() / hd;
    s.qs.clear();
    s.qs.extend(q.iter().map(|&v| round_f16(v)));
    s.rescale.resize(hpu * n, 0.0);
    s.weight.resize(hpu * n, 0.0);
    s.tmp.resize(hd, 0.0);
    // 1. Scores.
    for jj in 0..KV_AHEAD {
        kv.prefetch(jj);
    }
    scores(kv, &s.qs, scale, &mut s.tmp, &mut s.rescale);
    // 2. The online softmax's factors: a position that raises the running maximum rescales
    //    what was accumulated and gets weight 1; any other is weighted by exp(score - max).
    s.sums.clear();
    s.sums.resize(hpu, 0.0);
    for (h, sum) in s.sums.iter_mut().enumerate() {
        let mut max = f32::NEG_INFINITY;
        let (r, w) = (
            &mut s.rescale[h * n..(h + 1) * n],
            &mut s.weight[h * n..(h + 1) * n],
        );
        for (r, w) in r.iter_mut().zip(w.iter_mut()) {
            let score = *r;
            (*r, *w) = if score > max {
                let f = (max - score).exp();
                max = score;
                (f, 1.0)
            } else {
                (1.0, (score - max).exp())
            };
            // One rounding, as GCC compiles ggml's `S = S*ms + vs` with FMA.
            *sum = *sum * *r + *w;
        }
    }
    // 3. Values.
    values_weighted(kv, &s.rescale, &s.weight, &mut s.tmp, out);
    for (o, &sum) in out.chunks_exact_mut(hd).zip(&s.sums) {
        let inv = 1.0 / sum;
        for o in o.iter_mut() {
            *o *= inv;
        }
    }
}

/// `out[h * n + jj]` = the score of head `h` of `qs` (f16-rounded queries) at position `jj`
/// of `kv`: [`key_dot`] times `scale`. Asks for the keys and values ahead of the one it reads.
fn scores(kv: &Kv, qs: &[f32], scale: f32, tmp: &mut [f32], out: &mut [f32]) {
    let (hd, n) = (kv.hd, kv.n);
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2::available() {
        // SAFETY: AVX2/FMA/F16C detected; `qs` is whole heads of `hd` and `out` holds
        // `n` scores of each.
        return unsafe { simd::scores(kv, qs, scale, out) };
    }
    for jj in 0..n {
        kv.prefetch(jj + KV_AHEAD);
        let k = kv.key(jj);
        for (h, q) in qs.chunks_exact(hd).enumerate() {
            out[h * n + jj] = key_dot(q, k, tmp) * scale;
        }
    }
}

/// For each head `h` (`out`'s `hd`-long pieces, from zero), `acc = f16(v_j * w_j + f16(acc *
/// r_j))` for each position `j` in order, with `r_j`, `w_j` at `h * n + j` of `r`, `w`; the
/// multiply-add fused as in ggml's `ggml_vec_mad_f16`. Where `r_j` is 1 the rescale is
/// skipped: `acc` is always an f16 value, so `f16(acc * 1)` is `acc`.
fn values_weighted(kv: &Kv, r: &[f32], w: &[f32], tmp: &mut [f32], out: &mut [f32]) {
    let (hd, n) = (kv.hd, kv.n);
    assert!(r.len() >= out.len() / hd * n && w.len() >= out.len() / hd * n);
    out.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(64) && crate::quant::avx2::has_avx512vl() {
        // SAFETY: AVX-512 F detected; `out` is whole heads of `hd`, a multiple of 64, and
        // `r`, `w` hold `n` factors a head (asserted).
        return unsafe { simd::values_weighted_wide(kv, r, w, out) };
    }
    for (h, out) in out.chunks_exact_mut(hd).enumerate() {
        let (r, w) = (&r[h * n..(h + 1) * n], &w[h * n..(h + 1) * n]);
        #[cfg(target_arch = "x86_64")]
        if hd.is_multiple_of(8) && crate::quant::avx2::available() {
            // SAFETY: AVX2/FMA/F16C detected; `out` and every value row are `hd` long, a
            // multiple of 8.
            unsafe { simd::values_weighted(kv, r, w, out) };
            continue;
        }
        head_values(kv, r, w, tmp, out);
    }
}

/// One head of [`values_weighted`], the portable way (the SIMD paths' reference in tests).
fn head_values(kv: &Kv, r: &[f32], w: &[f32], tmp: &mut [f32], out: &mut [f32]) {
    for (jj, (&r, &w)) in r.iter().zip(w).enumerate() {
        kv.value(jj).convert_to_f32_slice(tmp);
        for (a, &v) in out.iter_mut().zip(tmp.iter()) {
            let scaled = if r == 1.0 { *a } else { round_f16(*a * r) };
            *a = round_f16(v.mul_add(w, scaled));
        }
    }
}

/// How many positions ahead of the one being scored a unit asks for its keys and values. In
/// decoding, a layer's cache was last read a token ago, with hundreds of MB of weights read
/// since: it comes from DRAM, and asking ahead starts both runs (keys, values) before the
/// hardware prefetcher has seen enough of them (`benches/attention.rs`, from DRAM: 35 → 32 µs
/// at position 96, 106 → 91 µs at 320).
const KV_AHEAD: usize = 16;

#[inline]
fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// `dot(q, k)` for an f16 key in the order of ggml's AVX2 `ggml_vec_dot_f16`: four
/// accumulators of eight lanes over blocks of 32 with fused multiply-adds, summed as
/// (a0 + a2) + (a1 + a3), then the two halves and two horizontal adds; a tail that is not a
/// whole block is added element by element. `tmp` is scratch of `k.len()`. The portable
/// form (`simd::dot` is its twin).
fn key_dot(q: &[f32], k: &[f16], tmp: &mut [f32]) -> f32 {
    k.convert_to_f32_slice(tmp);
    let body = q.len() / 32 * 32;
    let mut acc = [[0f32; 8]; 4];
    for c in (0..body).step_by(32) {
        for (j, a) in acc.iter_mut().enumerate() {
            for (l, a) in a.iter_mut().enumerate() {
                let i = c + 8 * j + l;
                *a = tmp[i].mul_add(q[i], *a);
            }
        }
    }
    let mut v = [0f32; 8];
    for (l, v) in v.iter_mut().enumerate() {
        *v = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let h = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    let mut s = ((h[0] + h[1]) + (h[2] + h[3])) as f64;
    for i in body..q.len() {
        s += (tmp[i] * q[i]) as f64;
    }
    s as f32
}

/// AVX2 twins of the scalar loops, bit-identical to them: the same roundings (f16 rounding
/// to nearest even, as `half` does) and the same fused multiply-adds.
#[cfg(target_arch = "x86_64")]
mod simd {
    use half::f16;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    #[inline(always)]
    unsafe fn round_f16(v: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v))
    }

    /// [`super::key_dot`] (for tests). Caller guarantees AVX2 + FMA + F16C and
    /// `q.len() == k.len()`.
    #[cfg(test)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn key_dot(q: &[f32], k: &[f16]) -> f32 {
        dot(q, k)
    }

    /// [`super::scores`]. Caller guarantees AVX2 + FMA + F16C, `qs` whole heads of `kv.hd`
    /// and `out` at least `kv.n` scores a head.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores(kv: &super::Kv, qs: &[f32], scale: f32, out: &mut [f32]) {
        let (hd, n) = (kv.hd, kv.n);
        for jj in 0..n {
            kv.prefetch(jj + super::KV_AHEAD);
            let k = kv.key(jj);
            for (h, q) in qs.chunks_exact(hd).enumerate() {
                *out.get_unchecked_mut(h * n + jj) = dot(q, k) * scale;
            }
        }
    }

    /// The body of [`key_dot`], inlined into its callers.
    #[inline(always)]
    unsafe fn dot(q: &[f32], k: &[f16]) -> f32 {
        let body = q.len() / 32 * 32;
        let mut acc = [_mm256_setzero_ps(); 4];
        for c in (0..body).step_by(32) {
            for (j, a) in acc.iter_mut().enumerate() {
                let kv = load_f16(k.as_ptr().add(c + 8 * j));
                let qv = _mm256_loadu_ps(q.as_ptr().add(c + 8 * j));
                *a = _mm256_fmadd_ps(kv, qv, *a);
            }
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_hadd_ps(h, h);
        let mut s = _mm_cvtss_f32(_mm_hadd_ps(h, h)) as f64;
        for i in body..q.len() {
            s += (k[i].to_f32() * q[i]) as f64;
        }
        s as f32
    }

    /// [`super::values_weighted`] over 64-dimension pieces of the head (then 8-dimension ones),
    /// each piece's accumulator in registers across all positions. Caller guarantees AVX2 +
    /// FMA + F16C and `hd` (= `out.len()`) a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn values_weighted(kv: &super::Kv, r: &[f32], w: &[f32], out: &mut [f32]) {
        let mut d = 0;
        while d + 64 <= kv.hd {
            piece::<8>(kv, d, r, w, out);
            d += 64;
        }
        while d < kv.hd {
            piece::<1>(kv, d, r, w, out);
            d += 8;
        }
    }

    /// [`super::values_weighted`] on 512-bit vectors, four heads at a time over 64-dimension
    /// pieces: sixteen accumulators in registers, so that the update's chain (a multiply-add
    /// and two f16 conversions, ~18 cycles) is hidden behind the other heads' work. Caller
    /// guarantees AVX-512 F, `out` whole heads of `hd` (a multiple of 64), and `r`, `w` `n`
    /// factors a head.
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    pub unsafe fn values_weighted_wide(kv: &super::Kv, r: &[f32], w: &[f32], out: &mut [f32]) {
        let heads = out.len() / kv.hd;
        let mut h = 0;
        while h + 4 <= heads {
            heads_wide::<4>(kv, h, r, w, out);
            h += 4;
        }
        while h + 2 <= heads {
            heads_wide::<2>(kv, h, r, w, out);
            h += 2;
        }
        while h < heads {
            heads_wide::<1>(kv, h, r, w, out);
            h += 1;
        }
    }

    #[inline(always)]
    unsafe fn round_f16_wide(v: __m512) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtps_ph::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(v))
    }

    /// Heads `h0..h0 + H` of [`values_weighted_wide`].
    #[inline(always)]
    unsafe fn heads_wide<const H: usize>(
        kv: &super::Kv,
        h0: usize,
        r: &[f32],
        w: &[f32],
        out: &mut [f32],
    ) {
        let (hd, n) = (kv.hd, kv.n);
        for d in (0..hd).step_by(64) {
            let mut acc = [[_mm512_setzero_ps(); 4]; H];
            let base = kv.values.as_ptr().add(kv.lo * hd + d);
            for jj in 0..n {
                let v = base.add(jj * hd);
                let vv: [__m512; 4] = std::array::from_fn(|m| {
                    _mm512_cvtph_ps(_mm256_loadu_si256(v.add(16 * m) as *const __m256i))
                });
                for (hh, acc) in acc.iter_mut().enumerate() {
                    let at = (h0 + hh) * n + jj;
                    let (rj, wj) = (*r.get_unchecked(at), *w.get_unchecked(at));
                    if rj != 1.0 {
                        let rv = _mm512_set1_ps(rj);
                        for a in acc.iter_mut() {
                            *a = round_f16_wide(_mm512_mul_ps(*a, rv));
                        }
                    }
                    let wv = _mm512_set1_ps(wj);
                    for (a, v) in acc.iter_mut().zip(vv) {
                        *a = round_f16_wide(_mm512_fmadd_ps(v, wv, *a));
                    }
                }
            }
            for (hh, acc) in acc.into_iter().enumerate() {
                let o = out.as_mut_ptr().add((h0 + hh) * hd + d);
                for (m, a) in acc.into_iter().enumerate() {
                    _mm512_storeu_ps(o.add(16 * m), a);
                }
            }
        }
    }

    /// Dimensions `d..d + 8·M` of every position.
    #[inline(always)]
    unsafe fn piece<const M: usize>(
        kv: &super::Kv,
        d: usize,
        r: &[f32],
        w: &[f32],
        out: &mut [f32],
    ) {
        let mut acc = [_mm256_setzero_ps(); M];
        let base = kv.values.as_ptr().add(kv.lo * kv.hd + d);
        for (jj, (&rj, &wj)) in r.iter().zip(w).enumerate() {
            let v = base.add(jj * kv.hd);
            let wv = _mm256_set1_ps(wj);
            if rj != 1.0 {
                let rv = _mm256_set1_ps(rj);
                for a in acc.iter_mut() {
                    *a = round_f16(_mm256_mul_ps(*a, rv));
                }
            }
            for (m, a) in acc.iter_mut().enumerate() {
                *a = round_f16(_mm256_fmadd_ps(load_f16(v.add(8 * m)), wv, *a));
            }
        }
        for (m, a) in acc.into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(d + 8 * m), a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ops::dot;
    use super::*;
    use crate::backend::{Backend, CpuBackend};

    fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Attention written the plain way: every query against every allowed key.
    fn naive(q: &[f32], k: &[f32], v: &[f32], n_q: usize, pos0: usize, p: AttnParams) -> Vec<f32> {
        let hd = p.head_dim;
        let kv_dim = p.n_head_kv * hd;
        let mut out = vec![0f32; n_q * p.n_head * hd];
        for i in 0..n_q {
            let pos = pos0 + i;
            for h in 0..p.n_head {
                let g = h * p.n_head_kv / p.n_head;
                let qh = &q[(i * p.n_head + h) * hd..][..hd];
                let allowed: Vec<usize> = (0..=pos)
                    .filter(|&j| p.window.is_none_or(|w| pos - j < w))
                    .collect();
                let s: Vec<f64> = allowed
                    .iter()
                    .map(|&j| {
                        (0..hd)
                            .map(|d| qh[d] as f64 * k[j * kv_dim + g * hd + d] as f64)
                            .sum::<f64>()
                            * p.scale as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for (a, &j) in allowed.iter().enumerate() {
                    let w = (s[a] - m).exp() / z;
                    for d in 0..hd {
                        out[(i * p.n_head + h) * hd + d] +=
                            (w * v[j * kv_dim + g * hd + d] as f64) as f32;
                    }
                }
            }
        }
        out
    }

    /// The SIMD key dot gives exactly the portable loop's bits.
    #[test]
    fn simd_key_dot_bit_identical_to_portable() {
        if !crate::quant::avx2::available() {
            return;
        }
        let mut seed = 11;
        for hd in [8, 40, 64, 256] {
            for _ in 0..50 {
                let q: Vec<f32> = rand_vec(hd, &mut seed)
                    .iter()
                    .map(|&v| round_f16(v * 3.0))
                    .collect();
                let k: Vec<f16> = rand_vec(hd, &mut seed)
                    .iter()
                    .map(|&v| f16::from_f32(v * 5.0))
                    .collect();
                let mut kf = vec![0f32; hd];
                k.convert_to_f32_slice(&mut kf);
                let mut tmp = vec![0f32; hd];
                // SAFETY: AVX2 checked above; equal lengths.
                let fast = unsafe { simd::key_dot(&q, &k) };
                assert_eq!(fast.to_bits(), key_dot(&q, &k, &mut tmp).to_bits());
                // The same sum as a plain dot, up to rounding.
                assert!((fast - dot(&q, &kf)).abs() < 1e-3);
            }
        }
    }

    /// Attention the one-pass way (llama.cpp's CPU flash attention, portable): per head and
    /// position the score, the running maximum's `exp`, and the f16 accumulator's update,
    /// rescaling even by 1.
    fn one_pass(
        q: &[f32],
        cache: &CpuKvCache,
        layer: usize,
        pos0: usize,
        p: AttnParams,
    ) -> Vec<f32> {
        let hd = p.head_dim;
        let n_q = q.len() / (p.n_head * hd);
        let mut out = vec![0f32; q.len()];
        let mut tmp = vec![0f32; hd];
        for i in 0..n_q {
            let pos = pos0 + i;
            let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            for h in 0..p.n_head {
                let g = h / (p.n_head / p.n_head_kv);
                let (keys, values) = (cache.head_k(layer, g), cache.head_v(layer, g));
                let qs: Vec<f32> = q[(i * p.n_head + h) * hd..][..hd]
                    .iter()
                    .map(|&v| round_f16(v))
                    .collect();
                let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
                let mut acc = vec![0f32; hd];
                let mut vf = vec![0f32; hd];
                for j in lo..=pos {
                    let score = key_dot(&qs, &keys[j * hd..(j + 1) * hd], &mut tmp) * p.scale;
                    let (old, weight) = if score > max {
                        let r = (max - score).exp();
                        max = score;
                        (r, 1.0)
                    } else {
                        (1.0, (score - max).exp())
                    };
                    values[j * hd..(j + 1) * hd].convert_to_f32_slice(&mut vf);
                    for (a, &v) in acc.iter_mut().zip(&vf) {
                        *a = round_f16(v.mul_add(weight, round_f16(*a * old)));
                    }
                    sum = sum * old + weight;
                }
                for (o, a) in out[(i * p.n_head + h) * hd..][..hd].iter_mut().zip(&acc) {
                    *o = a * (1.0 / sum);
                }
            }
        }
        out
    }

    /// The three passes (and every SIMD path they take: 512-bit four, two and one heads at a
    /// time, 256-bit 64- and 8-wide pieces, portable) give the one-pass softmax's bits, with
    /// and without a window, for one and for several threads (heads a unit: 1 to 4).
    #[test]
    fn passes_match_the_one_pass_softmax_bit_for_bit() {
        let mut seed = 29;
        for (n_head, n_head_kv, hd, window) in [
            (8, 2, 64, None),
            (12, 2, 128, Some(40)),
            (6, 3, 64, None),
            (8, 2, 96, None),
            (4, 2, 16, Some(7)),
            (4, 1, 8, None),
            (2, 1, 12, None),
        ] {
            let p = AttnParams {
                n_head,
                n_head_kv,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                window,
            };
            let kv_dim = n_head_kv * hd;
            let (n_prev, n_q, n_ctx) = (90, 3, 96);
            let b = CpuBackend::new();
            let mut cache = b.new_kv_cache(2, n_ctx, kv_dim, hd);
            let k = rand_vec((n_prev + n_q) * kv_dim, &mut seed);
            let v = rand_vec((n_prev + n_q) * kv_dim, &mut seed);
            b.store_kv(
                &mut cache,
                1,
                0,
                &CpuTensor::from_vec(k, n_prev + n_q, kv_dim),
                &CpuTensor::from_vec(v, n_prev + n_q, kv_dim),
            );
            // Large queries spread the scores, so that the maximum moves often.
            let q: Vec<f32> = rand_vec(n_q * n_head * hd, &mut seed)
                .iter()
                .map(|x| x * 6.0)
                .collect();
            let want: Vec<u32> = one_pass(&q, &cache, 1, n_prev, p)
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let qt = CpuTensor::from_vec(q, n_q, n_head * hd);
            for threads in [1, 2, 8] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = CpuTensor::default();
                pool.install(|| attention(&qt, &cache, 1, n_prev, p, &mut out));
                let got: Vec<u32> = out.data.iter().map(|x| x.to_bits()).collect();
                assert_eq!(
                    got, want,
                    "{n_head}/{n_head_kv} heads of {hd}, {window:?}, {threads} threads"
                );
            }
        }
    }

    /// However many heads a unit takes (it follows the thread count), every head gets the
    /// same bits: one thread makes units of four heads here, eight threads units of one.
    #[test]
    fn heads_per_unit_does_not_change_the_bits() {
        let mut seed = 3;
        let p = AttnParams {
            n_head: 8,
            n_head_kv: 2,
            head_dim: 64,
            scale: 0.125,
            window: None,
        };
        let (n_prev, n_ctx, kv_dim) = (37, 64, 2 * 64);
        let b = CpuBackend::new();
        let mut cache = b.new_kv_cache(1, n_ctx, kv_dim, 64);
        let k = CpuTensor::from_vec(
            rand_vec((n_prev + 1) * kv_dim, &mut seed),
            n_prev + 1,
            kv_dim,
        );
        let v = CpuTensor::from_vec(
            rand_vec((n_prev + 1) * kv_dim, &mut seed),
            n_prev + 1,
            kv_dim,
        );
        b.store_kv(&mut cache, 0, 0, &k, &v);
        let q = CpuTensor::from_vec(
            rand_vec(8 * 64, &mut seed)
                .iter()
                .map(|x| x * 4.0)
                .collect(),
            1,
            8 * 64,
        );
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = CpuTensor::default();
            pool.install(|| attention(&q, &cache, 0, n_prev, p, &mut out));
            out.data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        assert!(one.iter().any(|&b| b != 0));
        assert_eq!(one, run(8));
    }

    #[test]
    fn matches_naive_attention_with_gqa_and_window() {
        let mut seed = 7;
        for (n_head, n_head_kv, window) in [(4, 4, None), (6, 2, None), (4, 1, Some(3))] {
            let p = AttnParams {
                n_head,
                n_head_kv,
                head_dim: 16,
                scale: 0.25,
                window,
            };
            let (n_prev, n_q, n_ctx) = (5, 4, 16);
            let kv_dim = n_head_kv * 16;
            let b = CpuBackend::new();
            let mut cache = b.new_kv_cache(2, n_ctx, kv_dim, 16);
            let k = rand_vec((n_prev + n_q) * kv_dim, &mut seed);
            let v = rand_vec((n_prev + n_q) * kv_dim, &mut seed);
            let q = rand_vec(n_q * n_head * 16, &mut seed);
            let kt = CpuTensor::from_vec(k.clone(), n_prev + n_q, kv_dim);
            let vt = CpuTensor::from_vec(v.clone(), n_prev + n_q, kv_dim);
            b.store_kv(&mut cache, 1, 0, &kt, &vt);
            let qt = CpuTensor::from_vec(q.clone(), n_q, n_head * 16);
            let mut out = CpuTensor::default();
            attention(&qt, &cache, 1, n_prev, p, &mut out);
            let r =
                |x: &[f32]| -> Vec<f32> { x.iter().map(|&v| f16::from_f32(v).to_f32()).collect() };
            let want = naive(&r(&q), &r(&k), &r(&v), n_q, n_prev, p);
            // The f16 accumulator costs about three decimal digits.
            for (a, b) in out.data.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 2e-3,
                    "{a} vs {b} ({n_head}/{n_head_kv}/{window:?})"
                );
            }
        }
    }
}
