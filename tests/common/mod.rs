//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Directory holding the registry models: `$POWERINFER_MODELS`, else `~/.cache/powerinfer/models`
/// (where `scripts/fetch-models.sh` puts them).
pub fn models_dir() -> PathBuf {
    powerinfer::paths::models_dir()
}

/// File names of the three registry models, by short name.
pub fn model_file(short: &str) -> &'static str {
    match short {
        "smollm2" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3" => "gemma-3-270m.Q4_K_M.gguf",
        "qwen05" => "qwen2.5-coder-0.5b.Q4_K_M.gguf",
        _ => panic!("unknown model {short}"),
    }
}

/// Path to a registry model, or `None` after printing why the calling test is skipped.
/// With `POWERINFER_REQUIRE_MODELS=1` (set by .ci/run) a missing model is a failure instead.
pub fn model(short: &str) -> Option<PathBuf> {
    let p = models_dir().join(model_file(short));
    if p.exists() {
        return Some(p);
    }
    if std::env::var("POWERINFER_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!(
            "model {short} missing at {} (run scripts/fetch-models.sh)",
            p.display()
        );
    }
    eprintln!(
        "SKIPPED: model {short} not found at {} (run scripts/fetch-models.sh)",
        p.display()
    );
    None
}

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// A small synthetic ReLU-family model (the `powerinfer synth` generator: 4 layers, width
/// 256, 1024 neurons, vocabulary 512) in a temporary directory, with a sidecar at its
/// default path whose predictors have random weights. They select an arbitrary part of every
/// layer's neurons, so predicted-sparse output differs from dense: a test that mixes the two
/// up sees it. Returns the model's path.
pub fn synthetic_model_with_sidecar(name: &str) -> PathBuf {
    use half::f16;
    use powerinfer::gguf::GgufFile;
    use powerinfer::sparse::sidecar::{self, PredictorWeights};
    use powerinfer::sparse::{LayerThreshold, SidecarLayer, SparsityRule};
    use powerinfer::synth::{write_model, SynthSpec};

    let dir = std::env::temp_dir().join(format!("powerinfer-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    let spec = SynthSpec {
        hidden: 256,
        ffn: 1024,
        layers: 4,
        heads: 4,
        kv_heads: 4,
        vocab: 512,
        ctx: 512,
        activation: SynthSpec::parse_activation("reglu").unwrap(),
        sparsity: 0.8,
        skew: 1.0,
        weight_type: SynthSpec::parse_type("q8_0").unwrap(),
        seed: 11,
    };
    write_model(&spec, &path, &mut |_, _| {}).unwrap();

    // Uniform values in [-1, 1) from a 64-bit LCG.
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut uniform = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let (d, ff, rank) = (spec.hidden, spec.ffn, 8);
    let layers = (0..spec.layers)
        .map(|_| SidecarLayer {
            threshold: LayerThreshold {
                rule: SparsityRule::Relu,
                t: 0.0,
            },
            freq: vec![0.2; ff],
            predictor: Some(PredictorWeights {
                d_in: d,
                rank,
                d_out: ff,
                w1: (0..rank * d).map(|_| f16::from_f32(uniform())).collect(),
                b1: (0..rank).map(|_| uniform()).collect(),
                w2: (0..ff * rank).map(|_| f16::from_f32(uniform())).collect(),
                b2: (0..ff).map(|_| uniform()).collect(),
            }),
            hot: vec![],
        })
        .collect();
    let sc = test_sidecar(&GgufFile::open(&path).unwrap(), d, ff, layers);
    sc.write(&sidecar::default_path(&path)).unwrap();
    path
}

/// The `powerinfer` binary built for these tests.
pub fn powerinfer_cmd() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_powerinfer"))
}

/// A path in a per-process scratch directory named after `prefix`.
pub fn scratch(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("powerinfer-{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// The calibration corpus installed by scripts/fetch-corpus.sh (scripts/test.sh runs it):
/// `None` with a SKIPPED line when absent, a failure under POWERINFER_REQUIRE_MODELS=1.
pub fn calibration_corpus() -> Option<PathBuf> {
    let p = powerinfer::corpus::default_calibration();
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("POWERINFER_REQUIRE_MODELS").is_some() {
        panic!("calibration corpus {} missing", p.display());
    }
    eprintln!(
        "SKIPPED: no corpus at {} (run scripts/fetch-corpus.sh)",
        p.display()
    );
    None
}

/// Run a command that must succeed; its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A sidecar for the model in `file` with the given layers, and no placement or run record.
pub fn test_sidecar(
    file: &powerinfer::gguf::GgufFile,
    d_model: usize,
    n_ff: usize,
    layers: Vec<powerinfer::sparse::SidecarLayer>,
) -> powerinfer::sparse::Sidecar {
    powerinfer::sparse::Sidecar {
        model_fingerprint: powerinfer::sparse::sidecar::model_fingerprint(file),
        model_sha256: String::new(),
        model_name: "test".into(),
        d_model,
        n_ff,
        layers,
        vram_budget: 0,
        config_json: "{}".into(),
        summary_json: "{}".into(),
    }
}

/// Write a small SYNTHETIC ReGLU model (hidden 256, ffn 1024, 4 layers, 4 heads, vocab 512,
/// skew 1) through `powerinfer synth`.
pub fn synth_small(path: &std::path::Path, ty: &str, seed: u64, sparsity: f64) {
    run_ok(powerinfer_cmd().args([
        "synth",
        "-o",
        path.to_str().unwrap(),
        "--hidden",
        "256",
        "--ffn",
        "1024",
        "--layers",
        "4",
        "--heads",
        "4",
        "--activation",
        "reglu",
        "--type",
        ty,
        "--skew",
        "1",
        "--seed",
        &seed.to_string(),
        "--vocab",
        "512",
        "--sparsity",
        &sparsity.to_string(),
    ]));
}

/// The GPU backend, or `None` after printing SKIPPED; a missing GPU is a failure under
/// POWERINFER_REQUIRE_GPU=1 (scripts/gpu-check.sh).
#[cfg(feature = "cuda")]
pub fn gpu() -> Option<powerinfer::backend::cuda::CudaBackend> {
    match powerinfer::backend::cuda::CudaBackend::new(0) {
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
