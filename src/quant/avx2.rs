//! AVX2 + FMA (+ F16C) dot kernels for x86_64, the twins of [`super::scalar`].
//!
//! Integer products use `maddubs` (unsigned weights × signed activations) as ggml does; per
//! block results are scaled in f32 and accumulated with FMA. Each public wrapper checks the
//! lengths its unsafe body relies on, and is only handed out after the CPU features have been
//! detected (see [`kernel`]).

use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::layout::*;
use super::{DotKernel, GgmlType};

/// Whether this CPU has AVX2, FMA and F16C (detected once).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// Whether the CPU also has AVX-512 VNNI with VL (256-bit `vpdpbusd`), detected once.
pub fn has_vnni() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        available()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// Whether the CPU has AVX-512 F and VL: 32 vector registers for 256-bit code, detected once.
pub fn has_avx512vl() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        available() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl")
    })
}

/// The best kernel of this module for weights of type `ty`, if the CPU supports one.
pub fn kernel(ty: GgmlType) -> Option<DotKernel> {
    kernel_with(ty, has_vnni())
}

/// The AVX2 kernel for `ty`, using VNNI where `vnni` (`None` if that is unsupported here).
pub fn kernel_with(ty: GgmlType, vnni: bool) -> Option<DotKernel> {
    use DotKernel::*;
    use GgmlType::*;
    if !available() || (vnni && !has_vnni()) {
        return None;
    }
    macro_rules! pick {
        ($f:ident) => {
            if vnni {
                $f::<true>
            } else {
                $f::<false>
            }
        };
    }
    Some(match ty {
        F32 => F(dot_f32),
        F16 => F(dot_f16),
        Q4_0 => Q(pick!(dot_q4_0_q8_0)),
        Q4_1 => Q(pick!(dot_q4_1_q8_1)),
        Q5_0 => Q(pick!(dot_q5_0_q8_0)),
        Q5_1 => Q(pick!(dot_q5_1_q8_1)),
        Q8_0 => Q(pick!(dot_q8_0_q8_0)),
        Q4_K => Q(dot_q4_k_q8_k),
        Q5_K => Q(dot_q5_k_q8_k),
        Q6_K => Q(dot_q6_k_q8_k),
        _ => return None,
    })
}

/// A kernel that dots one weight row with four activation rows at once (prefill): the
/// weight block is unpacked once and reused. For each input it performs exactly the
/// floating-point operations of the single-input kernel of the same variant, in the same
/// order (accumulator split, FMA order, horizontal sum, offset terms), so its results are
/// bit-identical to that kernel's: batching must not change results.
pub type Dot4 = fn(&[u8], [&[u8]; 4], &mut [f32; 4]);

/// The best four-input kernel for weights of type `ty`, where one exists and the CPU
/// supports it. Q4_0, Q5_0 and Q8_0 have the scaled kind instead ([`kernel4_scaled`]).
pub fn kernel4(ty: GgmlType) -> Option<Dot4> {
    kernel4_with(ty, has_vnni())
}

/// The four-input kernel for `ty`, using VNNI where `vnni` (`None` if unsupported here); it
/// matches `kernel_with(ty, vnni)` bit for bit.
pub fn kernel4_with(ty: GgmlType, vnni: bool) -> Option<Dot4> {
    if !available() || (vnni && !has_vnni()) {
        return None;
    }
    let v = |a: Dot4, b: Dot4| Some(if vnni { b } else { a });
    match ty {
        GgmlType::Q4_1 => v(dot4_q4_1_q8_1::<false>, dot4_q4_1_q8_1::<true>),
        GgmlType::Q5_1 => v(dot4_q5_1_q8_1::<false>, dot4_q5_1_q8_1::<true>),
        GgmlType::Q4_K => Some(dot4_q4_k_q8_k),
        GgmlType::Q5_K => Some(dot4_q5_k_q8_k),
        GgmlType::Q6_K => Some(dot4_q6_k_q8_k),
        _ => None,
    }
}

/// A four-input kernel for float weights (F16, F32), whose inputs stay f32: each weight vector
/// is loaded (and for F16 converted) once for the four inputs. Per input it performs exactly
/// the floating-point operations of `dot_f16` / `dot_f32` in the same order.
pub type Dot4F = fn(&[u8], [&[f32]; 4], &mut [f32; 4]);

/// The best four-input kernel for float weights of type `ty` (F16, F32), if supported.
pub fn kernel4_float(ty: GgmlType) -> Option<Dot4F> {
    kernel4_float_with(ty, has_avx512vl())
}

/// The four-input float kernel for `ty`; with `wide` compiled for AVX-512 VL, whose 32 vector
/// registers hold all four inputs' accumulators (without, the inputs go by pairs to avoid
/// spilling). Both match `kernel_with(ty, _)` bit for bit. `None` if unsupported here.
pub fn kernel4_float_with(ty: GgmlType, wide: bool) -> Option<Dot4F> {
    if !available() || (wide && !has_avx512vl()) {
        return None;
    }
    let v = |a: Dot4F, b: Dot4F| Some(if wide { b } else { a });
    match ty {
        GgmlType::F16 => v(dot4_float::<true, false>, dot4_float::<true, true>),
        GgmlType::F32 => v(dot4_float::<false, false>, dot4_float::<false, true>),
        _ => None,
    }
}

fn dot4_float<const HALF: bool, const WIDE: bool>(w: &[u8], x: [&[f32]; 4], out: &mut [f32; 4]) {
    type P = [*const f32; 4];
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn plain<const HALF: bool>(w: *const u8, x: P, n: usize, out: &mut [f32; 4]) {
        let (lo, hi) = out.split_at_mut(2);
        float_xn::<HALF, 2>(w, [x[0], x[1]], n, lo);
        float_xn::<HALF, 2>(w, [x[2], x[3]], n, hi);
    }
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    unsafe fn wide<const HALF: bool>(w: *const u8, x: P, n: usize, out: &mut [f32; 4]) {
        float_xn::<HALF, 4>(w, x, n, out)
    }
    let n = w.len() / if HALF { 2 } else { 4 };
    for x in x {
        assert!(x.len() >= n, "activation row shorter than weight row");
    }
    let xp = x.map(|x| x.as_ptr());
    // SAFETY: handed out by `kernel4_float_with` only when the features are present; lengths
    // checked.
    unsafe {
        if WIDE {
            wide::<HALF>(w.as_ptr(), xp, n, out)
        } else {
            plain::<HALF>(w.as_ptr(), xp, n, out)
        }
    }
}

