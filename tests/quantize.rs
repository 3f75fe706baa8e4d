//! `powerinfer quantize`: every output type loads and runs, q8_0/q6_k stay close to the input,
//! metadata and non-matrix tensors are preserved, sizes follow the types, and `--ratio` keeps
//! exactly the matrices of largest measured error (checked against a brute-force ordering and
//! an independent recomputation of the error).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use powerinfer::backend::CpuBackend;
use powerinfer::gguf::{align_up, GgufFile, GgufWriter, Value};
use powerinfer::model::{FfnObserver, FfnTaps, Model};
use powerinfer::quant::{dequantize_row, GgmlType};
use powerinfer::quantize::{self as q, Calibration, Sensitivity};
use powerinfer::synth::{write_model, SynthSpec};
use powerinfer::tokenizer::Tokenizer;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("powerinfer-quantize-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quantize(input: &Path, output: &Path, ty: GgmlType) -> q::Summary {
    let file = GgufFile::open(input).unwrap();
    let plan = q::plan_uniform(&file, ty).unwrap();
    q::write(&file, input, &plan, output, &mut |_, _| {}).unwrap()
}

fn last_logits(path: &Path, tokens: &[u32]) -> Vec<f32> {
    let model = Model::load(path, CpuBackend::new(), None).unwrap();
    let mut st = model.new_state(64);
    let l = model.forward(&mut st, tokens, false).unwrap().to_vec();
    assert!(
        l.iter().all(|v| v.is_finite()),
        "{}: non-finite logits",
        path.display()
    );
    l
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

/// RMS of the logit difference over the standard deviation of the reference logits.
fn logit_gap(a: &[f32], b: &[f32]) -> f32 {
    let n = b.len() as f64;
    let mean = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = b.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / n;
    (mse / var).sqrt() as f32
}

/// The type a matrix must have in the output: the asked type when its rows are whole blocks,
/// else the documented fallback.
fn expected_type(ty: GgmlType, row_len: usize) -> GgmlType {
    use GgmlType::*;
    if row_len.is_multiple_of(ty.block_len()) {
        ty
    } else if ty == Q4_K {
        Q5_0
    } else if ty == Q6_K {
        Q8_0
    } else {
        F16
    }
}

/// Types, untouched tensors, metadata and size of `out` against `input` quantised to `ty`.
fn check_file(input: &GgufFile, out: &GgufFile, ty: GgmlType, file_len: u64) {
    assert_eq!(out.tensors.len(), input.tensors.len());
    let mut data = 0u64;
    for (a, b) in input.tensors.iter().zip(&out.tensors) {
        assert_eq!((&a.name, &a.dims), (&b.name, &b.dims));
        let matrix = a.dims.len() == 2 && a.dims[1] > 1;
        if matrix {
            assert_eq!(b.ty, expected_type(ty, a.row_len()), "{}", a.name);
        } else {
            assert_eq!(b.ty, a.ty, "{}", a.name);
            assert_eq!(input.view(a).data, out.view(b).data, "{} copied", a.name);
        }
        let bytes = b.n_elements() / b.ty.block_len() as u64 * b.ty.block_bytes() as u64;
        assert_eq!(b.offset, data, "{} offset", b.name);
        data += align_up(bytes, out.alignment);
    }
    assert_eq!(out.data_offset as u64 + data, file_len, "file size");
    for (k, v) in &input.metadata {
        if k != "general.file_type" {
            assert_eq!(out.get(k), Some(v), "metadata {k}");
        }
    }
    let want = match ty {
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::Q4_K => 14,
        GgmlType::Q6_K => 18,
        GgmlType::F16 => 1,
        _ => unreachable!(),
    };
    assert_eq!(out.get("general.file_type"), Some(&Value::U32(want)));
}

const TYPES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
];

