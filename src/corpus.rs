//! Text for calibration and evaluation: plain text files or JSONL chats, turned into token
//! sequences the way the model sees them in use (chats through the model's chat template).

use std::path::{Path, PathBuf};

use crate::generate::{ChatMessage, ChatTemplate};
use crate::tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("corpus {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corpus {path}, line {line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("corpus {0}: no text in it")]
    Empty(PathBuf),
    #[error("corpus: chat template: {0}")]
    Template(String),
}

/// One unit of text: a document or a conversation.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// Read a corpus. `.jsonl` files hold one document per line: a JSON array of
/// `{"role", "content"}` messages, an object with `"messages"` (the same) or `"text"`, or a
/// JSON string. Any other file is plain text, one document per blank-line-separated block.
pub fn load(path: &Path) -> Result<Vec<Document>, CorpusError> {
    let io = |source| CorpusError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    let docs = if is_jsonl {
        parse_jsonl(path, &text)?
    } else {
        text.split("\n\n")
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| Document::Text(b.to_string()))
            .collect()
    };
    if docs.is_empty() {
        return Err(CorpusError::Empty(path.to_path_buf()));
    }
    Ok(docs)
}

fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Document>, CorpusError> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| CorpusError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let messages = |v: &serde_json::Value| -> Result<Vec<ChatMessage>, CorpusError> {
            serde_json::from_value(v.clone())
                .map_err(|e| bad(format!("messages must be [{{role, content}}]: {e}")))
        };
        let doc = match &v {
            serde_json::Value::Array(_) => Document::Chat(messages(&v)?),
            serde_json::Value::String(s) => Document::Text(s.clone()),
            serde_json::Value::Object(o) => match (o.get("messages"), o.get("text")) {
                (Some(m), _) => Document::Chat(messages(m)?),
                (None, Some(serde_json::Value::String(s))) => Document::Text(s.clone()),
                _ => return Err(bad("expected \"messages\" or a string \"text\"".into())),
            },
            _ => return Err(bad("expected an array, an object or a string".into())),
        };
        docs.push(doc);
    }
    Ok(docs)
}

/// Tokenize documents: chats rendered with `template` (plain-text turns when the model has
/// none), texts with the tokenizer's BOS rule. Stops once `max_tokens` tokens are collected.
pub fn tokenize(
    docs: &[Document],
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_tokens: usize,
) -> Result<Vec<Vec<u32>>, CorpusError> {
    let mut out = Vec::new();
    let mut total = 0;
    for doc in docs {
        if total >= max_tokens {
            break;
        }
        let ids = match doc {
            Document::Text(t) => tokenizer.encode(t, true, false),
            Document::Chat(m) => {
                let text = template
                    .render(m, false)
                    .map_err(|e| CorpusError::Template(e.to_string()))?;
                // As `chat` does: special tokens in the rendered text are parsed as such.
                tokenizer.encode(&text, true, true)
            }
        };
        if ids.len() < 2 {
            continue;
        }
        total += ids.len();
        out.push(ids);
    }
    Ok(out)
}

/// Default calibration and evaluation files installed by `scripts/fetch-corpus.sh`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("POWERINFER_CORPUS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/powerinfer/corpus")
}

pub fn default_calibration() -> PathBuf {
    default_dir().join("calibration.jsonl")
}

pub fn default_eval() -> PathBuf {
    default_dir().join("eval.jsonl")
}
