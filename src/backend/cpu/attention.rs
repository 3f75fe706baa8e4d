//! Causal multi-head attention over the KV cache, with grouped-query heads and an optional
//! sliding window.
//!
//! One pass over the keys with an online softmax (flash-attention style: no score buffer).
//! The numerics follow llama.cpp's CPU flash attention on purpose: the cache holds f16, the
//! query is rounded to f16 before its dot products, and the value accumulator is kept at f16
//! precision. Greedy decoding is a chain of arg-maxes, and near-ties flip on rounding, so
//! matching the reference's rounding is what makes our greedy text equal llama.cpp's.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{CpuKvCache, CpuTensor};
use crate::backend::AttnParams;

/// `out` row i = attention of query row i (at position `pos0 + i`) over cached positions.
///
/// The work is cut into units of one query row and `hpu` heads that share a KV head: a unit
/// goes through its keys and values once, position by position, updating each of its heads,
/// so the heads' independent softmax chains overlap instead of running one after another
/// (each head still gets exactly its own operations in their order). `hpu` is the largest
/// divisor of the group size that still leaves two units per thread.
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
    let kv_dim = cache.kv_dim;
    let keys = cache.layer_k(layer);
    let values = cache.layer_v(layer);
    out.resize(q.rows, p.n_head * hd);
    let threads = crate::parallel::threads();
    let hpu = (1..=group)
        .rev()
        .find(|&h| group.is_multiple_of(h) && q.rows * p.n_head / h >= 2 * threads)
        .unwrap_or(1);
    let units_per_row = p.n_head / hpu;
    // A few tasks per thread, each a run of units with its own scratch.
    let units = q.rows * units_per_row;
    let per_task = units.div_ceil(4 * threads);
    crate::parallel::for_chunks_mut(&mut out.data, per_task * hpu * hd, |t, run| {
        let mut qs = vec![0f32; hpu * hd];
        let mut acc = vec![0f32; hpu * hd];
        let mut tmp = vec![0f32; hd];
        let mut max = vec![f32::NEG_INFINITY; hpu];
        let mut sum = vec![0f32; hpu];
        for (n, o) in run.chunks_exact_mut(hpu * hd).enumerate() {
            let unit = t * per_task + n;
            let (i, h0) = (unit / units_per_row, unit % units_per_row * hpu);
            let pos = pos0 + i;
            let lo = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
            let g = h0 / group;
            for (d, &v) in qs.iter_mut().zip(&q.row(i)[h0 * hd..(h0 + hpu) * hd]) {
                *d = round_f16(v);
            }
            acc.fill(0.0);
            max.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            for j in lo..=pos {
                let at = j * kv_dim + g * hd;
                let (k, v) = (&keys[at..at + hd], &values[at..at + hd]);
                for h in 0..hpu {
                    let score = key_dot(&qs[h * hd..(h + 1) * hd], k, &mut tmp) * p.scale;
                    // Rescale what was accumulated when the running maximum grows.
                    let (old_scale, weight) = if score > max[h] {
                        let r = (max[h] - score).exp();
                        max[h] = score;
                        (r, 1.0)
                    } else {
                        (1.0, (score - max[h]).exp())
                    };
                    value_update(
                        &mut acc[h * hd..(h + 1) * hd],
                        v,
                        old_scale,
                        weight,
                        &mut tmp,
                    );
                    // One rounding, as GCC compiles ggml's `S = S*ms + vs` with FMA.
                    sum[h] = sum[h] * old_scale + weight;
                }
            }
            for (h, o) in o.chunks_exact_mut(hd).enumerate() {
                let inv = 1.0 / sum[h];
                for (o, &a) in o.iter_mut().zip(&acc[h * hd..(h + 1) * hd]) {
                    *o = a * inv;
                }
            }
        }
    });
}

#[inline]
fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// `dot(q, k)` for an f16 key in the order of ggml's AVX2 `ggml_vec_dot_f16`: four
/// accumulators of eight lanes over blocks of 32 with fused multiply-adds, summed as
/// (a0 + a2) + (a1 + a3), then the two halves and two horizontal adds; a tail that is not a
/// whole block is added element by element. `tmp` is scratch of `k.len()`.
#[inline]
fn key_dot(q: &[f32], k: &[f16], tmp: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if q.len() == k.len() && crate::quant::avx2::available() {
        // SAFETY: AVX2/FMA/F16C detected; lengths equal.
        return unsafe { simd::key_dot(q, k) };
    }
    key_dot_scalar(q, k, tmp)
}

