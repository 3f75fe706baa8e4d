//! Kernels on real model weights: matvec/matmul over whole tensors of the registry models
//! equal a dequantise-then-dot reference in f64 (skipped when the models are absent).

mod common;

use powerinfer::gguf::GgufFile;
use powerinfer::quant::{
    activation_type, dequantize_row, matmul, matvec, GgmlType, QMatrix, QuantizedVec,
};

/// The activation values the kernels multiply with (after their 8-bit rounding).
fn dequantized(q: &QuantizedVec) -> Vec<f32> {
    if q.activation_type() == GgmlType::F32 {
        return q.floats().to_vec();
    }
    let mut out = vec![0.0f32; q.n_blocks() * q.activation_type().block_len()];
    dequantize_row(q.activation_type(), q.bytes(), &mut out).unwrap();
    out.truncate(q.len());
    out
}

fn check_tensor(g: &GgufFile, name: &str, want_ty: GgmlType) {
    let t = g.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    assert_eq!(t.ty(), want_ty, "{name} type");
    let (rows, cols) = (t.n_rows(), t.row_len());
    let w = QMatrix::new(t.ty(), rows, cols, t.data).unwrap();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919 + 13) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut y = vec![0.0f32; rows];
    matvec(&w, &x, &mut y);
    let xd = dequantized(&QuantizedVec::new(t.ty(), &x));
    let mut wr = vec![0.0f32; cols];
    // Q4_1/Q5_1 kernels take the block sums of their Q8_1 activations from an f16 field (as
    // ggml does), which a dequantise-then-dot reference does not see: allow f16 rounding there.
    let tol = if activation_type(t.ty()) == Some(GgmlType::Q8_1) {
        1e-3
    } else {
        2e-5
    };
    // Every 7th row keeps the test quick on big matrices while covering the whole tensor.
    for r in (0..rows).step_by(7) {
        dequantize_row(t.ty(), w.row(r), &mut wr).unwrap();
        let (mut s, mut mag) = (0.0f64, 0.0f64);
        for (a, b) in wr.iter().zip(&xd) {
            s += *a as f64 * *b as f64;
            mag += (*a as f64 * *b as f64).abs();
        }
        assert!(
            (y[r] as f64 - s).abs() <= tol * mag + 1e-6,
            "{name} row {r}: {} vs {s}",
            y[r]
        );
    }
    // Prefill over 6 inputs agrees with separate matvecs.
    let n = 6;
    let xs: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 31 + 7) % 997) as f32 / 498.0 - 1.0)
        .collect();
    let mut ys = vec![0.0f32; n * rows];
    matmul(&w, &xs, &mut ys);
    for b in 0..n {
        let mut yb = vec![0.0f32; rows];
        matvec(&w, &xs[b * cols..(b + 1) * cols], &mut yb);
        for r in 0..rows {
            let d = (ys[b * rows + r] - yb[r]).abs();
            assert!(d <= 1e-4 * (1.0 + yb[r].abs()), "{name} matmul {b} row {r}");
        }
    }
}

#[test]
fn smollm2_tensors() {
    let Some(p) = common::model("smollm2") else {
        return;
    };
    let g = GgufFile::open(p).unwrap();
    check_tensor(&g, "blk.0.ffn_down.weight", GgmlType::Q4_1);
    check_tensor(&g, "blk.0.ffn_up.weight", GgmlType::Q4_1);
    check_tensor(&g, "token_embd.weight", GgmlType::Q8_0);
}

/// The first 2-D tensor of each given type.
fn check_each_type(g: &GgufFile, types: &[GgmlType]) {
    for &ty in types {
        let name = g
            .tensors
            .iter()
            .find(|t| t.ty == ty && t.dims.len() == 2)
            .map(|t| t.name.clone())
            .unwrap_or_else(|| panic!("no {ty} tensor"));
        check_tensor(g, &name, ty);
    }
}

#[test]
fn qwen_tensors() {
    let Some(p) = common::model("qwen05") else {
        return;
    };
    let g = GgufFile::open(p).unwrap();
    check_tensor(&g, "blk.11.ffn_down.weight", GgmlType::Q4_K);
    check_tensor(&g, "output.weight", GgmlType::Q8_0);
    check_each_type(&g, &[GgmlType::Q4_K, GgmlType::Q5_0, GgmlType::Q6_K]);
}

#[test]
fn gemma3_tensors() {
    let Some(p) = common::model("gemma3") else {
        return;
    };
    let g = GgufFile::open(p).unwrap();
    check_each_type(
        &g,
        &[
            GgmlType::Q4_K,
            GgmlType::Q5_0,
            GgmlType::Q6_K,
            GgmlType::Q8_0,
        ],
    );
}
