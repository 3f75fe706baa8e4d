//! The hybrid FFN schedule (`sparse::hybrid::ffn_row`) on the CPU stand-in device, against
//! the CPU's sparse FFN (`SparseLayer::forward_row`) on the synthetic ReGLU model: every hot
//! fraction from none to all, oracle and predicted, the three sparsity rules, random inputs.
//! Also the order of the phases and that the stand-in's hot part overlaps the cold part.
mod common;

use std::time::Duration;

use powerinfer::backend::cpu::CpuTensor;
use powerinfer::backend::{Backend, CpuBackend};
use powerinfer::model::{layer_uploads, Model};
use powerinfer::sparse::hybrid::{self, HostDevice, HostLayer, HybridDevice, PhaseStats};
use powerinfer::sparse::{
    sidecar, FfnMode, FfnWeights, LayerThreshold, Sidecar, SparseScratch, SparsityRule,
};

/// Uniform values in [-2, 2) from a 64-bit LCG (never an all-zero row).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 22) as f32 - 2.0
    }

    fn row(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// The synthetic model (with its random-predictor sidecar), loaded on the CPU.
fn fixture(name: &str) -> (Model<CpuBackend>, Sidecar) {
    let path = common::synthetic_model_with_sidecar(name);
    let sc = Sidecar::read(&sidecar::default_path(&path)).unwrap();
    let model = Model::load(&path, CpuBackend::new(), None).unwrap();
    (model, sc)
}

/// About `fraction` of every layer's neurons, scattered (a hash of layer and neuron).
fn hot_lists(n_layer: usize, n_ff: usize, fraction: f64) -> Vec<Vec<u32>> {
    (0..n_layer)
        .map(|l| {
            (0..n_ff as u32)
                .filter(|&i| {
                    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((l as u64 + 1) << 40);
                    let h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9) >> 11;
                    (h as f64 / (1u64 << 53) as f64) < fraction
                })
                .collect()
        })
        .collect()
}

/// `model` with `sc`'s thresholds set to `th`, and its layers on a stand-in `dev`.
fn attach(
    model: &mut Model<CpuBackend>,
    sc: &mut Sidecar,
    th: LayerThreshold,
    dev: &HostDevice,
    hot: &[Vec<u32>],
) -> Vec<HostLayer> {
    sc.layers.iter_mut().for_each(|l| l.threshold = th);
    model.attach_sidecar(sc).unwrap();
    layer_uploads(&model.backend, &model.config, &model.weights, sc, hot)
        .unwrap()
        .iter()
        .map(|u| dev.upload_layer(u).unwrap())
        .collect()
}

struct Outcome {
    /// Largest |hybrid - cpu| over the largest |cpu|, over every row and layer.
    worst: f32,
    /// Neurons the CPU alone computed, and those the hybrid's cold part computed.
    cpu_computed: u64,
    cold_computed: u64,
    phases: PhaseStats,
}

/// `tokens` random rows through every layer, by the CPU's sparse FFN and by the hybrid one.
fn compare(
    model: &Model<CpuBackend>,
    dev: &HostDevice,
    layers: &[HostLayer],
    oracle: bool,
    f32_act: bool,
    tokens: usize,
) -> Outcome {
    let sp = model.sparse.as_ref().unwrap();
    let kind = model.config.ffn;
    let mut rng = Rng(0x5EED ^ tokens as u64 ^ (oracle as u64) << 7);
    let (mut s_cpu, mut s_hyb) = (SparseScratch::default(), SparseScratch::default());
    s_hyb.hybrid.phases.timed = true;
    s_hyb.hybrid.phases.keep_timelines = true;
    let mut ds = dev.new_scratch(layers);
    let d = model.config.d_model;
    let (mut want, mut y) = (vec![0f32; d], CpuTensor::default());
    let mut worst = 0f32;
    for _ in 0..tokens {
        for (il, lw) in model.weights.layers.iter().enumerate() {
            let w = FfnWeights {
                gate: lw
                    .gate
                    .as_ref()
                    .map(|g| model.backend.host_matrix(g).unwrap()),
                up: model.backend.host_matrix(&lw.up).unwrap(),
            };
            let x = CpuTensor::from_vec(rng.row(d), 1, d);
            want.fill(0.0);
            sp.layers[il].forward_row(kind, &w, &x.data, oracle, f32_act, &mut s_cpu, &mut want);
            hybrid::ffn_row(
                dev,
                &layers[il],
                &sp.layers[il],
                kind,
                &w,
                &x,
                oracle,
                f32_act,
                &mut ds,
                &mut s_hyb,
                &mut y,
            );
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "layer {il}: the CPU's FFN output is all zero");
            let diff = y
                .data
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(diff / scale);
        }
    }
    Outcome {
        worst,
        cpu_computed: s_cpu.counters.computed,
        cold_computed: s_hyb.counters.computed,
        phases: std::mem::take(&mut s_hyb.hybrid.phases),
    }
}

