//! Element-wise and row-wise CPU kernels. Each is also the CPU twin (test reference) of the
//! CUDA kernel of the same name.

use std::sync::OnceLock;

use half::f16;

use crate::model::{FfnKind, RopeStyle};

/// `out = x / rms(x) * w` on one segment. As ggml: each square is an f32 product, summed in
/// f64 so long rows do not lose precision, and `(x * scale) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

/// `rms_norm` in place: the same arithmetic, without a second buffer.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (v, &g) in x.iter_mut().zip(w) {
        *v = *v * scale * g;
    }
}

fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Rotary position embedding of every head in `row` (a token at position `pos`).
/// Angles follow ggml: theta_i = pos * base^(-2i/rope_dim), built by repeated multiplication
/// in f32 so results match llama.cpp's to the last bit as far as possible. The adjacent-pair
/// rotation fuses one product of each output as GCC compiles ggml's `rotate_pairs` (checked
/// bit for bit against llama.cpp's AVX2 build on SmolLM2); the NEOX form, not yet checked, keeps
/// separate products.
pub fn rope(
    row: &mut [f32],
    head_dim: usize,
    rope_dim: usize,
    pos: usize,
    base: f32,
    style: RopeStyle,
) {
    let half = rope_dim / 2;
    let theta_scale = base.powf(-2.0 / rope_dim as f32);
    let mut cs = [(0f32, 0f32); 256];
    let cs = &mut cs[..half];
    let mut theta = pos as f32;
    for c in cs.iter_mut() {
        *c = (theta.cos(), theta.sin());
        theta *= theta_scale;
    }
    for head in row.chunks_exact_mut(head_dim) {
        match style {
            RopeStyle::Normal => {
                #[cfg(target_arch = "x86_64")]
                if crate::quant::avx2::available() {
                    // SAFETY: FMA detected.
                    unsafe { rotate_pairs_fma(head, cs) };
                    continue;
                }
                rotate_pairs(head, cs);
            }
            RopeStyle::Neox => {
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * c - b * s;
                    head[i + half] = a * s + b * c;
                }
            }
        }
    }
}

/// The adjacent-pair rotation with one product of each output fused (see `rope`).
#[inline(always)]
fn rotate_pairs(head: &mut [f32], cs: &[(f32, f32)]) {
    for (i, &(c, s)) in cs.iter().enumerate() {
        let (a, b) = (head[2 * i], head[2 * i + 1]);
        head[2 * i] = a.mul_add(c, -(b * s));
        head[2 * i + 1] = b.mul_add(c, a * s);
    }
}

/// `rotate_pairs` compiled with FMA instructions instead of libm's `fmaf` calls.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rotate_pairs_fma(head: &mut [f32], cs: &[(f32, f32)]) {
    rotate_pairs(head, cs)
}

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (gemma's `gelu_pytorch_tanh`), in f32.
#[inline]
pub fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

/// GELU as ggml's CPU backend computes it (`GGML_GELU_FP16`): the input rounded to f16 and
/// looked up in a table of `gelu_f32` at every f16, itself rounded to f16; the identity from
/// 10 up and 0 from -10 down. The two f16 roundings move gemma's activations by ~1e-3
/// relative, far more than any f32 rounding, so matching them matters for agreeing with
/// llama.cpp on near-ties (and a lookup is cheaper than `tanh`).
#[inline]
pub fn gelu(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let t = gelu_table();
        f16::from_bits(t[f16::from_f32(x).to_bits() as usize]).to_f32()
    }
}

/// `gelu_f32` of every f16 value, as f16 bits, indexed by the input's bits.
fn gelu_table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| f16::from_f32(gelu_f32(f16::from_bits(b).to_f32())).to_bits())
            .collect()
    })
}

