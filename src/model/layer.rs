//! The blocks of one decoder layer, written once for the single-sequence pass
//! ([`Model::forward`]) and the batched decoding step ([`Model::forward_multi`]): both run
//! these on their own [`Activations`], so every row gets the same arithmetic in either.

use super::activations::Activations;
use super::{FfnObserver, FfnTaps, LayerWeights, Model, ModelError, State};
use crate::backend::{AttnParams, Backend};
use crate::sparse::{FfnMode, LayerThreshold, SparseLayer, SparseScratch};

/// How one sequence's rows go through a layer's FFN.
#[derive(Clone, Copy)]
pub(super) enum FfnPlan<'m> {
    /// The dense kernels; with a threshold, the activations the rule deems inactive are then
    /// zeroed.
    Dense(Option<LayerThreshold>),
    /// The sparse executor, row by row.
    Sparse {
        layer: &'m SparseLayer,
        oracle: bool,
    },
}

impl<B: Backend> Model<B> {
    /// Whether this model can run sequences in `mode`: the sparse modes need an attached
    /// sidecar, a masked mode one threshold per layer.
    pub fn check_ffn_mode(&self, mode: &FfnMode) -> Result<(), ModelError> {
        if mode.needs_sidecar() && self.sparse.is_none() {
            return Err(ModelError::NoSidecar(mode.name()));
        }
        if !self.backend.runs_ffn_mode(mode) {
            return Err(ModelError::Unsupported {
                backend: self.backend.name(),
                what: format!("the {} FFN", mode.name()),
            });
        }
        if let FfnMode::Masked(th) = mode {
            if th.len() != self.config.n_layer {
                return Err(ModelError::Config(format!(
                    "{} thresholds for {} layers",
                    th.len(),
                    self.config.n_layer
                )));
            }
        }
        Ok(())
    }

