//! AVX2+FMA+F16C dot kernels (x86_64). Each mirrors its twin in `scalar` exactly in the integer
//! parts; only the order of float accumulation differs. Selected at run time by `vec_dot`.

#![allow(clippy::missing_safety_doc)]
// Index loops mirror the block bit layouts, which read clearer than zipped iterators.
#![allow(clippy::needless_range_loop)]

use super::qvec::QuantizedVec;
use super::{GgmlType, QK_K};
use std::arch::x86_64::*;
use std::sync::atomic::{AtomicU8, Ordering};

static STATE: AtomicU8 = AtomicU8::new(0); // 0 unknown, 1 no, 2 yes

/// Whether this CPU has AVX2, FMA and F16C (detected once, then cached).
#[inline]
pub fn available() -> bool {
    match STATE.load(Ordering::Relaxed) {
        2 => true,
        1 => false,
        _ => {
            let ok = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            STATE.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
            ok
        }
    }
}

/// The fast kernel for `ty`, if there is one. Caller has checked lengths and `available()`.
#[inline]
pub(crate) fn vec_dot(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> Option<f32> {
    let nb = x.len / ty.block_len();
    // SAFETY: `available()` was checked by the caller; lengths were checked against `nb` blocks.
    unsafe {
        Some(match ty {
            GgmlType::F32 => dot_f32(row.as_ptr(), x.f.as_ptr(), x.len),
            GgmlType::F16 => dot_f16(row.as_ptr(), x.f.as_ptr(), x.len),
            GgmlType::Q4_0 => dot_q4_0(row.as_ptr(), x, nb),
            GgmlType::Q4_1 => dot_q4_1(row.as_ptr(), x, nb),
            GgmlType::Q5_0 => dot_q5_0(row.as_ptr(), x, nb),
            GgmlType::Q8_0 => dot_q8_0(row.as_ptr(), x, nb),
            GgmlType::Q4_K => dot_q4_k(row.as_ptr(), x, nb),
            GgmlType::Q6_K => dot_q6_k(row.as_ptr(), x, nb),
            _ => return None,
        })
    }
}

#[inline(always)]
unsafe fn f16_to_f32(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Sum of adjacent products of unsigned bytes `u` and signed bytes `s`, as 8 f32 lanes.
#[inline(always)]
unsafe fn mul_sum_us8(u: __m256i, s: __m256i) -> __m256 {
    let p16 = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
}

/// Same for two signed byte vectors (moves the sign of `a` onto `b`).
#[inline(always)]
unsafe fn mul_sum_i8(a: __m256i, b: __m256i) -> __m256 {
    mul_sum_us8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

/// 16 packed nibble bytes -> 32 bytes: low nibbles (elements 0..16), then high (16..32).
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    let lo = _mm_and_si128(t, _mm_set1_epi8(0xF));
    let hi = _mm_and_si128(_mm_srli_epi16(t, 4), _mm_set1_epi8(0xF));
    _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1)
}

/// 32 bits -> 32 bytes, 0xFF where the bit is set.
#[inline(always)]
unsafe fn bytes_from_bits(bits: u32) -> __m256i {
    let t = _mm256_set1_epi32(bits as i32);
    let shuf = _mm256_setr_epi64x(
        0,
        0x0101010101010101,
        0x0202020202020202,
        0x0303030303030303,
    );
    let b = _mm256_shuffle_epi8(t, shuf);
    let b = _mm256_or_si256(b, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(w: *const u8, x: *const f32, n: usize) -> f32 {
    let w = w as *const f32;
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *a = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(o)), _mm256_loadu_ps(x.add(o)), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w.add(i)), _mm256_loadu_ps(x.add(i)), acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum(s);
    while i < n {
        sum += w.add(i).read_unaligned() * *x.add(i);
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(w: *const u8, x: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * o) as *const __m128i));
            *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(o)), *a);
        }
        i += 16;
    }
    let mut sum = hsum(_mm256_add_ps(acc[0], acc[1]));
    while i < n {
        sum += f16_to_f32(w.add(2 * i)) * *x.add(i);
        i += 1;
    }
    sum
}

