//! Our dequantisation and quantisation against gguf-py reference fixtures
//! (made by scripts/make_quant_fixtures.py), including rows of the real models.

use powerinfer::quant::{dequantize_row, quantize_row, GgmlType};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant")
        .join(name)
}

fn read_f32(name: &str) -> Vec<f32> {
    std::fs::read(data(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ty(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap()
}

/// Dequantises `<stem>.q` and compares with `<stem>.deq` (relative 1e-6 or exact).
fn check_dequant(stem: &str, t: GgmlType) {
    let q = std::fs::read(data(&format!("{stem}.q"))).unwrap();
    let want = read_f32(&format!("{stem}.deq"));
    assert!(want.iter().any(|v| *v != 0.0));
    let mut got = vec![0.0f32; want.len()];
    dequantize_row(t, &q, &mut got).unwrap();
    let mut exact = 0;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g.to_bits() == w.to_bits() {
            exact += 1;
        }
        assert!(
            (g - w).abs() <= 1e-6 * w.abs().max(1e-3),
            "{stem} element {i}: got {g}, want {w}"
        );
    }
    eprintln!("{stem}: {exact}/{} bit-exact", want.len());
}

#[test]
fn dequantize_matches_gguf_py_all_formats() {
    for name in [
        "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
        "Q6_K",
    ] {
        check_dequant(name, ty(name));
    }
}

#[test]
fn dequantize_matches_gguf_py_on_real_model_rows() {
    let mut n = 0;
    for e in std::fs::read_dir(data("")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name
            .strip_prefix("model_")
            .and_then(|s| s.strip_suffix(".q"))
        {
            let tname = stem.split_once('_').unwrap().1;
            check_dequant(&format!("model_{stem}"), ty(tname));
            n += 1;
        }
    }
    assert!(n >= 6, "expected the model row fixtures, found {n}");
}

/// quantize_row must produce gguf-py's bytes exactly (same rounding: trunc(x+8.5) / trunc(x+0.5)
/// / round-half-away, f16 scales by round-to-nearest-even).
#[test]
fn quantize_matches_gguf_py_bytes() {
    for name in ["F16", "BF16", "Q4_0", "Q4_1", "Q8_0"] {
        let t = ty(name);
        let src = read_f32(&format!("{name}.src"));
        let want = std::fs::read(data(&format!("{name}.q"))).unwrap();
        let mut got = vec![0u8; want.len()];
        quantize_row(t, &src, &mut got).unwrap();
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "{name}: {diff} bytes differ from gguf-py");
    }
}

#[test]
fn bad_lengths_and_types_are_errors() {
    let mut out = vec![0.0f32; 32];
    assert!(dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out).is_err());
    assert!(dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut out).is_err());
    assert!(dequantize_row(GgmlType::I32, &[0u8; 128], &mut out).is_err());
    let mut bytes = vec![0u8; 18];
    assert!(quantize_row(GgmlType::Q4_0, &[1.0; 31], &mut bytes).is_err());
    assert!(quantize_row(GgmlType::Q6_K, &[1.0; 256], &mut [0u8; 210]).is_err());
    assert!(powerinfer::quant::QMatrix::new(GgmlType::Q4_0, 2, 32, &[0u8; 35]).is_err());
    assert!(powerinfer::quant::QMatrix::new(GgmlType::Q4_0, 2, 32, &[0u8; 36]).is_ok());
}
