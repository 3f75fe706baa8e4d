//! The CPU backend: quantised SIMD matmuls from `quant`, rayon over rows and heads.

mod attention;
pub mod ops;
mod tensor;
mod weight;

use std::sync::Arc;

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};

pub use attention::attention;
pub use tensor::CpuTensor;
pub use weight::CpuWeight;

use super::{AttnParams, Backend};
use crate::gguf::{GgufFile, TensorInfo};
use crate::model::{FfnKind, ModelError, RopeStyle};
use crate::quant;
use crate::sparse::{self, LayerThreshold, SparseLayer, SparseScratch};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    /// Keep matmul inputs in f32 instead of quantising them to 8 bits first. Slower; used to
    /// check the forward pass against an f32 reference without the activation rounding.
    pub f32_activations: bool,
}

impl CpuBackend {
    pub fn new() -> CpuBackend {
        CpuBackend::default()
    }

    /// The reference-precision variant (see `f32_activations`).
    pub fn with_f32_activations() -> CpuBackend {
        CpuBackend {
            f32_activations: true,
        }
    }
}

/// `out = x Wᵀ` with every weight row dequantised and dotted in f32.
fn matmul_f32(w: &CpuWeight, x: &CpuTensor, out: &mut CpuTensor) {
    let m = w.qmatrix();
    crate::parallel::for_chunks_mut(&mut out.data, w.rows, |i, o| {
        let xi = &x.data[i * w.cols..(i + 1) * w.cols];
        let mut row = vec![0f32; w.cols];
        for (r, y) in o.iter_mut().enumerate() {
            quant::dequantize_row(m.ty, m.row(r), &mut row).expect("weight type checked at load");
            *y = ops::dot(&row, xi);
        }
    });
}

/// Keys and values of all layers: `[layer][kv head][position][head_dim]` in f16,
/// preallocated for the context (the pages are only touched, and so only resident, as
/// positions fill up).
///
/// Why head-major: attention reads one KV head's keys and values over all positions; here
/// they are one contiguous run each, which the hardware prefetcher follows, where
/// position-major they were 128-byte pieces 1 KiB apart (1B-class model), each a miss of its
/// own (a layer's cache is read once a token, with the weights of every layer read since).
pub struct CpuKvCache {
    // Stored as raw f16 bits: `vec![0u16; n]` is a zeroed allocation the OS maps lazily.
    k: Vec<u16>,
    v: Vec<u16>,
    n_ctx: usize,
    kv_dim: usize,
    head_dim: usize,
}

impl CpuKvCache {
    fn head_range(&self, layer: usize, head: usize) -> std::ops::Range<usize> {
        let n = self.n_ctx * self.head_dim;
        let at = (layer * (self.kv_dim / self.head_dim) + head) * n;
        at..at + n
    }
    /// The keys of KV head `head` of `layer`: `n_ctx` positions of `head_dim`.
    pub fn head_k(&self, layer: usize, head: usize) -> &[f16] {
        self.k[self.head_range(layer, head)].reinterpret_cast()
    }
    /// The values of KV head `head` of `layer`, as [`CpuKvCache::head_k`].
    pub fn head_v(&self, layer: usize, head: usize) -> &[f16] {
        self.v[self.head_range(layer, head)].reinterpret_cast()
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
}

/// Rows per rayon task for the cheap row-wise kernels: below this, threads cost more than
/// they save.
const ROWS_PER_TASK: usize = 8;

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type KvCache = CpuKvCache;
    type DeviceScratch = ();

    fn name(&self) -> String {
        format!("cpu ({} threads)", crate::parallel::threads())
    }

    fn load_weight(
        &self,
        file: &Arc<GgufFile>,
        info: &TensorInfo,
    ) -> Result<CpuWeight, ModelError> {
        if info.dims.len() > 2 {
            return Err(ModelError::BadTensor {
                name: info.name.clone(),
                msg: format!("expected a matrix, found shape {:?}", info.dims),
            });
        }
        Ok(CpuWeight::new(
            file.clone(),
            info.ty,
            info.n_rows(),
            info.row_len(),
            file.data_offset + info.offset as usize,
        ))
    }

    fn load_vector(&self, data: &[f32]) -> CpuTensor {
        CpuTensor::from_vec(data.to_vec(), 1, data.len())
    }