/// Products of one 32-block of Q4_0 weights with its Q8_0 activations (unscaled).
#[inline(always)]
unsafe fn blk_q4_0(b: *const u8, y: *const i8) -> __m256 {
    let q = _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8));
    mul_sum_i8(q, _mm256_loadu_si256(y as *const __m256i))
}

#[inline(always)]
unsafe fn blk_q4_1(b: *const u8, y: *const i8) -> __m256 {
    mul_sum_us8(nibbles32(b.add(4)), _mm256_loadu_si256(y as *const __m256i))
}

#[inline(always)]
unsafe fn blk_q5_0(b: *const u8, y: *const i8) -> __m256 {
    let qh = (b.add(2) as *const u32).read_unaligned();
    // value = nibble + 16*bit - 16: setting the top nibble where the bit is clear does it.
    let hi = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
    let q = _mm256_or_si256(nibbles32(b.add(6)), hi);
    mul_sum_i8(q, _mm256_loadu_si256(y as *const __m256i))
}

#[inline(always)]
unsafe fn blk_q8_0(b: *const u8, y: *const i8) -> __m256 {
    let q = _mm256_loadu_si256(b.add(2) as *const __m256i);
    mul_sum_i8(q, _mm256_loadu_si256(y as *const __m256i))
}

/// Shared loop of the 32-block formats: two blocks per step into independent accumulators
/// (hides FMA latency); `$blk` gives a block's integer products, the scale is d_w*d_x.
/// A macro so that `$blk` is inlined into each `target_feature` kernel.
macro_rules! dot_blocks32 {
    ($w:expr, $bb:expr, $x:expr, $nb:expr, $blk:ident) => {{
        let (w, bb, x, nb) = ($w, $bb, $x, $nb);
        let (xq, xd) = (x.qs.as_ptr(), x.d.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 2 <= nb {
            let b0 = w.add(bb * i);
            let b1 = w.add(bb * (i + 1));
            let p0 = $blk(b0, xq.add(32 * i));
            let p1 = $blk(b1, xq.add(32 * i + 32));
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b0) * *xd.add(i)), p0, acc0);
            acc1 = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b1) * *xd.add(i + 1)), p1, acc1);
            i += 2;
        }
        if i < nb {
            let b0 = w.add(bb * i);
            let p0 = $blk(b0, xq.add(32 * i));
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b0) * *xd.add(i)), p0, acc0);
        }
        hsum(_mm256_add_ps(acc0, acc1))
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_0(w: *const u8, x: &QuantizedVec, nb: usize) -> f32 {
    dot_blocks32!(w, 18, x, nb, blk_q4_0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_1(w: *const u8, x: &QuantizedVec, nb: usize) -> f32 {
    let (xq, xd, xs) = (x.qs.as_ptr(), x.d.as_ptr(), x.s.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    // Per block: d and m of the weights (f16 pair converted together), times d_x and s_x.
    let mut accm = _mm_setzero_ps();
    let mut i = 0;
    while i + 2 <= nb {
        let b0 = w.add(20 * i);
        let b1 = w.add(20 * i + 20);
        let dm0 = _mm_cvtph_ps(_mm_cvtsi32_si128((b0 as *const i32).read_unaligned()));
        let dm1 = _mm_cvtph_ps(_mm_cvtsi32_si128((b1 as *const i32).read_unaligned()));
        let p0 = blk_q4_1(b0, xq.add(32 * i));
        let p1 = blk_q4_1(b1, xq.add(32 * i + 32));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(_mm_cvtss_f32(dm0) * *xd.add(i)), p0, acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_set1_ps(_mm_cvtss_f32(dm1) * *xd.add(i + 1)),
            p1,
            acc1,
        );
        // lanes 1: m0*s0 and m1*s1 accumulate side by side
        let m = _mm_unpacklo_ps(_mm_movehdup_ps(dm0), _mm_movehdup_ps(dm1));
        let sx = _mm_castsi128_ps(_mm_loadl_epi64(xs.add(i) as *const __m128i));
        accm = _mm_fmadd_ps(m, sx, accm);
        i += 2;
    }
    let mut tail = 0.0f32;
    if i < nb {
        let b0 = w.add(20 * i);
        let p0 = blk_q4_1(b0, xq.add(32 * i));
        acc0 = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(b0) * *xd.add(i)), p0, acc0);
        tail = f16_to_f32(b0.add(2)) * *xs.add(i);
    }
    let mut m = [0.0f32; 4];
    _mm_storeu_ps(m.as_mut_ptr(), accm);
    hsum(_mm256_add_ps(acc0, acc1)) + (m[0] + m[1]) + tail
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q5_0(w: *const u8, x: &QuantizedVec, nb: usize) -> f32 {
    dot_blocks32!(w, 22, x, nb, blk_q5_0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q8_0(w: *const u8, x: &QuantizedVec, nb: usize) -> f32 {
    dot_blocks32!(w, 34, x, nb, blk_q8_0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k(w: *const u8, x: &QuantizedVec, nb: usize) -> f32 {
    let (xq, xd, xb) = (x.qs.as_ptr(), x.d.as_ptr(), x.bsums.as_ptr());
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = 0.0f32;
    for i in 0..nb {
        let b = w.add(144 * i);
        let dx = *xd.add(i);
        let d = f16_to_f32(b) * dx;
        let dmin = f16_to_f32(b.add(2)) * dx;
        let scales = std::slice::from_raw_parts(b.add(4), 12);
        let mut sc = [0i16; 8];
        let mut summ = 0i32;
        for (j, s) in sc.iter_mut().enumerate() {
            let (s6, m6) = super::dequant::scale_min_k4(j, scales);
            *s = s6 as i16;
            summ +=
                m6 as i32 * (*xb.add(16 * i + 2 * j) as i32 + *xb.add(16 * i + 2 * j + 1) as i32);
        }
        acc_m += dmin * summ as f32;
        let qs = b.add(16);
        let y = xq.add(QK_K * i);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let q4 = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            let yl = _mm256_loadu_si256(y.add(64 * j) as *const __m256i);
            let yh = _mm256_loadu_si256(y.add(64 * j + 32) as *const __m256i);
            let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, yl), _mm256_set1_epi16(sc[2 * j]));
            let ph = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, yh),
                _mm256_set1_epi16(sc[2 * j + 1]),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc) - acc_m
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k(w: *const u8, x: &QuantizedVec, nb: usize) -> f32 {
    let (xq, xd) = (x.qs.as_ptr(), x.d.as_ptr());
    let m4 = _mm256_set1_epi8(0xF);
    let m32 = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let b = w.add(210 * i);
        let d = f16_to_f32(b.add(208)) * *xd.add(i);
        let sc = b.add(192) as *const i8;
        let y = xq.add(QK_K * i);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let ql1 = _mm256_loadu_si256(b.add(64 * n) as *const __m256i);
            let ql2 = _mm256_loadu_si256(b.add(64 * n + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.add(128 + 32 * n) as *const __m256i);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2);
            let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(0x30));
            let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0xC0u8 as i8)), 2);
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql1, m4), h0),
                _mm256_or_si256(_mm256_and_si256(ql2, m4), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4), h3),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let yk = _mm256_loadu_si256(y.add(128 * n + 32 * k) as *const __m256i);
                let p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(qk, yk), _mm256_maddubs_epi16(m32, yk));
                let s0 = *sc.add(8 * n + 2 * k) as i16;
                let s1 = *sc.add(8 * n + 2 * k + 1) as i16;
                let scv = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_set1_epi16(s0)),
                    _mm_set1_epi16(s1),
                    1,
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scv));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}

