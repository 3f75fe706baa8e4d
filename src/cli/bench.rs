//! `powerinfer bench`: prefill and decode speed, llama-bench style (random prompt tokens, decode
//! from the prefilled context, median of repetitions), for the dense FFN and the sparse modes
//! side by side, with bytes per token against the machine's measured read bandwidth.

use std::path::PathBuf;

use anyhow::Context;
use powerinfer::backend::Backend;
use powerinfer::bench::{
    find_llama_bench, measure_read_bandwidth, random_prompt, run_interleaved, run_llama_bench,
    write_svg, BenchReport, DecodeTraffic, LlamaCppComparison, Machine, ModeReport, ModelInfo,
};
use powerinfer::sparse::FfnMode;

use super::common::{AnyEngine, ModelArgs, SidecarUse, SpecArgs};
use powerinfer::generate::Engine;

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
    /// Text whose tokens are the prompt and then, one a step, the decode inputs (teacher-forced),
    /// so that a sparse model's predictors see text of the kind they were trained on
    /// [default: the evaluation corpus of scripts/fetch-corpus.sh, where installed]
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// A random prompt and greedy decoding instead of a text (as llama-bench; the default when
    /// no evaluation corpus is installed)
    #[arg(long, conflicts_with = "text")]
    pub random_tokens: bool,
    /// Repetitions per mode, interleaved across modes (the median is reported)
    #[arg(short = 'r', long, default_value_t = 5)]
    pub reps: usize,
    /// FFN modes to compare, comma-separated: dense, oracle, predicted
    /// [default: dense, plus oracle and predicted when the model has a profile sidecar]
    #[arg(long, value_delimiter = ',')]
    pub modes: Option<Vec<String>>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write an SVG bar chart of decode tokens/s per mode, with the roofline marked
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Buffer of the memory read-bandwidth measurement, in MiB (far above the caches)
    #[arg(long, default_value_t = 1024)]
    pub bandwidth_mib: usize,
    /// Also run llama.cpp's llama-bench on the same model, threads, -p, -n and -r, and show its
    /// prefill and decode speeds beside ours with the ratio
    #[arg(long)]
    pub compare_llama_cpp: bool,
    /// The llama-bench to run for --compare-llama-cpp (implies it) [default: llama-bench on PATH]
    #[arg(long, value_name = "PATH")]
    pub llama_bench: Option<PathBuf>,
}

