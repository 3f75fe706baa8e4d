//! The sparse FFN on the CPU, one token row at a time: choose the active neurons (predictor,
//! or the exact set in oracle mode), compute only their gate and up rows, apply the activation
//! and the layer's rule, and add up only their down columns. The same routine serves the
//! CPU-only engine (all neurons) and, later, the cold half of the hybrid engine.

use powerinfer_predictors::Predictor;

use super::down::TransposedDown;
use super::records::NeuronRecords;
use super::{LayerThreshold, SparsityRule};
use crate::backend::cpu::ops::{gelu, relu, silu};
use crate::model::FfnKind;
use crate::quant::{self, QMatrix, QuantizedVec};

/// Per-layer data of the sparse FFN, built at load from the sidecar and the model.
pub struct SparseLayer {
    pub threshold: LayerThreshold,
    pub predictor: Option<Predictor>,
    pub down: TransposedDown,
    /// Each neuron's gate and up rows (and down levels) side by side, read instead of the
    /// model's two matrices when present.
    pub records: Option<NeuronRecords>,
    /// The profile's expected active neurons in each [`TASK_ALIGN`]-neuron block (see
    /// [`block_frequencies`]), by which the task section's ranges are cut; empty: equal
    /// lengths.
    pub block_freq: Vec<f32>,
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
    tasks: Vec<TaskScratch>,
    /// Where the task section's ranges start (and the last ends).
    cuts: Vec<usize>,
    /// Listed candidates per [`TASK_ALIGN`] block, to cut by when they are given.
    listed: Vec<f32>,
    hidden: Vec<f32>,
    keep: Vec<u32>,
    /// The kept neurons' (rounded) activations at their indices; other entries are stale.
    act: Vec<f32>,
    tmp: Vec<f32>,
    sums: Vec<f32>,
    qx: Option<QuantizedVec>,
    qx_up: Option<QuantizedVec>,
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

/// The sparse FFN's parallel section gives each thread one task: a contiguous range of
/// neurons that it predicts, gathers the gate and up rows of and applies the activation to,
/// with no barrier between the steps. Why one long task rather than many short ones: each
/// step waits on memory the step before chose (selection bytes, then the selected rows), so
/// every task start exposes a chain of misses before its prefetching gets going; with 256-
/// neuron tasks that was ~16 restarts per thread and layer (syn1b, 2 threads: task section
/// 2.65-2.70 → 2.17-2.28 ms a token with one task per thread). Ranges are whole multiples of
/// this many neurons, which every activation block length divides, so that the rounding of
/// the activations (per block) is the same for any number of threads.
const TASK_ALIGN: usize = 256;

/// Sum of `freq` (each neuron's firing frequency) over each block of [`TASK_ALIGN`] neurons:
/// the expected active neurons of each block, for [`SparseLayer::block_freq`].
pub fn block_frequencies(freq: &[f32]) -> Vec<f32> {
    freq.chunks(TASK_ALIGN).map(|b| b.iter().sum()).collect()
}

/// A selected neuron's cost against an unselected one's in a predicted task: ~3.4 KB of
/// gate, up and down levels against ~40 bytes of selector.
const SELECTED_COST: f32 = 100.0;

/// Starts of the task section's `threads` ranges for `n_ff` neurons, and `n_ff` last, into
/// `cuts`: whole [`TASK_ALIGN`] blocks with about equal expected work, from the blocks'
/// expected active neurons `block_freq` (equal lengths without them). `all`: every neuron is
/// a candidate (its gate row read), so length weighs more.
///
/// Why by work rather than length: where a model's hot neurons sit together, equal halves
/// give one thread most of the active neurons (a copy of syn1b renumbered hottest first:
/// predicted decode 86.6-89.6 tok/s with equal halves, 98.1-98.5 cut by work).
fn task_cuts(n_ff: usize, block_freq: &[f32], all: bool, threads: usize, cuts: &mut Vec<usize>) {
    let blocks = n_ff.div_ceil(TASK_ALIGN);
    let len = |b: usize| (TASK_ALIGN.min(n_ff - b * TASK_ALIGN)) as f32;
    let work = |b: usize| match block_freq.get(b) {
        None => len(b),
        Some(&f) if all => len(b) + 2.0 * f,
        Some(&f) => len(b) + SELECTED_COST * f,
    };
    let total: f32 = (0..blocks).map(work).sum();
    let threads = threads.clamp(1, blocks.max(1));
    cuts.clear();
    cuts.push(0);
    let (mut b, mut acc) = (0, 0.0);
    for k in 1..threads {
        let target = total * k as f32 / threads as f32;
        // Whole blocks while the cut gets nearer the target.
        while b < blocks && (acc + work(b) - target).abs() <= (acc - target).abs() {
            acc += work(b);
            b += 1;
        }
        cuts.push((b * TASK_ALIGN).min(n_ff));
    }
    cuts.push(n_ff);
}

/// Where a layer's candidate neurons come from.
#[derive(Clone, Copy)]
enum Candidates<'a> {
    /// The predictor's selection, from its hidden layer (`SparseScratch::hidden`).
    Predicted(&'a Predictor),
    /// Every neuron (oracle mode, or a layer without a predictor).
    All,
    /// A given ascending list (the hybrid FFN's cold neurons).
    Listed(&'a [u32]),
}

/// The input as the tasks need it: f32, and quantised once per weight type for the gathers
/// (`None` when the kernels take f32 activations).
struct TaskInput<'a> {
    x: &'a [f32],
    q_gate: Option<&'a QuantizedVec>,
    q_up: Option<&'a QuantizedVec>,
    hidden: &'a [f32],
    /// How the dense down kernel rounds the activations (`None` for f32 activations).
    rounding: Option<Rounding>,
}

/// The integer activation format of the down kernel, as the rounding needs it.
#[derive(Clone, Copy)]
struct Rounding {
    /// Values per block.
    block: usize,
    /// Whether the format carries block sums (Q8_1), which the offset term uses.
    sums: bool,
}

/// One task's buffers and results, reused from token to token.
#[derive(Default)]
struct TaskScratch {
    cand: Vec<u32>,
    /// The candidates' row numbers in the records.
    record_rows: Vec<u32>,
    g: Vec<f32>,
    u: Vec<f32>,
    row: Vec<f32>,
    keep: Vec<u32>,
    vals: Vec<f32>,
    /// The task's activations (zero but for the kept neurons), their rounded values, the
    /// kept neurons' offsets in the task and the Q8_1 block sums, for the rounding.
    act: Vec<f32>,
    rounded: Vec<f32>,
    offsets: Vec<u32>,
    sums: Vec<f32>,
    predicted: u64,
    bytes: u64,
}

/// Gather rows `idx` of `w` against the input: through the quantised kernels when `q` holds
/// the input quantised for `w`, in f32 otherwise. Runs on the calling thread.
/// `row` is scratch for the f32 path.
fn gather(
    w: &QMatrix,
    idx: &[u32],
    x: &[f32],
    q: Option<&QuantizedVec>,
    out: &mut Vec<f32>,
    row: &mut Vec<f32>,
) {
    out.clear();
    out.resize(idx.len(), 0.0);
    match q {
        Some(qx) => quant::gather_matvec_serial(w, idx, qx, out),
        None => {
            row.resize(w.cols, 0.0);
            for (o, &r) in out.iter_mut().zip(idx) {
                quant::dequantize_row(w.ty, w.row(r as usize), row).expect("checked at load");
                *o = row.iter().zip(x).map(|(a, b)| a * b).sum();
            }
        }
    }
}

/// The predictor's hidden layer for `x` into `h`, split over the threads in pieces of whole
/// 8-row groups (the same bits as one piece) when the rank gives each thread one: at rank 32
/// its 128 KiB of weights took ~12 µs a layer on one thread while the other waited.
fn hidden_parallel(p: &Predictor, x: &[f32], h: &mut Vec<f32>) {
    let rank = p.rank();
    h.resize(rank, 0.0);
    let piece = rank
        .div_ceil(crate::parallel::threads())
        .next_multiple_of(8);
    let run = |first: usize, out: &mut [f32]| {
        p.hidden_rows(x, first, out)
            .expect("predictor shape checked at load")
    };
    if piece >= rank {
        return run(0, h);
    }
    crate::parallel::for_chunks_mut(h, piece, |i, out| run(i * piece, out));
}

/// `rows` set to the records' row of each neuron in `neurons`: `slots·i + which` (0 gate, 1 up).
fn record_rows(neurons: &[u32], slots: u32, which: u32, rows: &mut Vec<u32>) {
    rows.clear();
    rows.extend(neurons.iter().map(|&i| slots * i + which));
}

/// `slot` set to `x` quantised for `ty`, allocated on first use.
fn quantise_into(slot: &mut Option<QuantizedVec>, ty: quant::GgmlType, x: &[f32]) {
    match slot {
        Some(q) => q.set(ty, x),
        None => *slot = Some(QuantizedVec::new(ty, x)),
    }
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
        s.counters.rows += 1;
        s.counters.neurons += self.down.n_ff as u64;
        // 1. Candidates: the predictor's hidden layer here, its output layer per task.
        let cands = match (&self.predictor, oracle) {
            (Some(p), false) => {
                hidden_parallel(p, x, &mut s.hidden);
                s.counters.bytes += p.selection_bytes() as u64;
                Candidates::Predicted(p)
            }
            _ => Candidates::All,
        };
        self.forward_candidates(kind, w, x, cands, f32_act, s, out);
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
        let cands = Candidates::Listed(candidates);
        self.forward_candidates(kind, w, x, cands, f32_act, s, out);
    }

