//! The HTTP server: an OpenAI-compatible API (chat and text completions, streamed as
//! server-sent events), health, Prometheus metrics and a small chat page.
//!
//! The model runs on its own thread ([`Scheduler`]), which decodes up to `parallel`
//! sequences together; the async side (axum on tokio) only parses requests, renders the
//! chat template, tokenizes, and forwards tokens from the model thread to the responses.

mod error;
mod metrics;
pub mod openai;
mod page;
mod routes;
mod scheduler;

pub use error::ApiError;
pub use metrics::Metrics;
pub use page::CHAT_PAGE;
pub use routes::{router, App};
pub use scheduler::{Event, Job, Scheduler, SchedulerConfig, PREFILL_CHUNK};

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Backend;
use crate::generate::Engine;
use crate::model::ModelError;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to bind, e.g. `127.0.0.1:8080` (port 0 picks a free port).
    pub addr: String,
    pub scheduler: SchedulerConfig,
    /// Name of the served model in the API.
    pub model_id: String,
    /// When set, the `/v1` routes need `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Serve until the future is dropped or the listener fails. `ready` is told the bound
/// address once the server accepts connections.
pub async fn serve<B: Backend + 'static>(
    engine: Engine<B>,
    cfg: ServerConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    // Refused here rather than on every request.
    engine.model.check_ffn_mode(&cfg.scheduler.ffn_mode)?;
    if cfg.scheduler.speculative.is_some() {
        engine.model.check_ffn_mode(&cfg.scheduler.draft_mode)?;
    }
    let listener = tokio::net::TcpListener::bind(&cfg.addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.addr.clone(),
            source,
        })?;
    let engine = Arc::new(engine);
    let metrics = Arc::new(Metrics::new(cfg.scheduler.parallel));
    let scheduler = Scheduler::start(engine.clone(), cfg.scheduler, metrics.clone())?;
    let app = Arc::new(App::new(
        engine,
        scheduler,
        metrics,
        cfg.model_id,
        cfg.api_key,
    ));
    ready(listener.local_addr()?);
    axum::serve(listener, router(app)).await?;
    Ok(())
}
