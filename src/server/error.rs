//! API errors: each maps to an HTTP status and OpenAI's error body,
//! `{"error": {"message", "type", "param", "code"}}`, which OpenAI's clients parse.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a field of the wrong type, or a value out of range.
    #[error("{0}")]
    BadRequest(String),
    #[error("the prompt has {tokens} tokens, more than fit in the context of {n_ctx} tokens (the prompt and at least one generated token must fit)")]
    ContextLength { tokens: usize, n_ctx: usize },
    #[error("invalid or missing API key (send it as `Authorization: Bearer KEY`)")]
    Unauthorized,
    #[error("the model `{0}` does not exist (GET /v1/models lists the served model)")]
    ModelNotFound(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("the server is busy: {0} requests are running or queued already; retry later")]
    Busy(usize),
    #[error("generation failed: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::ContextLength { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type` and `code` fields.
    fn kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::BadRequest(_) => ("invalid_request_error", None),
            ApiError::ContextLength { .. } => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            ApiError::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            ApiError::NotFound(_) => ("invalid_request_error", Some("not_found")),
            ApiError::Busy(_) => ("server_error", Some("server_busy")),
            ApiError::Internal(_) => ("server_error", None),
        }
    }

    /// The JSON body, also sent as an SSE event when a stream fails after it started.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            ApiError::ModelNotFound(_) => Some("model"),
            ApiError::ContextLength { .. } => Some("messages"),
            _ => None,
        };
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": kind,
                "param": param,
                "code": code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}