    fn new_tensor(&self) -> CpuTensor {
        CpuTensor::default()
    }

    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        head_dim: usize,
    ) -> CpuKvCache {
        assert!(
            head_dim > 0 && kv_dim.is_multiple_of(head_dim),
            "KV cache: {kv_dim} values a position is not a whole number of {head_dim}-wide heads"
        );
        CpuKvCache {
            k: vec![0u16; n_layer * n_ctx * kv_dim],
            v: vec![0u16; n_layer * n_ctx * kv_dim],
            n_ctx,
            kv_dim,
            head_dim,
        }
    }

    fn embed(&self, table: &CpuWeight, tokens: &[u32], scale: f32, out: &mut CpuTensor) {
        out.resize(tokens.len(), table.cols);
        let m = table.qmatrix();
        for (i, &t) in tokens.iter().enumerate() {
            let row = out.row_mut(i);
            quant::dequantize_row(m.ty, m.row(t as usize), row)
                .expect("embedding type checked at load");
            if scale != 1.0 {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
    }

    fn matmul(&self, w: &CpuWeight, x: &CpuTensor, out: &mut CpuTensor) {
        assert_eq!(x.cols, w.cols, "matmul input width");
        out.resize(x.rows, w.rows);
        if self.f32_activations {
            return matmul_f32(w, x, out);
        }
        let m = w.qmatrix();
        if x.rows == 1 {
            quant::matvec(&m, &x.data, &mut out.data);
        } else {
            quant::matmul(&m, &x.data, &mut out.data);
        }
    }

    /// One decode row through matrices of one type and width: one parallel section
    /// (`quant::matvec_many`); anything else as separate products.
    fn matmul_many(&self, ws: &[&CpuWeight], x: &CpuTensor, outs: &mut [&mut CpuTensor]) {
        let fused = x.rows == 1
            && !self.f32_activations
            && ws.len() == outs.len()
            && ws.len() <= quant::MATVEC_MANY_MAX
            && ws
                .iter()
                .all(|w| w.ty == ws[0].ty && w.cols == ws[0].cols && w.cols == x.cols);
        if !fused {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.matmul(w, x, out);
            }
            return;
        }
        // Fixed-size arrays, so that decoding does not allocate.
        let n = ws.len();
        let ms: [quant::QMatrix; quant::MATVEC_MANY_MAX] =
            std::array::from_fn(|i| ws[i.min(n - 1)].qmatrix());
        let mut outs = outs.iter_mut().zip(ws).map(|(o, w)| {
            o.resize(1, w.rows);
            &mut o.data[..]
        });
        let mut ys: [&mut [f32]; quant::MATVEC_MANY_MAX] =
            std::array::from_fn(|_| outs.next().unwrap_or_default());
        quant::matvec_many(&ms[..n], &x.data, &mut ys[..n]);
    }

    fn rms_norm(&self, x: &CpuTensor, w: &CpuTensor, eps: f32, out: &mut CpuTensor) {
        out.resize(x.rows, x.cols);
        let seg = w.cols;
        let norm_rows = |o: &mut [f32], xi: &[f32]| {
            for (os, xs) in o.chunks_exact_mut(seg).zip(xi.chunks_exact(seg)) {
                ops::rms_norm(xs, &w.data, eps, os);
            }
        };
        if x.rows < ROWS_PER_TASK {
            norm_rows(&mut out.data, &x.data);
        } else {
            let chunk = x.cols * ROWS_PER_TASK;
            crate::parallel::for_chunks_mut(&mut out.data, chunk, |i, o| {
                norm_rows(o, &x.data[i * chunk..i * chunk + o.len()])
            });
        }
    }

    fn rms_norm_inplace(&self, x: &mut CpuTensor, w: &CpuTensor, eps: f32) {
        for s in x.data.chunks_exact_mut(w.cols) {
            ops::rms_norm_inplace(s, &w.data, eps);
        }
    }

    fn add_bias(&self, x: &mut CpuTensor, b: &CpuTensor) {
        for r in x.data.chunks_exact_mut(b.cols) {
            r.iter_mut().zip(&b.data).for_each(|(v, &bb)| *v += bb);
        }
    }

    fn add(&self, x: &mut CpuTensor, y: &CpuTensor) {
        assert_eq!(x.data.len(), y.data.len());
        x.data.iter_mut().zip(&y.data).for_each(|(a, &b)| *a += b);
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
        let cols = x.cols;
        let f = |(i, row): (usize, &mut [f32])| {
            ops::rope(row, head_dim, rope_dim, pos0 + i, base, style)
        };
        if x.rows < ROWS_PER_TASK {
            x.data.chunks_mut(cols).enumerate().for_each(f);
        } else {
            crate::parallel::for_chunks_mut(&mut x.data, cols, |i, row| f((i, row)));
        }
    }

    fn store_kv(
        &self,
        cache: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        k: &CpuTensor,
        v: &CpuTensor,
    ) {
        let (d, hd) = (cache.kv_dim, cache.head_dim);
        assert!(pos0 + k.rows <= cache.n_ctx && k.cols == d && v.cols == d);
        for head in 0..d / hd {
            let r = cache.head_range(layer, head);
            let at = r.start + pos0 * hd;
            let kc: &mut [f16] = cache.k[at..at + k.rows * hd].reinterpret_cast_mut();
            let vc: &mut [f16] = cache.v[at..at + k.rows * hd].reinterpret_cast_mut();
            for (i, (kc, vc)) in kc
                .chunks_exact_mut(hd)
                .zip(vc.chunks_exact_mut(hd))
                .enumerate()
            {
                let src = i * d + head * hd..i * d + (head + 1) * hd;
                kc.convert_from_f32_slice(&k.data[src.clone()]);
                vc.convert_from_f32_slice(&v.data[src]);
            }
        }
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
        attention::attention(q, cache, layer, pos0, p, out)
    }

    fn ffn_activation(&self, kind: FfnKind, gate: &CpuTensor, up: &mut CpuTensor) {
        let cols = up.cols;
        let gate: &[f32] = if kind.is_gated() { &gate.data } else { &[] };
        let f = |(i, u): (usize, &mut [f32])| {
            let g = gate.get(i * cols..(i + 1) * cols).unwrap_or(&[]);
            ops::ffn_activation(kind, g, u)
        };
        if up.rows < ROWS_PER_TASK {
            up.data.chunks_mut(cols).enumerate().for_each(f);
        } else {
            crate::parallel::for_chunks_mut(&mut up.data, cols, |i, row| f((i, row)));
        }
    }

    fn copy_rows(&self, src: &CpuTensor, start: usize, n: usize, dst: &mut CpuTensor) {
        dst.resize(n, src.cols);
        dst.data
            .copy_from_slice(&src.data[start * src.cols..(start + n) * src.cols]);
    }

    fn concat_rows(&self, parts: &[&CpuTensor], out: &mut CpuTensor) {
        let cols = parts.first().map_or(0, |p| p.cols);
        out.data.clear();
        let mut rows = 0;
        for p in parts {
            assert_eq!(p.cols, cols, "concat_rows widths");
            out.data.extend_from_slice(&p.data);
            rows += p.rows;
        }
        out.rows = rows;
        out.cols = cols;
    }

    fn rows(&self, x: &CpuTensor) -> usize {
        x.rows
    }

    fn append_to_host(&self, x: &CpuTensor, out: &mut Vec<f32>) {
        out.extend_from_slice(&x.data);
    }

    fn host_matrix<'a>(&self, w: &'a CpuWeight) -> Option<quant::QMatrix<'a>> {
        Some(w.qmatrix())
    }

    fn ffn_mask(
        &self,
        kind: FfnKind,
        th: LayerThreshold,
        gate: &CpuTensor,
        act: &mut CpuTensor,
    ) -> bool {
        sparse::mask_activation(kind, th, &gate.data, &mut act.data);
        true
    }

    fn sparse_ffn(
        &self,
        _il: usize,
        layer: &SparseLayer,
        kind: FfnKind,
        gate: Option<&CpuWeight>,
        up: &CpuWeight,
        x: &CpuTensor,
        oracle: bool,
        scratch: &mut SparseScratch,
        _dev: &mut (),
        out: &mut CpuTensor,
    ) -> bool {
        let w = sparse::FfnWeights {
            gate: gate.map(|g| g.qmatrix()),
            up: up.qmatrix(),
        };
        let d = layer.down.d_model;
        out.resize(x.rows, d);
        for (xr, o) in x
            .data
            .chunks_exact(x.cols)
            .zip(out.data.chunks_exact_mut(d))
        {
            layer.forward_row(kind, &w, xr, oracle, self.f32_activations, scratch, o);
        }
        true
    }
}
