//! AVX2 (and, where the CPU has it, AVX-512) kernel of the neuron-major down accumulation for
//! 4-bit levels with f16 group scales (the layout `TransposedDown` builds for Q4_0 and Q4_1
//! models).
//!
//! Why a kernel of its own: the portable loops make three passes over the outputs per scale
//! group (clear a scratch sum, add each neuron into it, scale it into the output, with the
//! scales converted to f32 in between). With ~6% of neurons kept almost every group holds
//! one or two of them, so those passes, not the weights, were most of the time. Here a group
//! is one pass over 64-row blocks with its partial sum in registers.
//!
//! Every output gets exactly the floating-point operations of the portable loops, in the same
//! order (`acc = fma(level, a, acc)` per neuron from zero, then `out = fma(acc, scale, out)`,
//! then `out = fma(offset, sum_a, out)`), so both paths give the same bits (tested).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use half::f16;

use crate::quant::prefetch;

/// Rows per register block: 32 packed bytes hold rows `i` (low nibble) and `32 + i`.
pub(super) const ROWS: usize = 64;

/// The 4-bit levels and f16 scales of one neuron-major down matrix.
pub(super) struct NibbleF16<'a> {
    /// Packed levels: neuron `j`'s `d / 2` bytes start at `j * stride`.
    pub q: &'a [u8],
    pub stride: usize,
    pub n_ff: usize,
    /// Added to every nibble to give the level.
    pub bias: i8,
    /// Group-major scales `[group][d]`.
    pub scale: &'a [f16],
    /// Group-major offsets, where the format has them (Q4_1).
    pub offset: Option<&'a [f16]>,
    pub group: usize,
    pub d: usize,
}

