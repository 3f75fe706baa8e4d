//! Dot kernels and matrix products on random non-zero data: the dispatched (SIMD) kernels equal
//! their scalar twins, which equal a dequantise-then-dot reference in f64; matvec, gather_matvec
//! and matmul agree with each other.

use half::f16;
use powerinfer::quant::{
    dequantize_row, gather_matvec, matmul, matvec, matvec_q, quantize_row, scalar, vec_dot,
    GgmlType, QMatrix, QuantizedVec,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Byte offsets of the f16 scale fields in a block; the rest of a block may be any bytes.
fn f16_fields(t: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match t {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A random row of `n` elements: random block bytes with plausible scales.
fn random_row(rng: &mut Rng, t: GgmlType, n: usize) -> Vec<u8> {
    if matches!(t, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
        let x: Vec<f32> = (0..n).map(|_| rng.f() * 2.0).collect();
        let mut out = vec![0u8; t.row_bytes(n).unwrap()];
        quantize_row(t, &x, &mut out).unwrap();
        return out;
    }
    let mut out: Vec<u8> = (0..t.row_bytes(n).unwrap())
        .map(|_| rng.next() as u8)
        .collect();
    for b in out.chunks_exact_mut(t.block_bytes()) {
        for &o in f16_fields(t) {
            let v = f16::from_f32(rng.f() * 0.05 + 0.001);
            b[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn random_x(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f() * 3.0 + 0.01).collect()
}

/// Exact (f64) dot of the dequantised row with the values the kernel sees, and the sum of
/// |terms| to scale the tolerance.
fn reference(t: GgmlType, row: &[u8], x: &QuantizedVec) -> (f64, f64) {
    let mut w = vec![0.0f32; x.len()];
    dequantize_row(t, row, &mut w).unwrap();
    let xd = x.dequantized();
    let mut s = 0.0f64;
    let mut a = 0.0f64;
    for (w, x) in w.iter().zip(&xd) {
        s += *w as f64 * *x as f64;
        a += (*w as f64 * *x as f64).abs();
    }
    (s, a)
}

fn lengths(t: GgmlType) -> Vec<usize> {
    let bl = t.block_len().max(32);
    let mut v: Vec<usize> = (1..=9).map(|k| k * bl).collect();
    v.extend(
        [576, 896, 1536, 4864, 8192, 8448]
            .iter()
            .filter(|&&n| n % bl == 0),
    );
    v
}

#[test]
fn scalar_kernels_equal_dequantised_reference() {
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for t in WEIGHT_TYPES {
        for n in lengths(t) {
            let row = random_row(&mut rng, t, n);
            let x = QuantizedVec::new(t, &random_x(&mut rng, n));
            let got = scalar::vec_dot(t, &row, &x) as f64;
            let (want, mag) = reference(t, &row, &x);
            assert!(mag > 0.0);
            assert!(
                (got - want).abs() <= 2e-5 * mag + 1e-6,
                "{t} n={n}: scalar {got} vs reference {want} (|terms| {mag})"
            );
        }
    }
}

#[test]
fn dispatched_kernels_equal_scalar_twins() {
    let mut rng = Rng(0x1234567);
    for t in WEIGHT_TYPES {
        for n in lengths(t) {
            let row = random_row(&mut rng, t, n);
            let x = QuantizedVec::new(t, &random_x(&mut rng, n));
            let s = scalar::vec_dot(t, &row, &x) as f64;
            let f = vec_dot(t, &row, &x) as f64;
            let (_, mag) = reference(t, &row, &x);
            assert!(
                (s - f).abs() <= 1e-5 * mag + 1e-6,
                "{t} n={n}: fast {f} vs scalar {s}"
            );
        }
    }
}

/// Quantised activations are close to the input: errors bounded by half a quant step per block.
#[test]
fn activation_quantisation_error_is_within_half_a_step() {
    let mut rng = Rng(77);
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K] {
        let x = random_x(&mut rng, 1024);
        let q = QuantizedVec::new(t, &x);
        let bl = if t == GgmlType::Q4_K { 256 } else { 32 };
        for (b, (xs, qs)) in x.chunks(bl).zip(q.dequantized().chunks(bl)).enumerate() {
            let amax = xs.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            for (a, b2) in xs.iter().zip(qs) {
                assert!((a - b2).abs() <= amax / 127.0 * 0.5001, "{t} block {b}");
            }
        }
    }
}

fn random_matrix(rng: &mut Rng, t: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    (0..rows).flat_map(|_| random_row(rng, t, cols)).collect()
}

#[test]
fn matvec_gather_and_matmul_agree() {
    let mut rng = Rng(4242);
    for (t, rows, cols) in [
        (GgmlType::Q4_1, 1536, 576),
        (GgmlType::Q8_0, 64, 576),
        (GgmlType::Q4_K, 700, 512),
        (GgmlType::Q6_K, 300, 1024),
        (GgmlType::Q5_0, 896, 256),
        (GgmlType::F32, 200, 96),
    ] {
        let data = random_matrix(&mut rng, t, rows, cols);
        let w = QMatrix::new(t, rows, cols, &data).unwrap();
        let x = random_x(&mut rng, cols);
        let mut y = vec![0.0f32; rows];
        matvec(&w, &x, &mut y);
        let qx = QuantizedVec::new(t, &x);
        for (r, &yr) in y.iter().enumerate() {
            let (want, mag) = reference(t, w.row(r), &qx);
            assert!(
                (yr as f64 - want).abs() <= 2e-5 * mag + 1e-6,
                "{t} matvec row {r}: {yr} vs {want}"
            );
        }
        let mut y2 = vec![0.0f32; rows];
        matvec_q(&w, &qx, &mut y2);
        assert_eq!(y, y2);

        let sel: Vec<u32> = (0..rows as u32 / 2)
            .map(|_| (rng.next() % rows as u64) as u32)
            .collect();
        let mut g = vec![0.0f32; sel.len()];
        gather_matvec(&w, &sel, &qx, &mut g);
        for (i, &r) in sel.iter().enumerate() {
            assert_eq!(g[i], y[r as usize], "{t} gather {i}");
        }

        // 9 inputs: two batched groups of four plus one single (float order may differ).
        let n = 9;
        let xs: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
        let mut ys = vec![0.0f32; n * rows];
        matmul(&w, &xs, &mut ys);
        for b in 0..n {
            let mut yb = vec![0.0f32; rows];
            matvec(&w, &xs[b * cols..(b + 1) * cols], &mut yb);
            let qb = QuantizedVec::new(t, &xs[b * cols..(b + 1) * cols]);
            for (r, &want) in yb.iter().enumerate() {
                let (_, mag) = reference(t, w.row(r), &qb);
                let got = ys[b * rows + r];
                assert!(
                    ((got - want) as f64).abs() <= 1e-5 * mag + 1e-6,
                    "{t} matmul input {b} row {r}: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn batched_x4_kernels_equal_single_dots() {
    let mut rng = Rng(31337);
    for t in WEIGHT_TYPES {
        for n in lengths(t) {
            let row = random_row(&mut rng, t, n);
            let xs: Vec<QuantizedVec> = (0..4)
                .map(|_| QuantizedVec::new(t, &random_x(&mut rng, n)))
                .collect();
            let got = powerinfer::quant::vec_dot_x4(t, &row, [&xs[0], &xs[1], &xs[2], &xs[3]]);
            for k in 0..4 {
                let want = scalar::vec_dot(t, &row, &xs[k]) as f64;
                let (_, mag) = reference(t, &row, &xs[k]);
                assert!(
                    (got[k] as f64 - want).abs() <= 1e-5 * mag + 1e-6,
                    "{t} n={n} input {k}: {} vs {want}",
                    got[k]
                );
            }
        }
    }
}

/// The (SIMD) activation quantiser gives exactly the scalar reference's bytes, ties included.
#[test]
fn activation_quantiser_equals_reference_bytes() {
    let mut rng = Rng(99);
    let mut x = random_x(&mut rng, 4096);
    // A block whose scale is exactly 1, so x*id hits .5 ties.
    x[..32].copy_from_slice(&[
        127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.49, 0.0, -127.0, 10.5, -10.5, 0.499, 0.501, 63.5,
        -63.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        16.0,
    ]);
    x[32..64].fill(0.0);
    for t in [GgmlType::Q8_0, GgmlType::Q4_1] {
        let q = QuantizedVec::new(t, &x);
        let mut bytes = vec![0u8; GgmlType::Q8_0.row_bytes(x.len()).unwrap()];
        quantize_row(GgmlType::Q8_0, &x, &mut bytes).unwrap();
        for (b, blk) in bytes.chunks_exact(34).enumerate() {
            let got: Vec<u8> = q.quants()[32 * b..32 * b + 32]
                .iter()
                .map(|&v| v as u8)
                .collect();
            assert_eq!(&blk[2..], &got[..], "{t} block {b}");
            let d16 = f16::from_le_bytes([blk[0], blk[1]]);
            assert_eq!(d16, f16::from_f32(q.scales()[b]), "{t} block {b} scale");
        }
    }
}

/// Same for the Q8_K activations of k-quant weights (including negative-max blocks).
#[test]
fn q8k_activation_quantiser_equals_reference_bytes() {
    let mut rng = Rng(5);
    let mut x = random_x(&mut rng, 2048);
    x[3] = -50.0; // first block: the largest magnitude is negative
    x[256..512].fill(0.0);
    x[600] = 127.0;
    x[601] = 0.5;
    x[602] = -0.5;
    let q = QuantizedVec::new(GgmlType::Q4_K, &x);
    let mut bytes = vec![0u8; GgmlType::Q8_K.row_bytes(x.len()).unwrap()];
    quantize_row(GgmlType::Q8_K, &x, &mut bytes).unwrap();
    for (b, blk) in bytes.chunks_exact(292).enumerate() {
        let d = f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]);
        assert_eq!(d.to_bits(), q.scales()[b].to_bits(), "block {b} scale");
        let got: Vec<u8> = q.quants()[256 * b..256 * b + 256]
            .iter()
            .map(|&v| v as u8)
            .collect();
        assert_eq!(&blk[4..260], &got[..], "block {b}");
    }
}

/// `matvec` called from many rayon tasks at once (nested inside another product's tasks)
/// gives the same results as serial calls.
#[test]
fn matvec_is_reentrant_under_rayon() {
    use rayon::prelude::*;
    let mut rng = Rng(8);
    let (rows, cols) = (1024, 512);
    let data = random_matrix(&mut rng, GgmlType::Q4_1, rows, cols);
    let w = QMatrix::new(GgmlType::Q4_1, rows, cols, &data).unwrap();
    let xs: Vec<Vec<f32>> = (0..16).map(|_| random_x(&mut rng, cols)).collect();
    let serial: Vec<Vec<f32>> = xs
        .iter()
        .map(|x| {
            let mut y = vec![0.0; rows];
            matvec(&w, x, &mut y);
            y
        })
        .collect();
    let parallel: Vec<Vec<f32>> = xs
        .par_iter()
        .map(|x| {
            let mut y = vec![0.0; rows];
            matvec(&w, x, &mut y);
            y
        })
        .collect();
    assert_eq!(serial, parallel);
}
