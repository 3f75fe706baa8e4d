//! The request and response bodies of OpenAI's chat and text completion API (the subset
//! we serve). Unknown request fields are ignored, as OpenAI-compatible servers do; a known
//! field of the wrong type is an error.

use serde::{Deserialize, Serialize};

use crate::generate::{ChatMessage, FinishReason};

/// `content` of a message: a string, or a list of parts of which the text ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RequestMessage {
    pub role: String,
    /// Null for an assistant turn that only called tools.
    #[serde(default)]
    pub content: Option<Content>,
}

impl RequestMessage {
    /// The message as the chat template sees it; non-text parts are an error.
    pub fn to_chat(&self) -> Result<ChatMessage, String> {
        let content = match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => s.push_str(t),
                        (kind, _) => {
                            return Err(format!("message content part of type {kind:?} is not supported (only \"text\")"))
                        }
                    }
                }
                s
            }
        };
        Ok(ChatMessage::new(self.role.clone(), content))
    }
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and length fields shared by both endpoints.
#[derive(Debug, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens` in the chat API.
    pub max_completion_tokens: Option<u64>,
    pub stop: Option<Stop>,
    /// Number of choices; only 1 is served.
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<RequestMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `prompt` of a text completion: a string, or a list holding one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// OpenAI's `finish_reason`: a request cancelled by its client has nobody to tell, so
/// `Cancelled` only shows up in logs; it is reported as `stop`.
pub fn finish_reason(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ChatResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

/// A text completion, whole or one chunk of a stream (the same object in OpenAI's API).
#[derive(Debug, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_as_string_or_text_parts() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                             {"type": "text", "text": "world"}]},
                {"role": "assistant", "content": null}],
                "stop": "END", "max_tokens": 5, "unknown_field": [1, 2]}"#,
        )
        .unwrap();
        let msgs: Vec<ChatMessage> = req.messages.iter().map(|m| m.to_chat().unwrap()).collect();
        assert_eq!(
            msgs,
            [
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hello, world"),
                ChatMessage::new("assistant", ""),
            ]
        );
        assert_eq!(req.sampling.stop.unwrap().into_vec(), ["END"]);
        assert_eq!(req.sampling.max_tokens, Some(5));
        assert!(!req.stream);
    }

    #[test]
    fn image_parts_and_wrong_types_are_rejected() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
        )
        .unwrap();
        let err = req.messages[0].to_chat().unwrap_err();
        assert!(err.contains("image_url"), "{err}");
        for bad in [
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "stop": 3}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "stream": "yes"}"#,
            r#"{"messages": [{"content": "no role"}]}"#,
        ] {
            assert!(serde_json::from_str::<ChatRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn completion_prompt_and_stop_list() {
        let req: CompletionRequest =
            serde_json::from_str(r#"{"prompt": ["one"], "stop": ["a", "b"], "seed": 9}"#).unwrap();
        assert!(matches!(req.prompt, Prompt::Many(ref v) if v == &["one"]));
        assert_eq!(req.sampling.stop.unwrap().into_vec(), ["a", "b"]);
        assert_eq!(req.sampling.seed, Some(9));
        assert_eq!(Usage::new(3, 4).total_tokens, 7);
        assert_eq!(finish_reason(FinishReason::Length), "length");
    }
}
