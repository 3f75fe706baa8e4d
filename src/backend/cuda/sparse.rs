//! The GPU side of a PowerInfer FFN layer: the activation predictor and the sparse FFN over
//! the hot neurons it marks active. The CPU computes the cold neurons and its partial result
//! is merged with [`CudaBackend::merge_cold`]. Decode only (one token per call).

use cudarc::driver::CudaSlice;
use half::f16;

use super::backend::{ffn_kind_code, rule_code, ROW_WARPS};
use super::device::{blocks, Arg};
use super::weight::kernel_suffix;
use super::{CudaBackend, CudaError, CudaTensor};
use crate::model::FfnKind;
use crate::quant::{GgmlType, QMatrix};
use crate::sparse::hybrid::{HotRows, LayerUpload};
use crate::sparse::{LayerThreshold, SparsityRule};

/// A layer's predictor: `logits = W2 · relu(W1 · x + b1) + b2`.
pub struct CudaPredictor {
    w1: CudaSlice<u16>,
    b1: CudaSlice<f32>,
    w2: CudaSlice<u16>,
    b2: CudaSlice<f32>,
    pub rank: usize,
    pub d_in: usize,
    pub d_out: usize,
}

/// The hot neurons of one FFN layer in VRAM: gate and up rows compacted in the model's
/// format (row k is neuron `hot_ids[k]`), down transposed to f16 `[n_hot][d_model]`.
pub struct CudaHotFfn {
    kind: FfnKind,
    /// The layer's rule, applied to every hot activation (as the CPU's executor does).
    threshold: LayerThreshold,
    ty: GgmlType,
    row_bytes: usize,
    pub d_model: usize,
    pub n_hot: usize,
    gate: Option<CudaSlice<u8>>,
    up: CudaSlice<u8>,
    down_t: CudaSlice<u16>,
    hot_ids: CudaSlice<u32>,
}

/// Per-sequence buffers of one sparse FFN call, reused across calls.
pub struct SparseScratch {
    hidden: CudaSlice<f32>,
    pub logits: CudaTensor,
    pub(crate) active: CudaSlice<u32>,
    pub(crate) count: CudaSlice<u32>,
    act: CudaSlice<f32>,
}

/// The relu rule at 0: every non-zero activation counts.
const NO_THRESHOLD: LayerThreshold = LayerThreshold {
    rule: SparsityRule::Relu,
    t: 0.0,
};

impl CudaHotFfn {
    /// Apply `th` to the hot activations (the layer's rule from the sidecar).
    pub fn with_threshold(mut self, th: LayerThreshold) -> CudaHotFfn {
        self.threshold = th;
        self
    }
}

fn shape_err(what: &str, want: usize, got: usize) -> CudaError {
    CudaError::Unsupported(format!("{what}: expected {want} values, got {got}"))
}

impl CudaBackend {
    /// Upload a predictor (f16 weights W1 `[rank][d_in]`, W2 `[d_out][rank]`).
    #[allow(clippy::too_many_arguments)]
    pub fn load_predictor(
        &self,
        w1: &[f16],
        b1: &[f32],
        w2: &[f16],
        b2: &[f32],
        rank: usize,
        d_in: usize,
        d_out: usize,
    ) -> Result<CudaPredictor, CudaError> {
        for (what, want, got) in [
            ("predictor W1", rank * d_in, w1.len()),
            ("predictor b1", rank, b1.len()),
            ("predictor W2", d_out * rank, w2.len()),
            ("predictor b2", d_out, b2.len()),
        ] {
            if want != got {
                return Err(shape_err(what, want, got));
            }
        }
        let bits = |w: &[f16]| -> Vec<u16> { w.iter().map(|v| v.to_bits()).collect() };
        Ok(CudaPredictor {
            w1: self.gpu.upload(&bits(w1)),
            b1: self.gpu.upload(b1),
            w2: self.gpu.upload(&bits(w2)),
            b2: self.gpu.upload(b2),
            rank,
            d_in,
            d_out,
        })
    }

