//! Dot kernels, matvec, gather_matvec and matmul on random data against plain references.

mod quant_common;

mod common;

use powerinfer::quant::{
    dequantize_row, dot_kernel, gather_matvec, matmul, matvec, matvec_many, matvec_q, scalar,
    vec_dot, GgmlType, QMatrix, QuantizedVec,
};
use quant_common::{random_row, Rng};

const DOT_TYPES: [GgmlType; 13] = [
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

fn dequant(ty: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize_row(ty, b, &mut out).unwrap();
    out
}

/// The activation vector as the kernels see it (after its own quantisation).
fn dequant_x(x: &QuantizedVec) -> Vec<f32> {
    if x.activation_type() == GgmlType::F32 {
        x.floats().to_vec()
    } else {
        dequant(x.activation_type(), x.bytes(), x.len())
    }
}

fn dot64(a: &[f32], b: &[f32]) -> (f64, f64) {
    let dot = a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum();
    let mag = a
        .iter()
        .zip(b)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    (dot, mag)
}

/// Q8_1 stores s = d * sum(q) as f16, so the Q4_1/Q5_1 offset term m * s carries that
/// rounding (as in ggml); this bounds it, and is zero for other formats.
fn offset_rounding(ty: GgmlType, row: &[u8], x: &QuantizedVec) -> f64 {
    if x.activation_type() != GgmlType::Q8_1 {
        return 0.0;
    }
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[2], b[3]]).to_f64().abs();
    row.chunks_exact(ty.block_bytes())
        .zip(x.bytes().chunks_exact(36))
        .map(|(w, x)| f16(w) * f16(x) / 1024.0)
        .sum()
}

fn lengths(ty: GgmlType) -> Vec<usize> {
    let bl = ty.block_len().max(32);
    let mut v: Vec<usize> = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17]
        .iter()
        .map(|k| k * bl)
        .collect();
    v.push(8192);
    v.push(8192 + bl);
    v
}

#[test]
fn scalar_kernels_equal_dequantised_dot() {
    let mut rng = Rng::new(1);
    for ty in DOT_TYPES {
        for n in lengths(ty) {
            let row = random_row(&mut rng, ty, n);
            let x = QuantizedVec::new(ty, &rng.vec(n));
            let (want, mag) = dot64(&dequant(ty, &row, n), &dequant_x(&x));
            let got = scalar::dot_kernel(ty).unwrap().dot(&row, &x) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * mag + 1e-6 + offset_rounding(ty, &row, &x),
                "{ty} n={n}: scalar {got}, reference {want}"
            );
            assert!(want.abs() > 0.0);
        }
    }
}