/// Dots of one weight row with four activations at once (prefill): each weight block is
/// unpacked once and reused for the four inputs. `None` where there is no batched kernel.
#[inline]
pub(crate) fn vec_dot_x4(ty: GgmlType, row: &[u8], xs: [&QuantizedVec; 4]) -> Option<[f32; 4]> {
    let nb = xs[0].len / ty.block_len();
    // SAFETY: caller checked `available()` and every (row, x) pair with `check_dot_args`.
    unsafe {
        Some(match ty {
            GgmlType::Q4_0 => x4_q4_0(row.as_ptr(), xs, nb),
            GgmlType::Q5_0 => x4_q5_0(row.as_ptr(), xs, nb),
            GgmlType::Q8_0 => x4_q8_0(row.as_ptr(), xs, nb),
            GgmlType::Q4_1 => x4_q4_1(row.as_ptr(), xs, nb),
            GgmlType::Q4_K => x4_q4_k(row.as_ptr(), xs, nb),
            GgmlType::Q6_K => x4_q6_k(row.as_ptr(), xs, nb),
            _ => return None,
        })
    }
}

#[inline(always)]
unsafe fn unpack_q4_0(b: *const u8) -> __m256i {
    _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8))
}

#[inline(always)]
unsafe fn unpack_q5_0(b: *const u8) -> __m256i {
    let qh = (b.add(2) as *const u32).read_unaligned();
    let hi = _mm256_andnot_si256(bytes_from_bits(qh), _mm256_set1_epi8(0xF0u8 as i8));
    _mm256_or_si256(nibbles32(b.add(6)), hi)
}