fn parse_mode(s: &str) -> anyhow::Result<FfnMode> {
    match s.trim() {
        "dense" => Ok(FfnMode::Dense),
        "oracle" => Ok(FfnMode::Oracle),
        "predicted" => Ok(FfnMode::Predicted),
        other => anyhow::bail!("unknown mode {other:?} in --modes (dense, oracle, predicted)"),
    }
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
    // Found before anything is measured, so that a missing llama-bench fails at once.
    let llama_bench = (args.compare_llama_cpp || args.llama_bench.is_some())
        .then(|| find_llama_bench(args.llama_bench.as_deref()))
        .transpose()?;
    let machine = Machine::probe();
    let asked: Option<Vec<FfnMode>> = args
        .modes
        .as_ref()
        .map(|m| m.iter().map(|s| parse_mode(s)).collect())
        .transpose()?;
    if let Some(m) = &asked {
        anyhow::ensure!(!m.is_empty(), "--modes is empty");
        for (i, a) in m.iter().enumerate() {
            anyhow::ensure!(!m[..i].contains(a), "mode {} given twice", a.name());
        }
    }
    let flags_want_sidecar = args.model.sparse || args.model.oracle || args.model.sidecar.is_some();
    // A sparse speculative draft of this model needs the sidecar whatever modes are measured.
    let want = match &asked {
        _ if args.spec.wants_sidecar() => SidecarUse::Required,
        Some(m) if m.iter().any(FfnMode::needs_sidecar) => SidecarUse::Required,
        Some(_) => SidecarUse::No,
        None if flags_want_sidecar => SidecarUse::Required,
        None => SidecarUse::IfPresent,
    };
    let (engine, sidecar) = args
        .model
        .load_bench(want, args.spec.speculative.is_some())?;
    let (report, speculative) = match &engine {
        AnyEngine::Cpu(e) => {
            let (report, prompt) =
                measure(args, e, sidecar, asked, machine, llama_bench.as_deref())?;
            let speculative = match args.spec.speculative {
                Some(k) => {
                    let draft_engine = args.spec.load_draft(&args.model)?;
                    Some(super::bench_spec::bench_speculative(
                        args,
                        e,
                        draft_engine.as_ref(),
                        &prompt,
                        k,
                    )?)
                }
                None => None,
            };
            (report, speculative)
        }
        #[cfg(feature = "cuda")]
        AnyEngine::Cuda(e) => (
            measure(args, e, sidecar, asked, machine, llama_bench.as_deref())?.0,
            None,
        ),
    };
    let mut value = serde_json::to_value(&report)?;
    if let Some(s) = &speculative {
        value["speculative"] = serde_json::to_value(s)?;
    }
    let json = serde_json::to_string_pretty(&value)?;
    if let Some(p) = &args.json_out {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.plot {
        write_svg(&report, p).with_context(|| format!("writing {}", p.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print_tables(&report);
        if let Some(s) = &speculative {
            println!("{}", s.line());
        }
    }
    Ok(())
}

fn print_tables(r: &BenchReport) {
    let name = std::path::Path::new(&r.model.path)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if r.model.synthetic {
        println!("SYNTHETIC model (random weights from `powerinfer synth`): speeds are real, text is not\n");
    }
    let ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}×"));
    println!(
        "| model | backend | mode | test | tok/s (median) | min | max | vs dense |\n\
         |---|---|---|---|---:|---:|---:|---:|"
    );
    for m in &r.modes {
        for (test, s, vs) in [
            (
                format!("pp{}", r.n_prompt),
                &m.prefill_tok_s,
                m.prefill_vs_dense,
            ),
            (format!("tg{}", r.n_gen), &m.decode_tok_s, m.decode_vs_dense),
        ] {
            println!(
                "| {name} | {} | {} | {test} | {:.1} | {:.1} | {:.1} | {} |",
                r.backend,
                m.mode,
                s.median,
                s.min,
                s.max,
                ratio(vs)
            );
        }
    }
    if let Some(l) = &r.llama_cpp {
        println!(
            "\nllama.cpp: {}{}, {} threads\n\
             | test | llama.cpp tok/s (median) | mean ± stddev | powerinfer {} tok/s (median) | powerinfer / llama.cpp |\n\
             |---|---:|---:|---:|---:|",
            l.llama.llama_bench,
            l.llama
                .build_commit
                .as_ref()
                .map_or(String::new(), |c| format!(" (build {c})")),
            r.threads,
            l.mode
        );
        let ours = r.modes.iter().find(|m| m.mode == l.mode);
        for (test, theirs, mine, ratio) in [
            (
                format!("pp{}", r.n_prompt),
                &l.llama.prefill_tok_s,
                ours.map(|m| m.prefill_tok_s.median),
                l.prefill_ratio,
            ),
            (
                format!("tg{}", r.n_gen),
                &l.llama.decode_tok_s,
                ours.map(|m| m.decode_tok_s.median),
                l.decode_ratio,
            ),
        ] {
            println!(
                "| {test} | {:.1} | {:.1} ± {:.1} | {:.1} | {ratio:.2}× |",
                theirs.median,
                theirs.avg,
                theirs.stddev,
                mine.unwrap_or(f64::NAN)
            );
        }
    }
    let bw = &r.bandwidth;
    println!(
        "\nDecode memory traffic (read bandwidth {:.1} GB/s: best of {} passes over {} MiB, {} threads)\n\
         | mode | FFN MB/token | total MB/token | achieved GB/s | roofline % | roofline tok/s | neurons predicted | computed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|",
        bw.gb_s,
        bw.passes_gb_s.runs.len(),
        bw.buffer_mib,
        bw.threads
    );
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    for m in &r.modes {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.0}% | {:.1} | {} | {} |",
            m.mode,
            m.ffn_bytes_per_token / 1e6,
            m.bytes_per_token / 1e6,
            m.achieved_gb_s,
            m.roofline_pct,
            m.roofline_tok_s,
            pct(m.predicted_fraction),
            pct(m.computed_fraction)
        );
    }
    if let Some(rss) = r.peak_rss_mib {
        println!(
            "\npeak RSS {rss:.0} MiB (model file {:.0} MiB + KV cache {:.0} MiB for {} positions{})",
            r.model_file_mib,
            r.kv_cache_mib,
            r.n_ctx,
            if r.modes.iter().any(|m| m.mode != "dense") {
                " + the sparse FFN's copies: per-neuron records of gate, up and down, and the down scales"
            } else {
                ""
            }
        );
    }
    if let Some(huge) = r.model_huge_page_mib {
        println!(
            "model in 2 MiB pages after the runs: {:.0} of {:.0} MiB (the rest in 4 KiB pages, which cost TLB misses, or never read)",
            huge.min(r.model_file_mib),
            r.model_file_mib
        );
    }
}

/// The prompt and the teacher-forced decode inputs: the first `-p` and the next `-n` tokens of
/// the text (`--text`, or the evaluation corpus where installed), or a random prompt and no
/// inputs (greedy decoding) with `--random-tokens` or without a corpus.
fn bench_tokens<B: Backend>(
    args: &BenchArgs,
    engine: &Engine<B>,
) -> anyhow::Result<(Vec<u32>, Option<Vec<u32>>, String)> {
    let random = || {
        let prompt = random_prompt(args.n_prompt, engine.model.config.vocab_size);
        (prompt, None, "random prompt, greedy".to_string())
    };
    let path = match (&args.text, args.random_tokens) {
        (_, true) => return Ok(random()),
        (Some(p), _) => p.clone(),
        (None, _) => {
            let p = powerinfer::corpus::default_eval();
            if !p.exists() {
                eprintln!("bench: no evaluation corpus installed: random prompt, greedy decoding");
                return Ok(random());
            }
            p
        }
    };
    let need = args.n_prompt + args.n_gen;
    let docs = powerinfer::corpus::load(&path)?;
    let seqs =
        powerinfer::corpus::tokenize(&docs, &engine.tokenizer, &engine.template, need.max(1))?;
    let tokens: Vec<u32> = seqs.into_iter().flatten().take(need).collect();
    anyhow::ensure!(
        tokens.len() == need,
        "{}: {} tokens, -p + -n needs {need}",
        path.display(),
        tokens.len()
    );
    let what = format!("text {} (teacher-forced)", path.display());
    eprintln!("bench: prompt and decode inputs from {what}");
    let feed = tokens[args.n_prompt..].to_vec();
    Ok((tokens[..args.n_prompt].to_vec(), Some(feed), what))
}

