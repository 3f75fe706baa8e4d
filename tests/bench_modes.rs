//! `powerinfer bench` across FFN modes on a tiny SYNTHETIC ReLU model with its profile: the
//! JSON report has every mode with positive speeds, the sparse modes read fewer bytes per
//! token than dense, and the chart is an SVG that says the model is synthetic. No timings are
//! asserted (the machine is shared).
mod common;

use std::path::Path;

fn synth_and_profile(model: &Path, corpus: &Path) {
    common::synth_small(model, "q4_0", 11, 0.9);

    common::run_ok(common::powerinfer_cmd().args([
        "profile",
        "-m",
        model.to_str().unwrap(),
        "--corpus",
        corpus.to_str().unwrap(),
        "--tokens",
        "1024",
        "--heldout",
        "256",
        "-c",
        "256",
    ]));
}

fn positive(v: &serde_json::Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x > 0.0 && x.is_finite(), "{what} = {x}");
    x
}

#[test]
fn bench_compares_modes_with_bytes_and_chart() {
    let Some(corpus) = common::calibration_corpus() else {
        return;
    };
    let model = common::scratch("bench", "syn.gguf");
    synth_and_profile(&model, &corpus);
    let svg = common::scratch("bench", "bench.svg");
    let json = common::run_ok(common::powerinfer_cmd().args([
        "bench",
        "-m",
        model.to_str().unwrap(),
        "-c",
        "256",
        "-p",
        "8",
        "-n",
        "8",
        "-r",
        "2",
        "--bandwidth-mib",
        "64",
        "--text",
        corpus.to_str().unwrap(),
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    // Prompt and decode inputs came from the text, teacher-forced.
    assert_eq!(
        v["decode_inputs"],
        format!("text {} (teacher-forced)", corpus.display())
    );

    // The sidecar next to the model was found: all three modes, dense first.
    let modes = v["modes"].as_array().expect("modes array");
    let names: Vec<&str> = modes.iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(names, ["dense", "oracle", "predicted"]);
    assert_eq!(v["model"]["synthetic"], true);
    assert_eq!(v["reps"], 2);
    positive(&v["bandwidth"]["gb_s"], "bandwidth");
    assert!(v["machine"]["logical_cpus"].as_u64().unwrap() >= 1);
    // On Linux, how much of the model sat in 2 MiB pages: a whole number of them (the model
    // is small, so the mapping around it decides how many).
    if std::path::Path::new("/proc/self/smaps").exists() {
        let huge = v["model_huge_page_mib"]
            .as_f64()
            .expect("model_huge_page_mib");
        assert!(huge >= 0.0 && huge % 2.0 == 0.0, "{huge}");
    }

    // Dense bytes per token from the file's tensor table, rebuilt here independently: every
    // blk.* tensor, the head (tied to the embeddings if absent), one embedding row, KV reads.
    let f = powerinfer::gguf::GgufFile::open(&model).unwrap();
    let blk: usize = f
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk."))
        .map(|t| t.n_bytes())
        .sum();
    let embd = f.tensor_info("token_embd.weight").unwrap();
    let head = f.tensor_info("output.weight").unwrap_or(embd).n_bytes()
        + f.tensor_info("output_norm.weight")
            .map_or(0, |t| t.n_bytes())
        + embd.row_bytes();
    // 4 layers × (k + v) × kv_dim 256 × f16, mean position read over decode steps 8..16: 12.5.
    let kv = 4.0 * 2.0 * 256.0 * 2.0 * 12.5;
    let dense_bytes = (blk + head) as f64 + kv;

    let mut sparse_bytes = Vec::new();
    for m in modes {
        let mode = m["mode"].as_str().unwrap();
        for k in ["prefill_tok_s", "decode_tok_s"] {
            let s = &m[k];
            assert_eq!(s["runs"].as_array().unwrap().len(), 2, "{mode} {k}");
            let (lo, med, hi) = (
                positive(&s["min"], k),
                positive(&s["median"], k),
                positive(&s["max"], k),
            );
            assert!(lo <= med && med <= hi, "{mode} {k}: {s}");
        }
        for k in [
            "bytes_per_token",
            "ffn_bytes_per_token",
            "achieved_gb_s",
            "roofline_pct",
            "roofline_tok_s",
            "decode_vs_dense",
        ] {
            positive(&m[k], &format!("{mode} {k}"));
        }
        let bytes = m["bytes_per_token"].as_f64().unwrap();
        if mode == "dense" {
            assert!(
                (bytes - dense_bytes).abs() < 1e-6 * dense_bytes,
                "dense bytes/token {bytes}, expected {dense_bytes}"
            );
            assert_eq!(m["decode_vs_dense"], 1.0);
        } else {
            sparse_bytes.push((mode, bytes));
            let computed = m["computed_fraction"].as_f64().unwrap();
            assert!(
                computed > 0.0 && computed < 0.5,
                "{mode} computed {computed}"
            );
        }
    }
    for (mode, bytes) in sparse_bytes {
        assert!(
            bytes < dense_bytes,
            "{mode} reads {bytes} bytes/token, dense {dense_bytes}"
        );
    }

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "not an SVG");
    assert!(text.trim_end().ends_with("</svg>"), "SVG not closed");
    assert!(
        text.contains("SYNTHETIC model"),
        "title does not flag the model"
    );
    assert!(text.contains("predicted") && text.contains("roofline"));
}

#[test]
fn bench_rejects_an_unknown_mode() {
    let out = common::powerinfer_cmd()
        .args([
            "bench",
            "-m",
            "/nonexistent.gguf",
            "--modes",
            "dense,sparse",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mode \"sparse\""), "{err}");
}
