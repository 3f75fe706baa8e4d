//! Speculative decoding: a cheap draft proposes several tokens, the full model checks them
//! all in one batched forward pass and keeps the longest prefix its own sampling agrees
//! with, so several tokens can come out of one target step.
//!
//! The draft may be the same model with a sparse FFN (self-speculation) or another model
//! with the same vocabulary. Acceptance follows the speculative sampling rule
//! ([`verify::judge`]), which leaves the output distributed exactly as the target's; with
//! greedy sampling the output is token for token that of plain decoding.

mod draft_length;
mod drafter;
mod stats;
pub mod verify;

pub use draft_length::DraftLength;
pub use drafter::{Drafter, Round};
pub use stats::SpecStats;