/// Every mode's prefill and decode speed on `engine`, and the prompt used.
fn measure<B: Backend>(
    args: &BenchArgs,
    engine: &Engine<B>,
    sidecar: Option<PathBuf>,
    asked: Option<Vec<FfnMode>>,
    mut machine: Machine,
    llama_bench: Option<&std::path::Path>,
) -> anyhow::Result<(BenchReport, Vec<u32>)> {
    let modes = asked.unwrap_or_else(|| match sidecar {
        Some(_) => vec![FfnMode::Dense, FfnMode::Oracle, FfnMode::Predicted],
        None => vec![FfnMode::Dense],
    });
    let model = &engine.model;
    let c = &model.config;
    let mut state = model.new_state(args.model.ctx_size);
    anyhow::ensure!(
        args.n_prompt + args.n_gen <= state.n_ctx,
        "-p + -n = {} exceeds the context of {}",
        args.n_prompt + args.n_gen,
        state.n_ctx
    );
    let path = args.model.model_path()?;
    // f16 keys and values.
    let traffic = DecodeTraffic::from_gguf(&model.file, c.kv_dim(), c.n_layer, 2)?;
    let (prompt, feed, decode_inputs) = bench_tokens(args, engine)?;
    state.sparse.hybrid.phases.timed = args.model.profile_phases;
    let runs = run_interleaved(
        model,
        &mut state,
        &modes,
        &prompt,
        feed.as_deref(),
        args.n_gen,
        args.reps,
    )?;
    // Before the bandwidth buffer exists, so that the peak is the engine's own.
    let peak_rss = peak_rss_mib();
    let model_huge = powerinfer::page_size::huge_page_bytes(model.file.bytes());
    let bandwidth = measure_read_bandwidth(args.bandwidth_mib, 5);
    machine.finish();
    let dense = runs.iter().find(|r| r.mode == FfnMode::Dense);
    let reports: Vec<ModeReport> = runs
        .iter()
        .map(|r| {
            ModeReport::new(
                r,
                dense,
                &traffic,
                bandwidth.gb_s,
                args.n_prompt,
                args.n_gen,
            )
        })
        .collect();
    let threads = rayon::current_num_threads();
    let llama_cpp = match llama_bench {
        Some(exe) => {
            let llama = run_llama_bench(exe, &path, threads, args.n_prompt, args.n_gen, args.reps)?;
            let ours = reports
                .iter()
                .find(|m| m.mode == FfnMode::Dense.name())
                .unwrap_or(&reports[0]);
            Some(LlamaCppComparison::new(
                llama,
                &ours.mode,
                ours.prefill_tok_s.median,
                ours.decode_tok_s.median,
            ))
        }
        None => None,
    };
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    let kv_bytes = traffic.kv_bytes_per_pos as usize * state.n_ctx;
    let report = BenchReport {
        machine,
        model: ModelInfo {
            path: path.display().to_string(),
            name: model
                .file
                .get_str("general.name")
                .ok()
                .flatten()
                .map(str::to_string),
            arch: c.arch.name().to_string(),
            synthetic: powerinfer::synth::is_synthetic(&model.file),
            n_layer: c.n_layer,
            d_model: c.d_model,
            n_ff: c.n_ff,
            ffn: c.ffn.name().to_string(),
            file_mib: mib(model.file.bytes().len()),
        },
        backend: model.backend.name(),
        threads,
        n_prompt: args.n_prompt,
        n_gen: args.n_gen,
        reps: args.reps,
        decode_inputs,
        bandwidth,
        traffic,
        prefill_tok_s: reports[0].prefill_tok_s.clone(),
        decode_tok_s: reports[0].decode_tok_s.clone(),
        modes: reports,
        peak_rss_mib: peak_rss,
        model_file_mib: mib(model.file.bytes().len()),
        model_huge_page_mib: model_huge.map(mib),
        kv_cache_mib: mib(kv_bytes),
        n_ctx: state.n_ctx,
        llama_cpp,
    };
    if args.model.profile_phases {
        eprintln!("(phases summed over every sparse mode's runs)");
        super::run::print_phases(&state.sparse.hybrid.phases);
    }
    Ok((report, prompt))
}