#[inline(always)]
unsafe fn unpack_q8_0(b: *const u8) -> __m256i {
    _mm256_loadu_si256(b.add(2) as *const __m256i)
}

/// Batched loop for the signed 32-block formats (weights times Q8_0 activations).
macro_rules! x4_signed32 {
    ($w:expr, $bb:expr, $xs:expr, $nb:expr, $unpack:ident) => {{
        let (w, bb, xs, nb) = ($w, $bb, $xs, $nb);
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in 0..nb {
            let b = w.add(bb * i);
            let q = $unpack(b);
            let ax = _mm256_sign_epi8(q, q);
            let dw = f16_to_f32(b);
            for k in 0..4 {
                let x = xs[k];
                let y = _mm256_loadu_si256(x.qs.as_ptr().add(32 * i) as *const __m256i);
                let p = mul_sum_us8(ax, _mm256_sign_epi8(y, q));
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * *x.d.as_ptr().add(i)), p, acc[k]);
            }
        }
        [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x4_q4_0(w: *const u8, xs: [&QuantizedVec; 4], nb: usize) -> [f32; 4] {
    x4_signed32!(w, 18, xs, nb, unpack_q4_0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x4_q5_0(w: *const u8, xs: [&QuantizedVec; 4], nb: usize) -> [f32; 4] {
    x4_signed32!(w, 22, xs, nb, unpack_q5_0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x4_q8_0(w: *const u8, xs: [&QuantizedVec; 4], nb: usize) -> [f32; 4] {
    x4_signed32!(w, 34, xs, nb, unpack_q8_0)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x4_q4_1(w: *const u8, xs: [&QuantizedVec; 4], nb: usize) -> [f32; 4] {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut accm = _mm_setzero_ps();
    for i in 0..nb {
        let b = w.add(20 * i);
        let q = nibbles32(b.add(4));
        let dw = f16_to_f32(b);
        let mut sx = [0.0f32; 4];
        for k in 0..4 {
            let x = xs[k];
            let y = _mm256_loadu_si256(x.qs.as_ptr().add(32 * i) as *const __m256i);
            let p = mul_sum_us8(q, y);
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * *x.d.as_ptr().add(i)), p, acc[k]);
            sx[k] = *x.s.as_ptr().add(i);
        }
        let m = _mm_set1_ps(f16_to_f32(b.add(2)));
        accm = _mm_fmadd_ps(m, _mm_loadu_ps(sx.as_ptr()), accm);
    }
    let mut m = [0.0f32; 4];
    _mm_storeu_ps(m.as_mut_ptr(), accm);
    [
        hsum(acc[0]) + m[0],
        hsum(acc[1]) + m[1],
        hsum(acc[2]) + m[2],
        hsum(acc[3]) + m[3],
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x4_q4_k(w: *const u8, xs: [&QuantizedVec; 4], nb: usize) -> [f32; 4] {
    let m4 = _mm256_set1_epi8(0xF);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut accm = [0.0f32; 4];
    for i in 0..nb {
        let b = w.add(144 * i);
        let d = f16_to_f32(b);
        let dmin = f16_to_f32(b.add(2));
        let scales = std::slice::from_raw_parts(b.add(4), 12);
        let mut sc = [0i16; 8];
        let mut mn = [0i32; 8];
        for j in 0..8 {
            let (s6, m6) = super::dequant::scale_min_k4(j, scales);
            sc[j] = s6 as i16;
            mn[j] = m6 as i32;
        }
        for k in 0..4 {
            let bs = xs[k].bsums.as_ptr().add(16 * i);
            let mut summ = 0i32;
            for j in 0..8 {
                summ += mn[j] * (*bs.add(2 * j) as i32 + *bs.add(2 * j + 1) as i32);
            }
            accm[k] += dmin * *xs[k].d.as_ptr().add(i) * summ as f32;
        }
        let qs = b.add(16);
        let mut sumi = [_mm256_setzero_si256(); 4];
        for j in 0..4 {
            let q4 = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let lo = _mm256_and_si256(q4, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), m4);
            let sl = _mm256_set1_epi16(sc[2 * j]);
            let sh = _mm256_set1_epi16(sc[2 * j + 1]);
            for k in 0..4 {
                let y = xs[k].qs.as_ptr().add(QK_K * i);
                let yl = _mm256_loadu_si256(y.add(64 * j) as *const __m256i);
                let yh = _mm256_loadu_si256(y.add(64 * j + 32) as *const __m256i);
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, yl), sl);
                let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, yh), sh);
                sumi[k] = _mm256_add_epi32(sumi[k], _mm256_add_epi32(pl, ph));
            }
        }
        for k in 0..4 {
            let dk = _mm256_set1_ps(d * *xs[k].d.as_ptr().add(i));
            acc[k] = _mm256_fmadd_ps(dk, _mm256_cvtepi32_ps(sumi[k]), acc[k]);
        }
    }
    [
        hsum(acc[0]) - accm[0],
        hsum(acc[1]) - accm[1],
        hsum(acc[2]) - accm[2],
        hsum(acc[3]) - accm[3],
    ]
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn x4_q6_k(w: *const u8, xs: [&QuantizedVec; 4], nb: usize) -> [f32; 4] {
    let m4 = _mm256_set1_epi8(0xF);
    let m32 = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let b = w.add(210 * i);
        let d = f16_to_f32(b.add(208));
        let sc = b.add(192) as *const i8;
        let mut sumi = [_mm256_setzero_si256(); 4];
        for n in 0..2 {
            let ql1 = _mm256_loadu_si256(b.add(64 * n) as *const __m256i);
            let ql2 = _mm256_loadu_si256(b.add(64 * n + 32) as *const __m256i);
            let qh = _mm256_loadu_si256(b.add(128 + 32 * n) as *const __m256i);
            let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4);
            let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2);
            let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(0x30));
            let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0xC0u8 as i8)), 2);
            let q = [
                _mm256_or_si256(_mm256_and_si256(ql1, m4), h0),
                _mm256_or_si256(_mm256_and_si256(ql2, m4), h1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m4), h3),
            ];
            for (j, &qj) in q.iter().enumerate() {
                let s0 = *sc.add(8 * n + 2 * j) as i16;
                let s1 = *sc.add(8 * n + 2 * j + 1) as i16;
                let scv = _mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_set1_epi16(s0)),
                    _mm_set1_epi16(s1),
                    1,
                );
                for k in 0..4 {
                    let y = xs[k].qs.as_ptr().add(QK_K * i + 128 * n + 32 * j);
                    let yk = _mm256_loadu_si256(y as *const __m256i);
                    let p = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(qj, yk),
                        _mm256_maddubs_epi16(m32, yk),
                    );
                    sumi[k] = _mm256_add_epi32(sumi[k], _mm256_madd_epi16(p, scv));
                }
            }
        }
        for k in 0..4 {
            let dk = _mm256_set1_ps(d * *xs[k].d.as_ptr().add(i));
            acc[k] = _mm256_fmadd_ps(dk, _mm256_cvtepi32_ps(sumi[k]), acc[k]);
        }
    }
    [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
}

