//! Speculative decoding: greedy output equal to plain greedy decoding (token for token, on a
//! real model and a synthetic one, with draft rejections and cache rollbacks on the way),
//! and the acceptance rule keeping the target's sampling distribution.
mod common;

use powerinfer::backend::CpuBackend;
use powerinfer::generate::speculative::verify::{draw, judge, Verdict};
use powerinfer::generate::speculative::{Drafter, SpecStats};
use powerinfer::generate::{Engine, FinishReason, GenOptions, Generator, Sampler, SamplerConfig};
use powerinfer::sparse::sidecar::{self, PredictorWeights};
use powerinfer::sparse::{FfnMode, LayerThreshold, Sidecar, SidecarLayer, SparsityRule};

/// 64-bit LCG: uniform draws in [0, 1) for the statistical tests and random weights.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Tokens, text and finish of one greedy generation, with or without a draft of up to `k`.
fn generate(
    engine: &Engine<CpuBackend>,
    draft: Option<(FfnMode, usize)>,
    n_ctx: usize,
    turns: &[(&[u32], usize)],
) -> (Vec<u32>, String, Vec<FinishReason>, SpecStats) {
    let mut gen = Generator::new(
        &engine.model,
        &engine.tokenizer,
        Sampler::new(SamplerConfig::greedy()),
        n_ctx,
    );
    if let Some((mode, k)) = draft {
        let d = Drafter::new(&engine.model, mode, n_ctx, k).unwrap();
        gen = gen.with_draft(d).unwrap();
    }
    let mut text = String::new();
    let mut finishes = Vec::new();
    let mut total = SpecStats::default();
    // Several turns keep the cache, as chat does: the draft must follow the target across them.
    for &(prompt, max_tokens) in turns {
        let opts = GenOptions {
            max_tokens,
            stop: Vec::new(),
        };
        let stats = gen
            .generate(prompt, &opts, |t| {
                text.push_str(t);
                true
            })
            .unwrap();
        finishes.push(stats.finish);
        assert_eq!(gen.state.pos, gen.tokens.len(), "target cache == tokens");
        if let Some(s) = stats.speculative {
            total.verifies += s.verifies;
            total.drafted += s.drafted;
            total.accepted += s.accepted;
            total.tokens += s.tokens;
        }
    }
    (gen.tokens.clone(), text, finishes, total)
}

/// A sidecar for `model` whose predictors have random weights and a positive bias: they
/// keep most neurons but drop an arbitrary part, so the draft often agrees with the dense
/// model and sometimes does not (both verdicts and the rollback get exercised).
fn random_sidecar(model: &powerinfer::model::Model<CpuBackend>, keep_bias: f32) -> Sidecar {
    let c = &model.config;
    let mut rng = Lcg(0x5eed);
    let mut u = move || rng.next() as f32 * 2.0 - 1.0;
    let rank = 8;
    let layers = (0..c.n_layer)
        .map(|_| SidecarLayer {
            threshold: LayerThreshold {
                rule: SparsityRule::Product,
                t: 0.0,
            },
            freq: vec![0.5; c.n_ff],
            predictor: Some(PredictorWeights {
                d_in: c.d_model,
                rank,
                d_out: c.n_ff,
                w1: (0..rank * c.d_model)
                    .map(|_| half::f16::from_f32(0.05 * u()))
                    .collect(),
                b1: (0..rank).map(|_| u()).collect(),
                w2: (0..c.n_ff * rank)
                    .map(|_| half::f16::from_f32(u()))
                    .collect(),
                b2: (0..c.n_ff).map(|_| keep_bias + u()).collect(),
            }),
            hot: vec![],
        })
        .collect();
    common::test_sidecar(&model.file, c.d_model, c.n_ff, layers)
}

