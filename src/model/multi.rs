//! One decoding step for several sequences at once (continuous batching).
//!
//! Decoding one token reads every weight once for a single row, which leaves the matmul
//! kernels starved; stacking the next token of N sequences into one N-row batch reads the
//! weights once for all of them. Only rotary positions, the cache writes and attention
//! differ per sequence, so those run on each sequence's own [`State`] and cache.
//!
//! Each row goes through the same per-row arithmetic as a single-sequence
//! [`Model::forward`] (the batched kernels are bit-identical to the one-row ones), so a
//! sequence decodes to the same tokens whatever else shares its batch.

use super::activations::Activations;
use super::layer::FfnPlan;
use super::{LayerWeights, Model, ModelError, State};
use crate::backend::Backend;

/// Scratch tensors of a batched step, reused from step to step.
pub struct DecodeBatch<B: Backend> {
    /// The stacked rows of every sequence.
    a: Activations<B>,
    /// Rows gathered from `a` for an FFN evaluated apart from the whole batch.
    group: Activations<B>,
    logits_dev: B::Tensor,
    host: Vec<f32>,
}

impl<B: Backend> Model<B> {
    /// Scratch space for [`Model::forward_multi`].
    pub fn new_decode_batch(&self) -> DecodeBatch<B> {
        let b = &self.backend;
        DecodeBatch {
            a: Activations::new(b),
            group: Activations::new(b),
            logits_dev: b.new_tensor(),
            host: Vec::new(),
        }
    }

    /// Append one token to each sequence: `tokens[i]` goes to `states[i]` at its own position,
    /// with its own FFN mode. Afterwards each state's `logits` holds the logits of its new
    /// token, as [`Model::forward`] would leave them. Nothing is changed when an input is
    /// rejected.
    pub fn forward_multi(
        &self,
        batch: &mut DecodeBatch<B>,
        states: &mut [&mut State<B>],
        tokens: &[u32],
    ) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if states.len() != tokens.len() {
            return Err(ModelError::Config(format!(
                "forward_multi: {} states for {} tokens",
                states.len(),
                tokens.len()
            )));
        }
        for st in states.iter() {
            self.check_ffn_mode(&st.ffn_mode)?;
        }
        if let Some(st) = states.iter().find(|st| st.pos + 1 > st.n_ctx) {
            return Err(ModelError::ContextOverflow {
                need: st.pos + 1,
                n_ctx: st.n_ctx,
            });
        }
        if let Some(&id) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocab_size)
        {
            return Err(ModelError::BadToken {
                id,
                vocab: self.config.vocab_size,
            });
        }

        let c = &self.config;
        let b = &self.backend;
        let w = &self.weights;
        let bt = batch;
        b.embed(
            &w.token_embd,
            tokens,
            c.embed_scale.unwrap_or(1.0),
            &mut bt.a.x,
        );
        for (il, lw) in w.layers.iter().enumerate() {
            self.attn_qkv(lw, &mut bt.a);
            // Per sequence: its row, at its position, against its own cache.
            for (i, st) in states.iter_mut().enumerate() {
                b.copy_rows(&bt.a.q, i, 1, &mut st.a.q);
                b.copy_rows(&bt.a.k, i, 1, &mut st.a.k);
                b.copy_rows(&bt.a.v, i, 1, &mut st.a.v);
                self.attend(il, st.pos, &mut st.a, &mut st.kv);
            }
            let parts: Vec<&B::Tensor> = states.iter().map(|st| &st.a.att).collect();
            b.concat_rows(&parts, &mut bt.a.att);
            self.attn_out(lw, &mut bt.a);
            self.ffn_norm(lw, &mut bt.a);
            self.ffn_rows(il, lw, bt, states);
            self.ffn_residual(lw, &mut bt.a);
        }
        b.rms_norm(&bt.a.x, &w.output_norm, c.rms_eps, &mut bt.a.h);
        b.matmul(&w.output, &bt.a.h, &mut bt.logits_dev);
        bt.host.clear();
        b.append_to_host(&bt.logits_dev, &mut bt.host);
        let vocab = bt.host.len() / tokens.len();
        for (st, row) in states.iter_mut().zip(bt.host.chunks_exact(vocab)) {
            st.pos += 1;
            st.logits.clear();
            st.logits.extend_from_slice(row);
        }
        Ok(())
    }

    /// The FFN of every row of `bt.a.h` into `bt.a.o`, row `i` under the plan of
    /// `states[i]`'s mode. Rows with the same dense plan share one batched evaluation; a
    /// sparse row runs alone on its sequence's tensors and scratch, as in
    /// [`Model::forward`].
    fn ffn_rows(
        &self,
        il: usize,
        lw: &LayerWeights<B>,
        bt: &mut DecodeBatch<B>,
        states: &mut [&mut State<B>],
    ) {
        let b = &self.backend;
        let n = states.len();
        let plans: Vec<FfnPlan<'_>> = states.iter().map(|st| self.ffn_plan(st, il, 1)).collect();
        let mut done = vec![false; n];
        for i in 0..n {
            if done[i] {
                continue;
            }
            done[i] = true;
            let FfnPlan::Dense(mask) = plans[i] else {
                let st = &mut *states[i];
                b.copy_rows(&bt.a.h, i, 1, &mut st.a.h);
                self.ffn(
                    il,
                    lw,
                    plans[i],
                    &mut st.a,
                    &mut st.sparse,
                    &mut st.sparse_dev,
                    None,
                );
                continue;
            };
            let mut group = vec![i];
            for j in i + 1..n {
                if !done[j] && matches!(plans[j], FfnPlan::Dense(m) if m == mask) {
                    done[j] = true;
                    group.push(j);
                }
            }
            if group.len() == n {
                // The common case: one dense plan for the whole batch.
                self.ffn_dense(il, lw, mask, &mut bt.a, None);
                return;
            }
            for &j in &group {
                b.copy_rows(&bt.a.h, j, 1, &mut states[j].a.h);
            }
            let rows: Vec<&B::Tensor> = group.iter().map(|&j| &states[j].a.h).collect();
            b.concat_rows(&rows, &mut bt.group.h);
            self.ffn_dense(il, lw, mask, &mut bt.group, None);
            for (k, &j) in group.iter().enumerate() {
                b.copy_rows(&bt.group.o, k, 1, &mut states[j].a.o);
            }
        }
        let outs: Vec<&B::Tensor> = states.iter().map(|st| &st.a.o).collect();
        b.concat_rows(&outs, &mut bt.a.o);
    }
}
