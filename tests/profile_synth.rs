//! The whole PowerInfer pipeline on a synthetic ReLU model (90% sparse, skewed): synth →
//! profile → sparse inference. The model is synthetic (random weights), so only activation
//! statistics and agreement with dense matter, never the text.
mod common;

use std::path::Path;

use powerinfer::backend::CpuBackend;
use powerinfer::model::Model;
use powerinfer::sparse::{FfnMode, Sidecar};

fn synth(path: &Path, sparsity: f64) {
    common::synth_small(path, "q8_0", 7, sparsity);
}

#[test]
fn profile_synthetic_relu_model() {
    let Some(corpus) = common::calibration_corpus() else {
        return;
    };
    let model_path = common::scratch("profile", "syn90.gguf");
    let sc_path = common::scratch("profile", "syn90.powerinfer.gguf");
    synth(&model_path, 0.9);
    let json = common::run_ok(common::powerinfer_cmd().args([
        "profile",
        "-m",
        model_path.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--tokens",
        "4096",
        "--heldout",
        "1024",
        "-c",
        "256",
        "--vram-budget",
        "0.004",
        "-o",
        sc_path.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let measured = v["measured_sparsity"].as_f64().unwrap();
    assert!(
        (measured - 0.9).abs() <= 0.03,
        "measured sparsity {measured}"
    );
    assert!(v["top20_share"].as_f64().unwrap() > 0.5, "{v}");
    let overall = &v["overall"];
    let recall = overall["recall"].as_f64().unwrap();
    let pred = overall["predicted_sparsity"].as_f64().unwrap();
    assert!(recall >= 0.95, "recall {recall}");
    assert!(pred >= 0.80, "predicted sparsity {pred}");
    for l in v["layers"].as_array().unwrap() {
        assert!(l["recall"].as_f64().unwrap() >= 0.94, "{l}");
    }

    // Re-solving the placement for other budgets from the stored frequencies: within budget,
    // layers in order, hot sets growing with the budget.
    let mut prev: Option<Vec<Vec<u64>>> = None;
    for gib in ["0.003", "0.004", "0.006"] {
        let out = common::scratch("profile", &format!("placed-{gib}.gguf"));
        let j = common::run_ok(common::powerinfer_cmd().args([
            "place",
            "-m",
            model_path.to_str().unwrap(),
            "--sidecar",
            sc_path.to_str().unwrap(),
            "-c",
            "256",
            "--vram-budget",
            gib,
            "-o",
            out.to_str().unwrap(),
            "--json",
        ]));
        let p: serde_json::Value = serde_json::from_str(j.trim()).unwrap();
        let used = p["fixed_bytes"].as_u64().unwrap() + p["neuron_bytes"].as_u64().unwrap();
        assert!(used <= p["budget"].as_u64().unwrap(), "{p}");
        let hot: Vec<Vec<u64>> = p["layers"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, l)| {
                assert_eq!(l["layer"].as_u64().unwrap(), i as u64);
                l["hot"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| h.as_u64().unwrap())
                    .collect()
            })
            .collect();
        if let Some(prev) = &prev {
            for (a, b) in prev.iter().zip(&hot) {
                assert!(
                    a.iter().all(|x| b.contains(x)),
                    "hot set shrank as the budget grew"
                );
            }
        }
        let sc = Sidecar::read(&out).unwrap();
        for (l, h) in sc.layers.iter().zip(&hot) {
            assert_eq!(l.hot.iter().map(|&x| x as u64).collect::<Vec<_>>(), *h);
        }
        prev = Some(hot);
    }

    // Sparse inference with the sidecar: oracle equals dense, predicted agrees with dense.
    let sc = Sidecar::read(&sc_path).unwrap();
    assert!(
        sc.layers.iter().any(|l| !l.hot.is_empty()),
        "placement made nothing hot"
    );
    let mut model = Model::load(&model_path, CpuBackend::new(), None).unwrap();
    sc.check_model(&sc_path, &model.file).unwrap();
    model.attach_sidecar(&sc).unwrap();
    let tokens: Vec<u32> = (0..160u32).map(|i| (i * 37 + 11) % 512).collect();
    let run = |mode: FfnMode| -> Vec<Vec<f32>> {
        let mut st = model.new_state(256);
        st.ffn_mode = mode;
        tokens
            .iter()
            .map(|&t| model.forward(&mut st, &[t], false).unwrap().to_vec())
            .collect()
    };
    let dense = run(FfnMode::Dense);
    let oracle = run(FfnMode::Oracle);
    let predicted = run(FfnMode::Predicted);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    let mut worst = 0f32;
    for (o, d) in oracle.iter().zip(&dense) {
        let scale = d.iter().fold(0f32, |m, x| m.max(x.abs()));
        for (a, b) in o.iter().zip(d) {
            worst = worst.max((a - b).abs() / scale);
        }
    }
    assert!(worst <= 1e-5, "oracle vs dense: relative {worst}");
    let agree = predicted
        .iter()
        .zip(&dense)
        .filter(|(p, d)| argmax(p) == argmax(d))
        .count();
    let frac = agree as f64 / dense.len() as f64;
    assert!(
        frac >= 0.95,
        "predicted-sparse top-1 agrees with dense on {frac}"
    );
}

#[test]
fn profile_errors_are_clear() {
    let model_path = common::scratch("profile", "syn50.gguf");
    synth(&model_path, 0.5);
    // ReLU models take no target sparsity.
    let out = common::powerinfer_cmd()
        .args([
            "profile",
            "-m",
            model_path.to_str().unwrap(),
            "--target-sparsity",
            "0.5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sparse by itself"));
    // --sparse without a sidecar names the missing file and the fix.
    let out = common::powerinfer_cmd()
        .args([
            "run",
            "-m",
            model_path.to_str().unwrap(),
            "-p",
            "hi",
            "-n",
            "2",
            "--sparse",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no sidecar") && err.contains("powerinfer profile"),
        "{err}"
    );
}
