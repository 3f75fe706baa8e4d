//! `powerinfer profile`: activation statistics, thresholds, predictors and placement, written
//! to a sidecar next to the model. Run once per model.

use std::path::PathBuf;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use powerinfer::profile::{self, ProfileOptions, ProfileProgress, Target};
use powerinfer::sparse::{sidecar, SparsityRule};
use powerinfer_profiler::TrainEvent;

use super::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Calibration text: plain text, or JSONL chats rendered with the model's chat template
    /// [default: the chatterbot-corpus calibration split installed by scripts/setup.sh]
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Calibration tokens
    #[arg(long, default_value_t = 8192)]
    pub tokens: usize,
    /// Held-out tokens (predictor validation, perplexity for --max-ppl-rise)
    #[arg(long, default_value_t = 2048)]
    pub heldout: usize,
    /// SiLU/GeLU models: the same fraction S of FFN entries made inactive in every layer
    #[arg(long, conflicts_with = "max_ppl_rise")]
    pub target_sparsity: Option<f32>,
    /// SiLU/GeLU models: the most sparsity per layer such that held-out perplexity rises at
    /// most this fraction (0.05 = 5%)
    #[arg(long)]
    pub max_ppl_rise: Option<f64>,
    /// Rule for SiLU/GeLU models: product (|act(gate)·up|, keeps quality) or gate (CATS)
    #[arg(long, default_value = "product")]
    pub rule: String,
    /// Predictor recall target on held-out tokens
    #[arg(long, default_value_t = 0.95)]
    pub recall: f32,
    /// Predictor rank ladder: the smallest rank whose predicted sparsity is close enough to the
    /// true one, then larger ranks while they lower the bytes a token reads (predictor plus
    /// predicted neurons)
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub ranks: Vec<usize>,
    /// Training epochs per rank
    // 16 epochs on 8,192 rows: on the synthetic 1B model (8,192 neurons a layer) 8 on 4,096
    // left the rank-16 predictors at precision 0.65 for recall 0.95, 16 on 8,192 reached 0.84
    // (32 on 8,192: 0.87), so the sparse FFN gathers a fifth fewer rows; twice the time.
    #[arg(long, default_value_t = 16)]
    pub epochs: usize,
    /// Training rows per layer
    #[arg(long, default_value_t = 8192)]
    pub train_rows: usize,
    /// Tokens per calibration window
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output [default: MODEL.powerinfer.gguf next to the model]
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

struct Bars {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Bars {
    fn replace(&self, pb: ProgressBar) {
        if let Some(old) = self.bar.lock().unwrap().replace(pb) {
            old.finish_and_clear();
        }
    }
}

impl ProfileProgress for Bars {
    fn stage(&self, name: &str) {
        if !self.quiet {
            eprintln!("profile: {name}");
        }
        if let Some(old) = self.bar.lock().unwrap().take() {
            old.finish_and_clear();
        }
    }

    fn tokens(&self, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let mut g = self.bar.lock().unwrap();
        let pb = g.get_or_insert_with(|| {
            let pb = ProgressBar::new(total as u64);
            pb.set_style(
                ProgressStyle::with_template("  {bar:40} {pos}/{len} tokens {per_sec} {eta}")
                    .expect("template"),
            );
            pb
        });
        pb.set_position(done as u64);
    }