/// A kernel for two or three f32 inputs against float weights (F16, F32): what is left of a
/// batch after its groups of four, which one input at a time would each read the weights
/// and (for F16) convert them again. Per input, the operations of `dot_f16` / `dot_f32` in
/// the same order, like [`Dot4F`]. `x.len()` must equal `out.len()`, 2 or 3.
pub type DotFewF = fn(&[u8], &[&[f32]], &mut [f32]);

/// The two-or-three-input float kernel for `ty` (F16, F32), if supported here.
pub fn kernel_few_float(ty: GgmlType) -> Option<DotFewF> {
    if !available() {
        return None;
    }
    match ty {
        GgmlType::F16 => Some(few_float::<true>),
        GgmlType::F32 => Some(few_float::<false>),
        _ => None,
    }
}

fn few_float<const HALF: bool>(w: &[u8], x: &[&[f32]], out: &mut [f32]) {
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run<const HALF: bool, const N: usize>(
        w: *const u8,
        x: &[&[f32]],
        n: usize,
        out: &mut [f32],
    ) {
        float_xn::<HALF, N>(w, std::array::from_fn(|i| x[i].as_ptr()), n, out)
    }
    let n = w.len() / if HALF { 2 } else { 4 };
    assert_eq!(x.len(), out.len(), "one output per input");
    for x in x {
        assert!(x.len() >= n, "activation row shorter than weight row");
    }
    // SAFETY: handed out by `kernel_few_float` only when the features are present; lengths
    // checked.
    unsafe {
        match x.len() {
            2 => run::<HALF, 2>(w.as_ptr(), x, n, out),
            3 => run::<HALF, 3>(w.as_ptr(), x, n, out),
            k => panic!("kernel_few_float takes two or three inputs, not {k}"),
        }
    }
}

/// `N` f32 rows against one F16 (`HALF`) or F32 weight row of `n` values. Per input, the
/// float operations of `f16_f32` / `f32_f32` in the same order: four accumulators over steps
/// of 32, the rest by 8 into the first, the same pairwise combination and `hsum`, then the
/// scalar tail.
#[inline(always)]
unsafe fn float_xn<const HALF: bool, const N: usize>(
    w: *const u8,
    x: [*const f32; N],
    n: usize,
    out: &mut [f32],
) {
    let ld = |o: usize| {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * o) as *const __m128i))
        } else {
            _mm256_loadu_ps((w as *const f32).add(o))
        }
    };
    let mut acc = [[_mm256_setzero_ps(); 4]; N];
    let mut i = 0;
    while i + 32 <= n {
        let wv = [0, 1, 2, 3].map(|k| ld(i + 8 * k));
        for (a, x) in acc.iter_mut().zip(&x) {
            for k in 0..4 {
                let o = i + 8 * k;
                a[k] = _mm256_fmadd_ps(wv[k], _mm256_loadu_ps(x.add(o)), a[k]);
            }
        }
        i += 32;
    }
    while i + 8 <= n {
        let wv = ld(i);
        for (a, x) in acc.iter_mut().zip(&x) {
            a[0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x.add(i)), a[0]);
        }
        i += 8;
    }
    for ((a, x), out) in acc.iter().zip(&x).zip(out) {
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        let mut sum = hsum_ps(s);
        for t in i..n {
            let wt = if HALF {
                f16p(w.add(2 * t))
            } else {
                (w as *const f32).add(t).read_unaligned()
            };
            sum += wt * *x.add(t);
        }
        *out = sum;
    }
}

/// A four-input kernel for Q4_0 / Q5_0 / Q8_0 weights whose Q8_0 inputs come with their block
/// scales already converted to f32 (see [`q8_0_scales`]): the per-row f16 conversions of
/// the activation scales are hoisted out of the matmul. Bit-identical to the single-input
/// kernel (f16 -> f32 is exact; the same products in the same order).
pub type Dot4S = fn(&[u8], [&[u8]; 4], [&[f32]; 4], &mut [f32; 4]);

/// The best scaled four-input kernel for weights of type `ty` (Q4_0, Q5_0, Q8_0), if supported.
pub fn kernel4_scaled(ty: GgmlType) -> Option<Dot4S> {
    kernel4_scaled_with(ty, has_vnni())
}

/// The scaled four-input kernel for `ty`, using VNNI where `vnni` (`None` if unsupported
/// here); it matches `kernel_with(ty, vnni)` bit for bit.
pub fn kernel4_scaled_with(ty: GgmlType, vnni: bool) -> Option<Dot4S> {
    if !available() || (vnni && !has_vnni()) {
        return None;
    }
    let v = |a: Dot4S, b: Dot4S| Some(if vnni { b } else { a });
    match ty {
        GgmlType::Q8_0 => v(dot4s_q8_0_q8_0::<false>, dot4s_q8_0_q8_0::<true>),
        GgmlType::Q5_0 => v(dot4s_q5_0_q8_0::<false>, dot4s_q5_0_q8_0::<true>),
        GgmlType::Q4_0 => v(dot4s_q4_0_q8_0::<false>, dot4s_q4_0_q8_0::<true>),
        _ => None,
    }
}

/// [`Dot4S`] for eight inputs at once: the weight block is unpacked once for eight.
pub type Dot8S = fn(&[u8], [&[u8]; 8], [&[f32]; 8], &mut [f32; 8]);

/// The best eight-input scaled kernel for `ty` (Q4_0, Q5_0, Q8_0), if supported. Only offered
/// with AVX-512 VNNI, whose 32 vector registers hold the eight inputs' accumulators.
pub fn kernel8_scaled(ty: GgmlType) -> Option<Dot8S> {
    if !has_vnni() {
        return None;
    }
    kernel8_scaled_with(ty, true)
}

