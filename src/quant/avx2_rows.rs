//! Kernels that dot four weight rows with one activation row: the sparse FFN's gather of
//! scattered rows, and (Q4_0, Q4_1) the contiguous rows of `matvec`.
//!
//! Why: the single-row kernels keep one accumulator in block order (llama.cpp's order), so a
//! row is one chain of dependent FMAs, and a scattered row's memory latency is exposed row by
//! row. Four rows give four independent chains whose misses overlap, and the activation block,
//! its scale and its offset correction are loaded once for the four (`benches/sparse_ffn.rs`:
//! ~1.5× on 15% of a 1B-class layer's rows). Each row still gets exactly the floating-point
//! operations of the single-row kernel in the same order (the per-lane integer sums are
//! computed another way, but integers are exact), so results are bit-identical.
//!
//! The kernels also prefetch the next group of rows, a few lines per block. Why: a
//! software prefetch holds one of the core's ~16 L1 miss buffers until its line arrives, so
//! asking for a whole group's lines at once (72 for four Q4_0 rows of 2,048) stalls the core
//! on the prefetch instructions themselves (15% of a sparse token's samples sat on them).
//! Spread over the blocks, the requests keep the buffers busy while the arithmetic goes on:
//! one thread streaming Q4_0 rows from DRAM went from 7.5 to 10 GB/s, against 11 GB/s for a
//! plain sum of the same bytes.

use std::arch::x86_64::*;

use super::avx2::{available, f16_splat, f16x2, has_vnni, hsum_ps, mul_s8_ps, mul_us8_ps, nibbles};
use super::GgmlType;

/// Four weight rows (whole blocks, equal lengths) against one activation row; the last
/// argument is the next four rows the caller will read, prefetched on the way (a hint only:
/// pass the same rows again when there are none).
pub type DotRows4 = fn([&[u8]; 4], &[u8], &mut [f32; 4], [&[u8]; 4]);

/// The best four-row kernel for weights of type `ty`, where one exists and the CPU runs it.
pub fn kernel_rows4(ty: GgmlType) -> Option<DotRows4> {
    kernel_rows4_with(ty, has_vnni())
}

/// The four-row kernel for `ty`, using VNNI where `vnni` (`None` if unsupported here); it
/// matches `avx2::kernel_with(ty, vnni)` bit for bit.
pub fn kernel_rows4_with(ty: GgmlType, vnni: bool) -> Option<DotRows4> {
    if !available() || (vnni && !has_vnni()) {
        return None;
    }
    let v = |a: DotRows4, b: DotRows4| Some(if vnni { b } else { a });
    match ty {
        GgmlType::Q4_0 => v(rows4_q4_0_q8_0::<false>, rows4_q4_0_q8_0::<true>),
        GgmlType::Q4_1 => v(rows4_q4_1_q8_1::<false>, rows4_q4_1_q8_1::<true>),
        GgmlType::Q8_0 => v(rows4_q8_0_q8_0::<false>, rows4_q8_0_q8_0::<true>),
        _ => None,
    }
}