fn check_greedy_identity(engine: &Engine<CpuBackend>, prompt: &[u32], label: &str) {
    let second: Vec<u32> = prompt.iter().rev().take(3).copied().collect();
    let turns: [(&[u32], usize); 2] = [(prompt, 40), (&second, 24)];
    let plain = generate(engine, None, 256, &turns);
    let mut rejected = false;
    for k in [1, 3, 6] {
        let spec = generate(engine, Some((FfnMode::Predicted, k)), 256, &turns);
        assert_eq!(spec.0, plain.0, "{label} K={k}: tokens");
        assert_eq!(spec.1, plain.1, "{label} K={k}: text");
        assert_eq!(spec.2, plain.2, "{label} K={k}: finish");
        let s = spec.3;
        eprintln!(
            "{label} K={k}: {} drafted, {} accepted, {:.2} tokens per verify",
            s.drafted,
            s.accepted,
            s.tokens_per_verify()
        );
        assert!(s.verifies > 0 && s.drafted >= s.accepted);
        rejected |= s.accepted < s.drafted;
        assert!(s.accepted > 0, "{label} K={k}: the draft never agreed");
    }
    assert!(rejected, "{label}: no draft was ever refused");

    // A context too small for the whole answer: speculation is cut to the room left and
    // ends at the same token, with the same finish.
    let short: [(&[u32], usize); 1] = [(prompt, 100)];
    let n_ctx = prompt.len() + 12;
    let plain = generate(engine, None, n_ctx, &short);
    let spec = generate(engine, Some((FfnMode::Predicted, 5)), n_ctx, &short);
    assert_eq!(plain.2, vec![FinishReason::Length]);
    assert_eq!(
        (spec.0, spec.2),
        (plain.0, plain.2),
        "{label}: short context"
    );
}

#[test]
fn greedy_speculation_equals_plain_greedy_on_smollm2() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let mut engine = Engine::load(&path, CpuBackend::new(), None).unwrap();
    let sc = random_sidecar(&engine.model, 2.0);
    engine.model.attach_sidecar(&sc).unwrap();
    let prompt = engine
        .tokenizer
        .encode("The three primary colours are", true, true);
    check_greedy_identity(&engine, &prompt, "smollm2");
}

#[test]
fn greedy_speculation_equals_plain_greedy_on_a_synthetic_model() {
    let path = common::synthetic_model_with_sidecar("speculative");
    let mut engine = Engine::load(&path, CpuBackend::new(), None).unwrap();
    let sc = Sidecar::read(&sidecar::default_path(&path)).unwrap();
    engine.model.attach_sidecar(&sc).unwrap();
    let prompt: Vec<u32> = vec![1, 77, 301, 5, 260, 411, 98];
    check_greedy_identity(&engine, &prompt, "synthetic");
}

#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let Some(path) = common::model("smollm2") else {
        return;
    };
    let target = Engine::load(&path, CpuBackend::new(), None).unwrap();
    let syn = common::synthetic_model_with_sidecar("speculative-vocab");
    let other = Engine::load(&syn, CpuBackend::new(), None).unwrap();
    let d = Drafter::new(&other.model, FfnMode::Dense, 64, 4).unwrap();
    let err = d.check_target(&target.model).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    // A sparse draft needs the sidecar.
    assert!(Drafter::new(&target.model, FfnMode::Predicted, 64, 4).is_err());
}

/// Chi-square statistic of `counts` (over `n` trials) against the law `p`; tokens outside
/// `p` must never appear.
fn chi_square(counts: &[usize], p: &[f64], n: usize) -> f64 {
    counts
        .iter()
        .zip(p)
        .map(|(&c, &pi)| {
            if pi == 0.0 {
                assert_eq!(c, 0, "a token of probability 0 came out");
                0.0
            } else {
                let e = pi * n as f64;
                (c as f64 - e).powi(2) / e
            }
        })
        .sum()
}

/// Run draft-then-judge `n` times: x ~ q, then the verdict. Returns the output counts.
fn speculate(p: &[(u32, f64)], q: &[(u32, f64)], vocab: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = Lcg(seed);
    let mut counts = vec![0; vocab];
    for _ in 0..n {
        let x = draw(q, rng.next());
        let out = match judge(p, q, x, rng.next(), rng.next()) {
            Verdict::Accept => x,
            Verdict::Replace(t) => t,
        };
        counts[out as usize] += 1;
    }
    counts
}

/// 0.1% critical values of chi-square with 1..=6 degrees of freedom.
const CHI2_999: [f64; 7] = [0.0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46];