/// The eight-input scaled kernel for `ty`, using VNNI where `vnni` (`None` if unsupported
/// here); it matches `kernel_with(ty, vnni)` bit for bit.
pub fn kernel8_scaled_with(ty: GgmlType, vnni: bool) -> Option<Dot8S> {
    if !available() || (vnni && !has_vnni()) {
        return None;
    }
    let v = |a: Dot8S, b: Dot8S| Some(if vnni { b } else { a });
    match ty {
        GgmlType::Q8_0 => v(dot8s_q8_0_q8_0::<false>, dot8s_q8_0_q8_0::<true>),
        GgmlType::Q5_0 => v(dot8s_q5_0_q8_0::<false>, dot8s_q5_0_q8_0::<true>),
        GgmlType::Q4_0 => v(dot8s_q4_0_q8_0::<false>, dot8s_q4_0_q8_0::<true>),
        _ => None,
    }
}

/// The block scales of a Q8_0 activation row as f32, appended to `out`.
pub fn q8_0_scales(x: &[u8], out: &mut Vec<f32>) {
    out.extend(
        x.chunks_exact(34)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
    );
}

macro_rules! safe_wrapper4s_v {
    ($name:ident, $wbb:expr, $n:expr) => {
        fn $name<const V: bool>(w: &[u8], x: [&[u8]; $n], xd: [&[f32]; $n], out: &mut [f32; $n]) {
            type P = [*const u8; $n];
            type D = [*const f32; $n];
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn plain(w: *const u8, x: P, xd: D, nb: usize, out: &mut [f32; $n]) {
                signed32_x4::<false, $wbb, $n>(w, x, xd, nb, out)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn vnni(w: *const u8, x: P, xd: D, nb: usize, out: &mut [f32; $n]) {
                signed32_x4::<true, $wbb, $n>(w, x, xd, nb, out)
            }
            let nb = w.len() / $wbb;
            for (x, xd) in x.iter().zip(&xd) {
                assert!(
                    x.len() >= nb * 34 && xd.len() >= nb,
                    "activation row shorter than weight row"
                );
            }
            let (xp, dp) = (x.map(|x| x.as_ptr()), xd.map(|d| d.as_ptr()));
            // SAFETY: handed out by `kernel4_scaled_with` only when the features are present;
            // lengths checked.
            unsafe {
                if V {
                    vnni(w.as_ptr(), xp, dp, nb, out)
                } else {
                    plain(w.as_ptr(), xp, dp, nb, out)
                }
            }
        }
    };
}

// The weight block size picks the format: 18 Q4_0, 22 Q5_0, 34 Q8_0.
safe_wrapper4s_v!(dot4s_q4_0_q8_0, 18, 4);
safe_wrapper4s_v!(dot4s_q5_0_q8_0, 22, 4);
safe_wrapper4s_v!(dot4s_q8_0_q8_0, 34, 4);
safe_wrapper4s_v!(dot8s_q4_0_q8_0, 18, 8);
safe_wrapper4s_v!(dot8s_q5_0_q8_0, 22, 8);
safe_wrapper4s_v!(dot8s_q8_0_q8_0, 34, 8);

/// A wrapper generic over VNNI: `V = false` runs the AVX2 body, `V = true` the same body
/// compiled with AVX-512 VNNI (+VL) enabled.
macro_rules! safe_wrapper_v {
    ($name:ident, $body:ident, $wbb:expr, $xbb:expr) => {
        fn $name<const V: bool>(w: &[u8], x: &[u8]) -> f32 {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn plain(w: *const u8, x: *const u8, nb: usize) -> f32 {
                $body::<false>(w, x, nb)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn vnni(w: *const u8, x: *const u8, nb: usize) -> f32 {
                $body::<true>(w, x, nb)
            }
            let nb = blocks(w, $wbb, x.len(), $xbb);
            // SAFETY: handed out by `kernel_with` only when the features are present; lengths
            // checked.
            unsafe {
                if V {
                    vnni(w.as_ptr(), x.as_ptr(), nb)
                } else {
                    plain(w.as_ptr(), x.as_ptr(), nb)
                }
            }
        }
    };
}

macro_rules! safe_wrapper4_v {
    ($name:ident, $body:ident, $wbb:expr, $xbb:expr) => {
        fn $name<const V: bool>(w: &[u8], x: [&[u8]; 4], out: &mut [f32; 4]) {
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn plain(w: *const u8, x: [*const u8; 4], nb: usize, out: &mut [f32; 4]) {
                $body::<false, $wbb>(w, x, nb, out)
            }
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            unsafe fn vnni(w: *const u8, x: [*const u8; 4], nb: usize, out: &mut [f32; 4]) {
                $body::<true, $wbb>(w, x, nb, out)
            }
            let nb = w.len() / $wbb;
            for x in x {
                assert!(
                    x.len() >= nb * $xbb,
                    "activation row shorter than weight row"
                );
            }
            let xp = x.map(|x| x.as_ptr());
            // SAFETY: handed out by `kernel4_with` only when the features are present; lengths
            // checked.
            unsafe {
                if V {
                    vnni(w.as_ptr(), xp, nb, out)
                } else {
                    plain(w.as_ptr(), xp, nb, out)
                }
            }
        }
    };
}

macro_rules! safe_wrapper4 {
    ($name:ident, $inner:ident, $wbb:expr, $xbb:expr) => {
        fn $name(w: &[u8], x: [&[u8]; 4], out: &mut [f32; 4]) {
            let nb = w.len() / $wbb;
            for x in x {
                assert!(
                    x.len() >= nb * $xbb,
                    "activation row shorter than weight row"
                );
            }
            let xp = x.map(|x| x.as_ptr());
            // SAFETY: handed out by `kernel4` only when the features are present; lengths checked.
            unsafe { $inner(w.as_ptr(), xp, nb, out) }
        }
    };
}

// The weight block size picks the format: 20 Q4_1, 24 Q5_1.
safe_wrapper4_v!(dot4_q4_1_q8_1, q4_1_q8_1_x4, 20, 36);
safe_wrapper4_v!(dot4_q5_1_q8_1, q4_1_q8_1_x4, 24, 36);
safe_wrapper4!(dot4_q4_k_q8_k, q4_k_q8_k_x4, 144, 292);
safe_wrapper4!(dot4_q5_k_q8_k, q5_k_q8_k_x4, 176, 292);
safe_wrapper4!(dot4_q6_k_q8_k, q6_k_q8_k_x4, 210, 292);

/// The 32 signed codes of a Q4_0 (`BB` = 18 bytes), Q5_0 (22) or Q8_0 (34) block, as the
/// single-input kernels form them.
#[inline(always)]
unsafe fn signed32_codes<const BB: usize>(wb: *const u8) -> __m256i {
    match BB {
        18 => _mm256_sub_epi8(nibbles(wb.add(2)), _mm256_set1_epi8(8)),
        22 => _mm256_sub_epi8(q5_codes(wb.add(2), wb.add(6)), _mm256_set1_epi8(16)),
        _ => _mm256_loadu_si256(wb.add(2) as *const __m256i),
    }
}

/// Block `i` of a Q4_0, Q5_0 or Q8_0 row (`BB` bytes a block) against `N` Q8_0 rows, into
/// `acc`; `xd` holds each input's block scales pre-converted (exactly) from f16 to f32.
#[inline(always)]
unsafe fn signed32_step<const V: bool, const BB: usize, const N: usize>(
    w: *const u8,
    x: &[*const u8; N],
    xd: &[*const f32; N],
    i: usize,
    acc: &mut [__m256; N],
) {
    let wb = w.add(BB * i);
    // Broadcast, not the scalar `f16p` (see `scale_product`).
    let dw = f16_splat(wb);
    let qw = signed32_codes::<BB>(wb);
    // |w| and the sign to move onto x, computed once for the four inputs.
    let aw = _mm256_sign_epi8(qw, qw);
    for k in 0..N {
        let xb = x[k].add(34 * i);
        let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*xd[k].add(i)));
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        acc[k] = _mm256_fmadd_ps(d, mul_us8_ps::<V>(aw, _mm256_sign_epi8(qx, qw)), acc[k]);
    }
}

