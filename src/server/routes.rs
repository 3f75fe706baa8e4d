//! HTTP routes: the OpenAI-compatible endpoints, health, metrics and the chat page.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::openai::{
    finish_reason, AssistantMessage, ChatChoice, ChatChunk, ChatRequest, ChatResponse, ChunkChoice,
    CompletionRequest, CompletionResponse, Delta, ModelCard, ModelList, Prompt, Sampling,
    TextChoice, Usage,
};
use super::{ApiError, Event, Job, Metrics, Scheduler, CHAT_PAGE};
use crate::backend::Backend;
use crate::generate::{ChatMessage, Engine, FinishReason, SamplerConfig};

/// Tokens a text completion generates when `max_tokens` is not given (OpenAI's default).
const COMPLETION_DEFAULT_MAX_TOKENS: usize = 16;

/// What the handlers share.
pub struct App<B: Backend> {
    pub engine: Arc<Engine<B>>,
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
    /// The name under which the model is served (`model` in requests and responses).
    pub model_id: String,
    pub api_key: Option<String>,
    /// Start time, as `created` of the model card.
    pub created: u64,
    next_id: AtomicU64,
}

impl<B: Backend> App<B> {
    pub fn new(
        engine: Arc<Engine<B>>,
        scheduler: Scheduler,
        metrics: Arc<Metrics>,
        model_id: String,
        api_key: Option<String>,
    ) -> Self {
        App {
            engine,
            scheduler,
            metrics,
            model_id,
            api_key,
            created: unix_now(),
            next_id: AtomicU64::new(1),
        }
    }

    fn new_id(&self, prefix: &str) -> String {
        format!(
            "{prefix}-{}-{}",
            self.created,
            self.next_id.fetch_add(1, Relaxed)
        )
    }

    fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != &self.model_id => Err(ApiError::ModelNotFound(m.clone())),
            _ => Ok(()),
        }
    }

    /// The generation settings of a request, with the request's limit or `default_max`.
    fn job(&self, prompt: Vec<u32>, s: Sampling, default_max: usize) -> Result<Job, ApiError> {
        if let Some(n) = s.n {
            if n != 1 {
                return Err(ApiError::BadRequest(format!(
                    "n = {n}: only one choice per request is served"
                )));
            }
        }
        let mut cfg = SamplerConfig {
            seed: s.seed.unwrap_or_else(|| fresh_seed(&self.next_id)),
            ..SamplerConfig::default()
        };
        if let Some(t) = s.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::BadRequest(format!(
                    "temperature = {t}: must be between 0 and 2"
                )));
            }
            cfg.temperature = t;
        }
        if let Some(p) = s.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::BadRequest(format!(
                    "top_p = {p}: must be in (0, 1]"
                )));
            }
            cfg.top_p = p;
        }
        let max_tokens = match s.max_completion_tokens.or(s.max_tokens) {
            Some(0) => return Err(ApiError::BadRequest("max_tokens must be at least 1".into())),
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => default_max,
        };
        Ok(Job {
            prompt,
            sampler: cfg,
            max_tokens,
            stop: s.stop.map(|s| s.into_vec()).unwrap_or_default(),
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A seed for a request that gave none: different for every request.
fn fresh_seed(counter: &AtomicU64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos
        ^ counter
            .fetch_add(1, Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The router of the whole API.
pub fn router<B: Backend + 'static>(app: Arc<App<B>>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(chat::<B>))
        .route("/v1/completions", post(completions::<B>))
        .route("/v1/models", get(models::<B>))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::<B>));
    Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/metrics", get(metrics::<B>))
        .merge(v1)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), count::<B>))
        .with_state(app)
}

/// Count every answer by status, for `/metrics`.
async fn count<B: Backend + 'static>(
    State(app): State<Arc<App<B>>>,
    req: Request,
    next: Next,
) -> Response {
    let resp = next.run(req).await;
    app.metrics.record_response(resp.status().as_u16());
    resp
}

/// `Authorization: Bearer KEY` on the API routes when the server has a key.
async fn auth<B: Backend + 'static>(
    State(app): State<Arc<App<B>>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &app.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.map(str::trim) != Some(key.as_str()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_string())
}

async fn page() -> Html<&'static str> {
    Html(CHAT_PAGE)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics<B: Backend + 'static>(State(app): State<Arc<App<B>>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn models<B: Backend + 'static>(State(app): State<Arc<App<B>>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: app.model_id.clone(),
            object: "model",
            created: app.created,
            owned_by: "powerinfer",
        }],
    })
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

async fn chat<B: Backend + 'static>(
    State(app): State<Arc<App<B>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse(&body)?;
    app.check_model(&req.model)?;
    if req.messages.is_empty() {
        return Err(ApiError::BadRequest("messages must not be empty".into()));
    }
    let messages = req
        .messages
        .iter()
        .map(|m| m.to_chat())
        .collect::<Result<Vec<ChatMessage>, String>>()
        .map_err(ApiError::BadRequest)?;
    let text = app
        .engine
        .template
        .render(&messages, true)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let prompt = app.engine.tokenizer.encode(&text, true, true);
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let job = app.job(prompt, req.sampling, usize::MAX)?;
    let events = app.scheduler.submit(job)?;
    let id = app.new_id("chatcmpl");
    if req.stream {
        return Ok(sse(chat_stream(app, id, events, include_usage)));
    }
    let (content, finish, usage) = collect(events).await?;
    Ok(Json(ChatResponse {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: app.model_id.clone(),
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
            },
            finish_reason: finish_reason(finish),
        }],
        usage,
    })
    .into_response())
}

