//! The sparse FFN against the dense one on a real model. With threshold 0 every non-zero
//! activation is kept, so oracle-sparse must equal dense up to f32 summation order; with a
//! positive threshold it must equal the dense FFN masked by the same rule.
mod common;

use powerinfer::backend::CpuBackend;
use powerinfer::gguf::GgufFile;
use powerinfer::model::Model;
use powerinfer::sparse::sidecar::PredictorWeights;
use powerinfer::sparse::{FfnMode, LayerThreshold, Sidecar, SidecarLayer, SparsityRule};

fn sidecar_for(model: &Model<CpuBackend>, th: LayerThreshold, predict_all: bool) -> Sidecar {
    let c = &model.config;
    let layers = (0..c.n_layer)
        .map(|_| SidecarLayer {
            threshold: th,
            freq: vec![0.5; c.n_ff],
            // A predictor whose logits are all positive (zero weights, bias 1): it selects
            // every neuron, so predicted mode must equal oracle mode.
            predictor: predict_all.then(|| PredictorWeights {
                d_in: c.d_model,
                rank: 4,
                d_out: c.n_ff,
                w1: vec![half::f16::ZERO; 4 * c.d_model],
                b1: vec![0.0; 4],
                w2: vec![half::f16::ZERO; 4 * c.n_ff],
                b2: vec![1.0; c.n_ff],
            }),
            hot: vec![],
        })
        .collect();
    common::test_sidecar(&model.file, c.d_model, c.n_ff, layers)
}

/// Logits of `tokens` decoded one at a time in `mode` (the sparse path runs per row).
fn decode(model: &Model<CpuBackend>, mode: FfnMode, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut st = model.new_state(64);
    st.ffn_mode = mode;
    tokens
        .iter()
        .map(|&t| model.forward(&mut st, &[t], false).unwrap().to_vec())
        .collect()
}

fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() / scale);
        }
    }
    worst
}

const PROMPT: [u32; 8] = [504, 3575, 282, 4649, 314, 7042, 30, 378];

/// Every layer's FFN on the model's real FFN inputs: the sparse executor against the dense
/// kernels applied to the same (masked) activations. Checked layer by layer, because across
/// 30 layers SmolLM2's massive activations amplify last-bit differences in the logits.
fn check_layers(model: &Model<CpuBackend>, th: LayerThreshold, tol: f32) -> (u64, u64) {
    use powerinfer::model::{FfnObserver, FfnTaps};
    use powerinfer::quant;
    use powerinfer::sparse::{mask_activation, FfnWeights, SparseScratch};
    struct Check<'m> {
        model: &'m Model<CpuBackend>,
        th: LayerThreshold,
        tol: f32,
        scratch: SparseScratch,
    }
    impl FfnObserver for Check<'_> {
        fn observe(&mut self, il: usize, rows: usize, t: FfnTaps<'_>) {
            let m = self.model;
            let lw = &m.weights.layers[il];
            let sp = &m.sparse.as_ref().unwrap().layers[il];
            let (d, ff) = (m.config.d_model, m.config.n_ff);
            let w = FfnWeights {
                gate: lw.gate.as_ref().map(|g| g.qmatrix()),
                up: lw.up.qmatrix(),
            };
            for r in 0..rows {
                let mut act = t.act[r * ff..(r + 1) * ff].to_vec();
                mask_activation(
                    m.config.ffn,
                    self.th,
                    &t.gate[r * ff..(r + 1) * ff],
                    &mut act,
                );
                let mut want = vec![0f32; d];
                quant::matvec(&lw.down.qmatrix(), &act, &mut want);
                let mut got = vec![0f32; d];
                let x = &t.input[r * d..(r + 1) * d];
                sp.forward_row(
                    m.config.ffn,
                    &w,
                    x,
                    true,
                    false,
                    &mut self.scratch,
                    &mut got,
                );
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                for i in 0..d {
                    let e = (got[i] - want[i]).abs() / scale;
                    assert!(
                        e < self.tol,
                        "layer {il} row {r} out {i}: {} vs {} ({e})",
                        got[i],
                        want[i]
                    );
                }
            }
        }
    }
    let mut check = Check {
        model,
        th,
        tol,
        scratch: SparseScratch::default(),
    };
    let mut st = model.new_state(64);
    model
        .forward_observed(&mut st, &PROMPT, false, Some(&mut check))
        .unwrap();
    (
        check.scratch.counters.computed,
        check.scratch.counters.neurons,
    )
}

#[test]
fn oracle_layers_equal_dense_layers() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let mut model = Model::load(&path, CpuBackend::new(), None).unwrap();
    for (th, max_frac) in [
        (
            LayerThreshold {
                rule: SparsityRule::Product,
                t: 0.0,
            },
            1.0,
        ),
        (
            LayerThreshold {
                rule: SparsityRule::Product,
                t: 0.02,
            },
            0.9,
        ),
        (
            LayerThreshold {
                rule: SparsityRule::Gate,
                t: 0.05,
            },
            0.9,
        ),
    ] {
        model
            .attach_sidecar(&sidecar_for(&model, th, false))
            .unwrap();
        let (computed, total) = check_layers(&model, th, 1e-5);
        let frac = computed as f64 / total as f64;
        assert!(
            frac <= max_frac && frac > 0.05,
            "{th:?}: computed fraction {frac}"
        );
    }
}

/// Whole model, token by token: the same next tokens as dense, logits close.
#[test]
fn oracle_at_threshold_zero_follows_dense() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let mut model = Model::load(&path, CpuBackend::new(), None).unwrap();
    let dense = decode(&model, FfnMode::Dense, &PROMPT);
    let th = LayerThreshold {
        rule: SparsityRule::Product,
        t: 0.0,
    };
    model
        .attach_sidecar(&sidecar_for(&model, th, true))
        .unwrap();
    let oracle = decode(&model, FfnMode::Oracle, &PROMPT);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    for (o, d) in oracle.iter().zip(&dense) {
        assert_eq!(argmax(o), argmax(d));
    }
    let d = max_rel_diff(&oracle, &dense);
    assert!(
        d < 0.1,
        "oracle vs dense: max relative logit difference {d}"
    );
    let predicted = decode(&model, FfnMode::Predicted, &PROMPT);
    assert_eq!(
        predicted, oracle,
        "an all-selecting predictor is the oracle"
    );
    // The sparse FFN cuts its neurons into one range per thread (and its down sums into a
    // fixed number of pieces): other thread counts must give the very same bits.
    for threads in [1, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let other = pool.install(|| decode(&model, FfnMode::Predicted, &PROMPT));
        assert_eq!(other, predicted, "predicted on {threads} threads");
    }
}

#[test]
fn sparse_mode_without_sidecar_is_an_error() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let model = Model::load(&path, CpuBackend::new(), None).unwrap();
    let mut st = model.new_state(16);
    st.ffn_mode = FfnMode::Predicted;
    let e = model.forward(&mut st, &[1], false).unwrap_err();
    assert!(e.to_string().contains("sidecar"), "{e}");
    let _ = GgufFile::open(&path).unwrap();
}