#[test]
fn best_kernels_equal_scalar_twins() {
    let mut rng = Rng::new(2);
    for ty in DOT_TYPES {
        for n in lengths(ty) {
            let row = random_row(&mut rng, ty, n);
            let x = QuantizedVec::new(ty, &rng.vec(n));
            let want = scalar::dot_kernel(ty).unwrap().dot(&row, &x);
            let got = dot_kernel(ty).unwrap().dot(&row, &x);
            let mag: f32 = dot64(&dequant(ty, &row, n), &dequant_x(&x)).1 as f32;
            assert!(
                (got - want).abs() <= 2e-6 * mag + 1e-6,
                "{ty} n={n}: best {got}, scalar {want}"
            );
            assert_eq!(vec_dot(ty, &row, &x), got);
            #[cfg(target_arch = "x86_64")]
            if powerinfer::quant::avx2::available() {
                use powerinfer::quant::avx2;
                let scalar_only = [GgmlType::BF16, GgmlType::Q2_K, GgmlType::Q3_K];
                assert_eq!(
                    avx2::kernel(ty).is_some(),
                    !scalar_only.contains(&ty),
                    "{ty}"
                );
                // Both the plain AVX2 and the VNNI variant, where this CPU has them.
                for vnni in [false, true] {
                    let Some(k) = avx2::kernel_with(ty, vnni) else {
                        continue;
                    };
                    let got = k.dot(&row, &x);
                    assert!(
                        (got - want).abs() <= 2e-6 * mag + 1e-6,
                        "{ty} n={n} vnni={vnni}: {got}, scalar {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn quantized_vec_reuses_and_pads() {
    let mut rng = Rng::new(3);
    let x = rng.vec(300);
    let mut q = QuantizedVec::new(GgmlType::Q4_K, &x);
    assert_eq!(q.len(), 300);
    assert_eq!(q.activation_type(), GgmlType::Q8_K);
    assert_eq!(q.bytes().len(), 2 * 292);
    let back = dequant(GgmlType::Q8_K, q.bytes(), 512);
    assert!(back[300..].iter().all(|&v| v == 0.0));
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    for (a, b) in back.iter().zip(&x) {
        assert!((a - b).abs() <= amax / 127.0);
    }
    q.set(GgmlType::Q4_1, &x[..64]);
    assert_eq!((q.len(), q.activation_type()), (64, GgmlType::Q8_1));
    assert_eq!(q.bytes().len(), 2 * 36);
}

fn random_matrix(rng: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    (0..rows).flat_map(|_| random_row(rng, ty, cols)).collect()
}

#[test]
fn matvec_equals_naive_reference() {
    let mut rng = Rng::new(4);
    for ty in DOT_TYPES {
        // Small (serial path) and large enough to go parallel.
        for (rows, cols) in [(7, 256), (300, 1024), (1000, 2048)] {
            let data = random_matrix(&mut rng, ty, rows, cols);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            let x = rng.vec(cols);
            let xq = QuantizedVec::new(ty, &x);
            let xd = dequant_x(&xq);
            let mut y = vec![f32::NAN; rows];
            matvec(&w, &x, &mut y);
            let mut y2 = vec![f32::NAN; rows];
            matvec_q(&w, &xq, &mut y2);
            assert_eq!(y, y2);
            for (r, &got) in y.iter().enumerate() {
                let (want, mag) = dot64(&dequant(ty, w.row(r), cols), &xd);
                assert!(
                    (got as f64 - want).abs()
                        <= 1e-5 * mag + 1e-6 + offset_rounding(ty, w.row(r), &xq),
                    "{ty} {rows}x{cols} row {r}: {got} vs {want}"
                );
            }
        }
    }
}

/// Several matrices in one section (attention's q, k and v) give each output the bits of its
/// own `matvec`, for shapes on the serial path, shapes whose task chunks straddle matrices, and
/// a single matrix; mismatched matrices are refused.
#[test]
fn matvec_many_equals_separate_matvecs_bit_exactly() {
    let mut rng = Rng::new(6);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
    ] {
        for (shapes, cols) in [
            (vec![7, 3, 5], 256),
            (vec![1024, 256, 256], 1024),
            (vec![515, 129, 771, 64], 512),
            (vec![900], 2048),
        ] {
            let data: Vec<Vec<u8>> = shapes
                .iter()
                .map(|&r| random_matrix(&mut rng, ty, r, cols))
                .collect();
            let ws: Vec<QMatrix> = shapes
                .iter()
                .zip(&data)
                .map(|(&r, d)| QMatrix::new(ty, r, cols, d).unwrap())
                .collect();
            let x = rng.vec(cols);
            let mut got: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![f32::NAN; r]).collect();
            let mut outs: Vec<&mut [f32]> = got.iter_mut().map(|v| &mut v[..]).collect();
            matvec_many(&ws, &x, &mut outs);
            for (w, got) in ws.iter().zip(&got) {
                let mut want = vec![0.0; w.rows];
                matvec(w, &x, &mut want);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{ty} {shapes:?}x{cols}"
                );
            }
        }
    }
    let (a, b) = (
        random_matrix(&mut rng, GgmlType::Q4_0, 4, 256),
        random_matrix(&mut rng, GgmlType::Q8_0, 4, 256),
    );
    let ws = [
        QMatrix::new(GgmlType::Q4_0, 4, 256, &a).unwrap(),
        QMatrix::new(GgmlType::Q8_0, 4, 256, &b).unwrap(),
    ];
    let (mut y0, mut y1) = (vec![0.0; 4], vec![0.0; 4]);
    let x = rng.vec(256);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        matvec_many(&ws, &x, &mut [&mut y0, &mut y1])
    }));
    assert!(r.is_err(), "matrices of two types were accepted");
}

