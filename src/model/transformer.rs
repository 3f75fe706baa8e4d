//! The decoder forward pass, written once for every architecture and backend.

use std::path::Path;
use std::sync::Arc;

use super::{FfnObserver, ModelConfig, ModelError, State, Weights};
use crate::backend::Backend;
use crate::gguf::GgufFile;
use crate::sparse::down::TransposedDown;
use crate::sparse::hybrid::LayerUpload;
use crate::sparse::records::NeuronRecords;
use crate::sparse::{block_frequencies, LayerThreshold, Sidecar, SparseLayer};

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
    /// and a neuron-major copy of every down matrix for the sparse FFN. A backend with a
    /// device gets every neuron as hot (see [`Model::attach_sidecar_placed`]).
    pub fn attach_sidecar(&mut self, sc: &Sidecar) -> Result<(), ModelError> {
        self.attach_sidecar_placed(sc, None)
    }

    /// [`Model::attach_sidecar`], with `hot[il]` (ascending) the neurons of layer `il` that a
    /// backend with a device puts there (`None`: all of them); the host computes the others.
    pub fn attach_sidecar_placed(
        &mut self,
        sc: &Sidecar,
        hot: Option<&[Vec<u32>]>,
    ) -> Result<(), ModelError> {
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
            let predictor = sl
                .predictor
                .as_ref()
                .map(|p| p.to_predictor())
                .transpose()
                .map_err(|e| ModelError::Config(format!("layer {il} predictor: {e}")))?;
            let mut down = TransposedDown::new(&down);
            let records = match &lw.gate {
                Some(g) => self
                    .backend
                    .host_matrix(g)
                    .zip(self.backend.host_matrix(&lw.up))
                    .and_then(|(g, u)| NeuronRecords::new(&g, &u, Some(&mut down))),
                None => None,
            };
            let block_freq = if sl.freq.len() == c.n_ff {
                block_frequencies(&sl.freq)
            } else {
                Vec::new()
            };
            layers.push(SparseLayer {
                threshold: sl.threshold,
                predictor,
                down,
                records,
                block_freq,
            });
        }
        let all: Vec<Vec<u32>>;
        let hot = match hot {
            Some(h) => h,
            None => {
                all = vec![(0..c.n_ff as u32).collect(); c.n_layer];
                &all
            }
        };
        let uploads = layer_uploads(&self.backend, c, &self.weights, sc, hot)?;
        self.backend.attach_sparse(&uploads)?;
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
            self.config.head_dim,
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
        self.check_ffn_mode(&state.ffn_mode)?;
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
            &mut st.a.x,
        );
        for (il, lw) in w.layers.iter().enumerate() {
            self.attn_qkv(lw, &mut st.a);
            self.attend(il, pos0, &mut st.a, &mut st.kv);
            if let Some(obs) = observer.as_deref_mut().filter(|o| o.wants_matrix_inputs()) {
                let (mut input, mut att) = (Vec::new(), Vec::new());
                b.append_to_host(&st.a.h, &mut input);
                b.append_to_host(&st.a.att, &mut att);
                obs.observe_attn(il, tokens.len(), &input, &att);
            }
            self.attn_out(lw, &mut st.a);
            let plan = self.ffn_plan(st, il, tokens.len());
            self.ffn_norm(lw, &mut st.a);
            self.ffn(
                il,
                lw,
                plan,
                &mut st.a,
                &mut st.sparse,
                &mut st.sparse_dev,
                observer.as_deref_mut(),
            );
            self.ffn_residual(lw, &mut st.a);
        }
        st.pos += tokens.len();

        // Output head, on the last row only unless every position's logits are wanted.
        let n = tokens.len();
        if all_logits {
            b.rms_norm(&st.a.x, &w.output_norm, c.rms_eps, &mut st.a.h);
        } else {
            b.copy_rows(&st.a.x, n - 1, 1, &mut st.last);
            b.rms_norm(&st.last, &w.output_norm, c.rms_eps, &mut st.a.h);
        }
        if let Some(obs) = observer.filter(|o| o.wants_matrix_inputs()) {
            let mut input = Vec::new();
            b.append_to_host(&st.a.h, &mut input);
            obs.observe_head(if all_logits { n } else { 1 }, &input);
        }
        b.matmul(&w.output, &st.a.h, &mut st.logits_dev);
        Ok(())
    }
}

/// Each layer's sparse FFN as a device takes it: the sidecar's predictor and threshold, the
/// weights' host bytes, and the hot neurons `hot[il]`.
pub fn layer_uploads<'a, B: Backend>(
    backend: &B,
    c: &ModelConfig,
    weights: &'a Weights<B>,
    sc: &'a Sidecar,
    hot: &'a [Vec<u32>],
) -> Result<Vec<LayerUpload<'a>>, ModelError> {
    if hot.len() != c.n_layer {
        return Err(ModelError::Config(format!(
            "hot neuron lists for {} layers, the model has {}",
            hot.len(),
            c.n_layer
        )));
    }
    let host = |w| {
        backend.host_matrix(w).ok_or_else(|| {
            ModelError::Config(format!(
                "backend {} keeps no host copy of the FFN matrices",
                backend.name()
            ))
        })
    };
    weights
        .layers
        .iter()
        .zip(&sc.layers)
        .zip(hot)
        .enumerate()
        .map(|(il, ((lw, sl), hot))| {
            Ok(LayerUpload {
                layer: il,
                kind: c.ffn,
                threshold: sl.threshold,
                predictor: sl.predictor.as_ref(),
                gate: lw.gate.as_ref().map(host).transpose()?,
                up: host(&lw.up)?,
                down: host(&lw.down)?,
                hot,
            })
        })
        .collect()
}