    /// Upload the hot neurons `hot_ids` of an FFN layer from its dense matrices in the file's
    /// format: gate and up `[n_ff][d_model]` (no gate for the plain kind), down
    /// `[d_model][n_ff]` (of type `down_ty`). No threshold: see [`CudaHotFfn::with_threshold`].
    #[allow(clippy::too_many_arguments)]
    pub fn load_hot_ffn(
        &self,
        kind: FfnKind,
        ty: GgmlType,
        d_model: usize,
        n_ff: usize,
        gate: Option<&[u8]>,
        up: &[u8],
        down_ty: GgmlType,
        down: &[u8],
        hot_ids: &[u32],
    ) -> Result<CudaHotFfn, CudaError> {
        fn matrix(
            ty: GgmlType,
            rows: usize,
            cols: usize,
            b: &[u8],
        ) -> Result<QMatrix<'_>, CudaError> {
            let bad = |m: String| CudaError::Unsupported(m);
            let need = ty
                .row_bytes(cols)
                .ok_or_else(|| bad(format!("{cols} columns are not whole {ty} blocks")))?
                * rows;
            if b.len() < need {
                return Err(shape_err("weight bytes", need, b.len()));
            }
            QMatrix::new(ty, rows, cols, &b[..need]).map_err(|e| bad(e.to_string()))
        }
        let upload = LayerUpload {
            layer: 0,
            kind,
            threshold: NO_THRESHOLD,
            predictor: None,
            gate: gate.map(|g| matrix(ty, n_ff, d_model, g)).transpose()?,
            up: matrix(ty, n_ff, d_model, up)?,
            down: matrix(down_ty, d_model, n_ff, down)?,
            hot: hot_ids,
        };
        self.upload_hot_rows(&upload)
    }

    /// Upload the hot neurons of `l` (packed by [`HotRows::pack`]), with its threshold.
    pub fn upload_hot_rows(&self, l: &LayerUpload) -> Result<CudaHotFfn, CudaError> {
        let ty = l.up.ty;
        if kernel_suffix(ty).is_none() {
            return Err(CudaError::Unsupported(format!(
                "no sparse kernels for {ty} gate/up rows"
            )));
        }
        let rows = HotRows::pack(l).map_err(|e| CudaError::Unsupported(e.to_string()))?;
        let bits: Vec<u16> = rows.down_t.iter().map(|v| v.to_bits()).collect();
        Ok(CudaHotFfn {
            kind: l.kind,
            threshold: l.threshold,
            ty,
            row_bytes: rows.row_bytes,
            d_model: l.d_model(),
            n_hot: l.hot.len(),
            gate: rows.gate.map(|g| self.gpu.upload(&g)),
            up: self.gpu.upload(&rows.up),
            down_t: self.gpu.upload(&bits),
            hot_ids: self.gpu.upload(l.hot),
        })
    }

    pub fn new_sparse_scratch(&self, pred: &CudaPredictor, hot: &CudaHotFfn) -> SparseScratch {
        self.sparse_scratch_for(pred.rank, hot.n_hot)
    }

    /// Scratch for predictors of rank up to `rank` and up to `n_hot` hot neurons.
    pub(crate) fn sparse_scratch_for(&self, rank: usize, n_hot: usize) -> SparseScratch {
        SparseScratch {
            hidden: self.gpu.alloc(rank),
            logits: CudaTensor::default(),
            active: self.gpu.alloc(n_hot),
            count: self.gpu.alloc(1),
            act: self.gpu.alloc(n_hot),
        }
    }

    /// The predictor's logits for one token `x` (1 × d_in) into `s.logits` (1 × d_out).
    pub fn predict(&self, pred: &CudaPredictor, x: &CudaTensor, s: &mut SparseScratch) {
        assert_eq!(x.len(), pred.d_in, "predictor input");
        let threads = (32 * ROW_WARPS) as u32;
        self.gpu.launch(
            "predictor_hidden",
            (blocks(pred.rank, ROW_WARPS), 1),
            threads,
            &[
                Arg::Ptr(self.gpu.ptr(&pred.w1)),
                Arg::Ptr(self.gpu.ptr(&pred.b1)),
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.gpu.ptr(&s.hidden)),
                Arg::I32(pred.rank as i32),
                Arg::I32(pred.d_in as i32),
            ],
        );
        self.resize(&mut s.logits, 1, pred.d_out);
        self.gpu.launch(
            "predictor_logits",
            (blocks(pred.d_out, ROW_WARPS), 1),
            threads,
            &[
                Arg::Ptr(self.gpu.ptr(&pred.w2)),
                Arg::Ptr(self.gpu.ptr(&pred.b2)),
                Arg::Ptr(self.gpu.ptr(&s.hidden)),
                Arg::Ptr(self.ptr(&s.logits)),
                Arg::I32(pred.d_out as i32),
                Arg::I32(pred.rank as i32),
            ],
        );
    }

    /// Compact the hot neurons whose logit in `s.logits` is positive into the active list.
    pub fn compact_active(&self, hot: &CudaHotFfn, s: &mut SparseScratch) {
        self.compact(
            &s.logits,
            &hot.hot_ids,
            hot.n_hot,
            &mut s.active,
            &mut s.count,
        );
    }

    /// The positions k (ascending) of the neurons `ids[k]` whose logit is positive, into
    /// `active`, and their number into `count`.
    pub(crate) fn compact(
        &self,
        logits: &CudaTensor,
        ids: &CudaSlice<u32>,
        n: usize,
        active: &mut CudaSlice<u32>,
        count: &mut CudaSlice<u32>,
    ) {
        self.gpu.launch(
            "predictor_compact",
            (1, 1),
            1024,
            &[
                Arg::Ptr(self.ptr(logits)),
                Arg::Ptr(self.gpu.ptr(ids)),
                Arg::I32(n as i32),
                Arg::Ptr(self.gpu.ptr(active)),
                Arg::Ptr(self.gpu.ptr(count)),
            ],
        );
    }

    /// The active list of the last `compact_active` (positions into the hot rows).
    pub fn active_list(&self, s: &SparseScratch) -> Vec<u32> {
        let n = self.gpu.download(&s.count, 1)[0] as usize;
        self.gpu.download(&s.active, n)
    }

    /// Set the active list by hand (tests of the FFN kernels without a predictor).
    pub fn set_active_list(&self, s: &mut SparseScratch, active: &[u32]) {
        self.gpu.upload_into(active, &mut s.active);
        self.gpu.upload_into(&[active.len() as u32], &mut s.count);
    }

    /// The hot FFN of one token over the active list: `y = down_hot · act(gate_hot x, up_hot x)`,
    /// each activation zeroed when the layer's rule deems it inactive. No hot neurons: `y = 0`.
    pub fn hot_ffn(
        &self,
        hot: &CudaHotFfn,
        x: &CudaTensor,
        s: &mut SparseScratch,
        y: &mut CudaTensor,
    ) {
        assert_eq!(x.len(), hot.d_model, "hot FFN input");
        if hot.n_hot == 0 {
            // No grid to launch; the result is zero.
            self.resize(y, 1, hot.d_model);
            self.gpu.upload_into(&vec![0f32; hot.d_model], y.buf_mut());
            return;
        }
        let suffix = kernel_suffix(hot.ty).expect("checked at load");
        let gate = hot.gate.as_ref().map_or(0, |g| self.gpu.ptr(g));
        self.gpu.launch(
            &format!("sparse_gate_up_{suffix}"),
            (blocks(hot.n_hot, ROW_WARPS), 1),
            (32 * ROW_WARPS) as u32,
            &[
                Arg::Ptr(gate),
                Arg::Ptr(self.gpu.ptr(&hot.up)),
                Arg::U64(hot.row_bytes as u64),
                Arg::I32(hot.d_model as i32),
                Arg::Ptr(self.gpu.ptr(&s.active)),
                Arg::Ptr(self.gpu.ptr(&s.count)),
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.gpu.ptr(&s.act)),
                Arg::I32(ffn_kind_code(hot.kind)),
                Arg::I32(rule_code(hot.threshold.rule)),
                Arg::F32(hot.threshold.t),
            ],
        );
        self.resize(y, 1, hot.d_model);
        self.gpu.launch(
            "sparse_down",
            (blocks(hot.d_model, 256), 1),
            256,
            &[
                Arg::Ptr(self.gpu.ptr(&hot.down_t)),
                Arg::Ptr(self.gpu.ptr(&s.active)),
                Arg::Ptr(self.gpu.ptr(&s.count)),
                Arg::Ptr(self.gpu.ptr(&s.act)),
                Arg::Ptr(self.ptr(y)),
                Arg::I32(hot.d_model as i32),
            ],
        );
    }

    /// The activations of the last `hot_ffn`, one per active-list entry (tests).
    pub fn hot_activations(&self, s: &SparseScratch) -> Vec<f32> {
        let n = self.gpu.download(&s.count, 1)[0] as usize;
        self.gpu.download(&s.act, n)
    }

    /// Predictor, compaction and hot FFN of one token; the caller merges the cold partial.
    pub fn sparse_ffn(
        &self,
        pred: &CudaPredictor,
        hot: &CudaHotFfn,
        x: &CudaTensor,
        s: &mut SparseScratch,
        y: &mut CudaTensor,
    ) {
        self.predict(pred, x, s);
        self.compact_active(hot, s);
        self.hot_ffn(hot, x, s, y);
    }
}