/// Q4_0, Q5_0 or Q8_0 weight blocks (`BB` bytes each) against `N` Q8_0 rows.
///
/// For each input this performs exactly the floating-point operations of the matching
/// single-input kernel, in the same order, so batched and one-by-one results are
/// bit-identical: one accumulator over the blocks in order, then `hsum`, as in `q4_0_q8_0`,
/// `q5_0_q8_0` and `q8_0_q8_0`.
#[inline(always)]
unsafe fn signed32_x4<const V: bool, const BB: usize, const N: usize>(
    w: *const u8,
    x: [*const u8; N],
    xd: [*const f32; N],
    nb: usize,
    out: &mut [f32; N],
) {
    let mut acc = [_mm256_setzero_ps(); N];
    for i in 0..nb {
        signed32_step::<V, BB, N>(w, &x, &xd, i, &mut acc);
    }
    for k in 0..N {
        out[k] = hsum_ps(acc[k]);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_q8_k_x4(w: *const u8, x: [*const u8; 4], nb: usize, out: &mut [f32; 4]) {
    k4_like_x4(w, x, nb, 144, |wb, j| q4k_codes(wb, j), out)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_q8_k_x4(w: *const u8, x: [*const u8; 4], nb: usize, out: &mut [f32; 4]) {
    k4_like_x4(w, x, nb, 176, |wb, j| q5k_codes(wb, j), out)
}

/// Four inputs, each through the floating-point operations of `k4_like` (Q4_K, Q5_K) in
/// the same order; a weight block's codes and scales are unpacked once for the four.
#[inline(always)]
unsafe fn k4_like_x4(
    w: *const u8,
    x: [*const u8; 4],
    nb: usize,
    bb: usize,
    codes: impl Fn(*const u8, usize) -> (__m256i, __m256i),
    out: &mut [f32; 4],
) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut mins = [0.0f32; 4];
    for i in 0..nb {
        let wb = w.add(bb * i);
        let (dw, dminw) = (f16p(wb.add(Q4K_D)), f16p(wb.add(Q4K_DMIN)));
        let (sc, m) = k4_scales_mins(std::slice::from_raw_parts(wb.add(Q4K_SCALES), 12));
        let scv = sc.map(|s| _mm256_set1_epi16(s as i16));
        let codes = [0, 1, 2, 3].map(|j| codes(wb, j));
        for k in 0..4 {
            let xb = x[k].add(292 * i);
            let dx = f32p(xb);
            mins[k] += dx * dminw * k4_min_sum(&m, xb) as f32;
            let xq = xb.add(Q8K_QS);
            let mut sumi = _mm256_setzero_si256();
            for (j, (lo, hi)) in codes.iter().enumerate() {
                let xl = _mm256_loadu_si256(xq.add(64 * j) as *const __m256i);
                let xh = _mm256_loadu_si256(xq.add(64 * j + 32) as *const __m256i);
                let pl = _mm256_madd_epi16(scv[2 * j], _mm256_maddubs_epi16(*lo, xl));
                let ph = _mm256_madd_epi16(scv[2 * j + 1], _mm256_maddubs_epi16(*hi, xh));
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
            }
            acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dx * dw), _mm256_cvtepi32_ps(sumi), acc[k]);
        }
    }
    for k in 0..4 {
        out[k] = hsum_ps(acc[k]) - mins[k];
    }
}

