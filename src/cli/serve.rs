//! `powerinfer serve`: the OpenAI-compatible HTTP server and its chat page.

use std::io::Write;
use std::net::IpAddr;

use anyhow::Context;
use powerinfer::backend::Backend;
use powerinfer::generate::Engine;
use powerinfer::server::{self, SchedulerConfig, ServerConfig};
use powerinfer::sparse::FfnMode;

use super::common::{with_engine, AnyEngine, ModelArgs, SpecArgs};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Address to listen on (loopback by default: nothing outside this machine can connect)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the address is printed)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences decoded at once, each with its own KV cache of --ctx-size tokens
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Requests that may wait for a free sequence slot; more are answered 503
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on the /v1 API
    #[arg(long)]
    pub api_key: Option<String>,
    /// Model name in the API [default: the model file's name without .gguf]
    #[arg(long)]
    pub name: Option<String>,
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    let path = args.model.model_path()?;
    anyhow::ensure!(
        args.spec.draft_model.is_none() && args.spec.draft_type.is_none(),
        "serve drafts with the served model's own sparse FFN (--draft sparse); --draft-model and \
         --draft-type are for run, chat and bench"
    );
    // Speculative decoding runs on the CPU; otherwise the GPU when one is usable.
    let engine = if args.spec.speculative.is_some() {
        AnyEngine::Cpu(args.model.load_with(Some(&args.spec))?)
    } else {
        args.model.load()?
    };
    args.spec.load_draft(&args.model)?;
    let model_id = match &args.name {
        Some(n) => n.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    tracing::info!("FFN mode of every slot: {}", args.model.ffn_mode().name());
    if !args.host.is_loopback() && args.api_key.is_none() {
        tracing::warn!(
            "listening on {} without --api-key: anyone who can reach it can use the model",
            args.host
        );
    }
    let cfg = ServerConfig {
        addr: std::net::SocketAddr::new(args.host, args.port).to_string(),
        scheduler: SchedulerConfig {
            parallel: args.parallel,
            queue: args.queue,
            n_ctx: args.model.ctx_size,
            ffn_mode: args.model.ffn_mode(),
            speculative: args.spec.speculative,
            draft_mode: FfnMode::Predicted,
        },
        model_id,
        api_key: args.api_key.clone(),
    };
    with_engine!(engine, e => serve_on(e, cfg, args.parallel))
}

/// Run the server on an engine of either backend until it fails or Ctrl-C.
fn serve_on<B: Backend + 'static>(
    engine: Engine<B>,
    cfg: ServerConfig,
    parallel: usize,
) -> anyhow::Result<()> {
    // The model thread does the heavy work; two workers are plenty for the HTTP side.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let serving = server::serve(engine, cfg, |addr| {
            // One line on stdout that scripts can wait for.
            println!("powerinfer serve: listening on http://{addr} ({parallel} slots)");
            let _ = std::io::stdout().flush();
        });
        tokio::select! {
            r = serving => r.context("serving"),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("powerinfer serve: interrupted, stopping");
                Ok(())
            }
        }
    })
}
