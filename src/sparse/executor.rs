//! The sparse FFN on the CPU, one token row at a time: choose the active neurons (predictor,
//! or the exact set in oracle mode), compute only their gate and up rows, apply the activation
//! and the layer's rule, and add up only their down columns. The same routine serves the
//! CPU-only engine (all neurons) and, later, the cold half of the hybrid engine.

use powerinfer_predictors::{Predictor, Scratch as PredictorScratch};

use super::down::TransposedDown;
use super::{LayerThreshold, SparsityRule};
use crate::backend::cpu::ops::{gelu, relu, silu};
use crate::model::FfnKind;
use crate::quant::{self, QMatrix, QuantizedVec};

/// Per-layer data of the sparse FFN, built at load from the sidecar and the model.
pub struct SparseLayer {
    pub threshold: LayerThreshold,
    pub predictor: Option<Predictor>,
    pub down: TransposedDown,
}

/// The layer's weights as the dense path holds them.
pub struct FfnWeights<'a> {
    pub gate: Option<QMatrix<'a>>,
    pub up: QMatrix<'a>,
}

/// Counts for reports: how many neurons were predicted and how many were computed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SparseCounters {
    pub rows: u64,
    pub neurons: u64,
    pub predicted: u64,
    pub computed: u64,
    /// Bytes of weights read (gate/up rows, down columns, predictors), for the roofline.
    pub bytes: u64,
}

/// Per-sequence scratch, reused from token to token so the decode loop does not allocate.
#[derive(Default)]
pub struct SparseScratch {
    cand: Vec<u32>,
    keep: Vec<u32>,
    vals: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    act: Vec<f32>,
    rounded: Vec<f32>,
    tmp: Vec<f32>,
    sums: Vec<f32>,
    qx: Option<QuantizedVec>,
    qx_up: Option<QuantizedVec>,
    pred: PredictorScratch,
    pub counters: SparseCounters,
    /// The hybrid FFN's host buffers and phase totals (unused on the CPU alone).
    pub hybrid: super::hybrid::HybridHost,
}

/// The gate non-linearity of a gated FFN kind (identity-free: callers handle `Relu`).
#[inline]
pub(crate) fn gate_act(kind: FfnKind, g: f32) -> f32 {
    match kind {
        FfnKind::SwiGlu => silu(g),
        FfnKind::GeGlu => gelu(g),
        FfnKind::ReGlu | FfnKind::DReLU => relu(g),
        FfnKind::Relu => g,
    }
}

/// The activation of one neuron from its gate and up values.
#[inline]
fn neuron_act(kind: FfnKind, g: f32, u: f32) -> f32 {
    match kind {
        FfnKind::Relu => relu(u),
        FfnKind::DReLU => relu(g) * relu(u),
        _ => gate_act(kind, g) * u,
    }
}

/// One neuron's activation after the layer's rule: zero when the rule deems it inactive (the
/// gate rule looks at `|act(gate)|`, the product rule at `|act|`). The hot neurons of the
/// hybrid FFN (the `sparse_gate_up_*` kernels, their twin, the CPU stand-in) apply exactly
/// this, so that they keep the same neurons as [`SparseLayer::forward_row`].
#[inline]
pub fn rule_activation(kind: FfnKind, th: LayerThreshold, g: f32, u: f32) -> f32 {
    let a = neuron_act(kind, g, u);
    let drop = match th.rule {
        SparsityRule::Relu => false,
        SparsityRule::Gate => kind.is_gated() && gate_act(kind, g).abs() <= th.t,
        SparsityRule::Product => a.abs() <= th.t,
    };
    if drop {
        0.0
    } else {
        a
    }
}

/// Zero the entries of `act` (one token row or many, `act = act(gate)·up` already applied)
/// that the rule deems inactive. `gate` holds the pre-activations (ignored when not needed).
pub fn mask_activation(kind: FfnKind, th: LayerThreshold, gate: &[f32], act: &mut [f32]) {
    match th.rule {
        // Exact zeros already; nothing to do.
        SparsityRule::Relu => {}
        SparsityRule::Product => act.iter_mut().for_each(|a| {
            if a.abs() <= th.t {
                *a = 0.0
            }
        }),
        SparsityRule::Gate => act.iter_mut().zip(gate).for_each(|(a, &g)| {
            if gate_act(kind, g).abs() <= th.t {
                *a = 0.0
            }
        }),
    }
}