#[test]
fn smollm2_to_every_type() {
    let Some(input) = common::model("smollm2") else {
        return;
    };
    let dir = temp_dir("smollm2");
    let src = GgufFile::open(&input).unwrap();
    let tok = Tokenizer::from_gguf(&src).unwrap();
    let tokens = tok.encode("The quick brown fox jumps over the lazy", true, false);
    let reference = last_logits(&input, &tokens);
    let before = std::fs::metadata(&input).unwrap().modified().unwrap();
    let mut sizes = Vec::new();
    let mut gaps = Vec::new();
    for ty in [GgmlType::F16].into_iter().chain(TYPES) {
        let out = dir.join(format!("{ty}.gguf"));
        let summary = quantize(&input, &out, ty);
        let len = std::fs::metadata(&out).unwrap().len();
        assert_eq!(summary.output_bytes, len);
        check_file(&src, &GgufFile::open(&out).unwrap(), ty, len);
        let logits = last_logits(&out, &tokens);
        let gap = logit_gap(&logits, &reference);
        eprintln!(
            "{ty}: {len} bytes, logit gap {gap:.4}, next {}",
            argmax(&logits)
        );
        if ty == GgmlType::Q8_0 {
            assert_eq!(argmax(&logits), argmax(&reference), "q8_0 greedy token");
        }
        sizes.push((ty, len));
        gaps.push((ty, gap));
        std::fs::remove_file(&out).unwrap();
    }
    assert_eq!(
        std::fs::metadata(&input).unwrap().modified().unwrap(),
        before
    );
    // Sizes rank as the bits per weight do.
    let size = |t| sizes.iter().find(|(ty, _)| *ty == t).unwrap().1;
    assert!(size(GgmlType::Q4_0) < size(GgmlType::Q4_1));
    assert!(size(GgmlType::Q4_1) < size(GgmlType::Q6_K));
    assert!(size(GgmlType::Q6_K) < size(GgmlType::Q8_0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small f16 synthetic model whose rows are whole k-quant blocks (no fallback).
fn synthetic(dir: &Path) -> PathBuf {
    let path = dir.join("synth-f16.gguf");
    let spec = SynthSpec {
        hidden: 256,
        ffn: 512,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        vocab: 512,
        ctx: 128,
        activation: SynthSpec::parse_activation("reglu").unwrap(),
        sparsity: 0.5,
        skew: 1.0,
        weight_type: GgmlType::F16,
        seed: 3,
    };
    write_model(&spec, &path, &mut |_, _| {}).unwrap();
    path
}

#[test]
fn synthetic_f16_to_every_type() {
    let dir = temp_dir("synth");
    let input = synthetic(&dir);
    let src = GgufFile::open(&input).unwrap();
    let tokens = [1u32, 7, 99, 300, 42];
    let reference = last_logits(&input, &tokens);
    for ty in TYPES {
        let out = dir.join(format!("{ty}.gguf"));
        quantize(&input, &out, ty);
        let f = GgufFile::open(&out).unwrap();
        check_file(&src, &f, ty, std::fs::metadata(&out).unwrap().len());
        // The in-memory copy (the draft of `--draft-type`) is the written file, byte for byte.
        let plan = q::plan_uniform(&src, ty).unwrap();
        let copy = q::requantize_in_memory(&src, &plan).unwrap();
        assert!(
            copy.bytes() == f.bytes(),
            "{ty}: in-memory copy differs from the file"
        );
        // No fallback: every matrix is of the asked type.
        assert!(f
            .tensors
            .iter()
            .filter(|t| t.dims.len() == 2)
            .all(|t| t.ty == ty));
        let gap = logit_gap(&last_logits(&out, &tokens), &reference);
        eprintln!("synthetic {ty}: logit gap {gap:.4}");
        let bound = match ty {
            GgmlType::Q8_0 => 0.02,
            GgmlType::Q6_K => 0.05,
            _ => 0.3,
        };
        assert!(gap < bound, "{ty}: logit gap {gap}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Records one layer's FFN inputs (gate/up input and down input).
struct FfnInputs {
    layer: usize,
    input: Vec<f32>,
    act: Vec<f32>,
}

impl FfnObserver for FfnInputs {
    fn observe(&mut self, layer: usize, _rows: usize, taps: FfnTaps<'_>) {
        if layer == self.layer {
            self.input.extend_from_slice(taps.input);
            self.act.extend_from_slice(taps.act);
        }
    }
}

/// Σ_t ‖(W − Ŵ)x_t‖² / T with W from `a`, Ŵ from `b`, in f64 with plain loops.
fn brute_error(a: &GgufFile, b: &GgufFile, name: &str, xs: &[f32]) -> f64 {
    let (ta, tb) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
    let cols = ta.row_len();
    let (mut w, mut wq) = (vec![0f32; cols], vec![0f32; cols]);
    let n_tok = xs.len() / cols;
    let mut s = 0.0f64;
    for r in 0..ta.n_rows() {
        dequantize_row(ta.ty(), ta.row(r), &mut w).unwrap();
        dequantize_row(tb.ty(), tb.row(r), &mut wq).unwrap();
        for x in xs.chunks_exact(cols) {
            let d: f64 = (0..cols).map(|i| (w[i] - wq[i]) as f64 * x[i] as f64).sum();
            s += d * d;
        }
    }
    s / n_tok as f64
}

#[test]
fn ratio_keeps_the_most_sensitive_matrices() {
    let Some(input) = common::model("smollm2") else {
        return;
    };
    let dir = temp_dir("ratio");
    let model = Model::load(&input, CpuBackend::new(), None).unwrap();
    let tok = Tokenizer::from_gguf(&model.file).unwrap();
    let text = "Quantisation stores each weight in fewer bits. Some matrices matter more than \
                others: their errors reach the output, and a careful quantiser keeps them.";
    let tokens = tok.encode(text, true, false);
    assert!(tokens.len() > 20);
    let calib = Calibration::run(&model, std::slice::from_ref(&tokens), 1000).unwrap();
    assert_eq!(calib.tokens, tokens);
    let (low, keep, ratio) = (GgmlType::Q4_K, GgmlType::Q8_0, 0.5);
    let sens = q::measure(&model.file, &calib, low, &mut |_, _| {}).unwrap();
    let plan = q::plan_mixed(&model.file, low, keep, ratio, &sens).unwrap();
    let out = dir.join("mix.gguf");
    q::write(&model.file, &input, &plan, &out, &mut |_, _| {}).unwrap();
    let mixed = GgufFile::open(&out).unwrap();

    // Brute force: walk the matrices by decreasing error, keeping each one that still fits.
    let total: u64 = sens.iter().map(|s| s.params).sum();
    let budget = ((1.0 - ratio) * total as f64).round() as u64;
    let mut order: Vec<&Sensitivity> = sens.iter().collect();
    order.sort_by(|a, b| b.error.partial_cmp(&a.error).unwrap());
    let (mut used, mut want) = (0u64, Vec::new());
    for s in &order {
        if used + s.params <= budget {
            used += s.params;
            want.push(s.name.clone());
        }
    }
    // Kept matrices are the Q8_0 ones (the 4-bit plan writes Q4_K or Q5_0).
    let mut got: Vec<String> = mixed
        .tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && t.ty == keep)
        .map(|t| t.name.clone())
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(
        used <= budget && used * 10 >= budget * 9,
        "kept {used} of budget {budget}"
    );
    assert_eq!(sens.len(), 211, "every weight matrix measured");
    assert!(
        sens.iter().all(|s| s.error > 0.0),
        "a 4-bit matrix without error"
    );

    // The measured errors themselves, recomputed from the written Q4_K/Q5_0 weights on
    // activations recorded by a separate observer.
    let uni = dir.join("q4_k.gguf");
    quantize(&input, &uni, low);
    let uni = GgufFile::open(&uni).unwrap();
    for layer in [0, 11, 29] {
        let mut obs = FfnInputs {
            layer,
            input: Vec::new(),
            act: Vec::new(),
        };
        let mut st = model.new_state(tokens.len());
        model
            .forward_observed(
                &mut st,
                &tokens,
                true,
                Some(&mut obs as &mut dyn FfnObserver),
            )
            .unwrap();
        for (name, xs) in [
            (format!("blk.{layer}.ffn_down.weight"), &obs.act),
            (format!("blk.{layer}.ffn_up.weight"), &obs.input),
        ] {
            let want = brute_error(&model.file, &uni, &name, xs);
            let got = sens.iter().find(|s| s.name == name).unwrap().error;
            assert!(
                (got - want).abs() <= 1e-3 * want,
                "{name}: measured {got}, recomputed {want}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn powerinfer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_powerinfer"))
        .args(args)
        .output()
        .unwrap()
}

fn assert_error(out: &std::process::Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr}");
}

#[test]
fn bad_requests_are_clear_errors_and_write_nothing() {
    let dir = temp_dir("errors");
    let input = synthetic(&dir);
    let before = std::fs::read(&input).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let out = dir.join("out.gguf");
    assert_error(
        &powerinfer(&["quantize", &s(&input), &s(&out), "--type", "q3_k"]),
        "unknown quantisation type \"q3_k\"",
    );
    assert_error(
        &powerinfer(&[
            "quantize",
            &s(&input),
            &s(&out),
            "--type",
            "q4_0",
            "--keep",
            "q4_1",
        ]),
        "unknown quantisation type \"q4_1\" (expected one of: f16, q8_0)",
    );
    assert_error(
        &powerinfer(&[
            "quantize",
            &s(&input),
            &s(&out),
            "--type",
            "q4_0",
            "--ratio",
            "1.5",
        ]),
        "--ratio 1.5",
    );
    assert_error(
        &powerinfer(&["quantize", &s(&input), &s(&input), "--type", "q8_0"]),
        "same file",
    );
    // The same file through another path.
    let other = dir.join(".").join("synth-f16.gguf");
    assert_error(
        &powerinfer(&["quantize", &s(&input), &s(&other), "--type", "q8_0"]),
        "same file",
    );
    assert_eq!(std::fs::read(&input).unwrap(), before, "input modified");

    // A weight matrix of a type we cannot read.
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama").unwrap();
    w.add_tensor("blk.0.ffn_up.weight", &[4, 4], GgmlType::I32)
        .unwrap();
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, w.to_bytes(&[&[1u8; 64]]).unwrap()).unwrap();
    assert_error(
        &powerinfer(&["quantize", &s(&bad), &s(&out), "--type", "q8_0"]),
        "blk.0.ffn_up.weight: input type I32 cannot be requantised",
    );
    assert!(!out.exists());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "left behind: {names:?}");

    // And a good run through the command line.
    let ok = powerinfer(&["quantize", &s(&input), &s(&out), "--type", "q6_k"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(GgufFile::open(&out)
        .unwrap()
        .tensors
        .iter()
        .any(|t| t.ty == GgmlType::Q6_K));
    std::fs::remove_dir_all(&dir).unwrap();
}
