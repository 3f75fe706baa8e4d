//! Agreement with llama.cpp's greedy output (tests/data/*_greedy.json: llama.cpp 0c1e570,
//! --temp 0, prompts tokenized with BOS where the model asks for it).
//!
//! Greedy decoding is a chain of arg-maxes; where two tokens are nearly tied, rounding
//! differences between engines (8-bit activations, f16 caches, summation order) pick either,
//! and from there the texts part. So the test is teacher-forced: we feed llama.cpp's own
//! completion and require, at every position, that llama.cpp's token is our top token or
//! within `NEAR_TIE` logits of it, and at the end that generation stops where llama.cpp's did.
//! Free-running greedy generation is also run and compared (printed, and counted).
mod common;

use powerinfer::backend::CpuBackend;
use powerinfer::generate::{Engine, FinishReason, GenOptions, Generator, Sampler, SamplerConfig};

/// Largest gap between our top logit and llama.cpp's chosen token that we accept as a
/// near-tie. Two measured sources add up: the independent f32 reference already differs from
/// llama.cpp by up to 0.23 logit on these texts, and 8-bit activations move our logits from
/// f32 by up to ~0.6 (tests/model_reference.rs). Observed worst case here: 0.52 (gemma3).
const NEAR_TIE: f32 = 0.75;

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    n_predict: usize,
    completion: String,
    ended_with_eos: bool,
}

/// Runs every golden case of `short`; at least `min_exact_prefix` cases must agree with
/// llama.cpp's free-running greedy output on the first 16 tokens, and `min_text_equal` on the
/// whole text and where it stops.
fn check_model(short: &str, min_exact_prefix: usize, min_text_equal: usize) {
    let Some(path) = common::model(short) else {
        return;
    };
    let engine = Engine::load(&path, CpuBackend::new(), None).unwrap();
    let (model, tok) = (&engine.model, &engine.tokenizer);
    let golden: Golden = serde_json::from_str(
        &std::fs::read_to_string(common::data_path(&format!("{short}_greedy.json"))).unwrap(),
    )
    .unwrap();
    let (mut exact_prefix, mut texts_equal) = (0, 0);
    for case in &golden.cases {
        let prompt = tok.encode(&case.prompt, true, true);
        let want = tok.encode(&case.completion, false, false);

        // Teacher-forced: every golden token must be our choice or a near-tie.
        let mut st = model.new_state(1024);
        let mut logits = model.forward(&mut st, &prompt, false).unwrap().to_vec();
        let mut worst = 0f32;
        for (i, &t) in want.iter().enumerate() {
            let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let gap = top - logits[t as usize];
            worst = worst.max(gap);
            assert!(
                gap <= NEAR_TIE,
                "{short}: {:?} position {i}: llama.cpp's token {t} is {gap} below our top logit",
                case.prompt
            );
            logits = model.forward(&mut st, &[t], false).unwrap().to_vec();
        }
        if case.ended_with_eos {
            let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let eog_gap = tok
                .eog_ids()
                .iter()
                .map(|&e| top - logits[e as usize])
                .fold(f32::INFINITY, f32::min);
            worst = worst.max(eog_gap);
            assert!(
                eog_gap <= NEAR_TIE,
                "{short}: {:?}: no stop where llama.cpp stopped",
                case.prompt
            );
        }

        // Free-running greedy generation.
        let mut gen = Generator::new(model, tok, Sampler::new(SamplerConfig::greedy()), 1024);
        let mut text = String::new();
        let opts = GenOptions {
            max_tokens: case.n_predict,
            stop: vec![],
        };
        let stats = gen
            .generate(&prompt, &opts, |t| {
                text.push_str(t);
                true
            })
            .unwrap();
        let ours = tok.encode(&text, false, false);
        let n = 16.min(want.len());
        let prefix_ok = ours.len() >= n && ours[..n] == want[..n];
        let text_ok =
            text == case.completion && (stats.finish == FinishReason::Stop) == case.ended_with_eos;
        exact_prefix += prefix_ok as usize;
        texts_equal += text_ok as usize;
        // Without a near-tie anywhere, greedy decoding has no choice to make differently:
        // the whole text, and where it stops, must be llama.cpp's.
        if worst == 0.0 {
            assert!(text_ok, "{short}: {:?}: got {text:?}", case.prompt);
        }
        eprintln!(
            "{short}: {:?}\n  ours:   {text:?}\n  golden: {:?}\n  teacher-forced worst gap {worst:.3}; free-running first-16 equal: {prefix_ok}, text equal: {text_ok}",
            case.prompt, case.completion
        );
    }
    eprintln!(
        "{short}: {exact_prefix} of {} cases equal on the first 16 tokens, {texts_equal} whole texts",
        golden.cases.len()
    );
    assert!(
        exact_prefix >= min_exact_prefix,
        "{short}: only {exact_prefix} cases agree on the first 16 tokens"
    );
    assert!(
        texts_equal >= min_text_equal,
        "{short}: only {texts_equal} whole texts agree"
    );
}

// The CPU backend follows the bits of llama.cpp's AVX2 build (activation quantisation, kernel
// orders, ggml's exp and f16 GELU table, the FMAs GCC emits): short SmolLM2 inputs give its
// logits exactly. Where a text still parts (SmolLM2's CPU-cache answer late, gemma3's second
// case) the remaining differences are below what this test can localise.

#[test]
fn smollm2_agrees_with_llama_cpp() {
    check_model("smollm2", 4, 3);
}

#[test]
fn qwen05_agrees_with_llama_cpp() {
    check_model("qwen05", 2, 2);
}

#[test]
fn gemma3_agrees_with_llama_cpp() {
    check_model("gemma3", 1, 1);
}