/// Rounds half away from zero exactly like `f32::round` (the scalar quantisers' rounding):
/// truncate, then step away from zero when the dropped fraction is at least one half.
#[inline(always)]
unsafe fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let frac = _mm256_sub_ps(v, t);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let ge_half = _mm256_cmp_ps(
        _mm256_and_ps(frac, abs_mask),
        _mm256_set1_ps(0.5),
        _CMP_GE_OQ,
    );
    let one = _mm256_or_ps(
        _mm256_set1_ps(1.0),
        _mm256_andnot_ps(abs_mask, v), // sign of v
    );
    _mm256_add_ps(t, _mm256_and_ps(ge_half, one))
}

/// 32 floats (already scaled and rounded) -> 32 i8, in order.
#[inline(always)]
unsafe fn pack32(v: [__m256; 4], q: *mut i8) {
    let a = _mm256_cvtps_epi32(v[0]);
    let b = _mm256_cvtps_epi32(v[1]);
    let c = _mm256_cvtps_epi32(v[2]);
    let d = _mm256_cvtps_epi32(v[3]);
    let ab = _mm256_packs_epi32(a, b);
    let cd = _mm256_packs_epi32(c, d);
    let p = _mm256_packs_epi16(ab, cd);
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q as *mut __m256i, p);
}

