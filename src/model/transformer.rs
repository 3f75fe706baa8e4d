//! The decoder forward pass, written once for every architecture and backend.

use std::path::Path;
use std::sync::Arc;

use super::{FfnObserver, FfnTaps, ModelConfig, ModelError, State, Weights};
use crate::backend::{AttnParams, Backend};
use crate::gguf::GgufFile;
use crate::sparse::down::TransposedDown;
use crate::sparse::{FfnMode, LayerThreshold, Sidecar, SparseLayer};

/// The sidecar's per-layer data, ready for the sparse FFN.
pub struct SparseModel {
    pub layers: Vec<SparseLayer>,
    pub thresholds: Arc<[LayerThreshold]>,
}

/// Prompt tokens evaluated per batch; bounds scratch memory on long prompts.
pub const MAX_BATCH: usize = 256;

pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub backend: B,
    pub weights: Weights<B>,
    pub file: Arc<GgufFile>,
    /// Loaded from a profile sidecar; needed by the oracle and predicted FFN modes.
    pub sparse: Option<SparseModel>,
}

impl<B: Backend> Model<B> {
    /// Load a model from a GGUF file; `activation` overrides the FFN activation in metadata.
    pub fn load(
        path: impl AsRef<Path>,
        backend: B,
        activation: Option<&str>,
    ) -> Result<Self, ModelError> {
        let file = Arc::new(GgufFile::open(path)?);
        Self::from_file(file, backend, activation)
    }

    pub fn from_file(
        file: Arc<GgufFile>,
        backend: B,
        activation: Option<&str>,
    ) -> Result<Self, ModelError> {
        let config = ModelConfig::from_gguf(&file, activation)?;
        let weights = Weights::load(&backend, &file, &config)?;
        Ok(Model {
            config,
            backend,
            weights,
            file,
            sparse: None,
        })
    }

    /// Attach a profile sidecar (already checked against this model): predictors, thresholds
    /// and a neuron-major copy of every down matrix for the sparse FFN.
    pub fn attach_sidecar(&mut self, sc: &Sidecar) -> Result<(), ModelError> {
        let c = &self.config;
        if sc.layers.len() != c.n_layer || sc.n_ff != c.n_ff || sc.d_model != c.d_model {
            return Err(ModelError::Config(format!(
                "sidecar shape ({} layers, n_ff {}, d_model {}) does not match the model ({}, {}, {})",
                sc.layers.len(),
                sc.n_ff,
                sc.d_model,
                c.n_layer,
                c.n_ff,
                c.d_model
            )));
        }
        let mut layers = Vec::with_capacity(c.n_layer);
        for (il, (sl, lw)) in sc.layers.iter().zip(&self.weights.layers).enumerate() {
            let down = self.backend.host_matrix(&lw.down).ok_or_else(|| {
                ModelError::Config(format!(
                    "backend {} keeps no host copy of the down matrices",
                    self.backend.name()
                ))
            })?;
            let predictor = match &sl.predictor {
                None => None,
                Some(p) => Some(
                    powerinfer_predictors::Predictor::from_parts(
                        p.d_in,
                        p.rank,
                        p.d_out,
                        p.w1.clone(),
                        p.b1.clone(),
                        p.w2.clone(),
                        p.b2.clone(),
                    )
                    .map_err(|e| ModelError::Config(format!("layer {il} predictor: {e}")))?,
                ),
            };
            layers.push(SparseLayer {
                threshold: sl.threshold,
                predictor,
                down: TransposedDown::new(&down),
            });
        }
        let thresholds = sc.layers.iter().map(|l| l.threshold).collect();
        self.sparse = Some(SparseModel { layers, thresholds });
        Ok(())
    }

    /// A fresh sequence state with a KV cache of `n_ctx` positions (capped by the model's
    /// trained context).
    pub fn new_state(&self, n_ctx: usize) -> State<B> {
        let n_ctx = n_ctx.clamp(1, self.config.context_length.max(1));
        State::new(
            &self.backend,
            self.config.n_layer,
            n_ctx,
            self.config.kv_dim(),
        )
    }

