//! Our dequantisation and quantisation against gguf-py's reference implementation, on random
//! data and on rows of the real models (fixtures written by scripts/make_quant_fixtures.py).

mod common;
mod quant_common;

use powerinfer::quant::{dequantize_row, quantize_row, GgmlType};
use quant_common::read_f32;

struct Case {
    name: String,
    ty: GgmlType,
    n: usize,
    q: Vec<u8>,
    expected: Vec<f32>,
    input: Option<Vec<f32>>,
}

fn type_by_name(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

fn cases() -> Vec<Case> {
    let dir = common::data_path("quant");
    let manifest = std::fs::read_to_string(dir.join("manifest.txt")).unwrap();
    manifest
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let name = f[0].to_string();
            let read = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
            Case {
                ty: type_by_name(f[1]),
                n: f[2].parse().unwrap(),
                q: read("q"),
                expected: read_f32(&read("f32")),
                input: (f[3] == "1").then(|| read_f32(&read("in.f32"))),
                name,
            }
        })
        .collect()
}

#[test]
fn fixtures_cover_every_model_type() {
    let names: Vec<String> = cases().into_iter().map(|c| c.name).collect();
    for want in [
        "smollm2_Q4_1",
        "smollm2_Q8_0",
        "qwen05_Q4_K",
        "qwen05_Q5_0",
        "qwen05_Q6_K",
        "random_Q2_K",
        "random_Q3_K",
        "random_Q5_K",
    ] {
        assert!(names.iter().any(|n| n == want), "missing fixture {want}");
    }
}

#[test]
fn dequantize_matches_gguf_py() {
    for c in cases() {
        assert_eq!(c.expected.len(), c.n);
        assert!(c.expected.iter().any(|&v| v != 0.0), "{}: all zero", c.name);
        let mut out = vec![f32::NAN; c.n];
        dequantize_row(c.ty, &c.q, &mut out).unwrap();
        for (i, (&a, &b)) in out.iter().zip(&c.expected).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{} element {i}: ours {a}, gguf-py {b}",
                c.name
            );
        }
    }
}

#[test]
fn quantize_matches_gguf_py_bytes() {
    let mut checked = 0;
    for c in cases() {
        let Some(input) = &c.input else { continue };
        let mut out = vec![0u8; c.q.len()];
        quantize_row(c.ty, input, &mut out).unwrap();
        let bb = c.ty.block_bytes();
        for (i, (a, b)) in out.chunks(bb).zip(c.q.chunks(bb)).enumerate() {
            assert_eq!(a, b, "{} block {i} differs from gguf-py", c.name);
        }
        checked += 1;
    }
    assert!(checked >= 7, "only {checked} quantise fixtures");
}

#[test]
fn bad_lengths_are_errors() {
    let mut out = vec![0f32; 33];
    assert!(dequantize_row(GgmlType::Q4_0, &[0u8; 40], &mut out).is_err());
    let mut out = vec![0f32; 64];
    assert!(dequantize_row(GgmlType::Q4_0, &[0u8; 20], &mut out).is_err());
    assert!(dequantize_row(GgmlType::I32, &[0u8; 256], &mut out).is_err());
    let mut q = vec![0u8; 35];
    assert!(quantize_row(GgmlType::Q8_0, &[1.0; 32], &mut q).is_err());
    assert!(quantize_row(GgmlType::Q3_K, &[1.0; 256], &mut [0u8; 110]).is_err());
    assert!(quantize_row(GgmlType::Q4_K, &[1.0; 256], &mut [0u8; 143]).is_err());
}