/// Per input, the integer lanes and floating-point operations of `q6_k_q8_k`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_q8_k_x4(w: *const u8, x: [*const u8; 4], nb: usize, out: &mut [f32; 4]) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(3);
    let c32 = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); 4];
    for i in 0..nb {
        let wb = w.add(210 * i);
        let dw = f16p(wb.add(Q6K_D));
        let sc = wb.add(Q6K_SCALES) as *const i8;
        // Unsigned codes 0..=63 in element order (chunks of 32), and each chunk's two scales.
        let mut codes = [_mm256_setzero_si256(); 8];
        for n in 0..2 {
            let ql = wb.add(Q6K_QL + 64 * n);
            let qh = _mm256_loadu_si256(wb.add(Q6K_QH + 32 * n) as *const __m256i);
            let b1 = _mm256_loadu_si256(ql as *const __m256i);
            let b2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let h = |s: i32| {
                let t = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(s));
                _mm256_slli_epi16(_mm256_and_si256(t, m2), 4)
            };
            codes[4 * n] = _mm256_or_si256(_mm256_and_si256(b1, m4), h(0));
            codes[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(b2, m4), h(2));
            codes[4 * n + 2] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), h(4));
            codes[4 * n + 3] =
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), h(6));
        }
        let scv: [__m256i; 8] = std::array::from_fn(|c| {
            _mm256_set_m128i(
                _mm_set1_epi16(*sc.add(2 * c + 1) as i16),
                _mm_set1_epi16(*sc.add(2 * c) as i16),
            )
        });
        for k in 0..4 {
            let xb = x[k].add(292 * i);
            let xq = xb.add(Q8K_QS);
            // (q - 32) · x in i16 per pair, then scaled, exactly as `q6_k_q8_k`: each i32
            // lane gets the same integer, so the f32 steps below match it bit for bit.
            let mut sumi = _mm256_setzero_si256();
            for c in 0..8 {
                let xv = _mm256_loadu_si256(xq.add(32 * c) as *const __m256i);
                let p = _mm256_sub_epi16(
                    _mm256_maddubs_epi16(codes[c], xv),
                    _mm256_maddubs_epi16(c32, xv),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scv[c]));
            }
            let d = _mm256_set1_ps(f32p(xb) * dw);
            acc[k] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[k]);
        }
    }
    for k in 0..4 {
        out[k] = hsum_ps(acc[k]);
    }
}

/// Block `i` of a Q4_1 (`BB` = 20 bytes) or Q5_1 (24) row against four Q8_1 rows, into
/// `acc` and `offs`: `offs` lanes 2k and 2k+1 hold input k's running sums of d_w * d_x and
/// m_w * s_x (the single kernels' `ds` lanes 0 and 1; only the second is used).
#[inline(always)]
unsafe fn q4_1_step<const V: bool, const BB: usize>(
    w: *const u8,
    x: &[*const u8; 4],
    i: usize,
    acc: &mut [__m256; 4],
    offs: &mut __m256,
) {
    let wb = w.add(BB * i);
    let wdm = _mm256_cvtph_ps(_mm_set1_epi32((wb as *const i32).read_unaligned()));
    let xb = [
        x[0].add(36 * i),
        x[1].add(36 * i),
        x[2].add(36 * i),
        x[3].add(36 * i),
    ];
    let xds = _mm_set_epi32(
        (xb[3] as *const i32).read_unaligned(),
        (xb[2] as *const i32).read_unaligned(),
        (xb[1] as *const i32).read_unaligned(),
        (xb[0] as *const i32).read_unaligned(),
    );
    let xdm = _mm256_cvtph_ps(xds);
    let ds = _mm256_mul_ps(wdm, xdm);
    // Q4_1: the offset term fused (m_w * s_x + offs, one rounding) as GCC compiles ggml's
    // `summs += m*s` with FMA, as the single kernel; Q5_1's single kernel adds the product.
    *offs = if BB == 20 {
        _mm256_fmadd_ps(wdm, xdm, *offs)
    } else {
        _mm256_add_ps(*offs, ds)
    };
    let qw = if BB == 24 {
        q5_codes(wb.add(4), wb.add(8))
    } else {
        nibbles(wb.add(4))
    };
    for k in 0..4 {
        let d = _mm256_permutevar8x32_ps(ds, _mm256_set1_epi32(2 * k as i32));
        let qx = _mm256_loadu_si256(xb[k].add(4) as *const __m256i);
        acc[k] = _mm256_fmadd_ps(d, mul_us8_ps::<V>(qw, qx), acc[k]);
    }
}

/// Four inputs, each through exactly the floating-point operations of `q4_1_q8_1` (or
/// `q5_1_q8_1`, `BB` = 24) in the same order: one accumulator over the blocks in order, the
/// offset products summed in block order, and the result is `hsum(acc) + offs`.
#[inline(always)]
unsafe fn q4_1_q8_1_x4<const V: bool, const BB: usize>(
    w: *const u8,
    x: [*const u8; 4],
    nb: usize,
    out: &mut [f32; 4],
) {
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut offs = _mm256_setzero_ps();
    for i in 0..nb {
        q4_1_step::<V, BB>(w, &x, i, &mut acc, &mut offs);
    }
    let mut o = [0.0f32; 8];
    _mm256_storeu_ps(o.as_mut_ptr(), offs);
    for k in 0..4 {
        out[k] = hsum_ps(acc[k]) + o[2 * k + 1];
    }
}

/// Quantises one block of f32 into its bytes.
pub type BlockQuantizer = fn(&[f32], &mut [u8]);

/// AVX2 block quantiser for an activation format, producing the same bytes as the scalar one.
pub fn quantizer(act: GgmlType) -> Option<BlockQuantizer> {
    if !available() {
        return None;
    }
    match act {
        GgmlType::Q8_0 => Some(quantize_q8_0),
        GgmlType::Q8_1 => Some(quantize_q8_1),
        GgmlType::Q8_K => Some(quantize_q8_k),
        _ => None,
    }
}