const RELU: LayerThreshold = LayerThreshold {
    rule: SparsityRule::Relu,
    t: 0.0,
};

/// A threshold of `rule` that drops between a fifth and four fifths of the neurons the relu
/// rule keeps (oracle mode), so that a hot part ignoring the rule shows.
fn calibrated(
    model: &mut Model<CpuBackend>,
    sc: &mut Sidecar,
    rule: SparsityRule,
) -> LayerThreshold {
    let dev = HostDevice::default();
    let hot = hot_lists(model.config.n_layer, model.config.n_ff, 0.0);
    let base = {
        let layers = attach(model, sc, RELU, &dev, &hot);
        compare(model, &dev, &layers, true, true, 4).cpu_computed as f64
    };
    for t in [0.01f32, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0] {
        let th = LayerThreshold { rule, t };
        let layers = attach(model, sc, th, &dev, &hot);
        let kept = compare(model, &dev, &layers, true, true, 4).cpu_computed as f64 / base;
        if (0.2..0.8).contains(&kept) {
            return th;
        }
    }
    panic!("no {rule:?} threshold drops a fair share of the neurons");
}

#[test]
fn hybrid_equals_cpu_sparse_for_every_hot_fraction_mode_and_rule() {
    let (mut model, mut sc) = fixture("hybrid-equal");
    let (n_layer, n_ff) = (model.config.n_layer, model.config.n_ff);
    let dev = HostDevice::default();
    let rules = [
        RELU,
        calibrated(&mut model, &mut sc, SparsityRule::Gate),
        calibrated(&mut model, &mut sc, SparsityRule::Product),
    ];
    for th in rules {
        for fraction in [0.0, 0.3, 1.0] {
            let hot = hot_lists(n_layer, n_ff, fraction);
            let layers = attach(&mut model, &mut sc, th, &dev, &hot);
            for oracle in [true, false] {
                // f32 activations: the same dot products on both sides, so only the f16
                // down columns of the hot part and the summation order differ.
                let o = compare(&model, &dev, &layers, oracle, true, 12);
                let what = format!("{th:?} hot {fraction} oracle {oracle}");
                assert!(o.worst < 2e-3, "{what}: relative difference {}", o.worst);
                assert!(o.cpu_computed > 0, "{what}: nothing computed");
                // The split is real: the cold part computed exactly the cold share.
                match fraction {
                    0.0 => assert_eq!(o.cold_computed, o.cpu_computed, "{what}"),
                    1.0 => assert_eq!(o.cold_computed, 0, "{what}"),
                    _ => assert!(
                        o.cold_computed > 0 && o.cold_computed < o.cpu_computed,
                        "{what}: cold {} of {}",
                        o.cold_computed,
                        o.cpu_computed
                    ),
                }
                assert_eq!(o.phases.calls, 12 * n_layer as u64, "{what}");
            }
        }
    }
}

#[test]
fn hybrid_with_quantised_activations_stays_within_rounding() {
    let (mut model, mut sc) = fixture("hybrid-q8");
    let (n_layer, n_ff) = (model.config.n_layer, model.config.n_ff);
    let dev = HostDevice::default();
    let hot = hot_lists(n_layer, n_ff, 0.3);
    let layers = attach(&mut model, &mut sc, RELU, &dev, &hot);
    for oracle in [true, false] {
        // The CPU rounds its inputs and activations to 8 bits; the device side does not.
        let o = compare(&model, &dev, &layers, oracle, false, 16);
        assert!(
            o.worst < 3e-2,
            "oracle {oracle}: relative difference {}",
            o.worst
        );
        assert!(o.worst > 0.0, "8-bit rounding should show somewhere");
    }
}