async fn completions<B: Backend + 'static>(
    State(app): State<Arc<App<B>>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(&body)?;
    app.check_model(&req.model)?;
    let text = match req.prompt {
        Prompt::One(s) => s,
        Prompt::Many(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Many(v) => {
            return Err(ApiError::BadRequest(format!(
                "prompt: a list of {} prompts; only one prompt per request is served",
                v.len()
            )))
        }
    };
    let prompt = app.engine.tokenizer.encode(&text, true, true);
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let job = app.job(prompt, req.sampling, COMPLETION_DEFAULT_MAX_TOKENS)?;
    let events = app.scheduler.submit(job)?;
    let id = app.new_id("cmpl");
    if req.stream {
        return Ok(sse(completion_stream(app, id, events, include_usage)));
    }
    let (text, finish, usage) = collect(events).await?;
    Ok(Json(CompletionResponse {
        id,
        object: "text_completion",
        created: unix_now(),
        model: app.model_id.clone(),
        choices: vec![TextChoice {
            index: 0,
            text,
            logprobs: None,
            finish_reason: Some(finish_reason(finish)),
        }],
        usage: Some(usage),
    })
    .into_response())
}

/// Wait for the whole answer.
async fn collect(
    mut events: UnboundedReceiver<Event>,
) -> Result<(String, FinishReason, Usage), ApiError> {
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => return Ok((text, finish, Usage::new(prompt_tokens, completion_tokens))),
            Event::Failed(msg) => return Err(ApiError::Internal(msg)),
        }
    }
    Err(ApiError::Internal("the model thread stopped".into()))
}

/// A `text/event-stream` response from a stream of already formatted events.
fn sse(body: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = Body::from_stream(body.map(Ok::<_, Infallible>));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn data(value: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(value).expect("API types serialise");
    Bytes::from(format!("data: {json}\n\n"))
}

const DONE: &str = "data: [DONE]\n\n";

/// Turn the model's events into SSE chunks; `render` makes the chunk of one event and says
/// whether it was the last. Dropping the stream (client gone) drops `events`, which tells
/// the model thread to free the slot.
fn event_stream<F>(
    first: Option<Bytes>,
    events: UnboundedReceiver<Event>,
    render: F,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static
where
    F: FnMut(Event) -> (Bytes, bool) + Send + 'static,
{
    let rest = stream::unfold(Some((events, render)), |st| async move {
        let (mut events, mut render) = st?;
        let (bytes, last) = match events.recv().await {
            Some(ev) => render(ev),
            None => (failed("the model thread stopped".into()), true),
        };
        Some((bytes, (!last).then_some((events, render))))
    });
    stream::iter(first).chain(rest)
}

fn chat_stream<B: Backend + 'static>(
    app: Arc<App<B>>,
    id: String,
    events: UnboundedReceiver<Event>,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let created = unix_now();
    let chunk = move |delta: Delta, finish: Option<&'static str>, usage: Option<Usage>| {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
            }]
        };
        data(&ChatChunk {
            id: id.clone(),
            object: "chat.completion.chunk",
            created,
            model: app.model_id.clone(),
            choices,
            usage,
        })
    };
    let first = chunk(
        Delta {
            role: Some("assistant"),
            content: Some(String::new()),
        },
        None,
        None,
    );
    event_stream(Some(first), events, move |ev| match ev {
        Event::Text(t) => (
            chunk(
                Delta {
                    role: None,
                    content: Some(t),
                },
                None,
                None,
            ),
            false,
        ),
        Event::Done {
            finish,
            prompt_tokens,
            completion_tokens,
        } => {
            let mut out = chunk(Delta::default(), Some(finish_reason(finish)), None).to_vec();
            if include_usage {
                let usage = Usage::new(prompt_tokens, completion_tokens);
                out.extend_from_slice(&chunk(Delta::default(), None, Some(usage)));
            }
            out.extend_from_slice(DONE.as_bytes());
            (Bytes::from(out), true)
        }
        Event::Failed(msg) => (failed(msg), true),
    })
}

fn completion_stream<B: Backend + 'static>(
    app: Arc<App<B>>,
    id: String,
    events: UnboundedReceiver<Event>,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    let created = unix_now();
    let chunk = move |text: String, finish: Option<&'static str>, usage: Option<Usage>| {
        let choices = if usage.is_some() {
            Vec::new()
        } else {
            vec![TextChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: finish,
            }]
        };
        data(&CompletionResponse {
            id: id.clone(),
            object: "text_completion",
            created,
            model: app.model_id.clone(),
            choices,
            usage,
        })
    };
    event_stream(None, events, move |ev| match ev {
        Event::Text(t) => (chunk(t, None, None), false),
        Event::Done {
            finish,
            prompt_tokens,
            completion_tokens,
        } => {
            let mut out = chunk(String::new(), Some(finish_reason(finish)), None).to_vec();
            if include_usage {
                let usage = Usage::new(prompt_tokens, completion_tokens);
                out.extend_from_slice(&chunk(String::new(), None, Some(usage)));
            }
            out.extend_from_slice(DONE.as_bytes());
            (Bytes::from(out), true)
        }
        Event::Failed(msg) => (failed(msg), true),
    })
}

/// A stream that fails after it started: an error event in OpenAI's shape, then the end.
fn failed(msg: String) -> Bytes {
    let mut out = data(&ApiError::Internal(msg).body()).to_vec();
    out.extend_from_slice(DONE.as_bytes());
    Bytes::from(out)
}
