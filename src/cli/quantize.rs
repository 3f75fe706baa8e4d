//! `powerinfer quantize`: requantise a model's weight matrices to another type, optionally
//! keeping the matrices most sensitive on calibration text at 8 (or 16) bits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use powerinfer::backend::CpuBackend;
use powerinfer::generate::Engine;
use powerinfer::gguf::GgufFile;
use powerinfer::quantize::{self as q, Calibration};

use super::common::init_threads;

/// Write OUT with every 2-D weight matrix (attention, FFN, token embeddings, output head) in
/// --type; norms and other 1-D tensors are copied. Rows that are not whole blocks of the type
/// fall back (q4_k→q5_0, q6_k→q8_0, else f16). With --ratio R, R of the weight parameters get
/// --type and the rest --keep: the matrices whose output error ‖(W−Ŵ)x‖² on calibration text
/// is largest.
#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// Input GGUF model (never modified)
    pub input: PathBuf,
    /// Output GGUF file (written atomically)
    pub output: PathBuf,
    /// Output type: q4_0, q4_1, q5_0, q5_1, q8_0, q4_k, q6_k, f16
    #[arg(long = "type")]
    pub ty: String,
    /// Fraction of weight parameters in --type; the most sensitive rest get --keep
    #[arg(long)]
    pub ratio: Option<f64>,
    /// Type of the matrices kept under --ratio: q8_0 or f16
    #[arg(long, default_value = "q8_0")]
    pub keep: String,
    /// Calibration text for --ratio (plain text or JSONL chats) [default: the chatterbot-corpus
    /// calibration split]
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Calibration tokens for --ratio
    #[arg(long, default_value_t = 256)]
    pub calib_tokens: usize,
    /// CPU threads [default: all cores]
    #[arg(short, long)]
    pub threads: Option<usize>,
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(ProgressStyle::with_template(template).expect("template"));
    pb
}

pub fn run(args: &QuantizeArgs) -> anyhow::Result<()> {
    init_threads(args.threads)?;
    let ty = q::parse_type(&args.ty)?;
    let keep = q::parse_keep(&args.keep)?;
    if let Some(r) = args.ratio {
        anyhow::ensure!((0.0..=1.0).contains(&r), q::QuantizeError::BadRatio(r));
    }
    anyhow::ensure!(
        args.input.exists(),
        "input model {} does not exist",
        args.input.display()
    );
    q::check_distinct(&args.input, &args.output)?;
    let start = Instant::now();
    let (file, plan) = match args.ratio {
        None => {
            let file = GgufFile::open(&args.input)
                .with_context(|| format!("reading {}", args.input.display()))?;
            let plan = q::plan_uniform(&file, ty)?;
            (Arc::new(file), plan)
        }
        Some(ratio) => {
            let engine = Engine::load(&args.input, CpuBackend::new(), None)
                .with_context(|| format!("loading {}", args.input.display()))?;
            let text = args
                .calibration
                .clone()
                .unwrap_or_else(powerinfer::corpus::default_calibration);
            anyhow::ensure!(
                text.exists(),
                "calibration text {} not found (run scripts/fetch-corpus.sh, or pass --calibration)",
                text.display()
            );
            let docs = powerinfer::corpus::load(&text)?;
            let seqs = powerinfer::corpus::tokenize(
                &docs,
                &engine.tokenizer,
                &engine.template,
                args.calib_tokens,
            )?;
            eprintln!(
                "quantize: running the model over {} calibration tokens",
                args.calib_tokens
            );
            let calib = Calibration::run(&engine.model, &seqs, args.calib_tokens)?;
            let file = &engine.model.file;
            let pb = bar(0, "  {bar:40} {pos}/{len} matrices measured {eta}");
            let sens = q::measure(file, &calib, ty, &mut |done, total| {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            })?;
            pb.finish_and_clear();
            let plan = q::plan_mixed(file, ty, keep, ratio, &sens)?;
            let mut kept: Vec<&q::Sensitivity> = sens
                .iter()
                .filter(|s| plan.get(&s.name).is_some_and(|m| m.wanted == keep))
                .collect();
            kept.sort_by(|a, b| b.error.total_cmp(&a.error));
            eprintln!(
                "quantize: {} of {} matrices kept at {keep} (most sensitive: {})",
                kept.len(),
                sens.len(),
                kept.iter()
                    .take(5)
                    .map(|s| format!("{} {:.3e}", s.name, s.error))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            // The model's weights and the recorded inputs are not needed any more.
            let file = engine.model.file.clone();
            drop(calib);
            drop(engine);
            (file, plan)
        }
    };
    // One line per kind of fallback, as llama.cpp logs them; each tensor at -v.
    let mut groups: BTreeMap<(&str, &str, usize), usize> = BTreeMap::new();
    for m in plan.matrices.iter().filter(|m| m.output != m.wanted) {
        tracing::info!(
            "{}: {} rows of {} elements, written as {}",
            m.name,
            m.wanted,
            m.row_len,
            m.output
        );
        *groups
            .entry((m.wanted.name(), m.output.name(), m.row_len))
            .or_default() += 1;
    }
    for ((wanted, out, row_len), n) in groups {
        eprintln!(
            "quantize: {n} matrices with rows of {row_len} elements (not whole {wanted} blocks) written as {out}"
        );
    }
    let pb = bar(0, "  {bar:40} {percent:>3}% {msg} {eta}");
    pb.set_message(format!("→ {}", args.output.display()));
    let summary = q::write(
        &file,
        &args.input,
        &plan,
        &args.output,
        &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        },
    )
    .with_context(|| format!("writing {}", args.output.display()))?;
    pb.finish_and_clear();
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(t, (n, p))| format!("{n} × {t} ({:.1} M params)", *p as f64 / 1e6))
        .collect();
    println!(
        "wrote {}: {} (input {}), {} tensors, weight matrices: {} in {:.1} s",
        args.output.display(),
        mb(summary.output_bytes),
        mb(summary.input_bytes),
        summary.n_tensors,
        types.join(", "),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