/// Whether this CPU can run these kernels (AVX2, FMA, F16C: the quant kernels' set).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::quant::avx2::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU can run the 512-bit body of [`accumulate`] (AVX-512 F), which it then
/// prefers.
pub(super) fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::quant::avx2::has_avx512vl();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out` (rows `r0..r0 + out.len()`, already zeroed) `+= Σ_j a[j] · column j` over `active`
/// (ascending), as `TransposedDown::accumulate_rows`. `r0` and `out.len()` are multiples of
/// [`ROWS`]; callers check [`available`].
pub(super) fn accumulate(
    m: &NibbleF16,
    active: &[u32],
    a: &[f32],
    group_sums: Option<&[f32]>,
    r0: usize,
    out: &mut [f32],
) {
    accumulate_with(wide_available(), m, active, a, group_sums, r0, out)
}

/// [`accumulate`] through the 512-bit body (`wide`, where [`wide_available`]) or the 256-bit
/// one: the same operations in the same order per output, so the same bits.
pub(super) fn accumulate_with(
    wide: bool,
    m: &NibbleF16,
    active: &[u32],
    a: &[f32],
    group_sums: Option<&[f32]>,
    r0: usize,
    out: &mut [f32],
) {
    assert!(!wide || wide_available(), "no AVX-512 here");
    assert!(r0.is_multiple_of(ROWS) && out.len().is_multiple_of(ROWS));
    assert!(r0 + out.len() <= m.d && m.d.is_multiple_of(ROWS));
    let n_ff = m.n_ff;
    assert!(m.stride >= m.d / 2 && (n_ff == 0 || (n_ff - 1) * m.stride + m.d / 2 <= m.q.len()));
    assert!(active
        .iter()
        .all(|&j| (j as usize) < n_ff && (j as usize) < a.len()));
    assert!(m.scale.len() >= n_ff / m.group * m.d);
    assert!(m.offset.is_none_or(|o| o.len() >= n_ff / m.group * m.d));
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: features checked; every index below is within the bounds asserted above.
        unsafe {
            if wide {
                accumulate_avx512(m, active, a, group_sums, r0, out)
            } else {
                accumulate_avx2(m, active, a, group_sums, r0, out)
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("callers check available()")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_avx2(
    m: &NibbleF16,
    active: &[u32],
    a: &[f32],
    group_sums: Option<&[f32]>,
    r0: usize,
    out: &mut [f32],
) {
    accumulate_body::<false>(m, active, a, group_sums, r0, out)
}

/// The same operations on 512-bit vectors: half the conversions and FMAs of the 256-bit body,
/// and sign extensions of 16 levels at once (those shuffles bound the 256-bit body).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn accumulate_avx512(
    m: &NibbleF16,
    active: &[u32],
    a: &[f32],
    group_sums: Option<&[f32]>,
    r0: usize,
    out: &mut [f32],
) {
    accumulate_body::<true>(m, active, a, group_sums, r0, out)
}

/// One group's block of [`ROWS`] output rows at `o` (already holding the earlier groups'
/// sums): `acc = Σ_j fma(level_j, a_j, acc)` over the neurons `js` (in order, from zero), then
/// `o = fma(acc, scale, o)` and, with offsets, `o = fma(offset, sum_a, o)`; `lv` points at the
/// block's levels of neuron 0 (`stride` bytes from a neuron's to the next), `s` and `off` at
/// its scales and offsets.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<const WIDE: bool>(
    lv: *const u8,
    stride: usize,
    bias: i8,
    js: &[u32],
    a: &[f32],
    s: *const f16,
    off: Option<*const f16>,
    sum_a: f32,
    o: *mut f32,
) {
    let mask = _mm256_set1_epi8(0x0F);
    let bias = _mm256_set1_epi8(bias);
    // The 64 levels of neuron `j`: rows 0..32 (low nibbles) and 32..64 (high nibbles).
    let levels = |j: usize| {
        let bytes = _mm256_loadu_si256(lv.add(j * stride) as *const __m256i);
        let lo = _mm256_add_epi8(_mm256_and_si256(bytes, mask), bias);
        let hi = _mm256_add_epi8(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask), bias);
        [lo, hi]
    };
    if WIDE {
        // Sixteen sign-extended levels as f32.
        let cvt = |v: __m128i| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
        let mut acc = [_mm512_setzero_ps(); 4];
        for &j in js {
            let j = j as usize;
            let av = _mm512_set1_ps(*a.get_unchecked(j));
            for (h, v) in levels(j).into_iter().enumerate() {
                let f = [
                    cvt(_mm256_castsi256_si128(v)),
                    cvt(_mm256_extracti128_si256(v, 1)),
                ];
                for (k, f) in f.into_iter().enumerate() {
                    acc[2 * h + k] = _mm512_fmadd_ps(f, av, acc[2 * h + k]);
                }
            }
        }
        let sum_v = _mm512_set1_ps(sum_a);
        for (k, acc) in acc.into_iter().enumerate() {
            let sc = _mm512_cvtph_ps(_mm256_loadu_si256(s.add(16 * k) as *const __m256i));
            let po = o.add(16 * k);
            let mut v = _mm512_fmadd_ps(acc, sc, _mm512_loadu_ps(po));
            if let Some(off) = off {
                let ov = _mm512_cvtph_ps(_mm256_loadu_si256(off.add(16 * k) as *const __m256i));
                v = _mm512_fmadd_ps(ov, sum_v, v);
            }
            _mm512_storeu_ps(po, v);
        }
    } else {
        // Eight sign-extended levels (the low 8 bytes of `v`) as f32.
        let cvt = |v: __m128i| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
        let mut acc = [_mm256_setzero_ps(); 8];
        for &j in js {
            let j = j as usize;
            let av = _mm256_set1_ps(*a.get_unchecked(j));
            for (h, v) in levels(j).into_iter().enumerate() {
                let v0 = _mm256_castsi256_si128(v);
                let v1 = _mm256_extracti128_si256(v, 1);
                let f = [
                    cvt(v0),
                    cvt(_mm_srli_si128(v0, 8)),
                    cvt(v1),
                    cvt(_mm_srli_si128(v1, 8)),
                ];
                for (k, f) in f.into_iter().enumerate() {
                    acc[4 * h + k] = _mm256_fmadd_ps(f, av, acc[4 * h + k]);
                }
            }
        }
        let sum_v = _mm256_set1_ps(sum_a);
        for (k, acc) in acc.into_iter().enumerate() {
            let sc = _mm256_cvtph_ps(_mm_loadu_si128(s.add(8 * k) as *const __m128i));
            let po = o.add(8 * k);
            let mut v = _mm256_fmadd_ps(acc, sc, _mm256_loadu_ps(po));
            if let Some(off) = off {
                let ov = _mm256_cvtph_ps(_mm_loadu_si128(off.add(8 * k) as *const __m128i));
                v = _mm256_fmadd_ps(ov, sum_v, v);
            }
            _mm256_storeu_ps(po, v);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn accumulate_body<const WIDE: bool>(
    m: &NibbleF16,
    active: &[u32],
    a: &[f32],
    group_sums: Option<&[f32]>,
    r0: usize,
    out: &mut [f32],
) {
    let (d, n) = (m.d, out.len());
    let q = m.q.as_ptr();
    let o = out.as_mut_ptr();
    // The neurons of the group starting at `i`: the end of their run in `active`.
    let run_end = |i: usize| {
        let g = active[i] as usize / m.group;
        i + active[i..].partition_point(|&j| j as usize / m.group == g)
    };
    // `active[i..end]` is the group being computed.
    let (mut i, mut end) = (0, if active.is_empty() { 0 } else { run_end(0) });
    // The first group's scales and levels at once; every later group's are requested a
    // block at a time while the group before it is computed (see `prefetch_block`).
    if let Some(&j0) = active.first() {
        let g0 = j0 as usize / m.group;
        let rows = g0 * d + r0..g0 * d + r0 + n;
        prefetch(&m.scale[rows.clone()]);
        if let Some(off) = m.offset {
            prefetch(&off[rows]);
        }
        for &j in &active[..end] {
            let start = j as usize * m.stride + r0 / 2;
            prefetch(&m.q[start..start + n / 2]);
        }
    }
    while i < active.len() {
        let g = active[i] as usize / m.group;
        let js = &active[i..end];
        let next_end = if end < active.len() {
            run_end(end)
        } else {
            end
        };
        let next = &active[end..next_end];
        let mut sum_a = 0f32;
        for &j in js {
            sum_a += a[j as usize];
        }
        if let Some(s) = group_sums {
            sum_a = s[g];
        }
        let srow = m.scale.as_ptr().add(g * d + r0);
        let orow = m.offset.map(|x| x.as_ptr().add(g * d + r0));
        for blk in (0..n).step_by(ROWS) {
            prefetch_block(m, next, r0 + blk);
            block::<WIDE>(
                q.add((r0 + blk) / 2),
                m.stride,
                m.bias,
                js,
                a,
                srow.add(blk),
                orow.map(|p| p.add(blk)),
                sum_a,
                o.add(blk),
            );
        }
        (i, end) = (end, next_end);
    }
}

/// Request the [`ROWS`] rows from `r` of the group of the neurons `next` (one group's run,
/// possibly empty): its scales (and offsets) and each neuron's levels.
///
/// Why a block at a time: a software prefetch holds one of the core's ~16 miss buffers until
/// its line arrives, so asking for a whole group at once (with 1,024 rows a thread: 32
/// lines of scales and 8 of levels per neuron) stalls the core on the prefetches; spread
/// over the blocks of the group before, the requests overlap its arithmetic.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn prefetch_block(m: &NibbleF16, next: &[u32], r: usize) {
    let Some(&j0) = next.first() else {
        return;
    };
    let at = j0 as usize / m.group * m.d + r;
    // 64 f16 scales: two lines.
    let s = m.scale.as_ptr().add(at) as *const i8;
    _mm_prefetch::<_MM_HINT_T1>(s);
    _mm_prefetch::<_MM_HINT_T1>(s.add(64));
    if let Some(off) = m.offset {
        let o = off.as_ptr().add(at) as *const i8;
        _mm_prefetch::<_MM_HINT_T1>(o);
        _mm_prefetch::<_MM_HINT_T1>(o.add(64));
    }
    // 32 bytes of levels a neuron: a line every other block.
    if (r / ROWS).is_multiple_of(2) {
        for &j in next {
            _mm_prefetch::<_MM_HINT_T1>(
                m.q.as_ptr().add(j as usize * m.stride + r / 2) as *const i8
            );
        }
    }
}

/// `out` (rows `r0..r0 + out.len()`) `+= a[j] · column j` over `active` for f16 columns
/// (`w` neuron-major, `d` rows each), as the portable `axpy_f16` loop: one
/// `fma(w, a, out)` per element, so the bits are the same. The next neuron's column is
/// prefetched while this one is added. `out.len()` is a multiple of 8; callers check
/// [`available`].
pub(super) fn accumulate_f16(
    w: &[f16],
    d: usize,
    active: &[u32],
    a: &[f32],
    r0: usize,
    out: &mut [f32],
) {
    let n = out.len();
    assert!(n.is_multiple_of(8) && r0 + n <= d);
    assert!(active
        .iter()
        .all(|&j| (j as usize + 1) * d <= w.len() && (j as usize) < a.len()));
    #[cfg(target_arch = "x86_64")]
    {
        assert!(available());
        // SAFETY: features checked; indices within the bounds asserted above.
        unsafe { accumulate_f16_avx2(w, d, active, a, r0, out) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("callers check available()")
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accumulate_f16_avx2(
    w: &[f16],
    d: usize,
    active: &[u32],
    a: &[f32],
    r0: usize,
    out: &mut [f32],
) {
    let n = out.len();
    let col = |j: u32| w.as_ptr().add(j as usize * d + r0);
    let o = out.as_mut_ptr();
    for (i, &j) in active.iter().enumerate() {
        if let Some(&next) = active.get(i + 1) {
            let start = next as usize * d + r0;
            prefetch(&w[start..start + n]);
        }
        let c = col(j) as *const __m128i;
        let av = _mm256_set1_ps(a[j as usize]);
        for k in 0..n / 8 {
            let wv = _mm256_cvtph_ps(_mm_loadu_si128(c.add(k)));
            let po = o.add(8 * k);
            _mm256_storeu_ps(po, _mm256_fmadd_ps(wv, av, _mm256_loadu_ps(po)));
        }
    }
}
