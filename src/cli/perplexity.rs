//! `powerinfer perplexity`: perplexity over non-overlapping windows; with --compare-dense, top-1
//! agreement and KL divergence of the chosen FFN mode against dense on the same text.

use std::path::PathBuf;

use powerinfer::perplexity::{windows, Scorer};
use powerinfer::sparse::FfnMode;

use super::common::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Evaluation text (plain text or JSONL chats) [default: the chatterbot-corpus evaluation
    /// split, disjoint from the calibration text]
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Window length in tokens
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// At most this many tokens of the text
    #[arg(long, default_value_t = 16384)]
    pub max_tokens: usize,
    /// Also run dense on the same windows: top-1 agreement and mean KL divergence
    #[arg(long)]
    pub compare_dense: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &PerplexityArgs) -> anyhow::Result<()> {
    let engine = args.model.load_cpu("perplexity", false)?;
    let file = args
        .file
        .clone()
        .unwrap_or_else(powerinfer::corpus::default_eval);
    anyhow::ensure!(
        file.exists(),
        "evaluation text {} not found (run scripts/fetch-corpus.sh, or pass --file)",
        file.display()
    );
    let docs = powerinfer::corpus::load(&file)?;
    let seqs =
        powerinfer::corpus::tokenize(&docs, &engine.tokenizer, &engine.template, args.max_tokens)?;
    let mut tokens: Vec<u32> = seqs.concat();
    tokens.truncate(args.max_tokens);
    let model = &engine.model;
    let mode = args.model.ffn_mode();
    let win = args.window.min(model.config.context_length);
    let mut st = model.new_state(win);
    st.ffn_mode = mode.clone();
    // The sparse modes evaluate every token sparsely, as decoding does.
    st.sparse_prefill = true;
    let mut dense = (args.compare_dense && mode != FfnMode::Dense).then(|| model.new_state(win));
    let mut scorer = Scorer::default();
    let t = std::time::Instant::now();
    for w in windows(&tokens, win) {
        st.reset();
        let logits = model.forward(&mut st, w, true)?.to_vec();
        let reference = match dense.as_mut() {
            Some(ds) => {
                ds.reset();
                Some(model.forward(ds, w, true)?.to_vec())
            }
            None => None,
        };
        scorer.add_window(w, &logits, reference.as_deref());
    }
    let r = scorer.report();
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        v["mode"] = mode.name().into();
        v["file"] = file.display().to_string().into();
        v["seconds"] = t.elapsed().as_secs_f64().into();
        println!("{v}");
    } else {
        println!(
            "{}: perplexity {:.4} over {} tokens ({} windows of {win}), mode {}",
            file.display(),
            r.perplexity,
            r.tokens_scored,
            r.windows,
            mode.name()
        );
        if let Some(c) = &r.reference {
            println!(
                "vs dense: perplexity {:.4} ({:+.2}%), top-1 agreement {:.2}%, mean KL {:.5} nats",
                c.reference_perplexity,
                100.0 * c.perplexity_rise,
                100.0 * c.top1_agreement,
                c.mean_kl
            );
        }
    }
    Ok(())
}
