//! Generation building blocks: token sampling, chat templates and stop strings.

pub mod chat_template;
mod rng;
pub mod sampler;
pub mod stop;

pub use chat_template::{ChatMessage, ChatTemplate, TemplateError};
pub use sampler::{Sampler, SamplerConfig};
pub use stop::StopMatcher;
