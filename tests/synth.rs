//! Synthetic models: they load, run, and their FFN activations have the requested sparsity
//! and skew when measured through the engine's own forward pass.

use std::path::PathBuf;

use powerinfer::backend::CpuBackend;
use powerinfer::model::{FfnKind, FfnObserver, FfnTaps, Model};
use powerinfer::quant::GgmlType;
use powerinfer::synth::{power_law, top_share, write_model, SynthSpec, SAMPLE_TEXT};
use powerinfer::tokenizer::Tokenizer;

/// A path in a directory of its own, removed with it on drop. Each file gets its own
/// directory because tests run in parallel: with one shared directory, one test's drop could
/// remove it while another test was creating it.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pi-synth-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempFile(dir.join(format!("{name}.gguf")))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn generate(spec: &SynthSpec, name: &str) -> TempFile {
    let f = TempFile::new(name);
    write_model(spec, &f.0, &mut |_, _| {}).unwrap();
    f
}

/// Counts, per layer and neuron, how often the activation that multiplies `down` is non-zero.
struct Counter {
    n_ff: usize,
    fired: Vec<Vec<u64>>,
    tokens: Vec<u64>,
    finite: bool,
}

impl FfnObserver for Counter {
    fn observe(&mut self, layer: usize, rows: usize, taps: FfnTaps<'_>) {
        assert_eq!(taps.act.len(), rows * self.n_ff);
        for row in taps.act.chunks_exact(self.n_ff) {
            for (c, &a) in self.fired[layer].iter_mut().zip(row) {
                *c += u64::from(a != 0.0);
            }
        }
        self.finite &= taps.act.iter().all(|a| a.is_finite());
        self.tokens[layer] += rows as u64;
    }
}

struct Measured {
    /// Per layer: fraction of zero activations.
    sparsity: Vec<f64>,
    /// Per layer: share of firings from the 20% most active neurons.
    top20: Vec<f64>,
}

/// Run the sample text and then random token ids through the model.
fn measure(path: &PathBuf, n_random: usize, seed: u64) -> Measured {
    let model = Model::load(path, CpuBackend::new(), None).unwrap();
    let tok = Tokenizer::from_gguf(&model.file).unwrap();
    let c = &model.config;
    let mut tokens = tok.encode(SAMPLE_TEXT, true, false);
    let mut x = seed;
    for _ in 0..n_random {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokens.push(((x >> 33) % c.vocab_size as u64) as u32);
    }
    let mut obs = Counter {
        n_ff: c.n_ff,
        fired: vec![vec![0; c.n_ff]; c.n_layer],
        tokens: vec![0; c.n_layer],
        finite: true,
    };
    let mut state = model.new_state(tokens.len());
    let logits = model
        .forward_observed(&mut state, &tokens, true, Some(&mut obs))
        .unwrap();
    assert_eq!(logits.len(), tokens.len() * c.vocab_size);
    assert!(logits.iter().all(|v| v.is_finite()), "non-finite logits");
    assert!(obs.finite, "non-finite activations");
    let mut m = Measured {
        sparsity: vec![],
        top20: vec![],
    };
    for (fired, &n) in obs.fired.iter().zip(&obs.tokens) {
        let total: u64 = fired.iter().sum();
        m.sparsity
            .push(1.0 - total as f64 / (n as f64 * c.n_ff as f64));
        let mut sorted = fired.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let top: u64 = sorted[..c.n_ff / 5].iter().sum();
        m.top20.push(top as f64 / total.max(1) as f64);
    }
    m
}

fn check(spec: &SynthSpec, name: &str) -> Measured {
    let f = generate(spec, name);
    let m = measure(&f.0, 200, spec.seed);
    eprintln!("{name}: sparsity {:?} top20 {:?}", m.sparsity, m.top20);
    for (l, s) in m.sparsity.iter().enumerate() {
        assert!(
            (s - spec.sparsity).abs() < 0.03,
            "{name} layer {l}: sparsity {s}, want {}",
            spec.sparsity
        );
    }
    m
}

fn spec(act: FfnKind, sparsity: f64, skew: f64, ty: GgmlType, seed: u64) -> SynthSpec {
    let mut s = SynthSpec::small(act, sparsity, skew);
    s.weight_type = ty;
    s.seed = seed;
    s
}

/// The top-20% share the frequency law itself predicts, the reference for measured skew.
fn expected_top20(s: &SynthSpec) -> f64 {
    top_share(&power_law(s.ffn, 1.0 - s.sparsity, s.skew), 0.2)
}

#[test]
fn reglu_f16_sparse_and_skewed() {
    let s = spec(FfnKind::ReGlu, 0.9, 1.0, GgmlType::F16, 1);
    let m = check(&s, "reglu-f16");
    let want = expected_top20(&s);
    assert!(want > 0.6, "{want}");
    for t in m.top20 {
        assert!(
            t > 0.5 && (t - want).abs() < 0.06,
            "top-20% share {t}, want {want}"
        );
    }
}

#[test]
fn relu_q8_0_half_sparse() {
    let s = spec(FfnKind::Relu, 0.5, 1.0, GgmlType::Q8_0, 2);
    let f = generate(&s, "relu-q8");
    let model = Model::load(&f.0, CpuBackend::new(), None).unwrap();
    assert_eq!(model.config.ffn, FfnKind::Relu);
    assert!(model.file.tensor_info("blk.0.ffn_gate.weight").is_none());
    drop(model);
    let m = measure(&f.0, 200, 2);
    let want = expected_top20(&s);
    for (l, (sp, t)) in m.sparsity.iter().zip(&m.top20).enumerate() {
        assert!((sp - 0.5).abs() < 0.03, "layer {l}: sparsity {sp}");
        assert!(
            (t - want).abs() < 0.06,
            "layer {l}: top-20% share {t}, want {want}"
        );
    }
}

