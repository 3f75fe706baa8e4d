//! `powerinfer bench`: prefill and decode speed of the dense engine, llama-bench style
//! (random prompt tokens, decode from the prefilled context, median of repetitions).

use std::time::Instant;

use anyhow::Context;
use powerinfer::backend::Backend;
use powerinfer::generate::Engine;
use serde::Serialize;

use super::common::{with_engine, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
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
    with_engine!(args.model.load()?, e => measure(args, &e))
}

fn measure<B: Backend>(args: &BenchArgs, engine: &Engine<B>) -> anyhow::Result<()> {
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