/// AVX2 twin of `quantize::quantize_block_q8` (bit-identical output).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_block_q8(x: &[f32], q: &mut [i8]) -> f32 {
    debug_assert!(x.len() == 32 && q.len() == 32);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let v = [
        _mm256_loadu_ps(x.as_ptr()),
        _mm256_loadu_ps(x.as_ptr().add(8)),
        _mm256_loadu_ps(x.as_ptr().add(16)),
        _mm256_loadu_ps(x.as_ptr().add(24)),
    ];
    let m = _mm256_max_ps(
        _mm256_max_ps(_mm256_and_ps(v[0], abs_mask), _mm256_and_ps(v[1], abs_mask)),
        _mm256_max_ps(_mm256_and_ps(v[2], abs_mask), _mm256_and_ps(v[3], abs_mask)),
    );
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
    let amax = _mm_cvtss_f32(m1);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let r = [
        round_away(_mm256_mul_ps(v[0], idv)),
        round_away(_mm256_mul_ps(v[1], idv)),
        round_away(_mm256_mul_ps(v[2], idv)),
        round_away(_mm256_mul_ps(v[3], idv)),
    ];
    pack32(r, q.as_mut_ptr());
    d
}

/// AVX2 twin of `quantize::quantize_block_q8k` (bit-identical output).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn quantize_block_q8k(x: &[f32], q: &mut [i8], bsums: &mut [i16]) -> f32 {
    assert!(x.len() == QK_K && q.len() == QK_K && bsums.len() == 16);
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for k in 0..32 {
        m = _mm256_max_ps(
            m,
            _mm256_and_ps(_mm256_loadu_ps(x.as_ptr().add(8 * k)), abs_mask),
        );
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
    if amax == 0.0 {
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    // The signed value of the first element reaching the maximum magnitude, as the scalar does.
    let max = *x.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
    let iscale = -127.0 / max;
    let iv = _mm256_set1_ps(iscale);
    let lim = _mm256_set1_ps(127.0);
    for c in 0..8 {
        let p = x.as_ptr().add(32 * c);
        let r = [
            _mm256_min_ps(round_away(_mm256_mul_ps(iv, _mm256_loadu_ps(p))), lim),
            _mm256_min_ps(
                round_away(_mm256_mul_ps(iv, _mm256_loadu_ps(p.add(8)))),
                lim,
            ),
            _mm256_min_ps(
                round_away(_mm256_mul_ps(iv, _mm256_loadu_ps(p.add(16)))),
                lim,
            ),
            _mm256_min_ps(
                round_away(_mm256_mul_ps(iv, _mm256_loadu_ps(p.add(24)))),
                lim,
            ),
        ];
        pack32(r, q.as_mut_ptr().add(32 * c));
    }
    for (s, c) in bsums.iter_mut().zip(q.chunks_exact(16)) {
        *s = c.iter().map(|&v| v as i16).sum();
    }
    1.0 / iscale
}
