//! Element-wise and row-wise CPU kernels. Each is also the CPU twin (test reference) of the
//! CUDA kernel of the same name.

use crate::model::{FfnKind, RopeStyle};

/// `out = x / rms(x) * w` on one segment. The sum of squares is accumulated in f64 (as ggml
/// does) so long rows do not lose precision.
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
    let sum: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

/// Rotary position embedding of every head in `row` (a token at position `pos`).
/// Angles follow ggml: theta_i = pos * base^(-2i/rope_dim), built by repeated multiplication
/// in f32 so results match llama.cpp's to the last bit as far as possible.
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
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = a * c - b * s;
                    head[2 * i + 1] = a * s + b * c;
                }
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

#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (what gemma's `gelu_pytorch_tanh` and ggml's gelu compute).
#[inline]
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)).tanh())
}

#[inline]
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// `up = act(gate) * up` (or `relu(up)` for the plain kind) over one row.
pub fn ffn_activation(kind: FfnKind, gate: &[f32], up: &mut [f32]) {
    match kind {
        FfnKind::SwiGlu => up.iter_mut().zip(gate).for_each(|(u, &g)| *u *= silu(g)),
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

    #[test]
    fn norm_and_activations() {
        let x = [1.0f32, -2.0, 3.0, -4.0];
        let w = [1.0f32, 0.5, 2.0, 1.0];
        let mut o = [0f32; 4];
        rms_norm(&x, &w, 0.0, &mut o);
        let rms = (30.0f32 / 4.0).sqrt();
        assert!((o[2] - 3.0 / rms * 2.0).abs() < 1e-6);
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        let mut up = [2.0f32, 2.0, -1.0];
        ffn_activation(FfnKind::DReLU, &[1.0, -1.0, 3.0], &mut up);
        assert_eq!(up, [2.0, 0.0, 0.0]);
        let mut s = [1.0f32, 2.0, 3.0];
        softmax(&mut s);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[2] > s[1]);
    }
}