#[test]
fn acceptance_rule_output_follows_the_target_distribution() {
    let n = 20_000;
    let cases: [(&str, Vec<f64>, Vec<f64>); 4] = [
        (
            "overlapping",
            vec![0.1, 0.4, 0.2, 0.3, 0.0],
            vec![0.3, 0.1, 0.3, 0.1, 0.2],
        ),
        (
            "draft misses a token",
            vec![0.25, 0.25, 0.25, 0.25, 0.0],
            vec![0.0, 0.5, 0.3, 0.0, 0.2],
        ),
        (
            "equal",
            vec![0.2, 0.2, 0.2, 0.2, 0.2],
            vec![0.2, 0.2, 0.2, 0.2, 0.2],
        ),
        (
            "disjoint",
            vec![0.6, 0.4, 0.0, 0.0, 0.0],
            vec![0.0, 0.0, 0.5, 0.5, 0.0],
        ),
    ];
    for (seed, (label, p, q)) in cases.into_iter().enumerate() {
        let sparse = |d: &[f64]| -> Vec<(u32, f64)> {
            d.iter()
                .enumerate()
                .filter(|&(_, &w)| w > 0.0)
                .map(|(i, &w)| (i as u32, w))
                .collect()
        };
        let counts = speculate(&sparse(&p), &sparse(&q), p.len(), n, seed as u64 + 1);
        let dof = p.iter().filter(|&&x| x > 0.0).count() - 1;
        let chi2 = chi_square(&counts, &p, n);
        assert!(
            chi2 < CHI2_999[dof],
            "{label}: chi2 {chi2:.1} with {dof} dof"
        );
        // Total variation distance to p: for 20k draws the noise is around 0.005.
        let tv: f64 = counts
            .iter()
            .zip(&p)
            .map(|(&c, &pi)| (c as f64 / n as f64 - pi).abs())
            .sum::<f64>()
            / 2.0;
        assert!(tv < 0.02, "{label}: total variation {tv:.4}");
    }
}

/// The sampler's distribution computed independently: penalty-free top-k, then top-p and
/// min-p on the temperature-1 probabilities, then softmax at the temperature.
fn reference_distribution(logits: &[f32], cfg: &SamplerConfig) -> Vec<f64> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k);
    }
    let max = logits[order[0]] as f64;
    let w1: Vec<f64> = order
        .iter()
        .map(|&i| (logits[i] as f64 - max).exp())
        .collect();
    let total: f64 = w1.iter().sum();
    let mut keep = order.len();
    let mut cum = 0.0;
    for (j, w) in w1.iter().enumerate() {
        cum += w;
        if cum >= cfg.top_p as f64 * total {
            keep = j + 1;
            break;
        }
    }
    order.truncate(keep);
    order.retain(|&i| (logits[i] as f64 - max).exp() >= cfg.min_p as f64);
    let mut p = vec![0.0; logits.len()];
    for &i in &order {
        p[i] = ((logits[i] as f64 - max) / cfg.temperature as f64).exp();
    }
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    p
}

#[test]
fn sampler_settings_shape_draft_and_target_alike_and_speculation_keeps_the_target_law() {
    let cfg = SamplerConfig {
        temperature: 0.7,
        top_k: 5,
        top_p: 0.9,
        min_p: 0.05,
        repeat_penalty: 1.0,
        repeat_last_n: 0,
        seed: 3,
    };
    let target = [1.2f32, 0.3, 2.0, -1.0, 0.9, 1.5, -0.2];
    let draft = [0.2f32, 1.1, 2.1, 0.5, 1.4, 0.4, -2.0];
    let mut sampler = Sampler::new(cfg.clone());
    let dense = |d: &[(u32, f64)]| {
        let mut v = vec![0.0; target.len()];
        for &(t, w) in d {
            v[t as usize] = w;
        }
        v
    };
    let p = sampler.distribution(&target, &[]);
    let q = sampler.distribution(&draft, &[]);
    for (got, logits) in [(&p, &target), (&q, &draft)] {
        let want = reference_distribution(logits, &cfg);
        for (g, w) in dense(got).iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }
    // The filters cut the two differently, so speculation must both refuse and replace.
    assert_ne!(
        dense(&p).iter().map(|&x| x > 0.0).collect::<Vec<_>>(),
        dense(&q).iter().map(|&x| x > 0.0).collect::<Vec<_>>()
    );

    let n = 20_000;
    let pd = dense(&p);
    let dof = pd.iter().filter(|&&x| x > 0.0).count() - 1;
    // Plain sampling draws from the same law `distribution` reports...
    let mut plain = vec![0; target.len()];
    for _ in 0..n {
        plain[sampler.sample(&target, &[]) as usize] += 1;
    }
    let chi2 = chi_square(&plain, &pd, n);
    assert!(chi2 < CHI2_999[dof], "plain sampling: chi2 {chi2:.1}");
    // ...and so does speculation with the draft's law.
    let spec = speculate(&p, &q, target.len(), n, 99);
    let chi2 = chi_square(&spec, &pd, n);
    assert!(chi2 < CHI2_999[dof], "speculative: chi2 {chi2:.1}");
}