fn quantize_q8_0(x: &[f32], b: &mut [u8]) {
    assert!(x.len() >= 32 && b.len() >= 34);
    // SAFETY: features detected by `quantizer`; lengths checked.
    unsafe {
        let (d, _) = q8_32(x.as_ptr(), b.as_mut_ptr().add(2));
        b[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    }
}

fn quantize_q8_1(x: &[f32], b: &mut [u8]) {
    assert!(x.len() >= 32 && b.len() >= 36);
    // SAFETY: as above.
    unsafe {
        let (d, sum) = q8_32(x.as_ptr(), b.as_mut_ptr().add(4));
        b[0..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        b[2..4].copy_from_slice(&half::f16::from_f32(sum as f32 * d).to_le_bytes());
    }
}

fn quantize_q8_k(x: &[f32], b: &mut [u8]) {
    assert!(x.len() >= 256 && b.len() >= 292);
    // SAFETY: as above.
    unsafe { q8_k(x.as_ptr(), b) }
}

/// i32 lanes of four vectors -> 32 i8 in element order.
#[inline(always)]
unsafe fn pack_i8(v: [__m256i; 4]) -> __m256i {
    let a = _mm256_packs_epi32(v[0], v[1]);
    let b = _mm256_packs_epi32(v[2], v[3]);
    let p = _mm256_packs_epi16(a, b);
    // The packs work per 128-bit lane; restore element order.
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Q8_0-style block of 32: writes the codes to `q`, returns (d, sum of codes).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_32(x: *const f32, q: *mut u8) -> (f32, i32) {
    let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(x.add(o)));
    let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let m = _mm256_max_ps(
        _mm256_max_ps(abs(v[0]), abs(v[1])),
        _mm256_max_ps(abs(v[2]), abs(v[3])),
    );
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    // ggml's x86 quantiser: multiply by 127 / amax, round to nearest even.
    let d = amax / 127.0;
    let id = _mm256_set1_ps(if amax == 0.0 { 0.0 } else { 127.0 / amax });
    let i = v.map(|v| {
        let r = _mm256_round_ps(
            _mm256_mul_ps(v, id),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        _mm256_cvtps_epi32(r)
    });
    let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    let s4 = _mm_hadd_epi32(s4, s4);
    let sum = _mm_cvtsi128_si32(_mm_hadd_epi32(s4, s4));
    _mm256_storeu_si256(q as *mut __m256i, pack_i8(i));
    (d, sum)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_k(x: *const f32, b: &mut [u8]) {
    let xs = std::slice::from_raw_parts(x, 256);
    let abs = |v: __m256| _mm256_andnot_ps(_mm256_set1_ps(-0.0), v);
    let mut m = _mm256_setzero_ps();
    for o in (0..256).step_by(8) {
        m = _mm256_max_ps(m, abs(_mm256_loadu_ps(x.add(o))));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    if amax == 0.0 {
        b[..292].fill(0);
        return;
    }
    // The signed value of largest magnitude, first on ties (as the scalar quantiser).
    let max = *xs.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
    let iscale = -127.0 / max;
    let is = _mm256_set1_ps(iscale);
    let hi = _mm256_set1_epi32(127);
    for g in 0..8 {
        let i = [0, 8, 16, 24].map(|o| {
            let v = _mm256_mul_ps(is, _mm256_loadu_ps(x.add(32 * g + o)));
            // Nearest, ties to even, as the scalar `round_ties_even`.
            let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm256_min_epi32(_mm256_cvtps_epi32(r), hi)
        });
        for h in 0..2 {
            let s = _mm256_add_epi32(i[2 * h], i[2 * h + 1]);
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s4 = _mm_hadd_epi32(s4, s4);
            let sum = _mm_cvtsi128_si32(_mm_hadd_epi32(s4, s4)) as i16;
            let off = Q8K_BSUMS + 2 * (2 * g + h);
            b[off..off + 2].copy_from_slice(&sum.to_le_bytes());
        }
        _mm256_storeu_si256(
            b.as_mut_ptr().add(Q8K_QS + 32 * g) as *mut __m256i,
            pack_i8(i),
        );
    }
    b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

/// Number of weight blocks in `w`, after checking `x` holds at least as many activation blocks.
#[inline(always)]
fn blocks(w: &[u8], wbb: usize, x_len: usize, xbb: usize) -> usize {
    let nb = w.len() / wbb;
    assert!(x_len >= nb * xbb, "activation row shorter than weight row");
    nb
}

macro_rules! safe_wrapper {
    ($name:ident, $inner:ident, $wbb:expr, $xbb:expr) => {
        fn $name(w: &[u8], x: &[u8]) -> f32 {
            let nb = blocks(w, $wbb, x.len(), $xbb);
            // SAFETY: handed out by `kernel` only when the features are present; lengths checked.
            unsafe { $inner(w.as_ptr(), x.as_ptr(), nb) }
        }
    };
}

safe_wrapper_v!(dot_q4_0_q8_0, q4_0_q8_0, 18, 34);
safe_wrapper_v!(dot_q4_1_q8_1, q4_1_q8_1, 20, 36);
safe_wrapper_v!(dot_q5_0_q8_0, q5_0_q8_0, 22, 34);
safe_wrapper_v!(dot_q5_1_q8_1, q5_1_q8_1, 24, 36);
safe_wrapper_v!(dot_q8_0_q8_0, q8_0_q8_0, 34, 34);
safe_wrapper!(dot_q4_k_q8_k, q4_k_q8_k, 144, 292);
safe_wrapper!(dot_q5_k_q8_k, q5_k_q8_k, 176, 292);
safe_wrapper!(dot_q6_k_q8_k, q6_k_q8_k, 210, 292);

fn dot_f32(w: &[u8], x: &[f32]) -> f32 {
    let n = w.len() / 4;
    assert!(x.len() >= n);
    // SAFETY: as above.
    unsafe { f32_f32(w.as_ptr(), x.as_ptr(), n) }
}

fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
    let n = w.len() / 2;
    assert!(x.len() >= n);
    // SAFETY: as above.
    unsafe { f16_f32(w.as_ptr(), x.as_ptr(), n) }
}

/// One f16 via F16C (the `half` crate's conversion is a call per value in these loops).
#[inline(always)]
unsafe fn f16p(p: *const u8) -> f32 {
    let bits = (p as *const u16).read_unaligned() as i32;
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
}

/// Two consecutive f16 (a block's d and m, or d and s) as lanes 0 and 1.
#[inline(always)]
pub(super) unsafe fn f16x2(p: *const u8) -> __m128 {
    let bits = (p as *const i32).read_unaligned();
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// d_w * d_x, the product of two blocks' f16 scales, in all eight lanes. Converted as
/// broadcasts so that every lane is used: through the scalar `f16p`, LLVM loads each f16
/// with `vpinsrw` into an arbitrary register (the other lanes being dead), often the
/// accumulator, and that false dependency chained each block's scales onto the previous
/// block's FMA (Q4_0 and Q8_0 matvec ran about 3x slower than Q4_1). Same value as
/// `f16p(w) * f16p(x)`: f16 -> f32 is exact and the lanes multiply as the scalar would.
#[inline(always)]
unsafe fn scale_product(w: *const u8, x: *const u8) -> __m256 {
    _mm256_mul_ps(f16_splat(w), f16_splat(x))
}

/// One f16 converted into all eight lanes.
#[inline(always)]
pub(super) unsafe fn f16_splat(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16((p as *const i16).read_unaligned()))
}

#[inline(always)]
unsafe fn f32p(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

#[inline(always)]
pub(super) unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of packed nibbles -> 32 bytes: low nibbles first, then high nibbles (ggml order).
#[inline(always)]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    let t = _mm_loadu_si128(p as *const __m128i);
    let b = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    _mm256_and_si256(b, _mm256_set1_epi8(0x0F))
}

/// 32 bits -> 32 bytes, 0xFF where the bit is set.
#[inline(always)]
unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    let v = (p as *const u32).read_unaligned();
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(v as i32), shuf);
    let mask = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1))
}

/// Unsigned bytes × signed bytes, summed in groups of four, as 8 f32. With `V` (AVX-512
/// VNNI) one `vpdpbusd` replaces `maddubs` + `madd`.
#[inline(always)]
pub(super) unsafe fn mul_us8_ps<const V: bool>(u: __m256i, s: __m256i) -> __m256 {
    if V {
        _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s))
    } else {
        let p = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
}