/// The portable form of `key_dot` (its reference in tests).
fn key_dot_scalar(q: &[f32], k: &[f16], tmp: &mut [f32]) -> f32 {
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

/// `acc = f16(v * weight + f16(acc * old_scale))` elementwise, the multiply-add fused as in
/// ggml's `ggml_vec_mad_f16`; `tmp` is scratch of `v.len()`.
#[inline]
fn value_update(acc: &mut [f32], v: &[f16], old_scale: f32, weight: f32, tmp: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if acc.len() == v.len() && v.len().is_multiple_of(8) && crate::quant::avx2::available() {
        // SAFETY: AVX2/FMA/F16C detected; lengths equal and a multiple of 8.
        return unsafe { simd::value_update(acc, v, old_scale, weight) };
    }
    v.convert_to_f32_slice(tmp);
    for (a, &v) in acc.iter_mut().zip(tmp.iter()) {
        *a = round_f16(v.mul_add(weight, round_f16(*a * old_scale)));
    }
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

    /// Caller guarantees AVX2 + FMA + F16C and `q.len() == k.len()`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn key_dot(q: &[f32], k: &[f16]) -> f32 {
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

    /// Caller guarantees AVX2 + FMA + F16C, `acc.len() == v.len()` and a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn value_update(acc: &mut [f32], v: &[f16], old_scale: f32, weight: f32) {
        let (s, w) = (_mm256_set1_ps(old_scale), _mm256_set1_ps(weight));
        for c in 0..v.len() / 8 {
            let a = acc.as_mut_ptr().add(8 * c);
            let vv = load_f16(v.as_ptr().add(8 * c));
            let scaled = round_f16(_mm256_mul_ps(_mm256_loadu_ps(a), s));
            _mm256_storeu_ps(a, round_f16(_mm256_fmadd_ps(vv, w, scaled)));
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

    /// The SIMD key dot and value update give exactly the scalar loops' bits.
    #[test]
    fn simd_inner_loops_bit_identical_to_scalar() {
        let mut seed = 11;
        for hd in [8, 64, 256] {
            for _ in 0..50 {
                let q: Vec<f32> = rand_vec(hd, &mut seed)
                    .iter()
                    .map(|&v| round_f16(v * 3.0))
                    .collect();
                let k: Vec<f16> = rand_vec(hd, &mut seed)
                    .iter()
                    .map(|&v| f16::from_f32(v * 5.0))
                    .collect();
                let v: Vec<f16> = rand_vec(hd, &mut seed)
                    .iter()
                    .map(|&v| f16::from_f32(v * 7.0))
                    .collect();
                let mut kf = vec![0f32; hd];
                k.convert_to_f32_slice(&mut kf);
                let mut tmp = vec![0f32; hd];
                let mut tmp2 = vec![0f32; hd];
                assert_eq!(
                    key_dot(&q, &k, &mut tmp).to_bits(),
                    key_dot_scalar(&q, &k, &mut tmp2).to_bits()
                );
                // The same sum as a plain dot, up to rounding.
                assert!((key_dot(&q, &k, &mut tmp) - dot(&q, &kf)).abs() < 1e-3);
                let acc0: Vec<f32> = rand_vec(hd, &mut seed)
                    .iter()
                    .map(|&v| round_f16(v * 100.0))
                    .collect();
                let (scale, weight) = (
                    rand_vec(2, &mut seed)[0].abs(),
                    rand_vec(2, &mut seed)[1].abs(),
                );
                let mut got = acc0.clone();
                value_update(&mut got, &v, scale, weight, &mut tmp);
                let mut vf = vec![0f32; hd];
                v.convert_to_f32_slice(&mut vf);
                for d in 0..hd {
                    let want = round_f16(vf[d].mul_add(weight, round_f16(acc0[d] * scale)));
                    assert_eq!(got[d].to_bits(), want.to_bits());
                }
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
        let mut cache = b.new_kv_cache(1, n_ctx, kv_dim);
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
            let mut cache = b.new_kv_cache(2, n_ctx, kv_dim);
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