    /// Evaluate `tokens` at positions `state.pos..`, append them to the cache, and return the
    /// logits of the last token (or of every token with `all_logits`, row-major).
    pub fn forward<'s>(
        &self,
        state: &'s mut State<B>,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<&'s [f32], ModelError> {
        self.forward_observed(state, tokens, all_logits, None)
    }

    /// [`Model::forward`], showing every layer's FFN tensors to `observer` (profiling).
    pub fn forward_observed<'s>(
        &self,
        state: &'s mut State<B>,
        tokens: &[u32],
        all_logits: bool,
        mut observer: Option<&mut dyn FfnObserver>,
    ) -> Result<&'s [f32], ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if state.ffn_mode.needs_sidecar() && self.sparse.is_none() {
            return Err(ModelError::NoSidecar(state.ffn_mode.name()));
        }
        if let FfnMode::Masked(th) = &state.ffn_mode {
            if th.len() != self.config.n_layer {
                return Err(ModelError::Config(format!(
                    "{} thresholds for {} layers",
                    th.len(),
                    self.config.n_layer
                )));
            }
        }
        let need = state.pos + tokens.len();
        if need > state.n_ctx {
            return Err(ModelError::ContextOverflow {
                need,
                n_ctx: state.n_ctx,
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
        // The host buffer keeps its allocation from call to call.
        let mut host = std::mem::take(&mut state.logits);
        host.clear();
        for chunk in tokens.chunks(MAX_BATCH) {
            self.forward_batch(state, chunk, all_logits, observer.as_deref_mut())?;
            if !all_logits {
                host.clear();
            }
            self.backend.append_to_host(&state.logits_dev, &mut host);
        }
        state.logits = host;
        Ok(&state.logits)
    }

    /// The sparse layer to run, when this sequence's mode and batch size call for one.
    fn sparse_layer(&self, st: &State<B>, il: usize, rows: usize) -> Option<&SparseLayer> {
        let sparse = self.sparse.as_ref()?;
        let sparse_mode = matches!(st.ffn_mode, FfnMode::Oracle | FfnMode::Predicted);
        (sparse_mode && (rows == 1 || st.sparse_prefill)).then(|| &sparse.layers[il])
    }

    /// The threshold to mask a dense FFN with: the mode's own (Masked), or the sidecar's for a
    /// batch that a sparse mode evaluates densely (prefill).
    fn mask_threshold(&self, st: &State<B>, il: usize) -> Option<LayerThreshold> {
        match &st.ffn_mode {
            FfnMode::Dense => None,
            FfnMode::Masked(th) => Some(th[il]),
            FfnMode::Oracle | FfnMode::Predicted => self.sparse.as_ref().map(|s| s.thresholds[il]),
        }
    }

    fn forward_batch(
        &self,
        st: &mut State<B>,
        tokens: &[u32],
        all_logits: bool,
        mut observer: Option<&mut (dyn FfnObserver + '_)>,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let b = &self.backend;
        let w = &self.weights;
        let pos0 = st.pos;
        b.embed(
            &w.token_embd,
            tokens,
            c.embed_scale.unwrap_or(1.0),
            &mut st.x,
        );

        for (il, lw) in w.layers.iter().enumerate() {
            // Attention block.
            b.rms_norm(&st.x, &lw.attn_norm, c.rms_eps, &mut st.h);
            b.matmul(&lw.wq, &st.h, &mut st.q);
            b.matmul(&lw.wk, &st.h, &mut st.k);
            b.matmul(&lw.wv, &st.h, &mut st.v);
            if let Some(bias) = &lw.bq {
                b.add_bias(&mut st.q, bias);
            }
            if let Some(bias) = &lw.bk {
                b.add_bias(&mut st.k, bias);
            }
            if let Some(bias) = &lw.bv {
                b.add_bias(&mut st.v, bias);
            }
            if let Some(n) = &lw.q_norm {
                b.rms_norm_inplace(&mut st.q, n, c.rms_eps);
            }
            if let Some(n) = &lw.k_norm {
                b.rms_norm_inplace(&mut st.k, n, c.rms_eps);
            }
            let local = c.layer_local[il];
            let base = if local {
                c.rope_base_local
            } else {
                c.rope_base
            };
            b.rope(&mut st.q, c.head_dim, c.rope_dim, pos0, base, c.rope_style);
            b.rope(&mut st.k, c.head_dim, c.rope_dim, pos0, base, c.rope_style);
            b.store_kv(&mut st.kv, il, pos0, &st.k, &st.v);
            let params = AttnParams {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
                scale: c.attn_scale,
                window: if local { c.sliding_window } else { None },
            };
            b.attention(&st.q, &st.kv, il, pos0, params, &mut st.att);
            b.matmul(&lw.wo, &st.att, &mut st.o);
            if let Some(n) = &lw.post_attn_norm {
                b.rms_norm_inplace(&mut st.o, n, c.rms_eps);
            }
            b.add(&mut st.x, &st.o);

            // Feed-forward block.
            b.rms_norm(&st.x, &lw.ffn_norm, c.rms_eps, &mut st.h);
            if let Some(sp) = self.sparse_layer(st, il, tokens.len()) {
                let done = b.sparse_ffn(
                    sp,
                    c.ffn,
                    lw.gate.as_ref(),
                    &lw.up,
                    &st.h,
                    st.ffn_mode == FfnMode::Oracle,
                    &mut st.sparse,
                    &mut st.o,
                );
                if !done {
                    return Err(unsupported(b, format!("the {} FFN", st.ffn_mode.name())));
                }
                if let Some(n) = &lw.post_ffn_norm {
                    b.rms_norm_inplace(&mut st.o, n, c.rms_eps);
                }
                b.add(&mut st.x, &st.o);
                continue;
            }
            b.matmul(&lw.up, &st.h, &mut st.up);
            if let Some(gate) = &lw.gate {
                b.matmul(gate, &st.h, &mut st.gate);
            }
            let taps = observer.is_some().then(|| {
                let mut t = TapBuffers::default();
                b.append_to_host(&st.h, &mut t.input);
                if lw.gate.is_some() {
                    b.append_to_host(&st.gate, &mut t.gate);
                }
                b.append_to_host(&st.up, &mut t.up);
                t
            });
            b.ffn_activation(c.ffn, &st.gate, &mut st.up);
            if let Some(th) = self.mask_threshold(st, il) {
                let done = b.ffn_mask(c.ffn, th, &st.gate, &mut st.up);
                if !done {
                    return Err(unsupported(b, "masked FFN activations".into()));
                }
            }
            if let (Some(obs), Some(mut t)) = (observer.as_deref_mut(), taps) {
                b.append_to_host(&st.up, &mut t.act);
                obs.observe(
                    il,
                    tokens.len(),
                    FfnTaps {
                        input: &t.input,
                        gate: &t.gate,
                        up: &t.up,
                        act: &t.act,
                    },
                );
            }
            b.matmul(&lw.down, &st.up, &mut st.o);
            if let Some(n) = &lw.post_ffn_norm {
                b.rms_norm_inplace(&mut st.o, n, c.rms_eps);
            }
            b.add(&mut st.x, &st.o);
        }
        st.pos += tokens.len();

        // Output head, on the last row only unless every position's logits are wanted.
        let n = tokens.len();
        if all_logits {
            b.rms_norm(&st.x, &w.output_norm, c.rms_eps, &mut st.h);
        } else {
            b.copy_rows(&st.x, n - 1, 1, &mut st.last);
            b.rms_norm(&st.last, &w.output_norm, c.rms_eps, &mut st.h);
        }
        b.matmul(&w.output, &st.h, &mut st.logits_dev);
        Ok(())
    }
}

/// A backend's refusal: the batch stops there, before `pos` advances (cache rows already
/// written for it are overwritten by the next call).
fn unsupported<B: Backend>(b: &B, what: String) -> ModelError {
    ModelError::Unsupported {
        backend: b.name(),
        what,
    }
}

/// Host copies of one layer's FFN tensors for an observer.
#[derive(Default)]
struct TapBuffers {
    input: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}