#[test]
fn hybrid_phases_run_in_schedule_order_and_hot_overlaps_cold() {
    let (mut model, mut sc) = fixture("hybrid-phases");
    let (n_layer, n_ff) = (model.config.n_layer, model.config.n_ff);
    // A device latency on the hot side, as a GPU launch has: the cold part must run in it.
    let dev = HostDevice::with_hot_delay(Duration::from_millis(2));
    let hot = hot_lists(n_layer, n_ff, 0.3);
    let layers = attach(&mut model, &mut sc, RELU, &dev, &hot);
    // Oracle mode: every cold neuron is computed, the longest cold part.
    let o = compare(&model, &dev, &layers, true, true, 16);
    assert!(o.worst < 2e-3, "relative difference {}", o.worst);
    let p = &o.phases;
    assert_eq!(p.timelines.len(), 16 * n_layer);
    let mut overlapping = 0;
    for (i, t) in p.timelines.iter().enumerate() {
        let hot = t.hot.expect("the stand-in times its hot part");
        assert!(
            t.predict.end <= t.mask.start,
            "call {i}: mask copy before prediction"
        );
        assert!(
            t.mask.end <= t.cold.start,
            "call {i}: cold part before the mask copy"
        );
        assert!(
            t.mask.end <= hot.start,
            "call {i}: hot part before the mask copy"
        );
        assert!(
            hot.end <= t.merge.start,
            "call {i}: merge before the hot part ended"
        );
        assert!(
            t.cold.end <= t.merge.start,
            "call {i}: merge before the cold part ended"
        );
        assert!(
            hot.len() >= dev.hot_delay,
            "call {i}: hot part shorter than its delay"
        );
        overlapping += usize::from(!hot.overlap(&t.cold).is_zero());
    }
    // The cold part here is short (tens of microseconds) next to a thread's start-up on a
    // loaded machine, so it may finish before the hot thread runs; but a schedule that ran
    // the two one after the other could never overlap them at all.
    eprintln!(
        "hot and cold overlapped in {overlapping} of {} calls",
        p.timelines.len()
    );
    assert!(overlapping > 0, "hot and cold never overlapped");
    assert!(!p.overlap.is_zero() && p.overlap <= p.hot && p.overlap <= p.cold);
    let report = p.report();
    for phase in [
        "predict",
        "mask copy",
        "hot",
        "cold",
        "upload + merge",
        "overlap",
    ] {
        assert!(report.contains(phase), "report lacks {phase}:\n{report}");
    }
}

#[test]
fn bad_hot_lists_are_errors() {
    let (mut model, mut sc) = fixture("hybrid-bad");
    let (n_layer, n_ff) = (model.config.n_layer, model.config.n_ff);
    model.attach_sidecar(&sc).unwrap();
    sc.layers.iter_mut().for_each(|l| l.threshold = RELU);
    let dev = HostDevice::default();
    let mut hot = hot_lists(n_layer, n_ff, 0.3);
    hot[1].reverse();
    let ups = layer_uploads(&model.backend, &model.config, &model.weights, &sc, &hot).unwrap();
    let err = dev
        .upload_layer(&ups[1])
        .err()
        .expect("descending hot list");
    assert!(err.to_string().contains("ascending"), "{err}");
    hot[1] = vec![n_ff as u32];
    let ups = layer_uploads(&model.backend, &model.config, &model.weights, &sc, &hot).unwrap();
    let err = dev
        .upload_layer(&ups[1])
        .err()
        .expect("neuron out of range");
    assert!(err.to_string().contains("outside"), "{err}");
    let short = &hot[..n_layer - 1];
    assert!(layer_uploads(&model.backend, &model.config, &model.weights, &sc, short).is_err());
}

/// Logits of `prompt` and then of `decode` tokens one at a time, in `mode`; with
/// `sparse_prefill` the prompt's rows also take the sparse FFN (the multi-row path).
fn logits<B: Backend>(
    m: &Model<B>,
    mode: &FfnMode,
    sparse_prefill: bool,
    prompt: &[u32],
    decode: &[u32],
) -> (Vec<Vec<f32>>, PhaseStats) {
    let mut st = m.new_state(64);
    st.ffn_mode = mode.clone();
    st.sparse_prefill = sparse_prefill;
    let mut out = vec![m.forward(&mut st, prompt, false).unwrap().to_vec()];
    for &t in decode {
        out.push(m.forward(&mut st, &[t], false).unwrap().to_vec());
    }
    (out, std::mem::take(&mut st.sparse.hybrid.phases))
}

