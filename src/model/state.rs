//! Per-sequence state: the KV cache and the scratch tensors of the forward pass.

use super::activations::Activations;
use crate::backend::Backend;
use crate::sparse::{FfnMode, SparseScratch};

/// Everything that changes while one sequence is decoded. Weights are shared between
/// states, so a server keeps one `State` per concurrent sequence.
pub struct State<B: Backend> {
    pub kv: B::KvCache,
    /// Number of positions already in the cache.
    pub pos: usize,
    pub n_ctx: usize,
    pub(crate) a: Activations<B>,
    pub(crate) last: B::Tensor,
    pub(crate) logits_dev: B::Tensor,
    /// Host copy of the logits of the last call (`rows × vocab`).
    pub logits: Vec<f32>,
    /// How this sequence evaluates its FFNs (dense unless a sidecar mode is chosen).
    pub ffn_mode: FfnMode,
    /// In the sparse modes, evaluate multi-token batches (prefill) sparsely too, row by row.
    /// Off by default: over a batch the union of active neurons is nearly all of them, so a
    /// prompt runs faster through the batched dense kernels with the exact active set.
    pub sparse_prefill: bool,
    pub sparse: SparseScratch,
    /// The backend's device-side buffers of the sparse FFN.
    pub(crate) sparse_dev: B::DeviceScratch,
}

impl<B: Backend> State<B> {
    pub fn new(backend: &B, n_layer: usize, n_ctx: usize, kv_dim: usize, head_dim: usize) -> Self {
        State {
            kv: backend.new_kv_cache(n_layer, n_ctx, kv_dim, head_dim),
            pos: 0,
            n_ctx,
            a: Activations::new(backend),
            last: backend.new_tensor(),
            logits_dev: backend.new_tensor(),
            logits: Vec::new(),
            ffn_mode: FfnMode::Dense,
            sparse_prefill: false,
            sparse: SparseScratch::default(),
            sparse_dev: B::DeviceScratch::default(),
        }
    }

    /// Forget the sequence (the cache is overwritten from position 0 on).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Drop cached positions from `pos` on, keeping the prefix (e.g. a shared prompt).
    pub fn truncate(&mut self, pos: usize) {
        self.pos = self.pos.min(pos);
    }
}
