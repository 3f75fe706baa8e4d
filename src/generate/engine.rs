//! A loaded model with its tokenizer and chat template: what `run`, `chat`, `bench` and
//! `serve` all start from.

use std::path::Path;
use std::sync::Arc;

use super::{ChatTemplate, GenerateError};
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::model::Model;
use crate::tokenizer::Tokenizer;

pub struct Engine<B: Backend> {
    pub model: Model<B>,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl<B: Backend> Engine<B> {
    /// Load model, tokenizer and chat template from one GGUF file. `activation` overrides
    /// the FFN activation recorded in the file.
    pub fn load(path: &Path, backend: B, activation: Option<&str>) -> Result<Self, GenerateError> {
        Self::from_file(Arc::new(GgufFile::open(path)?), backend, activation)
    }

    /// [`Engine::load`] from a file already opened (mapped, or read with [`GgufFile::read`]).
    pub fn from_file(
        file: Arc<GgufFile>,
        backend: B,
        activation: Option<&str>,
    ) -> Result<Self, GenerateError> {
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(&tokenizer.token_bytes(i)).into_owned())
                .unwrap_or_default()
        };
        // A template our Jinja engine cannot compile should not make the model unusable:
        // fall back to plain text, and say so once.
        let template = match ChatTemplate::from_gguf_source(
            file.get_str("tokenizer.chat_template")?,
            &piece(tokenizer.bos_id()),
            &piece(tokenizer.eos_id()),
        ) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("chat template unusable ({e}); using plain text turns");
                ChatTemplate::plain()
            }
        };
        let model = Model::from_file(file, backend, activation)?;
        Ok(Engine {
            model,
            tokenizer,
            template,
        })
    }
}