/// Signed bytes × signed bytes (neither -128), summed in groups of four, as 8 f32.
#[inline(always)]
pub(super) unsafe fn mul_s8_ps<const V: bool>(a: __m256i, b: __m256i) -> __m256 {
    mul_us8_ps::<V>(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_f32(w: *const u8, x: *const f32, n: usize) -> f32 {
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
    let mut sum = hsum_ps(s);
    while i < n {
        sum += w.add(i).read_unaligned() * *x.add(i);
        i += 1;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_f32(w: *const u8, x: *const f32, n: usize) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    let ld = |o: usize| _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * o) as *const __m128i));
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let o = i + 8 * k;
            *a = _mm256_fmadd_ps(ld(o), _mm256_loadu_ps(x.add(o)), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(ld(i), _mm256_loadu_ps(x.add(i)), acc[0]);
        i += 8;
    }
    let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(s);
    while i < n {
        sum += f16p(w.add(2 * i)) * *x.add(i);
        i += 1;
    }
    sum
}

#[inline(always)]
unsafe fn q8_0_q8_0<const V: bool>(w: *const u8, x: *const u8, nb: usize) -> f32 {
    #[inline(always)]
    unsafe fn block<const V: bool>(wb: *const u8, xb: *const u8, acc: __m256) -> __m256 {
        let d = scale_product(wb, xb);
        let qw = _mm256_loadu_si256(wb.add(2) as *const __m256i);
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        _mm256_fmadd_ps(d, mul_s8_ps::<V>(qw, qx), acc)
    }
    // One accumulator in block order, as llama.cpp's x86 kernel (see `q4_1_q8_1`).
    let mut a0 = _mm256_setzero_ps();
    for i in 0..nb {
        a0 = block::<V>(w.add(34 * i), x.add(34 * i), a0);
    }
    hsum_ps(a0)
}

#[inline(always)]
unsafe fn q4_0_q8_0<const V: bool>(w: *const u8, x: *const u8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (wb, xb) = (w.add(18 * i), x.add(34 * i));
        let d = scale_product(wb, xb);
        let qw = _mm256_sub_epi8(nibbles(wb.add(2)), _mm256_set1_epi8(8));
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_s8_ps::<V>(qw, qx), acc);
    }
    hsum_ps(acc)
}

#[inline(always)]
unsafe fn q4_1_q8_1<const V: bool>(w: *const u8, x: *const u8, nb: usize) -> f32 {
    // One block: lanes of `ds` are [d_w * d_x, m_w * s_x]; the second is the offset term.
    #[inline(always)]
    unsafe fn block<const V: bool>(
        wb: *const u8,
        xb: *const u8,
        acc: __m256,
        offs: &mut __m128,
    ) -> __m256 {
        let (wdm, xds) = (f16x2(wb), f16x2(xb));
        let ds = _mm_mul_ps(wdm, xds);
        // ggml's `summs += m*s`, which GCC compiles to one FMA.
        *offs = _mm_fmadd_ps(wdm, xds, *offs);
        let qw = nibbles(wb.add(4));
        let qx = _mm256_loadu_si256(xb.add(4) as *const __m256i);
        _mm256_fmadd_ps(_mm256_broadcastss_ps(ds), mul_us8_ps::<V>(qw, qx), acc)
    }
    // One accumulator over the blocks in order, the offsets summed apart: llama.cpp's x86
    // order, so greedy output follows llama.cpp's on near-ties (two interleaved accumulators
    // were a little faster but flipped SmolLM2's golden answers).
    let mut a0 = _mm256_setzero_ps();
    let mut offs = _mm_setzero_ps();
    for i in 0..nb {
        a0 = block::<V>(w.add(20 * i), x.add(36 * i), a0, &mut offs);
    }
    hsum_ps(a0) + _mm_cvtss_f32(_mm_movehdup_ps(offs))
}

/// The 32 five-bit codes (0..=31) of a Q5 block from its `qh` word and nibbles.
#[inline(always)]
unsafe fn q5_codes(qh: *const u8, qs: *const u8) -> __m256i {
    let hi = _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(0x10));
    _mm256_or_si256(nibbles(qs), hi)
}

#[inline(always)]
unsafe fn q5_0_q8_0<const V: bool>(w: *const u8, x: *const u8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (wb, xb) = (w.add(22 * i), x.add(34 * i));
        let d = scale_product(wb, xb);
        let qw = _mm256_sub_epi8(q5_codes(wb.add(2), wb.add(6)), _mm256_set1_epi8(16));
        let qx = _mm256_loadu_si256(xb.add(2) as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_s8_ps::<V>(qw, qx), acc);
    }
    hsum_ps(acc)
}

