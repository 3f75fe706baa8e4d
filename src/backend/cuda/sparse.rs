//! The GPU side of a PowerInfer FFN layer: the activation predictor and the sparse FFN over
//! the hot neurons it marks active. The CPU computes the cold neurons and its partial result
//! is merged with [`CudaBackend::merge_cold`]. Decode only (one token per call).

use cudarc::driver::CudaSlice;
use half::f16;

use super::backend::{ffn_kind_code, ROW_WARPS};
use super::device::{blocks, Arg};
use super::weight::kernel_suffix;
use super::{CudaBackend, CudaError, CudaTensor};
use crate::model::FfnKind;
use crate::quant::{self, GgmlType};

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
    active: CudaSlice<u32>,
    count: CudaSlice<u32>,
    act: CudaSlice<f32>,
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
    /// `[d_model][n_ff]` (of type `down_ty`).
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
        if kernel_suffix(ty).is_none() {
            return Err(CudaError::Unsupported(format!(
                "no sparse kernels for {ty} gate/up rows"
            )));
        }
        if gate.is_some() != kind.is_gated() {
            return Err(CudaError::Unsupported(format!(
                "FFN kind {} {} a gate matrix",
                kind.name(),
                if kind.is_gated() { "needs" } else { "takes no" }
            )));
        }
        let bad = |m: String| CudaError::Unsupported(m);
        let row_bytes = ty
            .row_bytes(d_model)
            .ok_or_else(|| bad(format!("{d_model} columns are not whole {ty} blocks")))?;
        let down_row = down_ty
            .row_bytes(n_ff)
            .ok_or_else(|| bad(format!("{n_ff} columns are not whole {down_ty} blocks")))?;
        if up.len() < n_ff * row_bytes || gate.is_some_and(|g| g.len() < n_ff * row_bytes) {
            return Err(shape_err("gate/up bytes", n_ff * row_bytes, up.len()));
        }
        if down.len() < d_model * down_row {
            return Err(shape_err("down bytes", d_model * down_row, down.len()));
        }
        if let Some(&id) = hot_ids.iter().find(|&&id| id as usize >= n_ff) {
            return Err(bad(format!("hot neuron {id} outside the FFN's {n_ff}")));
        }
        let pick = |m: &[u8]| -> Vec<u8> {
            hot_ids
                .iter()
                .flat_map(|&id| &m[id as usize * row_bytes..(id as usize + 1) * row_bytes])
                .copied()
                .collect()
        };
        // Column `id` of down is element `id` of every row: transpose the hot columns.
        let n_hot = hot_ids.len();
        let mut down_t = vec![0u16; n_hot * d_model];
        let mut row = vec![0f32; n_ff];
        for (d, r) in down.chunks_exact(down_row).take(d_model).enumerate() {
            quant::dequantize_row(down_ty, r, &mut row).map_err(|e| bad(e.to_string()))?;
            for (k, &id) in hot_ids.iter().enumerate() {
                down_t[k * d_model + d] = f16::from_f32(row[id as usize]).to_bits();
            }
        }
        Ok(CudaHotFfn {
            kind,
            ty,
            row_bytes,
            d_model,
            n_hot,
            gate: gate.map(|g| self.gpu.upload(&pick(g))),
            up: self.gpu.upload(&pick(up)),
            down_t: self.gpu.upload(&down_t),
            hot_ids: self.gpu.upload(hot_ids),
        })
    }

    pub fn new_sparse_scratch(&self, pred: &CudaPredictor, hot: &CudaHotFfn) -> SparseScratch {
        SparseScratch {
            hidden: self.gpu.alloc(pred.rank),
            logits: CudaTensor::default(),
            active: self.gpu.alloc(hot.n_hot),
            count: self.gpu.alloc(1),
            act: self.gpu.alloc(hot.n_hot),
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
        self.gpu.launch(
            "predictor_compact",
            (1, 1),
            1024,
            &[
                Arg::Ptr(self.ptr(&s.logits)),
                Arg::Ptr(self.gpu.ptr(&hot.hot_ids)),
                Arg::I32(hot.n_hot as i32),
                Arg::Ptr(self.gpu.ptr(&s.active)),
                Arg::Ptr(self.gpu.ptr(&s.count)),
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

    /// The hot FFN of one token over the active list: `y = down_hot · act(gate_hot x, up_hot x)`.
    pub fn hot_ffn(
        &self,
        hot: &CudaHotFfn,
        x: &CudaTensor,
        s: &mut SparseScratch,
        y: &mut CudaTensor,
    ) {
        assert_eq!(x.len(), hot.d_model, "hot FFN input");
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
