//! The profile sidecar: written and read back unchanged; wrong, missing or corrupt files fail
//! with errors that say what is wrong.
mod common;

use half::f16;
use powerinfer::gguf::GgufFile;
use powerinfer::sparse::sidecar::{self, PredictorWeights};
use powerinfer::sparse::{LayerThreshold, Sidecar, SidecarError, SidecarLayer, SparsityRule};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("powerinfer-sidecar-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// A small pseudo-random sidecar (xorshift, no zeros in the weights).
fn sample() -> Sidecar {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let (d, ff) = (64, 96);
    let layers = (0..3)
        .map(|i| SidecarLayer {
            threshold: LayerThreshold {
                rule: if i == 0 {
                    SparsityRule::Gate
                } else {
                    SparsityRule::Product
                },
                t: 0.01 * (i + 1) as f32,
            },
            freq: (0..ff).map(|_| next() + 0.5).collect(),
            predictor: (i != 1).then(|| {
                let r = 8 + 4 * i;
                PredictorWeights {
                    d_in: d,
                    rank: r,
                    d_out: ff,
                    w1: (0..r * d).map(|_| f16::from_f32(next())).collect(),
                    b1: (0..r).map(|_| next()).collect(),
                    w2: (0..ff * r).map(|_| f16::from_f32(next())).collect(),
                    b2: (0..ff).map(|_| next()).collect(),
                }
            }),
            hot: if i == 2 { vec![] } else { vec![1, 5, 17, 95] },
        })
        .collect();
    Sidecar {
        model_fingerprint: "ab".repeat(32),
        model_sha256: "cd".repeat(32),
        model_name: "test".into(),
        d_model: d,
        n_ff: ff,
        layers,
        vram_budget: 123_456,
        config_json: r#"{"corpus":"x"}"#.into(),
        summary_json: "{}".into(),
    }
}

#[test]
fn roundtrip() {
    let p = tmp("roundtrip.powerinfer.gguf");
    let s = sample();
    s.write(&p).unwrap();
    let back = Sidecar::read(&p).unwrap();
    assert_eq!(back, s);
}

#[test]
fn missing_and_corrupt() {
    let p = tmp("does-not-exist.powerinfer.gguf");
    let e = Sidecar::read(&p).unwrap_err();
    assert!(matches!(e, SidecarError::Missing(_)));
    assert!(e.to_string().contains("powerinfer profile"), "{e}");

    let p = tmp("corrupt.powerinfer.gguf");
    sample().write(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    // Truncated at many points: always an error, never a panic.
    for cut in (0..bytes.len()).step_by(97) {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(Sidecar::read(&p).is_err(), "cut at {cut}");
    }
}

#[test]
fn model_file_is_not_a_sidecar() {
    let Some(model) = common::model("smollm2") else {
        return;
    };
    let e = Sidecar::read(&model).unwrap_err();
    assert!(e.to_string().contains("not a powerinfer sidecar"), "{e}");
}

#[test]
fn sidecar_for_another_model_is_refused() {
    let (Some(a), Some(b)) = (common::model("smollm2"), common::model("gemma3")) else {
        return;
    };
    let fa = GgufFile::open(&a).unwrap();
    let fb = GgufFile::open(&b).unwrap();
    let mut s = sample();
    s.model_fingerprint = sidecar::model_fingerprint(&fa);
    s.check_model(&a, &fa).unwrap();
    let e = s.check_model(&b, &fb).unwrap_err();
    assert!(e.to_string().contains("another model"), "{e}");
    assert_eq!(
        sidecar::default_path(&a).file_name().unwrap(),
        "SmolLM2-135M-Instruct.Q4_1.powerinfer.gguf"
    );
}