#[test]
fn gather_matvec_equals_selected_rows() {
    let mut rng = Rng::new(5);
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::F32,
    ] {
        let (rows, cols) = (1536, 512);
        let data = random_matrix(&mut rng, ty, rows, cols);
        let w = QMatrix::new(ty, rows, cols, &data).unwrap();
        let x = QuantizedVec::new(ty, &rng.vec(cols));
        let mut full = vec![0.0; rows];
        matvec_q(&w, &x, &mut full);
        for k in [1, 10, 701] {
            let sel: Vec<u32> = (0..k).map(|_| (rng.u64() % rows as u64) as u32).collect();
            let mut y = vec![f32::NAN; k];
            gather_matvec(&w, &sel, &x, &mut y);
            for (y, &r) in y.iter().zip(&sel) {
                assert_eq!(*y, full[r as usize]);
            }
        }
    }
}

/// Activations like real ones with massive outliers: per 32-element block, either ordinary
/// values, tiny ones (~1e-2), or tiny ones with a few ~1e3 spikes (SmolLM2 feeds |x| ~ 2800
/// into layer 11's ffn_down), so that any change in summation order shows in the result.
fn outlier_vec(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.vec(n);
    for block in x.chunks_mut(32) {
        match rng.u64() % 3 {
            0 => {}
            1 => block.iter_mut().for_each(|v| *v *= 1e-2),
            _ => {
                block.iter_mut().for_each(|v| *v *= 1e-2);
                for _ in 0..1 + rng.u64() % 3 {
                    let j = (rng.u64() % block.len() as u64) as usize;
                    block[j] = 1e3 * (1.0 + rng.f32());
                }
            }
        }
    }
    x
}

/// The types with four-input (prefill) kernels: plain ones, and ones taking the inputs'
/// scales pre-converted to f32.
const X4_TYPES: [GgmlType; 5] = [
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];
const X4_SCALED_TYPES: [GgmlType; 3] = [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0];
/// Float weights, whose four-input kernels take the inputs as f32.
const X4_FLOAT_TYPES: [GgmlType; 2] = [GgmlType::F32, GgmlType::F16];

