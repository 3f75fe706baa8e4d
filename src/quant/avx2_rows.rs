//! Kernels that dot four weight rows with one activation row (decode matvec, and the sparse
//! FFN's gather of scattered rows).
//!
//! Why: the single-row kernels keep one accumulator in block order (llama.cpp's order), so a
//! row is one chain of dependent FMAs and decode runs far below the memory bandwidth on few
//! cores. Four rows give four independent chains, and the activation block, its scale and its
//! offset correction are loaded once for the four. Each row still gets exactly the
//! floating-point operations of the single-row kernel in the same order (the per-lane integer
//! sums are computed another way, but integers are exact), so results are bit-identical.

use std::arch::x86_64::*;

use super::avx2::{available, f16p, has_vnni, hsum_ps, nibbles};
use super::GgmlType;

/// Four weight rows (whole blocks, equal lengths) against one activation row.
pub type DotRows4 = fn([&[u8]; 4], &[u8], &mut [f32; 4]);

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
    match ty {
        GgmlType::Q4_0 => Some(if vnni {
            rows4_q4_0_q8_0::<true>
        } else {
            rows4_q4_0_q8_0::<false>
        }),
        _ => None,
    }
}

fn rows4_q4_0_q8_0<const V: bool>(w: [&[u8]; 4], x: &[u8], out: &mut [f32; 4]) {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn plain(w: [*const u8; 4], x: *const u8, nb: usize, out: &mut [f32; 4]) {
        q4_0_rows4::<false>(w, x, nb, out)
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn vnni(w: [*const u8; 4], x: *const u8, nb: usize, out: &mut [f32; 4]) {
        q4_0_rows4::<true>(w, x, nb, out)
    }
    let nb = w[0].len() / 18;
    assert!(
        w.iter().all(|r| r.len() == nb * 18) && x.len() >= nb * 34,
        "rows4 q4_0: row lengths"
    );
    let p = w.map(|r| r.as_ptr());
    // SAFETY: handed out by `kernel_rows4_with` only when the features are present; lengths
    // checked above.
    unsafe {
        if V {
            vnni(p, x.as_ptr(), nb, out)
        } else {
            plain(p, x.as_ptr(), nb, out)
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
) {
    let zero = _mm256_setzero_si256();
    let eight = _mm256_set1_epi8(8);
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let xb = x.add(34 * i);
        let dx = f16p(xb);
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        let neg = _mm256_sub_epi32(zero, dot_us8::<V>(zero, eight, qx));
        for (r, acc) in acc.iter_mut().enumerate() {
            let wb = w[r].add(18 * i);
            let d = _mm256_set1_ps(f16p(wb) * dx);
            let s = dot_us8::<V>(neg, nibbles(wb.add(2)), qx);
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), *acc);
        }
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsum_ps(acc);
    }
}