/// A whole model on the stand-in backend (hot neurons on the "device", cold ones on the
/// CPU, attached through `Model::attach_sidecar_placed`) decodes like the CPU's sparse model.
#[test]
fn model_on_the_stand_in_decodes_like_the_cpu_sparse_model() {
    let path = common::synthetic_model_with_sidecar("hybrid-model");
    let sc = Sidecar::read(&sidecar::default_path(&path)).unwrap();
    let mut cpu = Model::load(&path, CpuBackend::new(), None).unwrap();
    cpu.attach_sidecar(&sc).unwrap();
    let (n_layer, n_ff) = (cpu.config.n_layer, cpu.config.n_ff);
    let prompt = [3u32, 141, 59, 26, 53];
    let decode = [5u32, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50];
    for fraction in [0.0, 0.3, 1.0] {
        let hot = hot_lists(n_layer, n_ff, fraction);
        let mut hm = Model::load(&path, HostDevice::default(), None).unwrap();
        assert!(!hm.backend.runs_ffn_mode(&FfnMode::Predicted));
        hm.attach_sidecar_placed(&sc, Some(&hot)).unwrap();
        let counts: Vec<usize> = hot.iter().map(Vec::len).collect();
        assert_eq!(hm.backend.hot_counts(), Some(counts));
        for mode in [FfnMode::Oracle, FfnMode::Predicted] {
            for sparse_prefill in [false, true] {
                let what = format!("hot {fraction} {} prefill {sparse_prefill}", mode.name());
                let (want, _) = logits(&cpu, &mode, sparse_prefill, &prompt, &decode);
                let (got, phases) = logits(&hm, &mode, sparse_prefill, &prompt, &decode);
                let mut worst = 0f32;
                for (g, w) in got.iter().zip(&want) {
                    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (a, b) in g.iter().zip(w) {
                        worst = worst.max((a - b).abs() / scale);
                    }
                }
                assert!(worst < 2e-2, "{what}: relative difference {worst}");
                let rows = decode.len() + if sparse_prefill { prompt.len() } else { 0 };
                assert_eq!(phases.calls, (rows * n_layer) as u64, "{what}");
            }
        }
    }
}

/// `--vram-budget`'s placement: the sidecar's own for the budget it was solved for, else
/// re-solved from its frequencies, within the budget and growing with it.
#[test]
fn vram_budget_placement_is_the_sidecar_s_or_re_solved() {
    use powerinfer::profile::{hot_for_budget, placement_for};
    let (model, mut sc) = fixture("hybrid-place");
    let n_ff = model.config.n_ff;
    let mut rng = Rng(99);
    for l in &mut sc.layers {
        l.freq = (0..n_ff).map(|_| (rng.next() + 2.0) / 4.0).collect();
    }
    let pb: u64 = sc
        .layers
        .iter()
        .map(|l| l.predictor.as_ref().unwrap().n_bytes() as u64)
        .sum();
    let freq: Vec<Vec<f32>> = sc.layers.iter().map(|l| l.freq.clone()).collect();
    let all = placement_for(&model, &freq, pb, 256, u64::MAX / 2).unwrap();
    assert!(all.layers.iter().all(|l| l.hot.len() == n_ff));
    // The sidecar's own lists for its budget, whatever they are.
    sc.vram_budget = all.fixed_bytes + 12_345;
    sc.layers[0].hot = vec![1, 5, 9];
    let own = hot_for_budget(&model, &sc, sc.vram_budget, 256).unwrap();
    assert_eq!(own.hot[0], vec![1, 5, 9]);
    assert!(own.value_fraction.is_none());
    // Other budgets: re-solved, within the budget, each hot set inside the larger one's.
    let mut previous: Option<Vec<Vec<u32>>> = None;
    for tenth in [1u64, 3, 6] {
        let budget = all.fixed_bytes + all.neuron_bytes * tenth / 10;
        let p = hot_for_budget(&model, &sc, budget, 256).unwrap();
        let frac = p.value_fraction.expect("re-solved");
        assert!(frac > 0.0 && frac < 1.0, "{tenth}/10: {frac}");
        let solved = placement_for(&model, &freq, pb, 256, budget).unwrap();
        assert!(solved.total_bytes() <= budget);
        let lists: Vec<Vec<u32>> = solved.layers.into_iter().map(|l| l.hot).collect();
        assert_eq!(p.hot, lists);
        if let Some(prev) = &previous {
            for (a, b) in prev.iter().zip(&p.hot) {
                assert!(a.len() < b.len() || a.is_empty() && b.is_empty());
                assert!(a.iter().all(|i| b.binary_search(i).is_ok()));
            }
        }
        previous = Some(p.hot);
    }
    // A budget below the fixed part is an error that says so.
    let err = hot_for_budget(&model, &sc, all.fixed_bytes / 2, 256)
        .err()
        .expect("too small a budget");
    assert!(err.to_string().contains("fixed items"), "{err}");
}