    /// The FFN plan of layer `il` for `rows` rows of a sequence. The sparse modes run their
    /// multi-row batches (prefill) densely with the sidecar's mask, unless `sparse_prefill`:
    /// over many rows the union of active neurons is nearly all of them.
    pub(super) fn ffn_plan(&self, st: &State<B>, il: usize, rows: usize) -> FfnPlan<'_> {
        match (&st.ffn_mode, &self.sparse) {
            (FfnMode::Dense, _) => FfnPlan::Dense(None),
            (FfnMode::Masked(th), _) => FfnPlan::Dense(Some(th[il])),
            (FfnMode::Oracle | FfnMode::Predicted, Some(sp)) => {
                if rows == 1 || st.sparse_prefill {
                    FfnPlan::Sparse {
                        layer: &sp.layers[il],
                        oracle: st.ffn_mode == FfnMode::Oracle,
                    }
                } else {
                    FfnPlan::Dense(Some(sp.thresholds[il]))
                }
            }
            // Refused by `check_ffn_mode` before any layer runs.
            (FfnMode::Oracle | FfnMode::Predicted, None) => FfnPlan::Dense(None),
        }
    }

    /// Attention up to the per-sequence part: `h = norm(x)`, then queries, keys and values
    /// with their biases and per-head norms.
    pub(super) fn attn_qkv(&self, lw: &LayerWeights<B>, a: &mut Activations<B>) {
        let (b, c) = (&self.backend, &self.config);
        b.rms_norm(&a.x, &lw.attn_norm, c.rms_eps, &mut a.h);
        b.matmul_many(
            &[&lw.wq, &lw.wk, &lw.wv],
            &a.h,
            &mut [&mut a.q, &mut a.k, &mut a.v],
        );
        if let Some(bias) = &lw.bq {
            b.add_bias(&mut a.q, bias);
        }
        if let Some(bias) = &lw.bk {
            b.add_bias(&mut a.k, bias);
        }
        if let Some(bias) = &lw.bv {
            b.add_bias(&mut a.v, bias);
        }
        if let Some(n) = &lw.q_norm {
            b.rms_norm_inplace(&mut a.q, n, c.rms_eps);
        }
        if let Some(n) = &lw.k_norm {
            b.rms_norm_inplace(&mut a.k, n, c.rms_eps);
        }
    }

    /// One sequence's part of attention: rotary positions from `pos0` on, the cache write,
    /// and attention over its cache into `a.att`.
    pub(super) fn attend(
        &self,
        il: usize,
        pos0: usize,
        a: &mut Activations<B>,
        kv: &mut B::KvCache,
    ) {
        let (b, c) = (&self.backend, &self.config);
        let local = c.layer_local[il];
        let base = if local {
            c.rope_base_local
        } else {
            c.rope_base
        };
        b.rope(&mut a.q, c.head_dim, c.rope_dim, pos0, base, c.rope_style);
        b.rope(&mut a.k, c.head_dim, c.rope_dim, pos0, base, c.rope_style);
        b.store_kv(kv, il, pos0, &a.k, &a.v);
        let params = AttnParams {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            scale: c.attn_scale,
            window: if local { c.sliding_window } else { None },
        };
        b.attention(&a.q, kv, il, pos0, params, &mut a.att);
    }

    /// The attention output projection, its optional norm, and the residual add.
    pub(super) fn attn_out(&self, lw: &LayerWeights<B>, a: &mut Activations<B>) {
        let (b, c) = (&self.backend, &self.config);
        b.matmul(&lw.wo, &a.att, &mut a.o);
        if let Some(n) = &lw.post_attn_norm {
            b.rms_norm_inplace(&mut a.o, n, c.rms_eps);
        }
        b.add(&mut a.x, &a.o);
    }

    /// `h = norm(x)`, the FFN's input.
    pub(super) fn ffn_norm(&self, lw: &LayerWeights<B>, a: &mut Activations<B>) {
        self.backend
            .rms_norm(&a.x, &lw.ffn_norm, self.config.rms_eps, &mut a.h);
    }

    /// The FFN of the rows of `a.h` under `plan`, into `a.o`. `scratch` is the sequence's
    /// (only the sparse plan uses it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ffn(
        &self,
        il: usize,
        lw: &LayerWeights<B>,
        plan: FfnPlan<'_>,
        a: &mut Activations<B>,
        scratch: &mut SparseScratch,
        dev: &mut B::DeviceScratch,
        observer: Option<&mut (dyn FfnObserver + '_)>,
    ) {
        match plan {
            FfnPlan::Dense(mask) => self.ffn_dense(il, lw, mask, a, observer),
            FfnPlan::Sparse { layer, oracle } => {
                let (b, c) = (&self.backend, &self.config);
                let done = b.sparse_ffn(
                    il,
                    layer,
                    c.ffn,
                    lw.gate.as_ref(),
                    &lw.up,
                    &a.h,
                    oracle,
                    scratch,
                    dev,
                    &mut a.o,
                );
                assert!(done, "backend {} has no sparse FFN", b.name());
            }
        }
    }

    /// The dense FFN of the rows of `a.h` into `a.o`, masked by `mask` when given; shows its
    /// tensors to `observer`.
    pub(super) fn ffn_dense(
        &self,
        il: usize,
        lw: &LayerWeights<B>,
        mask: Option<LayerThreshold>,
        a: &mut Activations<B>,
        observer: Option<&mut (dyn FfnObserver + '_)>,
    ) {
        let (b, c) = (&self.backend, &self.config);
        b.matmul(&lw.up, &a.h, &mut a.up);
        if let Some(gate) = &lw.gate {
            b.matmul(gate, &a.h, &mut a.gate);
        }
        let taps = observer.is_some().then(|| {
            let mut t = TapBuffers::default();
            b.append_to_host(&a.h, &mut t.input);
            if lw.gate.is_some() {
                b.append_to_host(&a.gate, &mut t.gate);
            }
            b.append_to_host(&a.up, &mut t.up);
            t
        });
        b.ffn_activation(c.ffn, &a.gate, &mut a.up);
        if let Some(th) = mask {
            let done = b.ffn_mask(c.ffn, th, &a.gate, &mut a.up);
            assert!(done, "backend {} cannot mask activations", b.name());
        }
        if let (Some(obs), Some(mut t)) = (observer, taps) {
            b.append_to_host(&a.up, &mut t.act);
            obs.observe(
                il,
                b.rows(&a.h),
                FfnTaps {
                    input: &t.input,
                    gate: &t.gate,
                    up: &t.up,
                    act: &t.act,
                },
            );
        }
        b.matmul(&lw.down, &a.up, &mut a.o);
    }

    /// The FFN output's optional norm and the residual add.
    pub(super) fn ffn_residual(&self, lw: &LayerWeights<B>, a: &mut Activations<B>) {
        let b = &self.backend;
        if let Some(n) = &lw.post_ffn_norm {
            b.rms_norm_inplace(&mut a.o, n, self.config.rms_eps);
        }
        b.add(&mut a.x, &a.o);
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
