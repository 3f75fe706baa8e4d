//! `powerinfer bench`: prefill and decode speed of the dense engine, llama-bench style
//! (random prompt tokens, decode from the prefilled context, median of repetitions).

use std::time::Instant;

use anyhow::Context;
use powerinfer::backend::Backend;
use powerinfer::generate::Engine;
use serde::Serialize;

use super::common::{with_engine, ModelArgs, SpecArgs};
use powerinfer::backend::CpuBackend;
use powerinfer::generate::{GenOptions, Generator, Sampler, SamplerConfig};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// With --speculative: also decode greedily through the generator with and without the
    /// draft (same random prompt, same tokens) and time the draft's own decode step
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Prompt tokens for the prefill measurement
    #[arg(short = 'p', long, default_value_t = 64)]
    pub n_prompt: usize,
    /// Tokens to decode
    #[arg(short = 'n', long, default_value_t = 64)]
    pub n_gen: usize,
    /// Repetitions (the median is reported)
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
    runs: Vec<f64>,
}

impl Stat {
    fn new(runs: Vec<f64>) -> Stat {
        let mut s = runs.clone();
        s.sort_by(f64::total_cmp);
        let median = if s.is_empty() {
            0.0
        } else if s.len() % 2 == 1 {
            s[s.len() / 2]
        } else {
            (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
        };
        Stat {
            median,
            min: s.first().copied().unwrap_or(0.0),
            max: s.last().copied().unwrap_or(0.0),
            runs,
        }
    }
}

#[derive(Serialize)]
struct Report {
    model: String,
    arch: String,
    backend: String,
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    prefill_tok_s: Stat,
    decode_tok_s: Stat,
    /// Peak resident memory of the process (VmHWM), and what it is allowed to be made of.
    peak_rss_mib: Option<f64>,
    model_file_mib: f64,
    kv_cache_mib: f64,
    speculative: Option<SpecReport>,
}

/// Speculative decoding against plain decoding, both through the generator (greedy).
#[derive(Serialize)]
struct SpecReport {
    max_draft: usize,
    draft_mode: String,
    /// The draft's own decode speed (one token per forward).
    draft_tok_s: Stat,
    plain_tok_s: Stat,
    speculative_tok_s: Stat,
    /// Median speculative over median plain.
    speedup: f64,
    generated_tokens: usize,
    acceptance: f64,
    tokens_per_verify: f64,
}

/// Peak resident set size from /proc (Linux); `None` elsewhere.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.reps > 0, "--reps must be at least 1");
    anyhow::ensure!(
        args.n_prompt > 0 && args.n_gen > 0,
        "-p and -n must be positive"
    );
    // Speculative decoding runs on the CPU.
    if args.spec.speculative.is_some() {
        let engine = args.model.load_with(Some(&args.spec))?;
        let draft_engine = args.spec.load_draft(&args.model)?;
        return measure::<CpuBackend>(args, &engine, draft_engine.as_ref());
    }
    with_engine!(args.model.load()?, e => measure(args, &e, None))
}

fn measure<B: Backend>(
    args: &BenchArgs,
    engine: &Engine<B>,
    draft_engine: Option<&Engine<B>>,
) -> anyhow::Result<()> {
    let model = &engine.model;
    let vocab = model.config.vocab_size as u64;
    let mut state = model.new_state(args.model.ctx_size);
    // --sparse / --oracle decode through the sparse FFN (prefill stays batched, see State).
    state.ffn_mode = args.model.ffn_mode();
    anyhow::ensure!(
        args.n_prompt + args.n_gen <= state.n_ctx,
        "-p + -n = {} exceeds the context of {}",
        args.n_prompt + args.n_gen,
        state.n_ctx
    );
    // Deterministic pseudo-random prompt, as llama-bench uses random tokens.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let prompt: Vec<u32> = (0..args.n_prompt)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % vocab) as u32
        })
        .collect();

    // One warm-up pass pages the weights in and sizes the scratch buffers.
    state.reset();
    model.forward(&mut state, &prompt, false)?;

    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..args.reps {
        state.reset();
        let t = Instant::now();
        let logits = model.forward(&mut state, &prompt, false)?;
        pp.push(args.n_prompt as f64 / t.elapsed().as_secs_f64());
        let mut next = argmax(logits);
        let t = Instant::now();
        for _ in 0..args.n_gen {
            next = argmax(model.forward(&mut state, &[next], false)?);
        }
        tg.push(args.n_gen as f64 / t.elapsed().as_secs_f64());
    }
    let speculative = match args.spec.speculative {
        Some(k) => Some(bench_speculative(args, engine, draft_engine, &prompt, k)?),
        None => None,
    };
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let c = &model.config;
    // f16 keys and values for every layer and position of the context.
    let kv_bytes = 2 * 2 * c.n_layer * state.n_ctx * c.kv_dim();
    let report = Report {
        model: args.model.model_path()?.display().to_string(),
        arch: model.config.arch.name().to_string(),
        backend: model.backend.name(),
        threads: rayon::current_num_threads(),
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        prefill_tok_s: Stat::new(pp),
        decode_tok_s: Stat::new(tg),
        peak_rss_mib: peak_rss_mib(),
        model_file_mib: mib(model.file.bytes().len()),
        kv_cache_mib: mib(kv_bytes),
        speculative,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &args.json_out {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!(
            "| model | backend | test | tok/s (median) | min | max |\n|---|---|---|---:|---:|---:|"
        );
        let name = std::path::Path::new(&report.model)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (test, s) in [
            (format!("pp{}", report.n_prompt), &report.prefill_tok_s),
            (format!("tg{}", report.n_gen), &report.decode_tok_s),
        ] {
            println!(
                "| {name} | {} | {test} | {:.1} | {:.1} | {:.1} |",
                report.backend, s.median, s.min, s.max
            );
        }
        if let Some(s) = &report.speculative {
            println!(
                "speculative (draft {}, K ≤ {}): {:.1} tok/s vs plain {:.1} tok/s = {:.2}x | \
                 draft alone {:.1} tok/s | acceptance {:.0}%, {:.2} tokens per verify, {} tokens",
                s.draft_mode,
                s.max_draft,
                s.speculative_tok_s.median,
                s.plain_tok_s.median,
                s.speedup,
                s.draft_tok_s.median,
                100.0 * s.acceptance,
                s.tokens_per_verify,
                s.generated_tokens
            );
        }
        if let Some(rss) = report.peak_rss_mib {
            println!(
                "peak RSS {rss:.0} MiB (model file {:.0} MiB + KV cache {:.0} MiB for {} positions)",
                report.model_file_mib, report.kv_cache_mib, state.n_ctx
            );
        }
    }
    Ok(())
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Plain and speculative greedy decoding of the same prompt through the generator, and the
/// draft's own step, repetitions interleaved so that load changes hit all three alike.
fn bench_speculative<B: Backend>(
    args: &BenchArgs,
    engine: &Engine<B>,
    draft_engine: Option<&Engine<B>>,
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
    let (plain_tok_s, speculative_tok_s) = (Stat::new(plain_s), Stat::new(spec_s));
    Ok(SpecReport {
        max_draft: k,
        draft_mode: draft_mode.name().to_string(),
        draft_tok_s: Stat::new(draft_s),
        speedup: speculative_tok_s.median / plain_tok_s.median.max(1e-9),
        plain_tok_s,
        speculative_tok_s,
        generated_tokens: last.generated_tokens,
        acceptance: stats.acceptance(),
        tokens_per_verify: stats.tokens_per_verify(),
    })
}