#[inline(always)]
unsafe fn q5_1_q8_1<const V: bool>(w: *const u8, x: *const u8, nb: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offs = 0.0f32;
    for i in 0..nb {
        let (wb, xb) = (w.add(24 * i), x.add(36 * i));
        // [d_w * d_x, m_w * s_x] as in `q4_1_q8_1` (see `scale_product` for why not `f16p`).
        let ds = _mm_mul_ps(f16x2(wb), f16x2(xb));
        offs += _mm_cvtss_f32(_mm_movehdup_ps(ds));
        let d = _mm256_broadcastss_ps(ds);
        let qw = q5_codes(wb.add(4), wb.add(8));
        let qx = _mm256_loadu_si256(xb.add(4) as *const __m256i);
        acc = _mm256_fmadd_ps(d, mul_us8_ps::<V>(qw, qx), acc);
    }
    hsum_ps(acc) + offs
}

/// Σ mins[j] · (bsums[2j] + bsums[2j+1]) for the Q4_K/Q5_K min term.
#[inline(always)]
unsafe fn k4_min_sum(m: &[u8; 8], xb: *const u8) -> i32 {
    let bs = xb.add(Q8K_BSUMS) as *const i16;
    let mut s = 0i32;
    for (j, &m) in m.iter().enumerate() {
        let b = bs.add(2 * j).read_unaligned() as i32 + bs.add(2 * j + 1).read_unaligned() as i32;
        s += m as i32 * b;
    }
    s
}

/// Shared body of Q4_K and Q5_K: `codes(wb, j)` yields the 64 codes of chunk `j` as two
/// 32-byte vectors (the first 32 use scale 2j, the next 32 scale 2j+1).
#[inline(always)]
unsafe fn k4_like(
    w: *const u8,
    x: *const u8,
    nb: usize,
    bb: usize,
    codes: impl Fn(*const u8, usize) -> (__m256i, __m256i),
) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for i in 0..nb {
        let (wb, xb) = (w.add(bb * i), x.add(292 * i));
        let dx = f32p(xb);
        let sc12 = std::slice::from_raw_parts(wb.add(Q4K_SCALES), 12);
        let (sc, m) = k4_scales_mins(sc12);
        mins += dx * f16p(wb.add(Q4K_DMIN)) * k4_min_sum(&m, xb) as f32;
        let xq = xb.add(Q8K_QS);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let (lo, hi) = codes(wb, j);
            let xl = _mm256_loadu_si256(xq.add(64 * j) as *const __m256i);
            let xh = _mm256_loadu_si256(xq.add(64 * j + 32) as *const __m256i);
            let pl = _mm256_madd_epi16(
                _mm256_set1_epi16(sc[2 * j] as i16),
                _mm256_maddubs_epi16(lo, xl),
            );
            let ph = _mm256_madd_epi16(
                _mm256_set1_epi16(sc[2 * j + 1] as i16),
                _mm256_maddubs_epi16(hi, xh),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(pl, ph));
        }
        let d = _mm256_set1_ps(dx * f16p(wb.add(Q4K_D)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc) - mins
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_q8_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    k4_like(w, x, nb, 144, |wb, j| q4k_codes(wb, j))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_q8_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    k4_like(w, x, nb, 176, |wb, j| q5k_codes(wb, j))
}

/// The 64 codes of chunk `j` of a Q4_K block (see `k4_like`).
#[inline(always)]
unsafe fn q4k_codes(wb: *const u8, j: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let q = _mm256_loadu_si256(wb.add(Q4K_QS + 32 * j) as *const __m256i);
    (
        _mm256_and_si256(q, m4),
        _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
    )
}

/// The 64 codes of chunk `j` of a Q5_K block (see `k4_like`).
#[inline(always)]
unsafe fn q5k_codes(wb: *const u8, j: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let q = _mm256_loadu_si256(wb.add(Q5K_QS + 32 * j) as *const __m256i);
    let h = _mm256_loadu_si256(wb.add(Q5K_QH) as *const __m256i);
    let sh = _mm_cvtsi32_si128(2 * j as i32);
    let h0 = _mm256_and_si256(_mm256_srl_epi16(h, sh), one);
    let h1 = _mm256_and_si256(
        _mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * j as i32 + 1)),
        one,
    );
    (
        _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(h0, 4)),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
            _mm256_slli_epi16(h1, 4),
        ),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_q8_k(w: *const u8, x: *const u8, nb: usize) -> f32 {
    let m4 = _mm256_set1_epi8(0x0F);
    let m2 = _mm256_set1_epi8(3);
    let c32 = _mm256_set1_epi8(32);
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        let (wb, xb) = (w.add(210 * i), x.add(292 * i));
        let sc = wb.add(Q6K_SCALES) as *const i8;
        let xq = xb.add(Q8K_QS);
        let mut sumi = _mm256_setzero_si256();
        for n in 0..2 {
            let ql = wb.add(Q6K_QL + 64 * n);
            let qh = _mm256_loadu_si256(wb.add(Q6K_QH + 32 * n) as *const __m256i);
            let b1 = _mm256_loadu_si256(ql as *const __m256i);
            let b2 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let h = |s: i32| {
                _mm256_slli_epi16(
                    _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), m2),
                    4,
                )
            };
            let q = [
                _mm256_or_si256(_mm256_and_si256(b1, m4), h(0)),
                _mm256_or_si256(_mm256_and_si256(b2, m4), h(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b1, 4), m4), h(4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b2, 4), m4), h(6)),
            ];
            for (k, q) in q.iter().enumerate() {
                let xv = _mm256_loadu_si256(xq.add(128 * n + 32 * k) as *const __m256i);
                // (q - 32) · x = q · x - 32 · x, both in i16 without saturation.
                let p =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(*q, xv), _mm256_maddubs_epi16(c32, xv));
                let s0 = *sc.add(8 * n + 2 * k) as i16;
                let s1 = *sc.add(8 * n + 2 * k + 1) as i16;
                let scale = _mm256_set_m128i(_mm_set1_epi16(s1), _mm_set1_epi16(s0));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scale));
            }
        }
        let d = _mm256_set1_ps(f32p(xb) * f16p(wb.add(Q6K_D)));
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum_ps(acc)
}
