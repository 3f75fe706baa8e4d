//! `powerinfer bench --speculative K`: plain against speculative greedy decoding, both through
//! the generator, with the draft's own decode speed beside them.

use std::time::Instant;

use powerinfer::backend::CpuBackend;
use powerinfer::bench::{argmax, Summary};
use powerinfer::generate::{Engine, GenOptions, Generator, Sampler, SamplerConfig};
use serde::Serialize;

use super::bench::BenchArgs;

/// Speculative decoding against plain decoding, both through the generator (greedy).
#[derive(Serialize)]
pub struct SpecReport {
    max_draft: usize,
    draft_mode: String,
    /// The draft's own decode speed (one token per forward).
    draft_tok_s: Summary,
    plain_tok_s: Summary,
    speculative_tok_s: Summary,
    /// Median speculative over median plain.
    speedup: f64,
    generated_tokens: usize,
    acceptance: f64,
    tokens_per_verify: f64,
}

impl SpecReport {
    pub fn line(&self) -> String {
        format!(
            "speculative (draft {}, K ≤ {}): {:.1} tok/s vs plain {:.1} tok/s = {:.2}x | \
             draft alone {:.1} tok/s | acceptance {:.0}%, {:.2} tokens per verify, {} tokens",
            self.draft_mode,
            self.max_draft,
            self.speculative_tok_s.median,
            self.plain_tok_s.median,
            self.speedup,
            self.draft_tok_s.median,
            100.0 * self.acceptance,
            self.tokens_per_verify,
            self.generated_tokens
        )
    }
}

/// Plain and speculative greedy decoding of the same prompt through the generator, and the
/// draft's own step, repetitions interleaved so that load changes hit all three alike.
pub fn bench_speculative(
    args: &BenchArgs,
    engine: &Engine<CpuBackend>,
    draft_engine: Option<&Engine<CpuBackend>>,
    prompt: &[u32],
    k: usize,
) -> anyhow::Result<SpecReport> {
    let n_ctx = args.model.ctx_size;
    let (draft_model, draft_mode) = args.spec.draft_of(engine, draft_engine);
    let opts = GenOptions {
        max_tokens: args.n_gen,
        stop: Vec::new(),
    };
    let (mut draft_s, mut plain_s, mut spec_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..args.reps {
        let mut st = draft_model.new_state(n_ctx);
        st.ffn_mode = draft_mode.clone();
        let logits = draft_model.forward(&mut st, prompt, false)?;
        let mut next = argmax(logits);
        let t = Instant::now();
        for _ in 0..args.n_gen {
            next = argmax(draft_model.forward(&mut st, &[next], false)?);
        }
        draft_s.push(args.n_gen as f64 / t.elapsed().as_secs_f64());

        let sampler = || Sampler::new(SamplerConfig::greedy());
        let mut plain = Generator::new(&engine.model, &engine.tokenizer, sampler(), n_ctx);
        let p = plain.generate(prompt, &opts, |_| true)?;
        plain_s.push(p.decode_tps());

        let d = args
            .spec
            .drafter(engine, draft_engine, n_ctx)?
            .expect("--speculative given");
        let mut spec =
            Generator::new(&engine.model, &engine.tokenizer, sampler(), n_ctx).with_draft(d)?;
        let s = spec.generate(prompt, &opts, |_| true)?;
        anyhow::ensure!(
            spec.tokens == plain.tokens,
            "speculative greedy tokens differ from plain greedy tokens"
        );
        spec_s.push(s.decode_tps());
        last = Some(s);
    }
    let last = last.expect("at least one repetition");
    let stats = last.speculative.expect("a draft was set");
    let (plain_tok_s, speculative_tok_s) = (Summary::new(plain_s), Summary::new(spec_s));
    Ok(SpecReport {
        max_draft: k,
        draft_mode: draft_mode.name().to_string(),
        draft_tok_s: Summary::new(draft_s),
        speedup: speculative_tok_s.median / plain_tok_s.median.max(1e-9),
        plain_tok_s,
        speculative_tok_s,
        generated_tokens: last.generated_tokens,
        acceptance: stats.acceptance(),
        tokens_per_verify: stats.tokens_per_verify(),
    })
}
