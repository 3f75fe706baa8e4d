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

use super::{Model, ModelError, State};
use crate::backend::{AttnParams, Backend};

/// Scratch tensors of a batched step, reused from step to step.
pub struct DecodeBatch<B: Backend> {
    x: B::Tensor,
    h: B::Tensor,
    q: B::Tensor,
    k: B::Tensor,
    v: B::Tensor,
    att: B::Tensor,
    o: B::Tensor,
    gate: B::Tensor,
    up: B::Tensor,
    logits_dev: B::Tensor,
    host: Vec<f32>,
}

impl<B: Backend> Model<B> {
    /// Scratch space for [`Model::forward_multi`].
    pub fn new_decode_batch(&self) -> DecodeBatch<B> {
        let b = &self.backend;
        DecodeBatch {
            x: b.new_tensor(),
            h: b.new_tensor(),
            q: b.new_tensor(),
            k: b.new_tensor(),
            v: b.new_tensor(),
            att: b.new_tensor(),
            o: b.new_tensor(),
            gate: b.new_tensor(),
            up: b.new_tensor(),
            logits_dev: b.new_tensor(),
            host: Vec::new(),
        }
    }

    /// Append one token to each sequence: `tokens[i]` goes to `states[i]` at its own position.
    /// Afterwards each state's `logits` holds the logits of its new token, as
    /// [`Model::forward`] would leave them. Nothing is changed when an input is rejected.
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
            &mut bt.x,
        );
        for (il, lw) in w.layers.iter().enumerate() {
            b.rms_norm(&bt.x, &lw.attn_norm, c.rms_eps, &mut bt.h);
            b.matmul(&lw.wq, &bt.h, &mut bt.q);
            b.matmul(&lw.wk, &bt.h, &mut bt.k);
            b.matmul(&lw.wv, &bt.h, &mut bt.v);
            if let Some(bias) = &lw.bq {
                b.add_bias(&mut bt.q, bias);
            }
            if let Some(bias) = &lw.bk {
                b.add_bias(&mut bt.k, bias);
            }
            if let Some(bias) = &lw.bv {
                b.add_bias(&mut bt.v, bias);
            }
            if let Some(n) = &lw.q_norm {
                b.rms_norm_inplace(&mut bt.q, n, c.rms_eps);
            }
            if let Some(n) = &lw.k_norm {
                b.rms_norm_inplace(&mut bt.k, n, c.rms_eps);
            }
            let local = c.layer_local[il];
            let base = if local {
                c.rope_base_local
            } else {
                c.rope_base
            };
            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
                scale: c.attn_scale,
                window: if local { c.sliding_window } else { None },
            };
            // Per sequence: its row, at its position, against its own cache.
            for (i, st) in states.iter_mut().enumerate() {
                let pos = st.pos;
                b.copy_rows(&bt.q, i, 1, &mut st.q);
                b.copy_rows(&bt.k, i, 1, &mut st.k);
                b.copy_rows(&bt.v, i, 1, &mut st.v);
                b.rope(&mut st.q, c.head_dim, c.rope_dim, pos, base, c.rope_style);
                b.rope(&mut st.k, c.head_dim, c.rope_dim, pos, base, c.rope_style);
                b.store_kv(&mut st.kv, il, pos, &st.k, &st.v);
                b.attention(&st.q, &st.kv, il, pos, params, &mut st.att);
            }
            let parts: Vec<&B::Tensor> = states.iter().map(|st| &st.att).collect();
            b.concat_rows(&parts, &mut bt.att);
            b.matmul(&lw.wo, &bt.att, &mut bt.o);
            if let Some(n) = &lw.post_attn_norm {
                b.rms_norm_inplace(&mut bt.o, n, c.rms_eps);
            }
            b.add(&mut bt.x, &bt.o);

            b.rms_norm(&bt.x, &lw.ffn_norm, c.rms_eps, &mut bt.h);
            b.matmul(&lw.up, &bt.h, &mut bt.up);
            if let Some(gate) = &lw.gate {
                b.matmul(gate, &bt.h, &mut bt.gate);
            }
            b.ffn_activation(c.ffn, &bt.gate, &mut bt.up);
            b.matmul(&lw.down, &bt.up, &mut bt.o);
            if let Some(n) = &lw.post_ffn_norm {
                b.rms_norm_inplace(&mut bt.o, n, c.rms_eps);
            }
            b.add(&mut bt.x, &bt.o);
        }
        b.rms_norm(&bt.x, &w.output_norm, c.rms_eps, &mut bt.h);
        b.matmul(&w.output, &bt.h, &mut bt.logits_dev);
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
}
