//! The whole model on the GPU against the CPU engine: logits of a prompt (prefill) and of the
//! tokens decoded after it, the masked FFN and batched decoding on a synthetic model. Needs a
//! GPU (and the registry models for the first test); SKIPPED otherwise (a missing
//! GPU fails only under POWERINFER_REQUIRE_GPU=1, as scripts/gpu-check.sh sets).
#![cfg(feature = "cuda")]

mod common;

use common::gpu;

use powerinfer::backend::{Backend, CpuBackend};
use powerinfer::model::{FfnKind, FfnObserver, FfnTaps, Model};
use powerinfer::quant::GgmlType;
use powerinfer::sparse::{sidecar, FfnMode, LayerThreshold, Sidecar, SparsityRule};

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

/// A small synthetic ReGLU model (90% sparse) in a temp file, removed on drop.
struct SynthModel(std::path::PathBuf);

impl SynthModel {
    fn new(name: &str) -> SynthModel {
        use powerinfer::synth::{write_model, SynthSpec};
        let dir = std::env::temp_dir().join(format!("pi-cuda-model-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.gguf"));
        let mut spec = SynthSpec::small(FfnKind::ReGlu, 0.9, 1.0);
        spec.weight_type = GgmlType::Q8_0;
        spec.vocab = 512;
        write_model(&spec, &path, &mut |_, _| {}).unwrap();
        SynthModel(path)
    }
}

impl Drop for SynthModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Per layer, the median non-zero magnitude of what a rule compares (act(gate) or act).
struct Medians {
    rule: SparsityRule,
    values: Vec<Vec<f32>>,
}

impl FfnObserver for Medians {
    fn observe(&mut self, layer: usize, _rows: usize, taps: FfnTaps<'_>) {
        if self.values.len() <= layer {
            self.values.resize(layer + 1, Vec::new());
        }
        let v = &mut self.values[layer];
        match self.rule {
            // act(gate) is not tapped: recover it as act / up.
            SparsityRule::Gate => v.extend(
                taps.act
                    .iter()
                    .zip(taps.up)
                    .filter(|(_, &u)| u != 0.0)
                    .map(|(&a, &u)| (a / u).abs()),
            ),
            _ => v.extend(taps.act.iter().map(|a| a.abs())),
        }
    }
}

fn median_nonzero(v: &[f32]) -> f32 {
    let mut a: Vec<f32> = v.iter().copied().filter(|&x| x > 0.0).collect();
    a.sort_by(f32::total_cmp);
    a[a.len() / 2]
}

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) as usize % vocab) as u32
        })
        .collect()
}

#[test]
fn gpu_masked_ffn_matches_cpu_on_synthetic_model() {
    let Some(gpu) = gpu() else { return };
    let synth = SynthModel::new("masked");
    // As made (ReGLU), and read as SwiGLU so that the gate rule meets a curved act(gate).
    for activation in [None, Some("silu")] {
        let cpu = Model::load(&synth.0, CpuBackend::with_f32_activations(), activation).unwrap();
        let gm = Model::load(&synth.0, gpu.clone(), activation).unwrap();
        let vocab = cpu.config.vocab_size;
        let p = tokens(12, vocab, 5);
        for rule in [SparsityRule::Gate, SparsityRule::Product] {
            // Thresholds from the dense CPU pass: about half of the active entries go.
            let mut med = Medians {
                rule,
                values: Vec::new(),
            };
            let mut st = cpu.new_state(64);
            cpu.forward_observed(&mut st, &p, false, Some(&mut med))
                .unwrap();
            let th: Vec<LayerThreshold> = med
                .values
                .iter()
                .map(|v| LayerThreshold {
                    rule,
                    t: median_nonzero(v),
                })
                .collect();
            let mode = FfnMode::Masked(th.into());
            let (mut cs, mut gs, mut ds) = (cpu.new_state(64), gm.new_state(64), cpu.new_state(64));
            cs.ffn_mode = mode.clone();
            gs.ffn_mode = mode;
            let want = cpu.forward(&mut cs, &p, true).unwrap().to_vec();
            let got = gm.forward(&mut gs, &p, true).unwrap().to_vec();
            let dense = cpu.forward(&mut ds, &p, true).unwrap().to_vec();
            let what = format!("{activation:?} {rule:?}");
            // The mask matters: masked logits are not the dense ones.
            let shift = rel_err(&want, &dense);
            assert!(
                shift > 1e-3,
                "{what}: masking changed nothing ({shift:.2e})"
            );
            let e = rel_err(&got, &want);
            eprintln!("{what}: GPU vs CPU {e:.2e} (masked vs dense {shift:.2e})");
            assert!(
                e < 2e-2 && e < shift / 2.0,
                "{what}: relative error {e:.2e}"
            );
            // One decode step through the masked FFN as well.
            let next = argmax(&want[(p.len() - 1) * vocab..]) as u32;
            let w = cpu.forward(&mut cs, &[next], false).unwrap().to_vec();
            let g = gm.forward(&mut gs, &[next], false).unwrap().to_vec();
            let e = rel_err(&g, &w);
            assert!(e < 2e-2, "{what} decode: relative error {e:.2e}");
        }
    }
}

