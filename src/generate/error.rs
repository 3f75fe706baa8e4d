use crate::gguf::GgufError;
use crate::model::ModelError;
use crate::tokenizer::TokenizerError;

use super::TemplateError;

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("prompt of {tokens} tokens does not fit in the context of {n_ctx} tokens (raise --ctx-size or shorten the prompt)")]
    PromptTooLong { tokens: usize, n_ctx: usize },
    #[error("empty prompt")]
    EmptyPrompt,
}