/// Gather rows `idx` of `w` against `x` (quantised once per weight type, kept in `slot`).
fn gather(
    w: &QMatrix,
    idx: &[u32],
    x: &[f32],
    slot: &mut Option<QuantizedVec>,
    f32_act: bool,
    out: &mut Vec<f32>,
) {
    out.clear();
    out.resize(idx.len(), 0.0);
    if f32_act {
        let mut row = vec![0f32; w.cols];
        for (o, &r) in out.iter_mut().zip(idx) {
            quant::dequantize_row(w.ty, w.row(r as usize), &mut row).expect("checked at load");
            *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        return;
    }
    let qx = slot.get_or_insert_with(|| QuantizedVec::new(w.ty, x));
    qx.set(w.ty, x);
    quant::gather_matvec(w, idx, qx, out);
}

impl SparseLayer {
    /// One token: `x` is the FFN input after its norm (d_model), `out` receives the FFN output.
    /// `oracle` computes the exact active set instead of asking the predictor.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_row(
        &self,
        kind: FfnKind,
        w: &FfnWeights,
        x: &[f32],
        oracle: bool,
        f32_act: bool,
        s: &mut SparseScratch,
        out: &mut [f32],
    ) {
        let n_ff = self.down.n_ff;
        s.counters.rows += 1;
        s.counters.neurons += n_ff as u64;
        // 1. Candidates.
        s.cand.clear();
        match (&self.predictor, oracle) {
            (Some(p), false) => {
                p.predict(x, &mut s.pred, &mut s.cand)
                    .expect("predictor shape checked at load");
                s.counters.bytes += p.n_bytes() as u64;
            }
            _ => s.cand.extend(0..n_ff as u32),
        }
        s.counters.predicted += s.cand.len() as u64;
        self.forward_candidates(kind, w, x, f32_act, s, out);
    }

    /// One token over the given candidate neurons only (ascending; e.g. the cold neurons the
    /// device's predictor selected, in the hybrid FFN): the rule, the activation rounding and
    /// the down columns exactly as [`SparseLayer::forward_row`] does for its candidates.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_listed(
        &self,
        kind: FfnKind,
        w: &FfnWeights,
        x: &[f32],
        candidates: &[u32],
        f32_act: bool,
        s: &mut SparseScratch,
        out: &mut [f32],
    ) {
        s.counters.rows += 1;
        s.counters.neurons += candidates.len() as u64;
        s.counters.predicted += candidates.len() as u64;
        s.cand.clear();
        s.cand.extend_from_slice(candidates);
        self.forward_candidates(kind, w, x, f32_act, s, out);
    }

    /// Steps 2 to 5 of the sparse FFN over the candidates in `s.cand`.
    fn forward_candidates(
        &self,
        kind: FfnKind,
        w: &FfnWeights,
        x: &[f32],
        f32_act: bool,
        s: &mut SparseScratch,
        out: &mut [f32],
    ) {
        let n_ff = self.down.n_ff;
        let th = self.threshold;
        // 2. Gate rows of the candidates; the gate rule filters before up is touched.
        let row_bytes = |m: &QMatrix| m.row_bytes() as u64;
        if let Some(gate) = &w.gate {
            gather(gate, &s.cand, x, &mut s.qx, f32_act, &mut s.g);
            s.counters.bytes += row_bytes(gate) * s.cand.len() as u64;
            // A ReLU gate at or below zero makes the activation exactly zero whatever up is:
            // such neurons need no up row (in oracle mode that is ~90% of up's bytes).
            let relu_gate = matches!(kind, FfnKind::ReGlu | FfnKind::DReLU);
            if th.rule == SparsityRule::Gate || relu_gate {
                let t = if th.rule == SparsityRule::Gate {
                    th.t
                } else {
                    0.0
                };
                let mut k = 0;
                for i in 0..s.cand.len() {
                    if gate_act(kind, s.g[i]).abs() > t {
                        s.cand[k] = s.cand[i];
                        s.g[k] = s.g[i];
                        k += 1;
                    }
                }
                s.cand.truncate(k);
                s.g.truncate(k);
            }
        }
        gather(&w.up, &s.cand, x, &mut s.qx_up, f32_act, &mut s.u);
        s.counters.bytes += row_bytes(&w.up) * s.cand.len() as u64;
        // 3. Activation and the product/relu rule: keep non-zero entries above threshold.
        s.keep.clear();
        s.vals.clear();
        let t = if th.rule == SparsityRule::Product {
            th.t
        } else {
            0.0
        };
        for (i, &j) in s.cand.iter().enumerate() {
            let g = if w.gate.is_some() { s.g[i] } else { 0.0 };
            let a = neuron_act(kind, g, s.u[i]);
            if a != 0.0 && a.abs() > t {
                s.keep.push(j);
                s.vals.push(a);
            }
        }
        s.counters.computed += s.keep.len() as u64;
        // 4. Round the activations as the dense kernel would for this down type, so that the
        //    sparse sum equals the dense one up to summation order. Only the quantisation blocks
        //    that hold a kept neuron matter: the others are all zero.
        s.act.clear();
        s.act.resize(n_ff, 0.0);
        for (&j, &a) in s.keep.iter().zip(&s.vals) {
            s.act[j as usize] = a;
        }
        let act_ty = quant::activation_type(self.down.ty).unwrap_or(quant::GgmlType::F32);
        let mut sums = None;
        let a: &[f32] = if f32_act || act_ty == quant::GgmlType::F32 {
            &s.act
        } else {
            let nb = n_ff / act_ty.block_len();
            s.rounded.resize(n_ff, 0.0);
            let q1 = act_ty == quant::GgmlType::Q8_1;
            if q1 {
                // The block sums the dense Q4_1/Q5_1 kernels use for the offset term; zero for
                // the blocks without a kept neuron (which the accumulation never reads).
                s.sums.clear();
                s.sums.resize(nb, 0.0);
            }
            let sums_out = q1.then_some(&mut s.sums[..]);
            quant::round_activations(self.down.ty, &s.act, &s.keep, &mut s.rounded, sums_out);
            if q1 {
                sums = Some(&s.sums[..]);
            }
            &s.rounded
        };
        // 5. Down columns of the kept neurons.
        self.down.accumulate(&s.keep, a, sums, out, &mut s.tmp);
        s.counters.bytes += self.down.bytes_read(&s.keep) as u64;
    }
}