#[test]
fn sampled_speculation_is_reproducible_and_stays_within_the_filters() {
    let path = common::synthetic_model_with_sidecar("speculative-sampled");
    let mut engine = Engine::load(&path, CpuBackend::new(), None).unwrap();
    let sc = Sidecar::read(&sidecar::default_path(&path)).unwrap();
    engine.model.attach_sidecar(&sc).unwrap();
    let cfg = SamplerConfig {
        top_k: 3,
        ..SamplerConfig::default()
    };
    let prompt = [1u32, 40, 200, 33];
    let run = || {
        let mut gen = Generator::new(
            &engine.model,
            &engine.tokenizer,
            Sampler::new(cfg.clone()),
            128,
        );
        let d = Drafter::new(&engine.model, FfnMode::Predicted, 128, 4).unwrap();
        gen = gen.with_draft(d).unwrap();
        let opts = GenOptions {
            max_tokens: 30,
            stop: Vec::new(),
        };
        gen.generate(&prompt, &opts, |_| true).unwrap();
        gen.tokens.clone()
    };
    let a = run();
    assert_eq!(a, run(), "same seed, same tokens");
    // Every generated token is among the target's top 3 after the tokens before it.
    let mut st = engine.model.new_state(128);
    let logits = engine.model.forward(&mut st, &a, true).unwrap().to_vec();
    let vocab = engine.model.config.vocab_size;
    for i in prompt.len()..a.len() {
        let row = &logits[(i - 1) * vocab..i * vocab];
        let better = row.iter().filter(|&&l| l > row[a[i] as usize]).count();
        assert!(better < 3, "token {i} ranks {}", better + 1);
    }
}

/// `powerinfer run`: greedy text with `--speculative` (self-draft, a separately loaded draft
/// model, and the model's requantised copy) equals plain greedy text.
#[test]
fn run_speculative_prints_the_plain_greedy_text() {
    let path = common::synthetic_model_with_sidecar("speculative-cli");
    let m = path.to_str().unwrap();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_powerinfer"))
            .args([
                "run",
                "-m",
                m,
                "-p",
                "the cat sat",
                "-n",
                "40",
                "--temp",
                "0",
            ])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (plain, _) = run(&[]);
    assert!(plain.trim().len() > 4, "{plain:?}");
    for extra in [
        &["--speculative", "3"][..],
        &[
            "--speculative",
            "5",
            "--draft-model",
            m,
            "--draft",
            "sparse",
        ],
        &["--speculative", "2", "--draft-model", m],
        // The model's own copy requantised in memory.
        &["--speculative", "4", "--draft-type", "q4_0"],
    ] {
        let (text, stats) = run(extra);
        assert_eq!(text, plain, "{extra:?}");
        assert!(stats.contains("tokens per verify"), "{extra:?}: {stats}");
    }
    // The model read into memory (--no-mmap) decodes exactly as the mapped one, dense and sparse.
    assert_eq!(run(&["--no-mmap"]).0, plain);
    assert_eq!(run(&["--no-mmap", "--sparse"]).0, run(&["--sparse"]).0);
}