    /// Steps 1 to 4 of the sparse FFN for the neurons in `range`, on the calling thread: the
    /// candidates, their gate rows (the gate rule filters before up is touched), their up
    /// rows, the activation and rule, and the rounding. Leaves the kept neurons and their
    /// (rounded) values in `t`.
    fn task(
        &self,
        kind: FfnKind,
        w: &FfnWeights,
        input: &TaskInput,
        cands: Candidates,
        range: std::ops::Range<usize>,
        t: &mut TaskScratch,
    ) {
        let th = self.threshold;
        t.cand.clear();
        match cands {
            Candidates::Predicted(p) => {
                // The task's output weights and thresholds, requested at once (~150 KiB for
                // 4,096 neurons at rank 32): the hardware prefetcher needs a few lines of each
                // run to start, which matters for short ranges (many threads, small layers).
                // With one long range per thread it measured the same as asking for only the
                // first 4 KiB.
                let (q, thresholds) = p.selector().bytes(range.clone());
                quant::prefetch(q);
                quant::prefetch(thresholds);
                p.predict_range(input.hidden, range.clone(), &mut t.cand)
                    .expect("predictor shape checked at load")
            }
            Candidates::All => t.cand.extend(range.start as u32..range.end as u32),
            Candidates::Listed(list) => {
                let a = list.partition_point(|&j| (j as usize) < range.start);
                let b = list.partition_point(|&j| (j as usize) < range.end);
                t.cand.extend_from_slice(&list[a..b]);
            }
        }
        t.predicted = t.cand.len() as u64;
        t.bytes = 0;
        let x = input.x;
        // The records when there are (row `slots·i` is gate i, the next up i), except when
        // every neuron is a candidate: then gate is read whole, and the model's own matrix is
        // one contiguous stream where the records would make it a strided one (the
        // prefetcher would bring in every record's up row and levels with it).
        let records = self
            .records
            .as_ref()
            .filter(|_| !matches!(cands, Candidates::All))
            .map(|r| (r.matrix(), r.slots() as u32));
        if let Some(gate) = &w.gate {
            match &records {
                Some((m, slots)) => {
                    record_rows(&t.cand, *slots, 0, &mut t.record_rows);
                    gather(m, &t.record_rows, x, input.q_gate, &mut t.g, &mut t.row);
                }
                None => gather(gate, &t.cand, x, input.q_gate, &mut t.g, &mut t.row),
            }
            t.bytes += gate.row_bytes() as u64 * t.cand.len() as u64;
            // A ReLU gate at or below zero makes the activation exactly zero whatever up is:
            // such neurons need no up row (in oracle mode that is ~90% of up's bytes).
            let relu_gate = matches!(kind, FfnKind::ReGlu | FfnKind::DReLU);
            if th.rule == SparsityRule::Gate || relu_gate {
                let t_gate = if th.rule == SparsityRule::Gate {
                    th.t
                } else {
                    0.0
                };
                let mut k = 0;
                for i in 0..t.cand.len() {
                    if gate_act(kind, t.g[i]).abs() > t_gate {
                        t.cand[k] = t.cand[i];
                        t.g[k] = t.g[i];
                        k += 1;
                    }
                }
                t.cand.truncate(k);
                t.g.truncate(k);
            }
        }
        match &records {
            Some((m, slots)) if w.gate.is_some() => {
                record_rows(&t.cand, *slots, 1, &mut t.record_rows);
                gather(m, &t.record_rows, x, input.q_up, &mut t.u, &mut t.row);
            }
            _ => gather(&w.up, &t.cand, x, input.q_up, &mut t.u, &mut t.row),
        }
        t.bytes += w.up.row_bytes() as u64 * t.cand.len() as u64;
        // The activation and the product/relu rule: keep non-zero entries above threshold.
        t.keep.clear();
        t.vals.clear();
        let t_act = if th.rule == SparsityRule::Product {
            th.t
        } else {
            0.0
        };
        for (i, &j) in t.cand.iter().enumerate() {
            let g = if w.gate.is_some() { t.g[i] } else { 0.0 };
            let a = neuron_act(kind, g, t.u[i]);
            if a != 0.0 && a.abs() > t_act {
                t.keep.push(j);
                t.vals.push(a);
            }
        }
        // 4. Round the activations as the dense kernel would for this down type, so that the
        //    sparse sum equals the dense one up to summation order. The task's range is whole
        //    activation blocks (256 is a multiple of every block length), and only the blocks
        //    that hold a kept neuron matter: the others are all zero.
        if let Some(r) = input.rounding {
            let lo = range.start;
            t.act.clear();
            t.act.resize(range.len(), 0.0);
            t.offsets.clear();
            for (&j, &a) in t.keep.iter().zip(&t.vals) {
                t.offsets.push(j - lo as u32);
                t.act[j as usize - lo] = a;
            }
            t.rounded.resize(range.len(), 0.0);
            t.sums.clear();
            t.sums
                .resize(if r.sums { range.len() / r.block } else { 0 }, 0.0);
            let sums = r.sums.then_some(&mut t.sums[..]);
            quant::round_activations(self.down.ty, &t.act, &t.offsets, &mut t.rounded, sums);
            for (v, &o) in t.vals.iter_mut().zip(&t.offsets) {
                *v = t.rounded[o as usize];
            }
        }
    }

