//! [`Backend`] on one GPU: weights, activations and the KV cache live in VRAM; every
//! operation is one kernel launch (or a copy) on a single stream.

use std::sync::{Arc, Mutex};

use cudarc::driver::CudaSlice;
use half::f16;

use super::device::{blocks, Arg, Gpu};
use super::weight::kernel_suffix;
use super::{CudaError, CudaTensor, CudaWeight};
use super::{CudaHybridLayer, CudaHybridScratch};
use crate::backend::cpu::CpuWeight;
use crate::backend::{AttnParams, Backend};
use crate::gguf::{GgufFile, TensorInfo};
use crate::model::{FfnKind, ModelError, RopeStyle};
use crate::quant::{self, GgmlType, QMatrix};
use crate::sparse::hybrid::{self, HybridDevice, LayerUpload};
use crate::sparse::{FfnMode, LayerThreshold, SparseLayer, SparseScratch, SparsityRule};

/// Kernel code of a sparsity rule (the RULE_* constants of cuda/elementwise.cu).
pub(crate) fn rule_code(rule: SparsityRule) -> i32 {
    match rule {
        SparsityRule::Relu => 0,
        SparsityRule::Gate => 1,
        SparsityRule::Product => 2,
    }
}

/// Threads per block of the element-wise kernels.
const EW_THREADS: usize = 256;
/// Warps per block of the row kernels (MM_WARPS, PRED_WARPS, SP_WARPS in cuda/).
pub(crate) const ROW_WARPS: usize = 4;
/// Tokens per block of the prefill matmul (MM_TILE in cuda/matmul.cu).
const MM_TILE: usize = 8;
/// Largest head the attention kernel holds in registers (32 * ATT_DIMS).
pub const MAX_HEAD_DIM: usize = 256;

/// Kernel code of an FFN kind (the FFN_* constants of cuda/common.cuh).
pub(crate) fn ffn_kind_code(kind: FfnKind) -> i32 {
    match kind {
        FfnKind::SwiGlu => 0,
        FfnKind::GeGlu => 1,
        FfnKind::ReGlu => 2,
        FfnKind::DReLU => 3,
        FfnKind::Relu => 4,
    }
}

#[derive(Clone)]
pub struct CudaBackend {
    pub(crate) gpu: Arc<Gpu>,
    /// Token ids of the current `embed` call.
    tokens: Arc<Mutex<Option<CudaSlice<u32>>>>,
    /// Every layer's predictor and hot neurons, once a sidecar is attached.
    hybrid: Option<Arc<Vec<CudaHybridLayer>>>,
    /// Layer split: the weights of layers from this one on stay on the host.
    pub(crate) host_layers_from: Option<usize>,
    /// Hybrid FFN under a VRAM budget: the dense FFN matrices stay on the host (only the
    /// hot neurons' copies go to VRAM, at `attach_sparse`).
    pub(crate) ffn_on_host: bool,
}

/// Keys and values of all layers, `[layer][position][kv_dim]` in f16, in VRAM.
pub struct CudaKvCache {
    pub(crate) k: CudaSlice<u16>,
    pub(crate) v: CudaSlice<u16>,
    pub n_ctx: usize,
    pub kv_dim: usize,
}

impl CudaBackend {
    /// The GPU `ordinal`, with every kernel loaded. Fails, saying what is missing, when there
    /// is no driver, no NVRTC or no device; never panics for that.
    pub fn new(ordinal: usize) -> Result<CudaBackend, CudaError> {
        Ok(CudaBackend {
            gpu: Arc::new(Gpu::open(ordinal)?),
            tokens: Arc::new(Mutex::new(None)),
            hybrid: None,
            host_layers_from: None,
            ffn_on_host: false,
        })
    }

    /// The architecture the kernels were compiled for, e.g. "sm_90".
    pub fn arch(&self) -> &str {
        &self.gpu.arch
    }

    /// A tensor holding host data.
    pub fn upload(&self, data: &[f32], rows: usize, cols: usize) -> CudaTensor {
        assert_eq!(data.len(), rows * cols, "upload shape");
        CudaTensor {
            buf: Some(self.gpu.upload(data)),
            rows,
            cols,
        }
    }

    /// A tensor's values on the host (row-major).
    pub fn download(&self, x: &CudaTensor) -> Vec<f32> {
        if x.is_empty() {
            return Vec::new();
        }
        self.gpu.download(x.buf(), x.len())
    }

