//! The whole model on the GPU against the CPU engine: logits of a prompt (prefill) and of the
//! tokens decoded after it. Needs a GPU and the registry models; SKIPPED otherwise (a missing
//! GPU fails only under POWERINFER_REQUIRE_GPU=1, as scripts/gpu-check.sh sets).
#![cfg(feature = "cuda")]

mod common;

use powerinfer::backend::cuda::CudaBackend;
use powerinfer::backend::CpuBackend;
use powerinfer::model::Model;

fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("POWERINFER_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("POWERINFER_REQUIRE_GPU=1 but no usable GPU: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no usable GPU ({e})");
            None
        }
    }
}

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Prompt "The capital of France is" for each model (tests/model_forward.rs has the ids).
fn prompt(short: &str) -> Vec<u32> {
    match short {
        "smollm2" => vec![504, 3575, 282, 4649, 314],
        "qwen05" => vec![785, 6722, 315, 9625, 374],
        _ => vec![2, 818, 5279, 529, 7001, 563],
    }
}

#[test]
fn gpu_logits_match_cpu_prefill_and_decode() {
    let Some(gpu) = gpu() else { return };
    for short in ["smollm2", "qwen05", "gemma3"] {
        let Some(path) = common::model(short) else {
            continue;
        };
        // The CPU reference in f32 activations: the GPU kernels do not quantise x either.
        let cpu = Model::load(&path, CpuBackend::with_f32_activations(), None).unwrap();
        let gm = Model::load(&path, gpu.clone(), None).unwrap();
        let p = prompt(short);
        let (mut cs, mut gs) = (cpu.new_state(64), gm.new_state(64));
        let vocab = cpu.config.vocab_size;
        let want = cpu.forward(&mut cs, &p, true).unwrap().to_vec();
        let got = gm.forward(&mut gs, &p, true).unwrap().to_vec();
        assert_eq!(got.len(), want.len());
        for i in 0..p.len() {
            let (g, w) = (&got[i * vocab..][..vocab], &want[i * vocab..][..vocab]);
            let e = rel_err(g, w);
            eprintln!("{short} prefill position {i}: relative error {e:.2e}");
            assert!(
                e < 2e-2,
                "{short} prefill position {i}: relative error {e:.2e}"
            );
            assert_eq!(
                argmax(g),
                argmax(w),
                "{short} prefill position {i}: top token"
            );
        }
        // Greedy decode of a few tokens, each fed to both engines.
        let mut next = argmax(&want[(p.len() - 1) * vocab..]) as u32;
        for step in 0..4 {
            let w = cpu.forward(&mut cs, &[next], false).unwrap().to_vec();
            let g = gm.forward(&mut gs, &[next], false).unwrap().to_vec();
            let e = rel_err(&g, &w);
            eprintln!("{short} decode step {step}: relative error {e:.2e}");
            assert!(
                e < 2e-2,
                "{short} decode step {step}: relative error {e:.2e}"
            );
            assert_eq!(
                argmax(&g),
                argmax(&w),
                "{short} decode step {step}: top token"
            );
            next = argmax(&w) as u32;
        }
    }
}
