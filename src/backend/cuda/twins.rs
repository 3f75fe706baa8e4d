//! CPU twins of the CUDA kernels that have no exact counterpart in the CPU backend: the test
//! reference of the kernel of the same name (the others are twinned by `cpu::ops`, see
//! cuda/README.md). Written for clarity, not speed; dot products accumulate in f64.

use half::f16;

use crate::backend::cpu::ops;
use crate::model::FfnKind;
use crate::quant::{self, GgmlType};
use crate::sparse::{LayerThreshold, SparsityRule};

/// Every row of a weight matrix in `ty`'s format, dequantised to f32.
pub fn dequantize_matrix(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let rb = ty.row_bytes(cols).expect("whole blocks");
    let mut out = vec![0f32; rows * cols];
    for (o, r) in out.chunks_exact_mut(cols).zip(data.chunks_exact(rb)) {
        quant::dequantize_row(ty, r, o).expect("dequantisable type");
    }
    out
}

fn dot64(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum::<f64>() as f32
}

/// Twin of `matmul_<type>`: `out[t][r] = W[r] · x[t]` for `n_tok` rows of x.
pub fn matmul(ty: GgmlType, data: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    let w = dequantize_matrix(ty, data, rows, cols);
    x.chunks_exact(cols)
        .flat_map(|xt| w.chunks_exact(cols).map(move |wr| dot64(wr, xt)))
        .collect()
}

/// Twin of `matvec_<type>`: [`matmul`] of one token.
pub fn matvec(ty: GgmlType, data: &[u8], rows: usize, cols: usize, x: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), cols);
    matmul(ty, data, rows, cols, x)
}

/// Twin of `embed_<type>`: rows `tokens` of the table, times `scale`.
pub fn embed(ty: GgmlType, data: &[u8], cols: usize, tokens: &[u32], scale: f32) -> Vec<f32> {
    let rb = ty.row_bytes(cols).expect("whole blocks");
    let mut out = vec![0f32; tokens.len() * cols];
    for (o, &t) in out.chunks_exact_mut(cols).zip(tokens) {
        let t = t as usize;
        quant::dequantize_row(ty, &data[t * rb..(t + 1) * rb], o).expect("dequantisable type");
        o.iter_mut().for_each(|v| *v *= scale);
    }
    out
}

/// Twin of `add`: `x += y`.
pub fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, &b)| *a += b);
}

/// Twin of `add_bias`: the bias row added to every row of x.
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for r in x.chunks_exact_mut(b.len()) {
        add(r, b);
    }
}

/// Twin of `store_kv`: the f16 bits (round to nearest even) the cache holds for `v`.
pub fn store_kv(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| f16::from_f32(x).to_bits()).collect()
}

fn f16_row_dot(w: &[f16], x: &[f32]) -> f32 {
    w.iter()
        .zip(x)
        .map(|(&a, &b)| a.to_f64() * b as f64)
        .sum::<f64>() as f32
}

/// Twin of `predictor_hidden`: `relu(W1 · x + b1)`, W1 `[rank][d_in]`.
pub fn predictor_hidden(w1: &[f16], b1: &[f32], x: &[f32]) -> Vec<f32> {
    w1.chunks_exact(x.len())
        .zip(b1)
        .map(|(r, &b)| (f16_row_dot(r, x) + b).max(0.0))
        .collect()
}

/// Twin of `predictor_logits`: `W2 · h + b2`, W2 `[d_out][rank]`.
pub fn predictor_logits(w2: &[f16], b2: &[f32], h: &[f32]) -> Vec<f32> {
    w2.chunks_exact(h.len())
        .zip(b2)
        .map(|(r, &b)| f16_row_dot(r, h) + b)
        .collect()
}

/// Twin of `predictor_compact`: the positions k (ascending) of the hot neurons
/// `hot_ids[k]` whose logit is positive.
pub fn predictor_compact(logits: &[f32], hot_ids: &[u32]) -> Vec<u32> {
    (0..hot_ids.len() as u32)
        .filter(|&k| logits[hot_ids[k as usize] as usize] > 0.0)
        .collect()
}

/// Twin of `sparse_gate_up_<type>`: for each active hot row k, `act(gate_k · x) * (up_k · x)`
/// (`relu(up_k · x)` for the plain kind), zeroed when the rule `th` deems it inactive; gate
/// and up hold the compacted hot rows.
#[allow(clippy::too_many_arguments)]
pub fn sparse_gate_up(
    kind: FfnKind,
    th: LayerThreshold,
    ty: GgmlType,
    cols: usize,
    gate: Option<&[u8]>,
    up: &[u8],
    active: &[u32],
    x: &[f32],
) -> Vec<f32> {
    let rb = ty.row_bytes(cols).expect("whole blocks");
    let row = |m: &[u8], k: u32| dequantize_matrix(ty, &m[k as usize * rb..][..rb], 1, cols);
    active
        .iter()
        .map(|&k| {
            let u = dot64(&row(up, k), x);
            let g = gate.map_or(0.0, |g| dot64(&row(g, k), x));
            // Plain f32 activations, as the kernel computes them (not the CPU's ggml
            // approximations), then the layer's rule as `sparse::rule_activation` applies it.
            let act = |up: f32| {
                let mut v = [up];
                ops::ffn_activation_f32(kind, &[g], &mut v);
                v[0]
            };
            let a = act(u);
            let drop = match th.rule {
                SparsityRule::Relu => false,
                SparsityRule::Gate => kind.is_gated() && act(1.0).abs() <= th.t,
                SparsityRule::Product => a.abs() <= th.t,
            };
            if drop {
                0.0
            } else {
                a
            }
        })
        .collect()
}

/// Twin of `sparse_down`: `y = Σ act[a] · down_t[active[a]]`, down_t f16 `[n_hot][d_model]`.
pub fn sparse_down(down_t: &[f16], active: &[u32], act: &[f32], d_model: usize) -> Vec<f32> {
    let mut y = vec![0f64; d_model];
    for (&k, &a) in active.iter().zip(act) {
        let col = &down_t[k as usize * d_model..][..d_model];
        for (o, &w) in y.iter_mut().zip(col) {
            *o += a as f64 * w.to_f64();
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}
