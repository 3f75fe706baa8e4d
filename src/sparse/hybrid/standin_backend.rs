//! The stand-in device as a whole [`Backend`]: every operation is the CPU backend's, except
//! the sparse FFN, which goes through the hybrid schedule with the hot neurons on the
//! stand-in. A model on it runs the same code path as on the GPU (`attach_sparse`,
//! `sparse_ffn_rows`, per-sequence device scratch), checked on machines without one.

use std::sync::Arc;

use super::{sparse_ffn_rows, HostDevice, HostScratch, HybridDevice, LayerUpload};
use crate::backend::cpu::{CpuKvCache, CpuTensor, CpuWeight};
use crate::backend::{AttnParams, Backend, CpuBackend};
use crate::gguf::{GgufFile, TensorInfo};
use crate::model::{FfnKind, ModelError, RopeStyle};
use crate::quant::QMatrix;
use crate::sparse::{FfnMode, LayerThreshold, SparseLayer, SparseScratch};

const CPU: CpuBackend = CpuBackend {
    f32_activations: false,
};

impl Backend for HostDevice {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type KvCache = CpuKvCache;
    type DeviceScratch = Option<HostScratch>;

    fn name(&self) -> String {
        format!("hybrid stand-in on the {}", CPU.name())
    }

    fn load_weight(
        &self,
        file: &Arc<GgufFile>,
        info: &TensorInfo,
    ) -> Result<CpuWeight, ModelError> {
        CPU.load_weight(file, info)
    }
    fn load_vector(&self, data: &[f32]) -> CpuTensor {
        CPU.load_vector(data)
    }
    fn new_tensor(&self) -> CpuTensor {
        CPU.new_tensor()
    }
    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        head_dim: usize,
    ) -> CpuKvCache {
        CPU.new_kv_cache(n_layer, n_ctx, kv_dim, head_dim)
    }
    fn embed(&self, table: &CpuWeight, tokens: &[u32], scale: f32, out: &mut CpuTensor) {
        CPU.embed(table, tokens, scale, out)
    }
    fn matmul(&self, w: &CpuWeight, x: &CpuTensor, out: &mut CpuTensor) {
        CPU.matmul(w, x, out)
    }
    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32, out: &mut CpuTensor) {
        CPU.rms_norm(x, w, eps, out)
    }
    fn rms_norm_inplace(&self, x: &mut CpuTensor, w: &CpuTensor, eps: f32) {
        CPU.rms_norm_inplace(x, w, eps)
    }
    fn add_bias(&self, x: &mut CpuTensor, b: &CpuTensor) {
        CPU.add_bias(x, b)
    }
    fn add(&self, x: &mut CpuTensor, y: &CpuTensor) {
        CPU.add(x, y)
    }
    fn rope(
        &self,
        x: &mut CpuTensor,
        head_dim: usize,
        rope_dim: usize,
        pos0: usize,
        base: f32,
        style: RopeStyle,
    ) {
        CPU.rope(x, head_dim, rope_dim, pos0, base, style)
    }
    fn store_kv(
        &self,
        cache: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        k: &CpuTensor,
        v: &CpuTensor,
    ) {
        CPU.store_kv(cache, layer, pos0, k, v)
    }
    fn attention(
        &self,
        q: &CpuTensor,
        cache: &CpuKvCache,
        layer: usize,
        pos0: usize,
        p: AttnParams,
        out: &mut CpuTensor,
    ) {
        CPU.attention(q, cache, layer, pos0, p, out)
    }
    fn ffn_activation(&self, kind: FfnKind, gate: &CpuTensor, up: &mut CpuTensor) {
        CPU.ffn_activation(kind, gate, up)
    }
    fn copy_rows(&self, src: &CpuTensor, start: usize, n: usize, dst: &mut CpuTensor) {
        CPU.copy_rows(src, start, n, dst)
    }
    fn concat_rows(&self, parts: &[&CpuTensor], out: &mut CpuTensor) {
        CPU.concat_rows(parts, out)
    }
    fn rows(&self, x: &CpuTensor) -> usize {
        CPU.rows(x)
    }
    fn append_to_host(&self, x: &CpuTensor, out: &mut Vec<f32>) {
        CPU.append_to_host(x, out)
    }
    fn host_matrix<'a>(&self, w: &'a CpuWeight) -> Option<QMatrix<'a>> {
        CPU.host_matrix(w)
    }
    fn ffn_mask(
        &self,
        kind: FfnKind,
        th: LayerThreshold,
        gate: &CpuTensor,
        act: &mut CpuTensor,
    ) -> bool {
        CPU.ffn_mask(kind, th, gate, act)
    }

    fn attach_sparse(&mut self, layers: &[LayerUpload]) -> Result<(), ModelError> {
        let up = layers
            .iter()
            .map(|l| self.upload_layer(l))
            .collect::<Result<Vec<_>, _>>()?;
        self.layers = Some(Arc::new(up));
        Ok(())
    }

    fn sparse_ffn(
        &self,
        il: usize,
        layer: &SparseLayer,
        kind: FfnKind,
        gate: Option<&CpuWeight>,
        up: &CpuWeight,
        x: &CpuTensor,
        oracle: bool,
        scratch: &mut SparseScratch,
        dev: &mut Option<HostScratch>,
        out: &mut CpuTensor,
    ) -> bool {
        let layers = self.layers.as_deref().map(Vec::as_slice);
        sparse_ffn_rows(
            self, layers, il, layer, kind, gate, up, x, oracle, scratch, dev, out,
        )
    }

    fn runs_ffn_mode(&self, mode: &FfnMode) -> bool {
        matches!(mode, FfnMode::Dense | FfnMode::Masked(_)) || self.layers.is_some()
    }
}