#[test]
fn gpu_keeps_host_weights() {
    let Some(gpu) = gpu() else { return };
    let synth = SynthModel::new("host");
    let cpu = Model::load(&synth.0, CpuBackend::new(), None).unwrap();
    let gm = Model::load(&synth.0, gpu.clone(), None).unwrap();
    // The GGUF bytes of every down matrix, as the CPU backend sees them.
    for (c, g) in cpu.weights.layers.iter().zip(&gm.weights.layers) {
        let (c, g) = (
            cpu.backend.host_matrix(&c.down).unwrap(),
            gm.backend.host_matrix(&g.down).unwrap(),
        );
        assert_eq!((g.ty, g.rows, g.cols), (c.ty, c.rows, c.cols));
        assert!(g.data == c.data, "down bytes differ");
    }
    // Without a sidecar the GPU has no sparse FFN: the modes are refused before a layer runs.
    assert!(gpu.runs_ffn_mode(&FfnMode::Dense));
    for mode in [FfnMode::Oracle, FfnMode::Predicted] {
        assert!(!gpu.runs_ffn_mode(&mode));
        let mut st = gm.new_state(16);
        st.ffn_mode = mode;
        assert!(gm.forward(&mut st, &[1], false).is_err());
        assert_eq!(st.pos, 0);
    }
}

/// The hybrid FFN on the GPU (predictors and hot neurons in VRAM, the rest on the CPU)
/// decodes like the CPU's sparse FFN, for no, some and all neurons hot, oracle and
/// predicted (random predictors: an arbitrary part of every layer).
#[test]
fn gpu_hybrid_ffn_decodes_like_cpu_sparse() {
    let Some(gpu) = gpu() else { return };
    let path = common::synthetic_model_with_sidecar("cuda-hybrid");
    let sc = Sidecar::read(&sidecar::default_path(&path)).unwrap();
    let mut cpu = Model::load(&path, CpuBackend::new(), None).unwrap();
    cpu.attach_sidecar(&sc).unwrap();
    let (n_layer, n_ff) = (cpu.config.n_layer, cpu.config.n_ff);
    let toks = tokens(24, cpu.config.vocab_size, 5);
    for tenths in [0u32, 3, 10] {
        let hot: Vec<Vec<u32>> = (0..n_layer as u32)
            .map(|l| {
                (0..n_ff as u32)
                    .filter(|i| (i * 7 + l * 3) % 10 < tenths)
                    .collect()
            })
            .collect();
        // With a budget the dense FFN matrices stay on the host (the prompt's FFN then runs
        // on the CPU): the first placement checks that too.
        let backend = if tenths == 3 {
            gpu.clone().with_ffn_on_host()
        } else {
            gpu.clone()
        };
        let mut gm = Model::load(&path, backend, None).unwrap();
        gm.attach_sidecar_placed(&sc, Some(&hot)).unwrap();
        let counts: Vec<usize> = hot.iter().map(Vec::len).collect();
        assert_eq!(gm.backend.hot_counts(), Some(counts));
        for mode in [FfnMode::Oracle, FfnMode::Predicted] {
            let what = format!("{tenths}/10 hot, {}", mode.name());
            let (mut sc_, mut sg) = (cpu.new_state(64), gm.new_state(64));
            sc_.ffn_mode = mode.clone();
            sg.ffn_mode = mode.clone();
            sg.sparse.hybrid.phases.timed = true;
            // A prompt (dense FFN, masked), then decoding (the hybrid FFN).
            let c = cpu.forward(&mut sc_, &toks[..4], false).unwrap().to_vec();
            let g = gm.forward(&mut sg, &toks[..4], false).unwrap().to_vec();
            let e = rel_err(&g, &c);
            assert!(e < 2e-2, "{what} prompt: relative error {e:.2e}");
            for (i, &t) in toks[4..].iter().enumerate() {
                let c = cpu.forward(&mut sc_, &[t], false).unwrap().to_vec();
                let g = gm.forward(&mut sg, &[t], false).unwrap().to_vec();
                let e = rel_err(&g, &c);
                assert!(e < 2e-2, "{what} token {i}: relative error {e:.2e}");
            }
            let p = &sg.sparse.hybrid.phases;
            assert_eq!(p.calls, ((toks.len() - 4) * n_layer) as u64, "{what}");
            eprintln!("{what}:\n{}", p.report());
        }
    }
}

