//! `powerinfer run`: complete one prompt, streaming to stdout.

use std::io::Write;

use powerinfer::backend::Backend;
use powerinfer::generate::{Engine, GenOptions};

use super::common::{generator, with_engine, ModelArgs, SamplingArgs, SpecArgs};
use powerinfer::backend::CpuBackend;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Prompt text (special tokens such as <|im_start|> are parsed)
    #[arg(short, long)]
    pub prompt: String,
    /// Tokens to generate at most
    #[arg(short = 'n', long, default_value_t = 128)]
    pub n_predict: usize,
    /// Stop when this text is generated (repeatable)
    #[arg(long)]
    pub stop: Vec<String>,
    /// Wrap the prompt in the model's chat template as a user message
    #[arg(long)]
    pub chat: bool,
    /// Do not add the BOS token even where the model asks for it
    #[arg(long)]
    pub no_bos: bool,
}

pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    // Speculative decoding runs on the CPU (its draft and verify rounds share the backend).
    if args.spec.speculative.is_some() {
        let engine = args.model.load_with(Some(&args.spec))?;
        let draft_engine = args.spec.load_draft(&args.model)?;
        return complete::<CpuBackend>(args, &engine, draft_engine.as_ref());
    }
    with_engine!(args.model.load()?, e => complete(args, &e, None))
}

fn complete<B: Backend>(
    args: &RunArgs,
    engine: &Engine<B>,
    draft_engine: Option<&Engine<B>>,
) -> anyhow::Result<()> {
    let text = if args.chat {
        let msgs = [powerinfer::generate::ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        }];
        engine.template.render(&msgs, true)?
    } else {
        args.prompt.clone()
    };
    let prompt = engine.tokenizer.encode(&text, !args.no_bos, true);
    let mut gen = generator(
        &args.model,
        &args.sampling,
        &args.spec,
        engine,
        draft_engine,
    )?;
    let opts = GenOptions {
        max_tokens: args.n_predict,
        stop: args.stop.clone(),
    };
    let mut out = std::io::stdout().lock();
    let stats = gen.generate(&prompt, &opts, |t| {
        let _ = out.write_all(t.as_bytes());
        let _ = out.flush();
        true
    })?;
    writeln!(out)?;
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | generation: {} tokens, {:.1} tok/s | finish: {:?}",
        stats.prompt_tokens,
        stats.prefill_tps(),
        stats.generated_tokens,
        stats.decode_tps(),
        stats.finish
    );
    if args.model.profile_phases {
        print_phases(&gen.state.sparse.hybrid.phases);
    }
    if let Some(s) = stats.speculative {
        eprintln!(
            "speculative: {} drafted, {} accepted ({:.0}%), {:.2} tokens per verify over {} verifies",
            s.drafted,
            s.accepted,
            100.0 * s.acceptance(),
            s.tokens_per_verify(),
            s.verifies
        );
    }
    Ok(())
}

/// The hybrid FFN's phase breakdown (`--profile-phases`), or why there is none.
pub fn print_phases(p: &powerinfer::sparse::hybrid::PhaseStats) {
    if p.calls == 0 {
        eprintln!(
            "--profile-phases: no hybrid FFN ran (it runs for --sparse/--oracle decoding on the GPU)"
        );
    } else {
        eprint!("{}", p.report());
    }
}
