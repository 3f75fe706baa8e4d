//! The draft side of speculative decoding and one draft-and-verify round.

use super::{verify, DraftLength, SpecStats};
use crate::backend::Backend;
use crate::generate::{Decoding, FinishReason, Sampler, Step};
use crate::model::{Model, ModelError, State};
use crate::sparse::FfnMode;

/// How a round ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Go on with this token: decided (its text emitted) but in neither cache yet.
    Next(u32),
    /// Generation is over.
    Done(FinishReason),
}

/// A draft model with its own KV cache (which may lag behind or run ahead of the target's:
/// it is brought back to the committed tokens at the start of every round).
pub struct Drafter<'m, B: Backend> {
    model: &'m Model<B>,
    state: State<B>,
    /// The tokens in the draft's cache.
    cached: Vec<u32>,
    length: DraftLength,
    pub stats: SpecStats,
}

impl<'m, B: Backend> Drafter<'m, B> {
    /// A draft running `model` in FFN `mode`, proposing up to `max_draft` tokens per round.
    pub fn new(
        model: &'m Model<B>,
        mode: FfnMode,
        n_ctx: usize,
        max_draft: usize,
    ) -> Result<Self, ModelError> {
        model.check_ffn_mode(&mode)?;
        let mut state = model.new_state(n_ctx);
        state.ffn_mode = mode;
        Ok(Drafter {
            model,
            state,
            cached: Vec::new(),
            length: DraftLength::new(max_draft),
            stats: SpecStats::default(),
        })
    }

    /// A draft can only serve a target whose token ids mean the same: same vocabulary size.
    pub fn check_target(&self, target: &Model<B>) -> Result<(), ModelError> {
        let (d, t) = (self.model.config.vocab_size, target.config.vocab_size);
        if d != t {
            return Err(ModelError::Config(format!(
                "the draft model's vocabulary ({d} tokens) differs from the target's ({t})"
            )));
        }
        Ok(())
    }

    pub fn length(&self) -> &DraftLength {
        &self.length
    }

    pub fn reset(&mut self) {
        self.state.reset();
        self.cached.clear();
    }

    /// Evaluate the tokens of `history` the draft's cache lacks (a prompt).
    pub fn prefill(&mut self, history: &[u32]) -> Result<(), ModelError> {
        let common = self.common_prefix(history.iter());
        self.state.truncate(common);
        self.cached.truncate(common);
        if common < history.len() {
            self.model
                .forward(&mut self.state, &history[common..], false)?;
            self.cached.extend_from_slice(&history[common..]);
        }
        Ok(())
    }

    fn common_prefix<'a>(&self, tokens: impl Iterator<Item = &'a u32>) -> usize {
        self.cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// Bring the cache to `history` + `next` and leave the draft's logits after `next`.
    /// `next` is always evaluated alone: in a sparse mode a single row runs the sparse FFN
    /// while a batch does not, so this keeps the draft's law independent of how far its
    /// cache lagged (and a server's draft equal to run's).
    fn feed(&mut self, history: &[u32], next: u32) -> Result<(), ModelError> {
        self.prefill(history)?;
        self.model.forward(&mut self.state, &[next], false)?;
        self.cached.push(next);
        Ok(())
    }

    /// One round. The target's cache holds `history`; `token` was decided from its logits
    /// (text emitted) and is in no cache yet. The draft proposes up to k tokens after it, the
    /// target evaluates `token` and the drafts in one forward pass, and the verdicts are taken
    /// in order through `decoding` until a draft is refused (its replacement is the next
    /// round's token) or all stand (the target's token after them is). On return the
    /// target's cache holds exactly the new `history`.
    #[allow(clippy::too_many_arguments)]
    pub fn round(
        &mut self,
        target: &Model<B>,
        tstate: &mut State<B>,
        history: &mut Vec<u32>,
        token: u32,
        decoding: &mut Decoding,
        sampler: &mut Sampler,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Round, ModelError> {
        let target_room = tstate.n_ctx.saturating_sub(tstate.pos + 1);
        let draft_room = self.state.n_ctx.saturating_sub(history.len() + 1);
        let k = self
            .length
            .current()
            .min(target_room)
            .min(draft_room)
            .min(decoding.remaining());
        if k == 0 {
            // No room to speculate: a plain step.
            target.forward(tstate, &[token], false)?;
            history.push(token);
            return Ok(emit(
                decoding.step(sampler, &tstate.logits, history),
                on_text,
            ));
        }

        // Draft k tokens, sampling each from the draft's distribution.
        self.feed(history, token)?;
        let mut context = history.clone();
        context.push(token);
        let mut drafts = Vec::with_capacity(k);
        let mut qs = Vec::with_capacity(k);
        for i in 0..k {
            let q = sampler.distribution(&self.state.logits, &context);
            let d = verify::draw(&q, sampler.uniform());
            drafts.push(d);
            qs.push(q);
            context.push(d);
            if i + 1 < k {
                self.model.forward(&mut self.state, &[d], false)?;
                self.cached.push(d);
            }
        }

        // Verify: the target's distribution after `token` and after each draft, in one pass.
        let mut batch = Vec::with_capacity(k + 1);
        batch.push(token);
        batch.extend_from_slice(&drafts);
        target.forward(tstate, &batch, true)?;
        history.push(token);
        let vocab = target.config.vocab_size;
        let rows = &tstate.logits;
        let mut accepted = 0;
        let mut outcome = None;
        for (i, (&d, q)) in drafts.iter().zip(&qs).enumerate() {
            let p = sampler.distribution(&rows[i * vocab..(i + 1) * vocab], history);
            let (u_accept, u_resample) = (sampler.uniform(), sampler.uniform());
            let (chosen, kept) = match verify::judge(&p, q, d, u_accept, u_resample) {
                verify::Verdict::Accept => (d, true),
                verify::Verdict::Replace(t) => (t, false),
            };
            self.stats.tokens += 1;
            match emit(decoding.accept(chosen, history), on_text) {
                Round::Next(t) if kept => {
                    history.push(t);
                    accepted += 1;
                }
                other => {
                    outcome = Some(other);
                    break;
                }
            }
        }
        let outcome = match outcome {
            Some(o) => o,
            None => {
                // Every draft stood: the target's own next token comes for free.
                self.stats.tokens += 1;
                let last = &rows[k * vocab..(k + 1) * vocab];
                emit(decoding.step(sampler, last, history), on_text)
            }
        };
        tstate.truncate(history.len());
        self.stats.verifies += 1;
        self.stats.drafted += k;
        self.stats.accepted += accepted;
        self.length.update(k, accepted);
        Ok(outcome)
    }
}

/// Pass a step's text on; a refused text cancels.
fn emit(step: Step, on_text: &mut dyn FnMut(&str) -> bool) -> Round {
    match step {
        Step::Next { token, text } => {
            if !text.is_empty() && !on_text(&text) {
                Round::Done(FinishReason::Cancelled)
            } else {
                Round::Next(token)
            }
        }
        Step::Done { finish, text } => {
            if !text.is_empty() {
                on_text(&text);
            }
            Round::Done(finish)
        }
    }
}