#[test]
fn matmul_equals_separate_matvecs_bit_exactly() {
    let mut rng = Rng::new(6);
    let types = X4_TYPES
        .into_iter()
        .chain(X4_SCALED_TYPES)
        .chain(X4_FLOAT_TYPES)
        // Scalar-only types: the single-input path of matmul.
        .chain([GgmlType::Q3_K]);
    for ty in types {
        let bl = ty.block_len();
        // Float rows also get a length that leaves a rest after the 32- and 8-wide steps.
        let rest = if bl == 1 { 13 } else { 0 };
        // Serial and parallel paths, odd and even block counts.
        for (rows, cols) in [
            (64, 3 * bl.max(32) + rest),
            (576, 1536),
            (300, 5 * bl.max(32) + rest),
        ] {
            let data = random_matrix(&mut rng, ty, rows, cols);
            let w = QMatrix::new(ty, rows, cols, &data).unwrap();
            for n in 1..=9 {
                let xs = outlier_vec(&mut rng, n * cols);
                let mut ys = vec![f32::NAN; n * rows];
                matmul(&w, &xs, &mut ys);
                for b in 0..n {
                    let mut y = vec![f32::NAN; rows];
                    matvec(&w, &xs[b * cols..(b + 1) * cols], &mut y);
                    let got = &ys[b * rows..(b + 1) * rows];
                    for (r, (g, want)) in got.iter().zip(&y).enumerate() {
                        assert_eq!(
                            g.to_bits(),
                            want.to_bits(),
                            "{ty} {rows}x{cols} n={n} input {b} row {r}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn qmatrix_new_rejects_bad_shapes() {
    let data = vec![0u8; 2 * 20];
    assert!(QMatrix::new(GgmlType::Q4_1, 2, 32, &data).is_ok());
    assert!(QMatrix::new(GgmlType::Q4_1, 3, 32, &data).is_err());
    assert!(QMatrix::new(GgmlType::Q4_1, 1, 48, &data).is_err());
    assert!(QMatrix::new(GgmlType::I32, 10, 1, &data).is_err());
    assert!(QMatrix::new(GgmlType::Q8_K, 1, 256, &[0u8; 292]).is_err());
}

/// Each input's Q8_0 block scales converted to f32, as the scaled multi-input kernels take them.
#[cfg(target_arch = "x86_64")]
fn f32_scales(xs: &[&[u8]]) -> Vec<Vec<f32>> {
    xs.iter()
        .map(|b| {
            let mut d = Vec::new();
            powerinfer::quant::avx2::q8_0_scales(b, &mut d);
            d
        })
        .collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn eight_input_kernels_bit_identical_to_single_kernels() {
    use powerinfer::quant::avx2;
    if !avx2::available() {
        return;
    }
    let mut rng = Rng::new(8);
    let mut checked = 0;
    for ty in DOT_TYPES {
        assert_eq!(
            avx2::kernel8_scaled_with(ty, false).is_some(),
            X4_SCALED_TYPES.contains(&ty),
            "{ty}"
        );
        for vnni in [false, true] {
            let Some(k8) = avx2::kernel8_scaled_with(ty, vnni) else {
                continue;
            };
            let k1 = avx2::kernel_with(ty, vnni).unwrap();
            for n in (1..=20).map(|k| k * 32).chain([8192, 8192 + 96]) {
                let row = random_row(&mut rng, ty, n);
                let xs: Vec<QuantizedVec> = (0..8)
                    .map(|i| {
                        let x = if i % 3 == 0 {
                            rng.vec(n)
                        } else {
                            outlier_vec(&mut rng, n)
                        };
                        QuantizedVec::new(ty, &x)
                    })
                    .collect();
                let bytes: Vec<&[u8]> = xs.iter().map(|x| x.bytes()).collect();
                let ds = f32_scales(&bytes);
                let mut out = [f32::NAN; 8];
                k8(
                    &row,
                    std::array::from_fn(|j| xs[j].bytes()),
                    std::array::from_fn(|j| &ds[j][..]),
                    &mut out,
                );
                for (i, (x, got)) in xs.iter().zip(out).enumerate() {
                    let want = k1.dot(&row, x);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} vnni={vnni} n={n} input {i}: {got} vs {want}"
                    );
                    checked += 1;
                }
            }
        }
    }
    let variants = if avx2::has_vnni() { 2 } else { 1 };
    assert_eq!(checked, X4_SCALED_TYPES.len() * 22 * 8 * variants);
}

#[cfg(target_arch = "x86_64")]
/// The four-row kernels (decode matvec and the sparse gather) give each row the bits of the
/// single-row kernel of the same variant, on ordinary and outlier activations.
#[test]
fn four_row_kernels_bit_identical_to_single_kernels() {
    use powerinfer::quant::{avx2, avx2_rows};
    if !avx2::available() {
        return;
    }
    let mut rng = Rng::new(17);
    let mut checked = 0;
    for ty in DOT_TYPES {
        for vnni in [false, true] {
            let Some(k4) = avx2_rows::kernel_rows4_with(ty, vnni) else {
                continue;
            };
            let k1 = avx2::kernel_with(ty, vnni).unwrap();
            for n in (1..=12).map(|k| k * 32).chain([2048, 8192 + 96]) {
                for trial in 0..3 {
                    let rows: Vec<Vec<u8>> = (0..4).map(|_| random_row(&mut rng, ty, n)).collect();
                    let x = if trial == 0 {
                        rng.vec(n)
                    } else {
                        outlier_vec(&mut rng, n)
                    };
                    let x = QuantizedVec::new(ty, &x);
                    let mut out = [f32::NAN; 4];
                    let four = [&rows[0][..], &rows[1], &rows[2], &rows[3]];
                    // The prefetched rows are hints: these, or none, give the same bits.
                    let next = if trial == 2 { [&[][..]; 4] } else { four };
                    k4(four, x.bytes(), &mut out, next);
                    for (r, got) in out.iter().enumerate() {
                        let want = k1.dot(&rows[r], &x);
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{ty} vnni={vnni} n={n} row {r}: {got} vs {want}"
                        );
                        assert!(*got != 0.0);
                    }
                    checked += 1;
                }
            }
        }
    }
    let variants = if avx2::has_vnni() { 2 } else { 1 };
    assert_eq!(
        checked,
        3 * 14 * 3 * variants,
        "Q4_0, Q4_1, Q8_0 have four-row kernels"
    );
}

#[test]
fn four_input_kernels_bit_identical_to_single_kernels() {
    use powerinfer::quant::avx2;
    if !avx2::available() {
        return;
    }
    let mut rng = Rng::new(7);
    let mut pairs = 0;
    let mut scaled = 0;
    let mut float = 0;
    for ty in DOT_TYPES {
        assert_eq!(avx2::kernel4(ty).is_some(), X4_TYPES.contains(&ty), "{ty}");
        assert_eq!(
            avx2::kernel4_scaled(ty).is_some(),
            X4_SCALED_TYPES.contains(&ty),
            "{ty}"
        );
        assert_eq!(
            avx2::kernel4_float(ty).is_some(),
            X4_FLOAT_TYPES.contains(&ty),
            "{ty}"
        );
        // Each four-input variant against the single kernel of the same variant (the one
        // `matvec` uses where it is the best this CPU has). For float weights the flag picks
        // the AVX-512 VL build of the four-input kernel; the single kernel has one build.
        for vnni in [false, true] {
            let k4 = avx2::kernel4_with(ty, vnni);
            let k4s = avx2::kernel4_scaled_with(ty, vnni);
            let k4f = avx2::kernel4_float_with(ty, vnni);
            if k4.is_none() && k4s.is_none() && k4f.is_none() {
                continue;
            }
            let k1 = avx2::kernel_with(ty, vnni && k4f.is_none()).unwrap();
            pairs += 1;
            let bl = ty.block_len().max(32);
            // Float rows also at lengths that end in 8-wide steps and a scalar rest.
            let rests: &[usize] = if k4f.is_some() {
                &[1, 7, 8, 13, 40, 77, 8192 + 21]
            } else {
                &[]
            };
            let lengths = (1..=20)
                .map(|k| k * bl)
                .chain([8192, 8192 + bl, 8192 + 3 * bl])
                .chain(rests.iter().copied());
            for n in lengths {
                for trial in 0..3 {
                    let row = random_row(&mut rng, ty, n);
                    let xs: Vec<QuantizedVec> = (0..4)
                        .map(|i| {
                            let x = if (i + trial) % 4 == 0 {
                                rng.vec(n)
                            } else {
                                outlier_vec(&mut rng, n)
                            };
                            QuantizedVec::new(ty, &x)
                        })
                        .collect();
                    let mut out = [f32::NAN; 4];
                    let xb = [xs[0].bytes(), xs[1].bytes(), xs[2].bytes(), xs[3].bytes()];
                    if let Some(k4f) = k4f {
                        let xf = [0, 1, 2, 3].map(|i| xs[i].floats());
                        k4f(&row, xf, &mut out);
                        float += 1;
                    } else if let Some(k4) = k4 {
                        k4(&row, xb, &mut out);
                    } else if let Some(k4s) = k4s {
                        let ds = f32_scales(&xb);
                        k4s(&row, xb, [&ds[0], &ds[1], &ds[2], &ds[3]], &mut out);
                        scaled += 1;
                    }
                    for (i, (x, got)) in xs.iter().zip(out).enumerate() {
                        let want = k1.dot(&row, x);
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{ty} vnni={vnni} n={n} input {i}: {got} vs {want}"
                        );
                        let scalar = scalar::dot_kernel(ty).unwrap().dot(&row, x);
                        let mag = dot64(&dequant(ty, &row, n), &dequant_x(x)).1 as f32;
                        assert!(
                            (got - scalar).abs() <= 2e-6 * mag + 1e-6,
                            "{ty} n={n}: {got} vs scalar {scalar}"
                        );
                    }
                }
            }
        }
    }
    let variants = if avx2::has_vnni() { 2 } else { 1 };
    let float_variants = if avx2::has_avx512vl() { 2 } else { 1 };
    assert_eq!(
        pairs,
        (X4_TYPES.len() + X4_SCALED_TYPES.len()) * variants + X4_FLOAT_TYPES.len() * float_variants
    );
    // Every scaled type, length and trial, per variant.
    assert_eq!(scaled, X4_SCALED_TYPES.len() * 23 * 3 * variants);
    assert_eq!(float, X4_FLOAT_TYPES.len() * 30 * 3 * float_variants);
}

/// The two- and three-input float kernels (the rest of a batch after its fours) give each
/// input the single-input kernel's bits.
#[cfg(target_arch = "x86_64")]
#[test]
fn few_input_float_kernels_equal_the_single_kernel_bit_exactly() {
    use powerinfer::quant::avx2;
    if !avx2::available() {
        return;
    }
    let mut rng = Rng::new(9);
    for ty in X4_FLOAT_TYPES {
        let kf = avx2::kernel_few_float(ty).expect("float types have one");
        let k1 = avx2::kernel_with(ty, false).unwrap();
        for n in [1, 7, 8, 13, 32, 40, 77, 8192 + 21] {
            let row = random_row(&mut rng, ty, n);
            for m in [2, 3] {
                let xs: Vec<QuantizedVec> = (0..m)
                    .map(|_| QuantizedVec::new(ty, &outlier_vec(&mut rng, n)))
                    .collect();
                let xf: Vec<&[f32]> = xs.iter().map(|x| x.floats()).collect();
                let mut out = vec![f32::NAN; m];
                kf(&row, &xf, &mut out);
                for (i, (x, got)) in xs.iter().zip(&out).enumerate() {
                    let want = k1.dot(&row, x);
                    assert_eq!(
                        got.to_bits(),
                        want.to_bits(),
                        "{ty} n={n} {m} inputs, input {i}"
                    );
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_activation_quantizers_equal_scalar_bytes() {
    use powerinfer::quant::{avx2, scalar_quantizer};
    if !avx2::available() {
        return;
    }
    let mut rng = Rng::new(8);
    for act in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let simd = avx2::quantizer(act).unwrap();
        let (bl, bb) = (act.block_len(), act.block_bytes());
        for trial in 0..200 {
            let mut x = rng.vec(bl);
            if trial % 4 == 1 {
                // Exact ties after scaling: multiples of amax / 254.
                let amax = 2.54f32;
                for v in x.iter_mut() {
                    *v = ((rng.u64() % 255) as f32 - 127.0) * 0.01;
                }
                x[0] = amax;
            }
            if trial == 2 {
                x.fill(0.0);
            }
            let (mut a, mut b) = (vec![0u8; bb], vec![0u8; bb]);
            simd(&x, &mut a);
            scalar_quantizer(act)(&x, &mut b);
            assert_eq!(a, b, "{act} trial {trial}");
        }
    }
}

/// Levels × scale + offset reproduce dequantisation: the legacy formats on random rows, the
/// k-quants on rows of a real model (gemma3's ffn_down mixes Q4_K and Q6_K).
#[test]
fn row_levels_reproduce_dequantize() {
    use powerinfer::quant::{dequantize_row, level_group, quantize_row, row_levels, GgmlType};
    fn check(ty: GgmlType, bytes: &[u8], n: usize) {
        let g = level_group(ty).unwrap();
        let mut want = vec![0f32; n];
        dequantize_row(ty, bytes, &mut want).unwrap();
        let (mut q, mut sc, mut of) = (vec![0i8; n], vec![0f32; n / g], vec![0f32; n / g]);
        assert!(row_levels(ty, bytes, &mut q, &mut sc, &mut of));
        for i in 0..n {
            let got = sc[i / g] * q[i] as f32 + of[i / g];
            assert!(
                (got - want[i]).abs() <= 1e-6 * (1.0 + want[i].abs()),
                "{ty} element {i}: {got} vs {}",
                want[i]
            );
        }
    }
    let n = 512;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let x: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
    ] {
        let mut bytes = vec![0u8; n / ty.block_len() * ty.block_bytes()];
        quantize_row(ty, &x, &mut bytes).unwrap();
        check(ty, &bytes, n);
    }
    assert!(level_group(GgmlType::Q3_K).is_none());
    let Some(path) = common::model("gemma3") else {
        return;
    };
    let f = powerinfer::gguf::GgufFile::open(&path).unwrap();
    let mut seen = std::collections::HashSet::new();
    for l in 0..18 {
        let t = f.tensor(&format!("blk.{l}.ffn_down.weight")).unwrap();
        if seen.insert(t.ty()) {
            for r in [0, 7, t.n_rows() - 1] {
                check(t.ty(), t.row(r), t.row_len());
            }
        }
    }
    assert!(seen.contains(&GgmlType::Q4_K) && seen.contains(&GgmlType::Q6_K));
}
