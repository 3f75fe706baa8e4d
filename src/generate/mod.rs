//! Generation building blocks: token sampling, chat templates and stop strings.

mod rng;
pub mod sampler;

pub use sampler::{Sampler, SamplerConfig};
