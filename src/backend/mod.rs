//! Compute backends. The model's forward pass is written once against [`Backend`]; the CPU
//! implementation lives in `cpu`, the CUDA one in `cuda` (feature `cuda`).

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod layer_split;

use std::sync::Arc;

use crate::gguf::{GgufFile, TensorInfo};
use crate::model::{FfnKind, ModelError, RopeStyle};
use crate::quant::QMatrix;
use crate::sparse::hybrid::LayerUpload;
use crate::sparse::{LayerThreshold, SparseLayer, SparseScratch};

pub use cpu::CpuBackend;

/// Shape of an attention call; the same for every layer except `window` and the rope base.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub scale: f32,
    /// Keys further back than this many positions are masked (sliding-window layers).
    pub window: Option<usize>,
}

/// The operations a decoder-only transformer needs. Tensors are row-major matrices of f32
/// activations (`rows` tokens × `cols` features); outputs are resized by the callee so
/// that the caller can reuse buffers across calls without reallocating.
pub trait Backend: Send + Sync {
    /// Activations resident on the backend.
    type Tensor: Send + Sync;
    /// A (possibly quantised) weight matrix resident on the backend.
    type Weight: Send + Sync;
    /// Key and value cache of every layer for one sequence.
    type KvCache: Send;
    /// Per-sequence buffers of the backend's own sparse FFN (the hybrid FFN's device side).
    type DeviceScratch: Send + Default;

    fn name(&self) -> String;

    /// A weight matrix from the model file (`rows` = dims[1] output features, `cols` = dims[0]).
    fn load_weight(
        &self,
        file: &Arc<GgufFile>,
        info: &TensorInfo,
    ) -> Result<Self::Weight, ModelError>;
    /// A small f32 tensor (norm weights, biases) from host data, as a single row.
    fn load_vector(&self, data: &[f32]) -> Self::Tensor;
    fn new_tensor(&self) -> Self::Tensor;
    /// A cache of `n_ctx` positions per layer, `kv_dim` values a position, in heads of
    /// `head_dim` (the backend picks the layout).
    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        head_dim: usize,
    ) -> Self::KvCache;

    /// `out[i] = table.row(tokens[i]) * scale`.
    fn embed(&self, table: &Self::Weight, tokens: &[u32], scale: f32, out: &mut Self::Tensor);
    /// `out = x Wᵀ`: each row of x through the matrix.
    fn matmul(&self, w: &Self::Weight, x: &Self::Tensor, out: &mut Self::Tensor);
    /// `outs[i] = x Wᵢᵀ` for matrices that share the input (attention's q, k and v): one
    /// call so that a backend can run them as one parallel section. Each output is what
    /// [`Backend::matmul`] gives it.
    fn matmul_many(&self, ws: &[&Self::Weight], x: &Self::Tensor, outs: &mut [&mut Self::Tensor]) {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, out);
        }
    }
    /// RMS-normalise each length-`w.len()` segment of every row and multiply by `w` (covers
    /// both whole-row norms and gemma's per-head q/k norms).
    fn rms_norm(&self, x: &Self::Tensor, w: &Self::Tensor, eps: f32, out: &mut Self::Tensor);
    fn rms_norm_inplace(&self, x: &mut Self::Tensor, w: &Self::Tensor, eps: f32);
    /// Add a bias row to every row.
    fn add_bias(&self, x: &mut Self::Tensor, b: &Self::Tensor);
    /// `x += y`.
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor);
    /// Rotary embedding on every head of every row; row i is at position `pos0 + i`.
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Tensor,
        head_dim: usize,
        rope_dim: usize,
        pos0: usize,
        base: f32,
        style: RopeStyle,
    );
    /// Write the keys and values of rows `pos0..pos0+k.rows` of `layer`.
    fn store_kv(
        &self,
        cache: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        k: &Self::Tensor,
        v: &Self::Tensor,
    );
    /// Causal attention of `q` (rows at positions `pos0..`) over the cached keys and values
    /// of positions `0..pos0 + q.rows`.
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvCache,
        layer: usize,
        pos0: usize,
        p: AttnParams,
        out: &mut Self::Tensor,
    );
    /// The FFN non-linearity: `up = act(gate) * up` for gated kinds, `up = relu(up)` for
    /// the plain one (gate is then ignored).
    fn ffn_activation(&self, kind: FfnKind, gate: &Self::Tensor, up: &mut Self::Tensor);
    /// Copy rows `start..start+n` of `src` into `dst`.
    fn copy_rows(&self, src: &Self::Tensor, start: usize, n: usize, dst: &mut Self::Tensor);
    /// Stack the rows of `parts`, in order, into `out` (all parts have the same width).
    /// Used to batch the single-row results of several sequences.
    fn concat_rows(&self, parts: &[&Self::Tensor], out: &mut Self::Tensor);
    /// Number of rows of a tensor.
    fn rows(&self, x: &Self::Tensor) -> usize;
    /// Append a tensor's values to a host buffer (row-major).
    fn append_to_host(&self, x: &Self::Tensor, out: &mut Vec<f32>);

    /// The weight's bytes on the host in GGUF layout, when the backend keeps them there (the
    /// sparse FFN builds its neuron-major down matrix from it).
    fn host_matrix<'a>(&self, w: &'a Self::Weight) -> Option<QMatrix<'a>>;
    /// Zero the activations the layer's rule deems inactive (see `sparse::mask_activation`).
    /// Returns false when the backend cannot.
    fn ffn_mask(
        &self,
        kind: FfnKind,
        th: LayerThreshold,
        gate: &Self::Tensor,
        act: &mut Self::Tensor,
    ) -> bool;
    /// Called when a profile sidecar is attached to the model: a backend that runs the sparse
    /// FFN on a device puts each layer's predictor and hot neurons there (the CPU keeps
    /// everything on the host and takes nothing).
    fn attach_sparse(&mut self, _layers: &[LayerUpload]) -> Result<(), ModelError> {
        Ok(())
    }
    /// The sparse FFN of layer `il` over every row of `x` (see `sparse::SparseLayer`, the
    /// CPU's part of it); `out` receives the FFN output. Returns false when the backend has
    /// no sparse FFN.
    #[allow(clippy::too_many_arguments)]
    fn sparse_ffn(
        &self,
        il: usize,
        layer: &SparseLayer,
        kind: FfnKind,
        gate: Option<&Self::Weight>,
        up: &Self::Weight,
        x: &Self::Tensor,
        oracle: bool,
        scratch: &mut SparseScratch,
        dev: &mut Self::DeviceScratch,
        out: &mut Self::Tensor,
    ) -> bool;

    /// Can this backend evaluate FFNs in `mode`? Checked before a forward pass starts, so
    /// that the `ffn_mask`/`sparse_ffn` calls inside it cannot fail half-way.
    fn runs_ffn_mode(&self, _mode: &crate::sparse::FfnMode) -> bool {
        true
    }
}