    fn train(&self, e: &TrainEvent) {
        if self.quiet {
            return;
        }
        match e {
            TrainEvent::Started {
                layer, n_layers, ..
            } => {
                if *layer == 0 {
                    let pb = ProgressBar::new(*n_layers as u64);
                    pb.set_style(
                        ProgressStyle::with_template("  {bar:40} layer {pos}/{len} {msg} {eta}")
                            .expect("template"),
                    );
                    self.replace(pb);
                }
            }
            TrainEvent::Epoch { progress, .. } => {
                if let Some(pb) = &*self.bar.lock().unwrap() {
                    pb.set_message(format!(
                        "rank {} epoch {}/{} loss {:.4}",
                        progress.rank, progress.epoch, progress.epochs, progress.loss
                    ));
                }
            }
            TrainEvent::Done { .. } => {
                if let Some(pb) = &*self.bar.lock().unwrap() {
                    pb.inc(1);
                }
            }
        }
    }
}

pub fn run(args: &ProfileArgs) -> anyhow::Result<()> {
    let engine = args.model.load_cpu("profile", true)?;
    let path = args.model.model_path()?;
    let relu = matches!(
        engine.model.config.ffn,
        powerinfer::model::FfnKind::Relu
            | powerinfer::model::FfnKind::ReGlu
            | powerinfer::model::FfnKind::DReLU
    );
    let (rule, target) = if relu {
        anyhow::ensure!(
            args.target_sparsity.is_none() && args.max_ppl_rise.is_none(),
            "this model's FFN ({}) is sparse by itself: --target-sparsity and --max-ppl-rise are \
             for SiLU/GeLU models",
            engine.model.config.ffn.name()
        );
        (SparsityRule::Relu, Target::Natural)
    } else {
        let rule = match args.rule.as_str() {
            "product" => SparsityRule::Product,
            "gate" => SparsityRule::Gate,
            r => anyhow::bail!("unknown --rule {r:?} (product or gate)"),
        };
        let target = match (args.target_sparsity, args.max_ppl_rise) {
            (Some(s), _) => {
                anyhow::ensure!(
                    (0.0..1.0).contains(&s),
                    "--target-sparsity must be in [0, 1)"
                );
                Target::Sparsity(s)
            }
            (None, Some(r)) => {
                anyhow::ensure!(r > 0.0, "--max-ppl-rise must be positive");
                Target::MaxPplRise(r)
            }
            (None, None) => anyhow::bail!(
                "{} uses {}: give --target-sparsity S or --max-ppl-rise P",
                path.display(),
                engine.model.config.ffn.name()
            ),
        };
        (rule, target)
    };
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(powerinfer::corpus::default_calibration);
    anyhow::ensure!(
        corpus.exists(),
        "calibration corpus {} not found (run scripts/fetch-corpus.sh, or pass --corpus FILE)",
        corpus.display()
    );
    let opts = ProfileOptions {
        corpus,
        tokens: args.tokens,
        heldout_tokens: args.heldout,
        window: args.window,
        rule,
        target,
        recall: args.recall,
        ranks: args.ranks.clone(),
        epochs: args.epochs,
        train_rows: args.train_rows,
        vram_budget: args
            .model
            .vram_budget
            .map(|g| (g * (1u64 << 30) as f64) as u64),
        ctx: args.model.ctx_size,
        seed: args.seed,
    };
    let bars = Bars {
        bar: Mutex::new(None),
        quiet: false,
    };
    let res = profile::profile(&engine, &path, &opts, &bars)?;
    bars.stage("writing the sidecar");
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| sidecar::default_path(&path));
    res.sidecar.write(&out)?;
    if args.json {
        let mut v: serde_json::Value = serde_json::from_str(&res.summary.to_json())?;
        v["measured_sparsity"] = res.measured_sparsity.into();
        v["top20_share"] = res.top20_share.into();
        v["sidecar"] = out.display().to_string().into();
        if let Some((lv, base, fin)) = &res.levels {
            v["levels"] = serde_json::json!({"per_layer": lv, "base_ppl": base, "final_ppl": fin});
        }
        println!("{v}");
    } else {
        println!("{}", res.summary.render_table());
        println!(
            "measured sparsity {:.3}, top-20% neurons carry {:.1}% of activations",
            res.measured_sparsity,
            100.0 * res.top20_share
        );
        if let Some((lv, base, fin)) = &res.levels {
            println!(
                "levels per layer: {lv:?}\nheld-out perplexity {base:.3} -> {fin:.3} ({:+.1}%)",
                100.0 * (fin / base - 1.0)
            );
        }
        println!("wrote {}", out.display());
    }
    Ok(())
}