    /// A weight matrix from host bytes in `ty`'s block format (`rows` rows of `cols`).
    /// Formats without kernels are converted: BF16 to F32, the others to F16.
    pub fn upload_weight(
        &self,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<CudaWeight, CudaError> {
        let row_bytes = ty.row_bytes(cols).ok_or_else(|| {
            CudaError::Unsupported(format!("{cols} columns are not whole {ty} blocks"))
        })?;
        if bytes.len() < rows * row_bytes {
            return Err(CudaError::Unsupported(format!(
                "weight of {rows}x{cols} {ty} needs {} bytes, got {}",
                rows * row_bytes,
                bytes.len()
            )));
        }
        let bytes = &bytes[..rows * row_bytes];
        if kernel_suffix(ty).is_some() {
            return Ok(CudaWeight {
                ty,
                rows,
                cols,
                row_bytes,
                data: self.gpu.upload(bytes),
                host: None,
                host_only: false,
            });
        }
        let to = if ty == GgmlType::BF16 {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        let mut row = vec![0f32; cols];
        let mut out = Vec::with_capacity(rows * cols * if to == GgmlType::F32 { 4 } else { 2 });
        for r in bytes.chunks_exact(row_bytes) {
            quant::dequantize_row(ty, r, &mut row)
                .map_err(|e| CudaError::Unsupported(e.to_string()))?;
            for &v in &row {
                if to == GgmlType::F32 {
                    out.extend_from_slice(&v.to_le_bytes());
                } else {
                    out.extend_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
                }
            }
        }
        Ok(CudaWeight {
            ty: to,
            rows,
            cols,
            row_bytes: to.row_bytes(cols).expect("float rows"),
            data: self.gpu.upload(&out),
            host: None,
            host_only: false,
        })
    }

    /// Make `t` a `rows × cols` tensor, growing its buffer when needed (contents undefined).
    pub(crate) fn resize(&self, t: &mut CudaTensor, rows: usize, cols: usize) {
        let need = rows * cols;
        if t.buf.as_ref().is_none_or(|b| b.len() < need) {
            t.buf = Some(self.gpu.alloc(need));
        }
        t.rows = rows;
        t.cols = cols;
    }

    pub(crate) fn ptr(&self, t: &CudaTensor) -> u64 {
        self.gpu.ptr(t.buf())
    }

    /// Element-wise kernel over `n` values.
    fn elementwise(&self, kernel: &str, n: usize, args: &[Arg]) {
        self.gpu
            .launch(kernel, (blocks(n, EW_THREADS), 1), EW_THREADS as u32, args);
    }

    /// Numerically stable softmax of every row, in place (for sampling on the GPU).
    pub fn softmax(&self, x: &mut CudaTensor) {
        let (rows, cols) = (x.rows, x.cols);
        let p = self.ptr(x);
        self.gpu.launch(
            "softmax",
            (rows as u32, 1),
            256,
            &[Arg::Ptr(p), Arg::I32(cols as i32)],
        );
    }

    /// Hot neurons per layer in VRAM, once a sidecar is attached.
    pub fn hot_counts(&self) -> Option<Vec<usize>> {
        self.hybrid
            .as_ref()
            .map(|h| h.iter().map(CudaHybridLayer::n_hot).collect())
    }

    /// `y += cold`: the CPU's partial FFN result of the cold neurons, merged into the GPU's.
    pub fn merge_cold(&self, y: &mut CudaTensor, cold: &[f32], scratch: &mut CudaTensor) {
        assert_eq!(cold.len(), y.len(), "cold partial length");
        self.resize(scratch, y.rows, y.cols);
        self.gpu.upload_into(cold, scratch.buf_mut());
        self.add(y, scratch);
    }

    /// Both halves of one layer's cache on the host, as f16 bits (tests).
    pub fn kv_to_host(&self, cache: &CudaKvCache, layer: usize) -> (Vec<u16>, Vec<u16>) {
        let n = cache.n_ctx * cache.kv_dim;
        let (k, v) = (
            self.gpu.download(&cache.k, (layer + 1) * n),
            self.gpu.download(&cache.v, (layer + 1) * n),
        );
        (k[layer * n..].to_vec(), v[layer * n..].to_vec())
    }

    fn matmul_launch(&self, w: &CudaWeight, x: &CudaTensor, out: &mut CudaTensor) {
        let n_tok = x.rows;
        self.resize(out, n_tok, w.rows);
        let (kernel, tile) = if n_tok == 1 {
            (format!("matvec_{}", w.suffix()), 1)
        } else {
            (format!("matmul_{}", w.suffix()), MM_TILE)
        };
        let args = [
            Arg::Ptr(self.gpu.ptr(&w.data)),
            Arg::U64(w.row_bytes as u64),
            Arg::I32(w.rows as i32),
            Arg::I32(w.cols as i32),
            Arg::Ptr(self.ptr(x)),
            Arg::Ptr(self.ptr(out)),
            Arg::I32(n_tok as i32),
        ];
        self.gpu.launch(
            &kernel,
            (blocks(w.rows, ROW_WARPS), blocks(n_tok, tile)),
            (32 * ROW_WARPS) as u32,
            &args,
        );
    }
}

impl Backend for CudaBackend {
    /// Dense and masked FFNs run on the GPU; the sparse modes once a sidecar has put the
    /// predictors and hot neurons there (`attach_sparse`).
    fn runs_ffn_mode(&self, mode: &FfnMode) -> bool {
        matches!(mode, FfnMode::Dense | FfnMode::Masked(_)) || self.hybrid.is_some()
    }

    type Tensor = CudaTensor;
    type Weight = CudaWeight;
    type KvCache = CudaKvCache;
    type DeviceScratch = Option<CudaHybridScratch>;

    /// The device, and where the weights are when not all in VRAM (for bench tables).
    fn name(&self) -> String {
        let mut s = format!("cuda ({}, {})", self.gpu.device_name, self.gpu.arch);
        if let Some(n) = self.host_layers_from {
            s += &format!(", weights of layers 0..{n} in VRAM, the rest on the CPU");
        }
        if self.ffn_on_host {
            s += ", dense FFN matrices on the CPU";
        }
        if let Some(h) = &self.hybrid {
            let hot: usize = h.iter().map(CudaHybridLayer::n_hot).sum();
            let all: usize = h.iter().map(|l| l.n_hot() + l.n_cold()).sum();
            s += &format!(", hybrid FFN: {hot} of {all} neurons in VRAM");
        }
        s
    }

    fn load_weight(
        &self,
        file: &Arc<GgufFile>,
        info: &TensorInfo,
    ) -> Result<CudaWeight, ModelError> {
        if info.dims.len() > 2 {
            return Err(ModelError::BadTensor {
                name: info.name.clone(),
                msg: format!("expected a matrix, found shape {:?}", info.dims),
            });
        }
        let (rows, cols) = (info.n_rows(), info.row_len());
        let host = CpuWeight::new(
            file.clone(),
            info.ty,
            rows,
            cols,
            file.data_offset + info.offset as usize,
        );
        if self.keeps_on_host(&info.name) {
            return Ok(self.host_weight(host));
        }
        let view = file.view(info);
        let mut w = self
            .upload_weight(info.ty, rows, cols, view.data)
            .map_err(|e| ModelError::BadTensor {
                name: info.name.clone(),
                msg: e.to_string(),
            })?;
        // The file stays mapped anyway (the tokenizer and sidecar checks read it): keeping
        // a reference costs nothing and lets the CPU read the weight's original bytes.
        w.host = Some(host);
        Ok(w)
    }

    fn load_vector(&self, data: &[f32]) -> CudaTensor {
        self.upload(data, 1, data.len())
    }

    fn new_tensor(&self) -> CudaTensor {
        CudaTensor::default()
    }

    fn new_kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        kv_dim: usize,
        _head_dim: usize,
    ) -> CudaKvCache {
        let n = n_layer * n_ctx * kv_dim;
        CudaKvCache {
            k: self.gpu.alloc(n),
            v: self.gpu.alloc(n),
            n_ctx,
            kv_dim,
        }
    }

    fn embed(&self, table: &CudaWeight, tokens: &[u32], scale: f32, out: &mut CudaTensor) {
        self.resize(out, tokens.len(), table.cols);
        let mut slot = self.tokens.lock().expect("token buffer lock");
        if slot.as_ref().is_none_or(|b| b.len() < tokens.len()) {
            *slot = Some(self.gpu.alloc(tokens.len().next_power_of_two()));
        }
        let buf = slot.as_mut().expect("allocated above");
        self.gpu.upload_into(tokens, buf);
        let chunks = table.cols.div_ceil(32);
        let args = [
            Arg::Ptr(self.gpu.ptr(&table.data)),
            Arg::U64(table.row_bytes as u64),
            Arg::I32(table.rows as i32),
            Arg::I32(table.cols as i32),
            Arg::Ptr(self.gpu.ptr(buf)),
            Arg::F32(scale),
            Arg::Ptr(self.ptr(out)),
        ];
        self.gpu.launch(
            &format!("embed_{}", table.suffix()),
            (tokens.len() as u32, blocks(chunks, 128)),
            128,
            &args,
        );
    }

    fn matmul(&self, w: &CudaWeight, x: &CudaTensor, out: &mut CudaTensor) {
        assert_eq!(x.cols, w.cols, "matmul input width");
        if w.host_only {
            self.host_matmul(w, x, out);
            return;
        }
        self.matmul_launch(w, x, out);
    }

    fn rms_norm(&self, x: &CudaTensor, w: &CudaTensor, eps: f32, out: &mut CudaTensor) {
        self.resize(out, x.rows, x.cols);
        let seg = w.cols;
        let args = [
            Arg::Ptr(self.ptr(x)),
            Arg::Ptr(self.ptr(w)),
            Arg::Ptr(self.ptr(out)),
            Arg::I32(seg as i32),
            Arg::F32(eps),
        ];
        self.gpu
            .launch("rms_norm", ((x.len() / seg) as u32, 1), 256, &args);
    }

    fn rms_norm_inplace(&self, x: &mut CudaTensor, w: &CudaTensor, eps: f32) {
        let seg = w.cols;
        let p = self.ptr(x);
        let args = [
            Arg::Ptr(p),
            Arg::Ptr(self.ptr(w)),
            Arg::Ptr(p),
            Arg::I32(seg as i32),
            Arg::F32(eps),
        ];
        self.gpu
            .launch("rms_norm", ((x.len() / seg) as u32, 1), 256, &args);
    }

    fn add_bias(&self, x: &mut CudaTensor, b: &CudaTensor) {
        let n = x.len();
        let args = [
            Arg::Ptr(self.ptr(x)),
            Arg::Ptr(self.ptr(b)),
            Arg::U64(n as u64),
            Arg::I32(b.cols as i32),
        ];
        self.elementwise("add_bias", n, &args);
    }

    fn add(&self, x: &mut CudaTensor, y: &CudaTensor) {
        assert_eq!(x.len(), y.len(), "add shapes");
        let n = x.len();
        let args = [
            Arg::Ptr(self.ptr(x)),
            Arg::Ptr(self.ptr(y)),
            Arg::U64(n as u64),
        ];
        self.elementwise("add", n, &args);
    }

    fn rope(
        &self,
        x: &mut CudaTensor,
        head_dim: usize,
        rope_dim: usize,
        pos0: usize,
        base: f32,
        style: RopeStyle,
    ) {
        let n = x.rows * (x.cols / head_dim) * (rope_dim / 2);
        let args = [
            Arg::Ptr(self.ptr(x)),
            Arg::I32(x.rows as i32),
            Arg::I32(x.cols as i32),
            Arg::I32(head_dim as i32),
            Arg::I32(rope_dim as i32),
            Arg::I32(pos0 as i32),
            Arg::F32(base),
            Arg::I32(matches!(style, RopeStyle::Neox) as i32),
        ];
        self.elementwise("rope", n, &args);
    }

    fn store_kv(
        &self,
        cache: &mut CudaKvCache,
        layer: usize,
        pos0: usize,
        k: &CudaTensor,
        v: &CudaTensor,
    ) {
        assert_eq!(k.cols, cache.kv_dim, "key width");
        assert!(pos0 + k.rows <= cache.n_ctx, "KV cache overflow");
        let at = ((layer * cache.n_ctx + pos0) * cache.kv_dim * 2) as u64;
        let n = k.len();
        let args = [
            Arg::Ptr(self.ptr(k)),
            Arg::Ptr(self.ptr(v)),
            Arg::Ptr(self.gpu.ptr(&cache.k) + at),
            Arg::Ptr(self.gpu.ptr(&cache.v) + at),
            Arg::U64(n as u64),
        ];
        self.elementwise("store_kv", n, &args);
    }

    fn attention(
        &self,
        q: &CudaTensor,
        cache: &CudaKvCache,
        layer: usize,
        pos0: usize,
        p: AttnParams,
        out: &mut CudaTensor,
    ) {
        assert!(
            p.head_dim <= MAX_HEAD_DIM,
            "head_dim {} exceeds the CUDA attention kernel's {MAX_HEAD_DIM}",
            p.head_dim
        );
        self.resize(out, q.rows, p.n_head * p.head_dim);
        let at = (layer * cache.n_ctx * cache.kv_dim * 2) as u64;
        let args = [
            Arg::Ptr(self.ptr(q)),
            Arg::Ptr(self.gpu.ptr(&cache.k) + at),
            Arg::Ptr(self.gpu.ptr(&cache.v) + at),
            Arg::Ptr(self.ptr(out)),
            Arg::I32(pos0 as i32),
            Arg::I32(p.n_head as i32),
            Arg::I32(p.n_head_kv as i32),
            Arg::I32(p.head_dim as i32),
            Arg::F32(p.scale),
            Arg::I32(p.window.map_or(0, |w| w as i32)),
        ];
        self.gpu
            .launch("attention", ((q.rows * p.n_head) as u32, 1), 128, &args);
    }

    fn ffn_activation(&self, kind: FfnKind, gate: &CudaTensor, up: &mut CudaTensor) {
        let n = up.len();
        let g = if kind.is_gated() { self.ptr(gate) } else { 0 };
        let args = [
            Arg::Ptr(g),
            Arg::Ptr(self.ptr(up)),
            Arg::U64(n as u64),
            Arg::I32(ffn_kind_code(kind)),
        ];
        self.elementwise("ffn_activation", n, &args);
    }

    fn copy_rows(&self, src: &CudaTensor, start: usize, n: usize, dst: &mut CudaTensor) {
        self.resize(dst, n, src.cols);
        let c = src.cols;
        self.gpu.copy(src.buf(), start * c, dst.buf_mut(), 0, n * c);
    }

    fn rows(&self, x: &CudaTensor) -> usize {
        x.rows
    }

    fn append_to_host(&self, x: &CudaTensor, out: &mut Vec<f32>) {
        out.extend_from_slice(&self.download(x));
    }

    fn concat_rows(&self, parts: &[&CudaTensor], out: &mut CudaTensor) {
        let cols = parts.first().map_or(0, |p| p.cols);
        let rows = parts
            .iter()
            .map(|p| {
                assert_eq!(p.cols, cols, "concat_rows widths");
                p.rows
            })
            .sum();
        self.resize(out, rows, cols);
        let mut at = 0;
        for p in parts.iter().filter(|p| !p.is_empty()) {
            self.gpu.copy(p.buf(), 0, out.buf_mut(), at, p.len());
            at += p.len();
        }
    }

    fn host_matrix<'a>(&self, w: &'a CudaWeight) -> Option<QMatrix<'a>> {
        w.host_matrix()
    }

    /// A kernel (`ffn_mask`, twin `sparse::mask_activation`), in place on the GPU.
    fn ffn_mask(
        &self,
        kind: FfnKind,
        th: LayerThreshold,
        gate: &CudaTensor,
        act: &mut CudaTensor,
    ) -> bool {
        // relu: exact zeros already. gate without a gate tensor: the CPU rule skips nothing.
        if th.rule == SparsityRule::Relu || (th.rule == SparsityRule::Gate && !kind.is_gated()) {
            return true;
        }
        let n = act.len();
        if n == 0 {
            return true;
        }
        let g = if th.rule == SparsityRule::Gate {
            assert_eq!(gate.len(), n, "ffn_mask gate shape");
            self.ptr(gate)
        } else {
            0
        };
        let args = [
            Arg::Ptr(g),
            Arg::Ptr(self.ptr(act)),
            Arg::U64(n as u64),
            Arg::I32(ffn_kind_code(kind)),
            Arg::I32(rule_code(th.rule)),
            Arg::F32(th.t),
        ];
        self.elementwise("ffn_mask", n, &args);
        true
    }

    /// Predictors and hot neurons to VRAM; the host keeps the cold ones (the CPU's sparse
    /// layers, built by `Model::attach_sidecar`).
    fn attach_sparse(&mut self, layers: &[LayerUpload]) -> Result<(), ModelError> {
        let up = layers
            .iter()
            .map(|l| self.upload_layer(l))
            .collect::<Result<Vec<_>, _>>()?;
        self.hybrid = Some(Arc::new(up));
        Ok(())
    }

    /// The hybrid FFN (`sparse::hybrid::ffn_row`), one row at a time.
    fn sparse_ffn(
        &self,
        il: usize,
        layer: &SparseLayer,
        kind: FfnKind,
        gate: Option<&CudaWeight>,
        up: &CudaWeight,
        x: &CudaTensor,
        oracle: bool,
        scratch: &mut SparseScratch,
        dev: &mut Option<CudaHybridScratch>,
        out: &mut CudaTensor,
    ) -> bool {
        let layers = self.hybrid.as_deref().map(Vec::as_slice);
        hybrid::sparse_ffn_rows(
            self, layers, il, layer, kind, gate, up, x, oracle, scratch, dev, out,
        )
    }
}
