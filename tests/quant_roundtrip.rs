//! Quantise → dequantise round trips of every weight type we write, on random data: the error
//! stays within what the format's code count allows for the data's local scale, and the
//! searched k-quant scales do better than the plain min/max ones; and gguf-py reads the Q4_K and
//! Q6_K bytes we write as we do (fixtures from scripts/make_kquant_fixtures.py).

mod common;
mod quant_common;

use powerinfer::quant::{dequantize_row, quantize_row, GgmlType};
use quant_common::{read_f32, Rng};

const TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    let mut y = vec![f32::NAN; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    y
}

/// Gaussian-like values (sum of uniforms) with a scale per 32 elements and a few outliers.
fn data(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.vec(n);
    for v in x.iter_mut() {
        *v += 0.5 * (rng.f32() + rng.f32()) * v.abs().max(0.05);
    }
    for _ in 0..n / 100 {
        let i = (rng.u64() % n as u64) as usize;
        x[i] *= 6.0;
    }
    x
}

/// Largest error over the range of each block of `block` elements, against the step of a
/// uniform quantiser with `levels` levels over that range: the error of a rounding quantiser
/// is at most half a step (plus the rounding of the stored scales).
fn worst_error_in_steps(x: &[f32], y: &[f32], block: usize, levels: f32) -> f32 {
    let mut worst = 0.0f32;
    for (xb, yb) in x.chunks(block).zip(y.chunks(block)) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let lo = xb.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = xb.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Symmetric types cover [-amax, amax]; the offset types [lo, hi].
        let range = if levels > 0.0 { 2.0 * amax } else { hi - lo };
        let step = range / (levels.abs() - 1.0);
        for (a, b) in xb.iter().zip(yb) {
            worst = worst.max((a - b).abs() / step);
        }
    }
    worst
}

fn rms(v: impl Iterator<Item = f32>) -> f32 {
    let (s, n) = v.fold((0.0f64, 0usize), |(s, n), x| (s + (x * x) as f64, n + 1));
    (s / n as f64).sqrt() as f32
}

/// Bounds per type: the RMS error as a fraction of the data's RMS (about a step over √12 for
/// these data), and the worst error in steps of each block's range (half a step for rounding
/// to the nearest code; a whole step for the symmetric formats, whose positive side has one
/// code fewer; k-quants against the super-block's range, as their sub-block scales are
/// 6/8-bit multiples of one super-block scale, and Q4_K's mins 6-bit multiples of one too).
fn bounds(ty: GgmlType) -> (f32, f32) {
    use GgmlType::*;
    match ty {
        Q4_0 => (0.14, 1.02),
        Q4_1 => (0.11, 0.52),
        Q5_0 => (0.072, 1.02),
        Q5_1 => (0.055, 0.52),
        Q8_0 => (0.009, 0.56),
        Q4_K => (0.10, 1.0),
        Q6_K => (0.027, 0.65),
        _ => unreachable!(),
    }
}

fn check(ty: GgmlType, x: &[f32], what: &str) -> f32 {
    let y = round_trip(ty, x);
    let rel = rms(x.iter().zip(&y).map(|(a, b)| a - b)) / rms(x.iter().copied());
    let worst = match ty {
        // Symmetric formats: levels over [-amax, amax] of each block.
        GgmlType::Q4_0 => worst_error_in_steps(x, &y, 32, 16.0),
        GgmlType::Q5_0 => worst_error_in_steps(x, &y, 32, 32.0),
        GgmlType::Q8_0 => worst_error_in_steps(x, &y, 32, 255.0),
        GgmlType::Q6_K => worst_error_in_steps(x, &y, 256, 64.0),
        // Offset formats: levels over [min, max].
        GgmlType::Q4_1 => worst_error_in_steps(x, &y, 32, -16.0),
        GgmlType::Q5_1 => worst_error_in_steps(x, &y, 32, -32.0),
        GgmlType::Q4_K => worst_error_in_steps(x, &y, 256, -16.0),
        _ => unreachable!(),
    };
    let (max_rel, max_worst) = bounds(ty);
    eprintln!("{ty} {what}: rms error {rel:.5} of rms, worst {worst:.3} steps");
    assert!(rel <= max_rel, "{ty} {what}: rms error {rel} > {max_rel}");
    assert!(
        worst <= max_worst,
        "{ty} {what}: worst error {worst} steps > {max_worst}"
    );
    rel
}

#[test]
fn error_is_bounded_by_the_local_scale() {
    for seed in [11, 12, 13] {
        let mut rng = Rng::new(seed);
        let x = data(&mut rng, 8192);
        assert!(x.iter().all(|&v| v != 0.0));
        let errs: Vec<f32> = TYPES.iter().map(|&ty| check(ty, &x, "mixed")).collect();
        // The searched Q4_K scales beat Q4_1's exact min/max ones despite being 6-bit.
        assert!(errs[5] < errs[1], "Q4_K {} vs Q4_1 {}", errs[5], errs[1]);
        // Precision ranks as the bits do.
        assert!(errs[4] < errs[6] && errs[6] < errs[2] && errs[2] < errs[0]);
    }
}

#[test]
fn one_signed_and_constant_blocks_round_trip() {
    let mut rng = Rng::new(5);
    let pos: Vec<f32> = data(&mut rng, 2048).iter().map(|v| v.abs()).collect();
    let neg: Vec<f32> = pos.iter().map(|v| -v - 0.5).collect();
    for ty in TYPES {
        check(ty, &pos, "positive");
        check(ty, &neg, "negative");
        // Constant blocks are reproduced up to the f16 rounding of the scales.
        let c = vec![0.37f32; 512];
        let y = round_trip(ty, &c);
        for v in y {
            assert!(
                (v - 0.37).abs() <= 0.37 * 2e-3,
                "{ty}: constant 0.37 came back as {v}"
            );
        }
    }
}

#[test]
fn gguf_py_reads_our_k_quants() {
    let dir = common::data_path("kquant");
    let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    let mut types = Vec::new();
    for line in manifest.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (case, n) = (f[0], f[2].parse::<usize>().unwrap());
        let ty = match f[1] {
            "Q4_K" => GgmlType::Q4_K,
            "Q6_K" => GgmlType::Q6_K,
            t => panic!("unexpected type {t}"),
        };
        let read = |ext: &str| std::fs::read(dir.join(format!("{case}.{ext}"))).unwrap();
        let (input, bytes, theirs) = (read_f32(&read("in.f32")), read("q"), read_f32(&read("f32")));
        assert_eq!((input.len(), theirs.len()), (n, n));
        assert!(input.iter().any(|&v| v != 0.0));
        // Our quantiser still writes exactly the bytes of the committed file...
        let mut ours = vec![0u8; bytes.len()];
        quantize_row(ty, &input, &mut ours).unwrap();
        assert_eq!(ours, bytes, "{case}: quantiser output changed");
        // ...and gguf-py decodes them to what we decode them to.
        let mut back = vec![f32::NAN; n];
        dequantize_row(ty, &bytes, &mut back).unwrap();
        for (i, (a, b)) in back.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{case} element {i}: {a} vs {b}"
            );
        }
        types.push(ty);
    }
    assert_eq!(types, [GgmlType::Q4_K, GgmlType::Q6_K]);
}