/// `up = silu(gate) * up` over one row: eight lanes at a time with ggml's vectorised exp
/// (`ggml_v_expf`, AVX2), the remainder with libm's, as ggml's `ggml_vec_swiglu_f32` does.
fn swiglu(gate: &[f32], up: &mut [f32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::quant::avx2::available() {
        done = up.len().min(gate.len()) / 8 * 8;
        // SAFETY: AVX2 and FMA detected; both slices hold at least `done` values.
        unsafe { simd::swiglu(&gate[..done], &mut up[..done]) };
    }
    up[done..]
        .iter_mut()
        .zip(&gate[done..])
        .for_each(|(u, &g)| *u *= silu(g));
}

#[inline]
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// `up = act(gate) * up` with the activations in plain f32 (libm's exp, `gelu_f32`): the
/// reference of the CUDA kernels, which do not copy ggml's CPU approximations.
pub fn ffn_activation_f32(kind: FfnKind, gate: &[f32], up: &mut [f32]) {
    match kind {
        FfnKind::SwiGlu => up.iter_mut().zip(gate).for_each(|(u, &g)| *u *= silu(g)),
        FfnKind::GeGlu => up
            .iter_mut()
            .zip(gate)
            .for_each(|(u, &g)| *u *= gelu_f32(g)),
        _ => ffn_activation(kind, gate, up),
    }
}

/// `up = act(gate) * up` (or `relu(up)` for the plain kind) over one row, with ggml's CPU
/// arithmetic (vectorised exp for SwiGLU, the f16 table for GELU).
pub fn ffn_activation(kind: FfnKind, gate: &[f32], up: &mut [f32]) {
    match kind {
        FfnKind::SwiGlu => swiglu(gate, up),
        FfnKind::GeGlu => up.iter_mut().zip(gate).for_each(|(u, &g)| *u *= gelu(g)),
        FfnKind::ReGlu => up.iter_mut().zip(gate).for_each(|(u, &g)| *u *= relu(g)),
        FfnKind::DReLU => up
            .iter_mut()
            .zip(gate)
            .for_each(|(u, &g)| *u = relu(*u) * relu(g)),
        FfnKind::Relu => up.iter_mut().for_each(|u| *u = relu(*u)),
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise without -ffast-math.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// `y += a * x`.
#[inline]
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// ggml's AVX2 `ggml_v_expf` and `ggml_v_silu`, written from their arithmetic: exp as
/// 2^n · (1 + p(b)) with n = round(x / ln 2), b the reduced argument and p a degree-5
/// polynomial, all with the same fused multiply-adds, so every lane gets ggml's bits.
#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn c(bits: u32) -> __m256 {
        _mm256_set1_ps(f32::from_bits(bits))
    }

    /// exp of eight lanes (max error about 1.5 ulp; flushes below -104 and above 88.4).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn v_expf(x: __m256) -> __m256 {
        let r = c(0x4b40_0000); // 1.5 * 2^23: adding it rounds to an integer
        let z = _mm256_fmadd_ps(x, c(0x3fb8_aa3b), r); // x * log2(e) + r
        let n = _mm256_sub_ps(z, r);
        // b = x - n * ln2, with ln2 split in a high and a low part.
        let b = _mm256_fnmadd_ps(n, c(0x35bf_be8e), _mm256_fnmadd_ps(n, c(0x3f31_7200), x));
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(c(0x3f80_0000))));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let big = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0), _CMP_GT_OQ);
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(c(0x3c07_2010), b, c(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(c(0x3e2a_af33), b, c(0x3eff_fedb)),
            ),
            u,
            _mm256_mul_ps(c(0x3f7f_fff6), b),
        );
        if _mm256_movemask_ps(big) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        // |n| > 126: 2^n split in two factors so the scaling neither overflows nor flushes
        // early; |n| > 192: saturate to inf or 0.
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let huge = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0), _CMP_GT_OQ);
        let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
        let normal = _mm256_fmadd_ps(k, j, k);
        let mid = _mm256_blendv_ps(normal, scaled, big);
        _mm256_blendv_ps(mid, _mm256_mul_ps(s1, s1), huge)
    }

    /// `up = silu(gate) * up`, `silu(x) = x / (1 + v_expf(-x))`. Caller guarantees AVX2 + FMA
    /// and equal lengths, a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(gate: &[f32], up: &mut [f32]) {
        let one = _mm256_set1_ps(1.0);
        for i in (0..up.len()).step_by(8) {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
            let p = up.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_mul_ps(s, _mm256_loadu_ps(p)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_pairs_and_keeps_norm() {
        let mut r: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin() + 0.1).collect();
        let orig = r.clone();
        rope(&mut r, 8, 8, 5, 10000.0, RopeStyle::Neox);
        // Position 0 is the identity.
        let mut z = orig.clone();
        rope(&mut z, 8, 8, 0, 10000.0, RopeStyle::Normal);
        assert_eq!(z, orig);
        // A rotation keeps the length of every rotated pair.
        for h in 0..2 {
            for i in 0..4 {
                let (a, b) = (orig[h * 8 + i], orig[h * 8 + i + 4]);
                let (c, d) = (r[h * 8 + i], r[h * 8 + i + 4]);
                assert!(((a * a + b * b) - (c * c + d * d)).abs() < 1e-5);
            }
        }
        // The first pair rotates by exactly pos radians.
        let (a, b) = (orig[0], orig[4]);
        assert!((r[0] - (a * 5f32.cos() - b * 5f32.sin())).abs() < 1e-5);
    }

    /// The vectorised SwiGLU (ggml's exp) agrees with libm's silu to a few ulp, also where
    /// exp overflows or flushes, and over a row whose length is not a multiple of 8.
    #[test]
    fn swiglu_matches_libm_silu() {
        let mut gate: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.013).collect();
        gate.extend([-100.0, -89.0, -87.5, 88.0, 95.0, 100.0, 0.0, -0.0, 1e-30]);
        let mut up = vec![1.0f32; gate.len()];
        swiglu(&gate, &mut up);
        for (&g, &u) in gate.iter().zip(&up) {
            let want = silu(g);
            assert!(
                (u - want).abs() <= 4e-7 * want.abs().max(1e-30),
                "silu({g}) = {u}, libm {want}"
            );
        }
    }

    #[test]
    fn norm_and_activations() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let w = [1.0f32, 0.5, 2.0, 1.0];
        let mut o = [0f32; 4];
        rms_norm(&x, &w, 0.0, &mut o);
        let rms = (30.0f32 / 4.0).sqrt();
        assert!((o[2] - 3.0 / rms * 2.0).abs() < 1e-6);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((gelu_f32(1.0) - 0.841_192).abs() < 1e-5);
        // ggml's f16 table: f16(gelu(f16(x))), saturating outside [-10, 10].
        for x in [1.0f32, -0.3, 2.718_281_7, 9.99, -9.99] {
            let want = f16::from_f32(gelu_f32(f16::from_f32(x).to_f32())).to_f32();
            assert_eq!(gelu(x), want, "{x}");
        }
        assert_eq!((gelu(-10.0), gelu(12.5)), (0.0, 12.5));
        let mut up = [2.0f32, 2.0, -1.0];
        ffn_activation(FfnKind::DReLU, &[1.0, -1.0, 3.0], &mut up);
        assert_eq!(up, [2.0, 0.0, 0.0]);
        let mut s = [1.0f32, 2.0, 3.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[2] > s[1]);
    }
}