/// The safe entry of a four-row kernel body: checks the lengths it relies on, and runs the
/// body compiled for AVX2 or for AVX-512 VNNI.
macro_rules! rows4_wrapper {
    ($name:ident, $body:ident, $wbb:expr, $xbb:expr) => {
        fn $name<const V: bool>(w: [&[u8]; 4], x: &[u8], out: &mut [f32; 4], next: [&[u8]; 4]) {
            type P = [*const u8; 4];
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn plain(w: P, x: *const u8, nb: usize, out: &mut [f32; 4], next: Ahead) {
                $body::<false>(w, x, nb, out, next)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn vnni(w: P, x: *const u8, nb: usize, out: &mut [f32; 4], next: Ahead) {
                $body::<true>(w, x, nb, out, next)
            }
            let nb = w[0].len() / $wbb;
            assert!(
                w.iter().all(|r| r.len() == nb * $wbb) && x.len() >= nb * $xbb,
                "four-row kernel: row lengths"
            );
            let p = w.map(|r| r.as_ptr());
            let next = Ahead::new::<$wbb>(next, nb);
            // SAFETY: handed out by `kernel_rows4_with` only when the features are present;
            // lengths checked above.
            unsafe {
                if V {
                    vnni(p, x.as_ptr(), nb, out, next)
                } else {
                    plain(p, x.as_ptr(), nb, out, next)
                }
            }
        }
    };
}

rows4_wrapper!(rows4_q4_0_q8_0, q4_0_rows4, 18, 34);
rows4_wrapper!(rows4_q4_1_q8_1, q4_1_rows4, 20, 36);
rows4_wrapper!(rows4_q8_0_q8_0, q8_0_rows4, 34, 34);

/// The next four rows, prefetched a few lines per block: block `i` makes requests
/// `per·i .. per·i + per` of the `per·nb` that cover the rows, request `k` going to row
/// `k % 4` at `(k / 4)·stride` bytes (`stride` ≤ 64, so every line of a row is asked for).
#[derive(Clone, Copy)]
struct Ahead {
    rows: [*const u8; 4],
    /// The last byte offset inside every row (requests are clamped to it).
    last: usize,
    /// Requests per block: the lines four blocks span (2 for Q4_0, 3 for Q8_0), 0 for none.
    per: usize,
    stride: usize,
}

impl Ahead {
    fn new<const BB: usize>(next: [&[u8]; 4], nb: usize) -> Self {
        let len = next.iter().map(|r| r.len()).min().unwrap_or(0);
        let per = if len > 0 && nb > 0 {
            (4 * BB).div_ceil(64)
        } else {
            0
        };
        Ahead {
            rows: next.map(|r| r.as_ptr()),
            last: len.saturating_sub(1),
            per,
            // 4·BB bytes to cover per block in `per` requests, rounded up so that the
            // requests reach the end of a row.
            stride: (4 * BB).div_ceil(per.max(1)),
        }
    }

    /// The requests of block `i`.
    #[inline(always)]
    unsafe fn block(&self, i: usize) {
        for j in 0..self.per {
            let k = self.per * i + j;
            let off = ((k / 4) * self.stride).min(self.last);
            // SAFETY: `off` is inside every one of the four rows; prefetch never faults.
            _mm_prefetch::<_MM_HINT_T1>(self.rows[k % 4].add(off) as *const i8);
        }
    }
}

/// Unsigned bytes × signed bytes summed in groups of four, added to the i32 lanes of `acc`.
#[inline(always)]
unsafe fn dot_us8<const V: bool>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
    if V {
        _mm256_dpbusd_epi32(acc, u, s)
    } else {
        // |u| ≤ 15 and |s| ≤ 127 here: the 16-bit pair sums cannot saturate.
        let p = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
}

/// Per block: `acc_r = fma(d_w·d_x, Σ_lane (q_w − 8)·q_x, acc_r)` as the single-row kernel,
/// with the lane sums taken as `Σ nibble·q_x − 8·Σ q_x` (the second term shared by the rows).
#[inline(always)]
unsafe fn q4_0_rows4<const V: bool>(
    w: [*const u8; 4],
    x: *const u8,
    nb: usize,
    out: &mut [f32; 4],
    next: Ahead,
) {
    let zero = _mm256_setzero_si256();
    let eight = _mm256_set1_epi8(8);
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        next.block(i);
        let xb = x.add(34 * i);
        let dx = f16_splat(xb);
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        let neg = _mm256_sub_epi32(zero, dot_us8::<V>(zero, eight, qx));
        for (r, acc) in acc.iter_mut().enumerate() {
            let wb = w[r].add(18 * i);
            let d = _mm256_mul_ps(f16_splat(wb), dx);
            let s = dot_us8::<V>(neg, nibbles(wb.add(2)), qx);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum_ps(acc);
    }
}

/// Per block, as the single-row Q4_1 kernel: lanes of `ds` are `[d_w·d_x, m_w·s_x]`, the
/// second summed apart (fused, as that kernel) as the offset term, added after the horizontal
/// sum.
#[inline(always)]
unsafe fn q4_1_rows4<const V: bool>(
    w: [*const u8; 4],
    x: *const u8,
    nb: usize,
    out: &mut [f32; 4],
    next: Ahead,
) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offs = [_mm_setzero_ps(); 4];
    for i in 0..nb {
        next.block(i);
        let xb = x.add(36 * i);
        let dsx = f16x2(xb);
        let qx = _mm256_loadu_si256(xb.add(4) as *const __m256i);
        for r in 0..4 {
            let wb = w[r].add(20 * i);
            let wdm = f16x2(wb);
            let ds = _mm_mul_ps(wdm, dsx);
            offs[r] = _mm_fmadd_ps(wdm, dsx, offs[r]);
            let p = mul_us8_ps::<V>(nibbles(wb.add(4)), qx);
            acc[r] = _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), p, acc[r]);
        }
    }
    for r in 0..4 {
        out[r] = hsum_ps(acc[r]) + _mm_cvtss_f32(_mm_movehdup_ps(offs[r]));
    }
}

/// Per block, as the single-row Q8_0 kernel: `acc = fma(d_w·d_x, Σ_lane q_w·q_x, acc)`.
#[inline(always)]
unsafe fn q8_0_rows4<const V: bool>(
    w: [*const u8; 4],
    x: *const u8,
    nb: usize,
    out: &mut [f32; 4],
    next: Ahead,
) {
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        next.block(i);
        let xb = x.add(34 * i);
        let dx = f16_splat(xb);
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        for (r, acc) in acc.iter_mut().enumerate() {
            let wb = w[r].add(34 * i);
            let d = _mm256_mul_ps(f16_splat(wb), dx);
            let qw = _mm256_loadu_si256(wb.add(2) as *const __m256i);
            *acc = _mm256_fmadd_ps(d, mul_s8_ps::<V>(qw, qx), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum_ps(acc);
    }
}