#[test]
fn gpu_batched_decode_matches_each_sequence_alone() {
    let Some(gpu) = gpu() else { return };
    let synth = SynthModel::new("multi");
    let gm = Model::load(&synth.0, gpu, None).unwrap();
    let vocab = gm.config.vocab_size;
    let prompts: Vec<Vec<u32>> = [5, 2, 9]
        .iter()
        .map(|&n| tokens(n, vocab, n as u64))
        .collect();
    let mut batched: Vec<_> = prompts.iter().map(|_| gm.new_state(32)).collect();
    let mut alone: Vec<_> = prompts.iter().map(|_| gm.new_state(32)).collect();
    for (i, p) in prompts.iter().enumerate() {
        gm.forward(&mut batched[i], p, false).unwrap();
        gm.forward(&mut alone[i], p, false).unwrap();
    }
    let mut scratch = gm.new_decode_batch();
    for step in 0..3u64 {
        let toks = tokens(prompts.len(), vocab, 100 + step);
        let mut states: Vec<_> = batched.iter_mut().collect();
        gm.forward_multi(&mut scratch, &mut states, &toks).unwrap();
        for (i, &t) in toks.iter().enumerate() {
            let want = gm.forward(&mut alone[i], &[t], false).unwrap().to_vec();
            let e = rel_err(&batched[i].logits, &want);
            assert!(e < 1e-4, "step {step} sequence {i}: relative error {e:.2e}");
        }
    }
}

/// The dense layer split (`--gpu-layers N`): the weights of layers N.. on the host, their
/// matmuls on the CPU; logits as the CPU's for no, some and all layers in VRAM.
#[test]
fn gpu_layer_split_matches_cpu() {
    let Some(gpu) = gpu() else { return };
    let synth = SynthModel::new("split");
    let cpu = Model::load(&synth.0, CpuBackend::new(), None).unwrap();
    let toks = tokens(12, cpu.config.vocab_size, 3);
    for n in [0, 2, cpu.config.n_layer] {
        let gm = Model::load(&synth.0, gpu.clone().with_gpu_layers(n), None).unwrap();
        assert_eq!(gm.backend.gpu_layers(), Some(n));
        let (mut sc_, mut sg) = (cpu.new_state(32), gm.new_state(32));
        let c = cpu.forward(&mut sc_, &toks[..6], false).unwrap().to_vec();
        let g = gm.forward(&mut sg, &toks[..6], false).unwrap().to_vec();
        assert!(rel_err(&g, &c) < 2e-2, "{n} layers: prompt");
        for &t in &toks[6..] {
            let c = cpu.forward(&mut sc_, &[t], false).unwrap().to_vec();
            let g = gm.forward(&mut sg, &[t], false).unwrap().to_vec();
            let e = rel_err(&g, &c);
            assert!(e < 2e-2, "{n} layers: decode relative error {e:.2e}");
        }
    }
}
