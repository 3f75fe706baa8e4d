//! The decoding loop: prefill, sample, stream text, stop.

use std::time::{Duration, Instant};

use super::speculative::{Drafter, Round, SpecStats};
use super::{Decoding, GenerateError, Sampler, Step};
use crate::backend::Backend;
use crate::model::{Model, State};
use crate::tokenizer::Tokenizer;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// The token limit was reached.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

#[derive(Clone, Debug)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    pub finish: FinishReason,
    /// With a draft: how the speculation went.
    pub speculative: Option<SpecStats>,
}

impl GenStats {
    pub fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Decode speed; the first generated token comes from the prefill logits, so it is not
    /// counted.
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// Options of one generation call.
#[derive(Clone, Debug, Default)]
pub struct GenOptions {
    pub max_tokens: usize,
    pub stop: Vec<String>,
}

/// One sequence being decoded: its KV cache, the tokens in it and a sampler.
pub struct Generator<'m, B: Backend> {
    pub model: &'m Model<B>,
    pub tokenizer: &'m Tokenizer,
    pub state: State<B>,
    pub sampler: Sampler,
    /// Tokens currently in the KV cache.
    pub tokens: Vec<u32>,
    /// Speculative decoding: the draft that proposes tokens for `model` to verify.
    pub draft: Option<Drafter<'m, B>>,
}

impl<'m, B: Backend> Generator<'m, B> {
    pub fn new(
        model: &'m Model<B>,
        tokenizer: &'m Tokenizer,
        sampler: Sampler,
        n_ctx: usize,
    ) -> Self {
        Generator {
            model,
            tokenizer,
            state: model.new_state(n_ctx),
            sampler,
            tokens: Vec::new(),
            draft: None,
        }
    }

    /// Decode speculatively with `draft` (checked against the model's vocabulary).
    pub fn with_draft(mut self, draft: Drafter<'m, B>) -> Result<Self, GenerateError> {
        draft.check_target(self.model)?;
        self.draft = Some(draft);
        Ok(self)
    }

    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx
    }

    pub fn reset(&mut self) {
        self.state.reset();
        self.tokens.clear();
        if let Some(d) = &mut self.draft {
            d.reset();
        }
    }

    /// Evaluate `prompt` after the tokens already in the cache (so a chat turn only adds its
    /// new text), then generate. `on_text` receives text as it becomes final and returns false
    /// to cancel.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenOptions,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<GenStats, GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let n_ctx = self.n_ctx();
        if self.tokens.len() + prompt.len() >= n_ctx {
            return Err(GenerateError::PromptTooLong {
                tokens: self.tokens.len() + prompt.len(),
                n_ctx,
            });
        }
        let t0 = Instant::now();
        // Sampling reads the logits where forward leaves them (state.logits): no copy.
        self.model.forward(&mut self.state, prompt, false)?;
        self.tokens.extend_from_slice(prompt);

        if let Some(d) = &mut self.draft {
            d.prefill(&self.tokens)?;
            d.stats = SpecStats::default();
        }
        let prefill_time = t0.elapsed();

        let t1 = Instant::now();
        let mut decoding = Decoding::new(self.tokenizer, opts.stop.clone(), opts.max_tokens, n_ctx);
        let finish = match &mut self.draft {
            None => loop {
                match decoding.step(&mut self.sampler, &self.state.logits, &self.tokens) {
                    Step::Next { token, text } => {
                        if !text.is_empty() && !on_text(&text) {
                            break FinishReason::Cancelled;
                        }
                        self.model.forward(&mut self.state, &[token], false)?;
                        self.tokens.push(token);
                    }
                    Step::Done { finish, text } => {
                        if !text.is_empty() {
                            on_text(&text);
                        }
                        break finish;
                    }
                }
            },
            Some(draft) => {
                let mut next =
                    match decoding.step(&mut self.sampler, &self.state.logits, &self.tokens) {
                        Step::Next { token, text } if text.is_empty() || on_text(&text) => {
                            Round::Next(token)
                        }
                        Step::Next { .. } => Round::Done(FinishReason::Cancelled),
                        Step::Done { finish, text } => {
                            if !text.is_empty() {
                                on_text(&text);
                            }
                            Round::Done(finish)
                        }
                    };
                loop {
                    match next {
                        Round::Next(token) => {
                            next = draft.round(
                                self.model,
                                &mut self.state,
                                &mut self.tokens,
                                token,
                                &mut decoding,
                                &mut self.sampler,
                                &mut on_text,
                            )?;
                        }
                        Round::Done(finish) => break finish,
                    }
                }
            }
        };
        Ok(GenStats {
            prompt_tokens: prompt.len(),
            generated_tokens: decoding.generated(),
            prefill_time,
            decode_time: t1.elapsed(),
            finish,
            speculative: self.draft.as_ref().map(|d| d.stats),
        })
    }
}