#[test]
fn drelu_q4_0_uniform() {
    let s = spec(FfnKind::DReLU, 0.9, 0.0, GgmlType::Q4_0, 3);
    let m = check(&s, "drelu-q4");
    // Every neuron fires at 10%; only sampling noise lifts the top fifth above 20%.
    for t in m.top20 {
        assert!((0.2..0.3).contains(&t), "top-20% share {t}");
    }
}

#[test]
fn reglu_q4_0_half_sparse_uniform() {
    let s = spec(FfnKind::ReGlu, 0.5, 0.0, GgmlType::Q4_0, 4);
    let m = check(&s, "reglu-q4");
    for t in m.top20 {
        assert!((0.2..0.25).contains(&t), "top-20% share {t}");
    }
}

#[test]
fn rates_hold_through_many_layers() {
    let mut s = spec(FfnKind::ReGlu, 0.8, 1.0, GgmlType::Q8_0, 5);
    (s.hidden, s.ffn, s.layers, s.heads, s.kv_heads) = (128, 256, 24, 4, 2);
    check(&s, "reglu-deep");
}

#[test]
fn same_seed_same_bytes() {
    let s = spec(FfnKind::DReLU, 0.9, 1.0, GgmlType::Q4_0, 42);
    let a = generate(&s, "det-a");
    let b = generate(&s, "det-b");
    let (a, b) = (std::fs::read(&a.0).unwrap(), std::fs::read(&b.0).unwrap());
    assert!(a == b, "two runs with seed 42 differ");
    let mut other = s.clone();
    other.seed = 43;
    let c = generate(&other, "det-c");
    let c = std::fs::read(&c.0).unwrap();
    assert_eq!(a.len(), c.len());
    let same = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert!(
        same < a.len() * 3 / 4,
        "seeds 42 and 43 share {same} of {} bytes",
        a.len()
    );
}

#[test]
fn tokenizer_round_trips_and_merges() {
    let s = spec(FfnKind::ReGlu, 0.9, 1.0, GgmlType::F16, 6);
    let f = generate(&s, "tok");
    let file = powerinfer::gguf::GgufFile::open(&f.0).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert_eq!(tok.vocab_size(), s.vocab);
    for text in [
        SAMPLE_TEXT,
        "Plain words, then naïve café, 東京 and 🙂 fall back to bytes.",
        "  two leading spaces\tand a tab\n",
    ] {
        let ids = tok.encode(text, true, false);
        assert_eq!(ids[0], tok.bos_id().unwrap());
        assert_eq!(tok.decode(&ids[1..]), text);
    }
    // Learned pieces: the sample text takes far fewer tokens than characters.
    let ids = tok.encode(SAMPLE_TEXT, false, false);
    assert!(ids.len() * 2 < SAMPLE_TEXT.len(), "{} tokens", ids.len());
    let bytes = tok.encode("東", false, false);
    assert_eq!(
        bytes.len(),
        4,
        "space prefix and three UTF-8 bytes: {bytes:?}"
    );
}

#[test]
fn bad_specs_are_refused() {
    let base = SynthSpec::small(FfnKind::ReGlu, 0.9, 1.0);
    let cases: Vec<(SynthSpec, &str)> = vec![
        (
            SynthSpec {
                heads: 3,
                ..base.clone()
            },
            "not divisible by the head count",
        ),
        (
            SynthSpec {
                sparsity: 1.0,
                ..base.clone()
            },
            "sparsity",
        ),
        (
            SynthSpec {
                sparsity: -0.1,
                ..base.clone()
            },
            "sparsity",
        ),
        (
            SynthSpec {
                kv_heads: 3,
                ..base.clone()
            },
            "KV head",
        ),
        (
            SynthSpec {
                ffn: 1000,
                ..base.clone()
            },
            "FFN size",
        ),
        (
            SynthSpec {
                vocab: 10,
                ..base.clone()
            },
            "vocabulary",
        ),
        (
            SynthSpec {
                activation: FfnKind::SwiGlu,
                ..base.clone()
            },
            "no exact zeros",
        ),
    ];
    for (s, want) in cases {
        let f = TempFile::new("bad");
        let e = write_model(&s, &f.0, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
        assert!(!f.0.exists());
    }
    let e = SynthSpec::parse_type("q3_x").unwrap_err().to_string();
    assert!(e.contains("q3_x"), "{e}");
    assert!(SynthSpec::parse_activation("silu").is_err());
}

#[test]
fn cli_writes_a_model_and_refuses_bad_arguments() {
    let f = TempFile::new("cli");
    let out = f.0.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "synth", "-o", out, "--hidden", "128", "--ffn", "256", "--layers", "2", "--heads", "4",
            "--vocab", "600", "--seed", "9",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_powerinfer"))
            .args(&args)
            .output()
            .unwrap()
    };
    let ok = run(&[
        "--activation",
        "drelu",
        "--type",
        "q8_0",
        "--sparsity",
        "0.8",
    ]);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("params") && stdout.contains("SYNTHETIC"),
        "{stdout}"
    );
    let model = Model::load(&f.0, CpuBackend::new(), None).unwrap();
    assert_eq!(model.config.ffn, FfnKind::DReLU);
    assert_eq!(model.config.n_layer, 2);
    drop(model);
    for (extra, needle) in [
        (&["--kv-heads", "3"][..], "KV head count 3"),
        (&["--sparsity", "1.5"][..], "sparsity 1.5"),
        (&["--type", "q3_x"][..], "unknown weight type \"q3_x\""),
        (&["--activation", "silu"][..], "unknown activation \"silu\""),
    ] {
        let bad = run(extra);
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(needle),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