    /// The sparse FFN over the candidates: steps 1 to 4 in one parallel section of
    /// tasks cut by [`task_cuts`], then step 5, the down columns of the kept neurons.
    #[allow(clippy::too_many_arguments)]
    fn forward_candidates(
        &self,
        kind: FfnKind,
        w: &FfnWeights,
        x: &[f32],
        cands: Candidates,
        f32_act: bool,
        s: &mut SparseScratch,
        out: &mut [f32],
    ) {
        let n_ff = self.down.n_ff;
        if !f32_act {
            if let Some(gate) = &w.gate {
                quantise_into(&mut s.qx, gate.ty, x);
            }
            quantise_into(&mut s.qx_up, w.up.ty, x);
        }
        let all = matches!(cands, Candidates::All);
        // Listed candidates (the hybrid's cold set) are cut by their own count per block:
        // the profile's frequencies would also weigh the neurons another device computes.
        let expected = match cands {
            Candidates::Listed(list) => {
                s.listed.clear();
                s.listed.resize(n_ff.div_ceil(TASK_ALIGN), 0.0);
                for &j in list {
                    if let Some(c) = s.listed.get_mut(j as usize / TASK_ALIGN) {
                        *c += 1.0;
                    }
                }
                &s.listed
            }
            _ => &self.block_freq,
        };
        let threads = crate::parallel::threads();
        task_cuts(n_ff, expected, all, threads, &mut s.cuts);
        let n_tasks = s.cuts.len() - 1;
        if s.tasks.len() < n_tasks {
            s.tasks.resize_with(n_tasks, TaskScratch::default);
        }
        let input = TaskInput {
            x,
            q_gate: if f32_act || w.gate.is_none() {
                None
            } else {
                s.qx.as_ref()
            },
            q_up: if f32_act { None } else { s.qx_up.as_ref() },
            hidden: &s.hidden,
            rounding: quant::activation_type(self.down.ty)
                .filter(|&t| !f32_act && t != quant::GgmlType::F32)
                .map(|t| Rounding {
                    block: t.block_len(),
                    sums: t == quant::GgmlType::Q8_1,
                }),
        };
        if let Some(r) = input.rounding {
            debug_assert!(TASK_ALIGN.is_multiple_of(r.block) && n_ff.is_multiple_of(r.block));
        }
        let cuts = &s.cuts;
        crate::parallel::for_chunks_mut(&mut s.tasks[..n_tasks], 1, |i, t| {
            let (lo, hi) = (cuts[i], cuts[i + 1]);
            self.task(kind, w, &input, cands, lo..hi, &mut t[0]);
        });
        // The kept neurons in ascending order, and their (rounded) activations where the
        // down accumulation reads them: it reads `a[j]` only for kept `j`, and the Q8_1 block
        // sums only for blocks holding one, so neither needs clearing.
        s.keep.clear();
        s.act.resize(n_ff, 0.0);
        // The Q8_1 block length, when the down kernel takes block sums.
        let sum_block = input.rounding.filter(|r| r.sums).map(|r| r.block);
        if let Some(bl) = sum_block {
            s.sums.resize(n_ff / bl, 0.0);
        }
        for (i, t) in s.tasks[..n_tasks].iter().enumerate() {
            s.keep.extend_from_slice(&t.keep);
            for (&j, &v) in t.keep.iter().zip(&t.vals) {
                s.act[j as usize] = v;
            }
            if let Some(bl) = sum_block {
                let b0 = s.cuts[i] / bl;
                s.sums[b0..b0 + t.sums.len()].copy_from_slice(&t.sums);
            }
            s.counters.predicted += t.predicted;
            s.counters.bytes += t.bytes;
        }
        s.counters.computed += s.keep.len() as u64;
        let sums = sum_block.map(|_| &s.sums[..]);
        // 5. Down columns of the kept neurons.
        self.down.accumulate(&s.keep, &s.act, sums, out, &mut s.tmp);
        s.counters.bytes += self.down.bytes_read(&s.keep) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each range's expected work, as `task_cuts` weighs it for predicted tasks.
    fn works(cuts: &[usize], freq: &[f32]) -> Vec<f32> {
        cuts.windows(2)
            .map(|w| (w[0]..w[1]).map(|j| 1.0 + SELECTED_COST * freq[j]).sum())
            .collect()
    }

    #[test]
    fn task_ranges_are_whole_blocks_of_about_equal_work() {
        let mut cuts = Vec::new();
        // No frequencies: equal lengths.
        task_cuts(8192, &[], false, 2, &mut cuts);
        assert_eq!(cuts, [0, 4096, 8192]);
        task_cuts(8192, &[], false, 3, &mut cuts);
        assert_eq!(cuts, [0, 2816, 5376, 8192]);
        // More threads than blocks: one block each, the rest of the threads idle.
        task_cuts(512, &[], false, 4, &mut cuts);
        assert_eq!(cuts, [0, 256, 512]);
        // A length that is not whole blocks ends where the neurons do.
        task_cuts(1000, &[], false, 2, &mut cuts);
        assert_eq!(cuts, [0, 512, 1000]);

        // Hottest first, power-law frequencies (mean 0.1): equal halves would give the first
        // thread most of the work; by work the first range is much shorter and the two
        // ranges' work differs by less than one block's.
        let n = 8192;
        let freq: Vec<f32> = (0..n).map(|r| (85.0 / (r + 1) as f32).min(0.99)).collect();
        let bf = block_frequencies(&freq);
        assert_eq!(bf.len(), 32);
        let halves = works(&[0, 4096, 8192], &freq);
        assert!(halves[0] > 1.5 * halves[1], "{halves:?}");
        task_cuts(n, &bf, false, 2, &mut cuts);
        assert!(
            cuts[1] < 2048 && cuts[1].is_multiple_of(TASK_ALIGN),
            "{cuts:?}"
        );
        let w = works(&cuts, &freq);
        let block_max = (0..n)
            .step_by(TASK_ALIGN)
            .map(|b| works(&[b, b + TASK_ALIGN], &freq)[0])
            .fold(0.0f32, f32::max);
        assert!((w[0] - w[1]).abs() <= block_max, "{w:?}");
        // Oracle tasks read every gate row: length counts for more, the cut moves right.
        let mut oracle = Vec::new();
        task_cuts(n, &bf, true, 2, &mut oracle);
        assert!(oracle[1] > cuts[1] && oracle[1] <= 4096, "{oracle:?}");
    }
}
