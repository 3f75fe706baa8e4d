//! The per-token decisions of one generation, apart from running the model.
//!
//! [`Generator`](super::Generator) runs one sequence to the end; a server interleaves many
//! sequences and batches their forward passes. Both take the same decisions through
//! [`Decoding`], so a request served by the server ends exactly where `powerinfer run` would.

use super::{FinishReason, Sampler, StopMatcher};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What to do after looking at one token's logits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Evaluate `token` next; `text` is what became final (possibly empty).
    Next { token: u32, text: String },
    /// Generation is over; `text` is the last text to emit (possibly empty).
    Done { finish: FinishReason, text: String },
}

/// Sampling, end-of-generation tokens, stop strings, token and context limits for one
/// generation.
pub struct Decoding<'t> {
    tokenizer: &'t Tokenizer,
    decoder: StreamDecoder<'t>,
    stops: StopMatcher,
    max_tokens: usize,
    n_ctx: usize,
    generated: usize,
}

impl<'t> Decoding<'t> {
    /// `max_tokens` bounds the sampled tokens, `n_ctx` the sequence (cache) length.
    pub fn new(
        tokenizer: &'t Tokenizer,
        stop: Vec<String>,
        max_tokens: usize,
        n_ctx: usize,
    ) -> Self {
        Decoding {
            tokenizer,
            decoder: StreamDecoder::new(tokenizer),
            stops: StopMatcher::new(stop),
            max_tokens,
            n_ctx,
            generated: 0,
        }
    }

    /// Tokens sampled so far, an end-of-generation token included.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Decide on the logits of the last token of `history` (every token in the cache).
    pub fn step(&mut self, sampler: &mut Sampler, logits: &[f32], history: &[u32]) -> Step {
        if self.generated >= self.max_tokens {
            return self.done(FinishReason::Length, String::new());
        }
        let token = sampler.sample(logits, history);
        self.take(token, history)
    }

    /// Decide on `token`, chosen elsewhere (speculative verification picks it from the
    /// target's and the draft's distributions), exactly as if it had been sampled.
    pub fn accept(&mut self, token: u32, history: &[u32]) -> Step {
        if self.generated >= self.max_tokens {
            return self.done(FinishReason::Length, String::new());
        }
        self.take(token, history)
    }

    /// Tokens that may still be sampled.
    pub fn remaining(&self) -> usize {
        self.max_tokens.saturating_sub(self.generated)
    }

    fn take(&mut self, token: u32, history: &[u32]) -> Step {
        self.generated += 1;
        if self.tokenizer.is_eog(token) {
            return self.done(FinishReason::Stop, String::new());
        }
        let piece = self.decoder.push(token);
        let (text, hit) = self.stops.push(&piece);
        if hit {
            return Step::Done {
                finish: FinishReason::Stop,
                text,
            };
        }
        if history.len() + 1 >= self.n_ctx {
            return self.done(FinishReason::Length, text);
        }
        Step::Next { token, text }
    }

    /// End without a stop string: release the text held back as a possible stop-string
    /// prefix and any incomplete UTF-8 tail.
    fn done(&mut self, finish: FinishReason, mut text: String) -> Step {
        let (emit, _) = self.stops.push(&self.decoder.finish());
        text.push_str(&emit);
        text.push_str(&self.stops.flush());
        Step::Done { finish, text }
    }
}
