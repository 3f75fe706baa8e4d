//! Generation: token sampling, chat templates, stop strings, and the decoding loop that
//! ties them to a model.

pub mod chat_template;
mod decoding;
mod engine;
mod error;
mod generator;
mod rng;
pub mod sampler;
pub mod speculative;
pub mod stop;

pub use decoding::{Decoding, Step};
pub use engine::Engine;
pub use error::GenerateError;
pub use generator::{FinishReason, GenOptions, GenStats, Generator};

pub use chat_template::{ChatMessage, ChatTemplate, TemplateError};
pub use sampler::{Sampler, SamplerConfig};
pub use stop::StopMatcher;
