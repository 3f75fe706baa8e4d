//! `powerinfer chat`: interactive multi-turn chat. The KV cache is kept across turns: each
//! turn only the text the template adds since the last turn is evaluated.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use powerinfer::backend::Backend;
use powerinfer::generate::{ChatMessage, Engine, FinishReason, GenOptions};

use super::common::{generator, with_engine, ModelArgs, SamplingArgs, SpecArgs};
use powerinfer::backend::CpuBackend;

#[derive(clap::Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// System prompt
    #[arg(short, long)]
    pub system: Option<String>,
    /// Tokens per answer at most
    #[arg(short = 'n', long, default_value_t = 512)]
    pub n_predict: usize,
}

pub fn run(args: &ChatArgs) -> anyhow::Result<()> {
    // Speculative decoding runs on the CPU (its draft and verify rounds share the backend).
    if args.spec.speculative.is_some() {
        let engine = args.model.load_with(Some(&args.spec))?;
        let draft_engine = args.spec.load_draft(&args.model)?;
        return chat::<CpuBackend>(args, &engine, draft_engine.as_ref());
    }
    with_engine!(args.model.load()?, e => chat(args, &e, None))
}

fn chat<B: Backend>(
    args: &ChatArgs,
    engine: &Engine<B>,
    draft_engine: Option<&Engine<B>>,
) -> anyhow::Result<()> {
    let mut gen = generator(
        &args.model,
        &args.sampling,
        &args.spec,
        engine,
        draft_engine,
    )?;
    let initial: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage {
            role: "system".into(),
            content: s.clone(),
        })
        .collect();
    let mut messages = initial.clone();
    // The text whose tokens are in the KV cache.
    let mut fed = String::new();
    let opts = GenOptions {
        max_tokens: args.n_predict,
        stop: Vec::new(),
    };
    // Ctrl-C during an answer stops that answer; at the prompt it quits as usual.
    let generating = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (generating, interrupted) = (generating.clone(), interrupted.clone());
        ctrlc::set_handler(move || {
            if generating.load(Ordering::SeqCst) {
                interrupted.store(true, Ordering::SeqCst);
            } else {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    eprintln!(
        "powerinfer chat: /reset starts over, /exit (or Ctrl-D) quits, Ctrl-C stops an answer."
    );
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = initial.clone();
                fed.clear();
                gen.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.to_string(),
        });
        let rendered = engine.template.render(&messages, true)?;
        let prompt = match rendered.strip_prefix(fed.as_str()) {
            Some(delta) if !fed.is_empty() => engine.tokenizer.encode(delta, false, true),
            _ => {
                gen.reset();
                engine.tokenizer.encode(&rendered, true, true)
            }
        };
        let mut reply = String::new();
        interrupted.store(false, Ordering::SeqCst);
        generating.store(true, Ordering::SeqCst);
        let result = gen.generate(&prompt, &opts, |t| {
            if interrupted.load(Ordering::SeqCst) {
                return false;
            }
            reply.push_str(t);
            let _ = out.write_all(t.as_bytes());
            let _ = out.flush();
            true
        });
        generating.store(false, Ordering::SeqCst);
        println!();
        match result {
            Ok(stats) => {
                if stats.finish == FinishReason::Cancelled {
                    eprintln!("[stopped]");
                }
                eprintln!(
                    "[{} prompt tokens at {:.1} tok/s, {} tokens at {:.1} tok/s]",
                    stats.prompt_tokens,
                    stats.prefill_tps(),
                    stats.generated_tokens,
                    stats.decode_tps()
                );
                if args.model.profile_phases {
                    // This turn's phases only.
                    super::run::print_phases(&gen.state.sparse.hybrid.phases);
                    gen.state.sparse.hybrid.phases.clear();
                }
                if let Some(s) = stats.speculative {
                    eprintln!(
                        "[speculative: {:.0}% of drafts accepted, {:.2} tokens per verify]",
                        100.0 * s.acceptance(),
                        s.tokens_per_verify()
                    );
                }
                fed = format!("{rendered}{reply}");
                messages.push(ChatMessage {
                    role: "assistant".into(),
                    content: reply,
                });
            }
            Err(e) => {
                // The turn did not happen: forget it and keep the conversation usable.
                messages.pop();
                eprintln!("error: {e} (use /reset to start over)");
            }
        }
    }
    Ok(())
}
