//! `powerinfer synth`: write a synthetic ReLU-family llama model for tests and benchmarks.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use powerinfer::synth::{write_model, SynthSpec};

/// Generate a GGUF of random weights whose FFN neurons fire with power-law frequencies
/// (mean sparsity S, skew ALPHA), deterministic for a seed. The model is synthetic: good for
/// measuring sparsity machinery and speed, meaningless as a language model.
#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output GGUF file (written atomically)
    #[arg(short, long)]
    pub output: PathBuf,
    /// Architecture of the metadata and tensor names (only llama)
    #[arg(long, default_value = "llama")]
    pub arch: String,
    /// Model width
    #[arg(long)]
    pub hidden: usize,
    /// FFN width (neurons per layer)
    #[arg(long)]
    pub ffn: usize,
    /// Number of layers
    #[arg(long)]
    pub layers: usize,
    /// Attention heads
    #[arg(long)]
    pub heads: usize,
    /// Key/value heads [default: --heads]
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// FFN activation: relu (no gate, relu(up)), reglu (relu(gate)·up), drelu (relu(gate)·relu(up))
    #[arg(long, default_value = "reglu")]
    pub activation: String,
    /// Mean fraction of zero activations, in [0, 1)
    #[arg(long, default_value_t = 0.9)]
    pub sparsity: f64,
    /// Power-law exponent of firing frequency against neuron rank (0: all neurons alike)
    #[arg(long, default_value_t = 1.0)]
    pub skew: f64,
    /// Weight type: f16, q4_0, q8_0 (also f32, bf16, q4_1, q5_0, q5_1)
    #[arg(long = "type", default_value = "f16")]
    pub weight_type: String,
    /// Random seed; the same seed and shape give the same bytes
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Vocabulary size
    #[arg(long, default_value_t = 32000)]
    pub vocab: usize,
    /// Trained context length recorded in the metadata
    #[arg(long, default_value_t = 2048)]
    pub ctx: usize,
    /// Threads [default: all cores]
    #[arg(short, long)]
    pub threads: Option<usize>,
}

impl SynthArgs {
    fn spec(&self) -> anyhow::Result<SynthSpec> {
        anyhow::ensure!(
            self.arch == "llama",
            "unsupported architecture {:?}: synthetic models are llama",
            self.arch
        );
        let spec = SynthSpec {
            hidden: self.hidden,
            ffn: self.ffn,
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads.unwrap_or(self.heads),
            vocab: self.vocab,
            ctx: self.ctx,
            activation: SynthSpec::parse_activation(&self.activation)?,
            sparsity: self.sparsity,
            skew: self.skew,
            weight_type: SynthSpec::parse_type(&self.weight_type)?,
            seed: self.seed,
        };
        spec.validate()?;
        Ok(spec)
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.2} GB", b as f64 / 1e9),
        b => format!("{:.1} MB", b as f64 / 1e6),
    }
}

fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n => format!("{:.1} M", n as f64 / 1e6),
    }
}

pub fn run(args: &SynthArgs) -> anyhow::Result<()> {
    let spec = args.spec()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads.unwrap_or(0))
        .build()
        .context("starting the worker threads")?;
    let start = Instant::now();
    // Report every tenth of a large file on stderr.
    let mut next_report = 0.1;
    let mut progress = |done: u64, total: u64| {
        let f = done as f64 / total.max(1) as f64;
        if total >= 1 << 28 && f >= next_report && done < total {
            eprintln!(
                "  {:3.0}%  {} of {}  {:.1} s",
                100.0 * f,
                size(done),
                size(total),
                start.elapsed().as_secs_f64()
            );
            next_report = (f * 10.0).floor() / 10.0 + 0.1;
        }
    };
    let summary = pool
        .install(|| write_model(&spec, &args.output, &mut progress))
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "wrote {}: {}, {} params, {} tensors in {:.2} s ({} {}, {}, sparsity {}, skew {}, seed {})",
        args.output.display(),
        size(summary.file_bytes),
        count(summary.n_params),
        summary.n_tensors,
        start.elapsed().as_secs_f64(),
        args.arch,
        spec.activation.name(),
        spec.weight_type,
        spec.sparsity,
        spec.skew,
        spec.seed
    );
    println!(
        "note: this model is SYNTHETIC (random weights shaped for sparsity tests and \
         benchmarks); its text output is meaningless"
    );
    Ok(())
}
