//! Each neuron's gate row, up row and, where they fit in a row's bytes, its down levels, side
//! by side: record `i` is `slots` rows long, row `slots·i` neuron `i`'s gate row and
//! `slots·i + 1` its up row, byte for byte as in the model, and the third row (when there is
//! one) holds the packed levels of its down column (`TransposedDown::share_levels`).
//!
//! Why: the sparse FFN reads a scattered ~10% of the neurons, and each of them costs a short
//! run in gate and, when its gate passes, one in up 9.4 MB away and one in the down copy
//! (1B-class Q4_0 layer). Side by side, the hardware prefetcher that follows the gate row runs
//! on into the up row and then the levels, so those reads mostly find their lines already on
//! the way, without holding the core's miss buffers. On the 2-vCPU VM,
//! `benches/sparse_ffn.rs` `gather_gate_then_up`: 24-25 GB/s from records against 17.4-17.7
//! GB/s from the two matrices; on the synthetic 1B model (predicted decode, 2 threads, model
//! in 2 MiB pages) the ratio to dense went from 2.17-2.24× to 2.22-2.35× with this and the
//! attention changes of the same day (BENCHMARKS.md, 2026-12-07). The cost is memory: gate
//! and up once more (the model keeps its own for the dense path and prefill). The values are
//! the model's own, so the sparse result is unchanged to the bit.

use std::sync::Arc;

use rayon::prelude::*;

use super::down::TransposedDown;
use crate::huge_vec::HugeVec;
use crate::quant::{GgmlType, QMatrix};

/// The records of every neuron of a layer.
pub struct NeuronRecords {
    ty: GgmlType,
    n_ff: usize,
    cols: usize,
    slots: usize,
    data: Arc<HugeVec<u8>>,
}

impl NeuronRecords {
    /// The records of `gate` and `up`, with `down`'s levels moved into a third slot where
    /// they are packed nibbles no longer than a gate row; `None` when gate and up differ in
    /// type or shape (the sparse FFN then reads the two matrices as they are).
    pub fn new(
        gate: &QMatrix,
        up: &QMatrix,
        down: Option<&mut TransposedDown>,
    ) -> Option<NeuronRecords> {
        if gate.ty != up.ty || gate.rows != up.rows || gate.cols != up.cols {
            return None;
        }
        let (rb, n_ff) = (gate.row_bytes(), gate.rows);
        let down = down.filter(|d| d.n_ff == n_ff && d.nibble_bytes().is_some_and(|b| b <= rb));
        let slots = if down.is_some() { 3 } else { 2 };
        let mut data = HugeVec::zeroed(slots * rb * n_ff);
        data.par_chunks_mut(slots * rb)
            .enumerate()
            .for_each(|(i, rec)| {
                rec[..rb].copy_from_slice(gate.row(i));
                rec[rb..2 * rb].copy_from_slice(up.row(i));
            });
        let data = match down {
            Some(d) => d.share_levels(data, 2 * rb, slots * rb),
            None => Arc::new(data),
        };
        Some(NeuronRecords {
            ty: gate.ty,
            n_ff,
            cols: gate.cols,
            slots,
            data,
        })
    }

    /// Rows per record: 2 (gate, up) or 3 (and the down levels).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The records as one matrix of `slots · n_ff` rows: gate of neuron `i` at `slots · i`,
    /// up at `slots · i + 1` (the levels' row is not a row of the weight type).
    pub fn matrix(&self) -> QMatrix<'_> {
        QMatrix {
            ty: self.ty,
            rows: self.slots * self.n_ff,
            cols: self.cols,
            data: &self.data,
        }
    }

    /// Bytes held (for memory reports), the down levels included when they moved here.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::quantize_row;

    fn random_matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
        let mut s = seed | 1;
        let rb = ty.row_bytes(cols).unwrap();
        let mut data = vec![0u8; rows * rb];
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            for v in row.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            }
            quantize_row(ty, &row, &mut data[r * rb..(r + 1) * rb]).unwrap();
        }
        data
    }

    #[test]
    fn records_hold_gate_up_and_the_levels_unchanged() {
        let (n_ff, d) = (64, 256);
        let dn = random_matrix(GgmlType::Q4_0, d, n_ff, 3);
        let down = QMatrix::new(GgmlType::Q4_0, d, n_ff, &dn).unwrap();
        let dn8 = random_matrix(GgmlType::Q8_0, d, n_ff, 4);
        let down8 = QMatrix::new(GgmlType::Q8_0, d, n_ff, &dn8).unwrap();
        let a: Vec<f32> = (0..n_ff).map(|j| (j as f32 * 0.37).sin()).collect();
        let active: Vec<u32> = (0..n_ff as u32).filter(|j| j % 3 != 1).collect();
        let sum = |t: &TransposedDown| {
            let mut out = vec![0f32; d];
            t.accumulate(&active, &a, None, &mut out, &mut Vec::new());
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K] {
            let g = random_matrix(ty, n_ff, d, 1);
            let u = random_matrix(ty, n_ff, d, 2);
            let gate = QMatrix::new(ty, n_ff, d, &g).unwrap();
            let up = QMatrix::new(ty, n_ff, d, &u).unwrap();
            // No down; a Q8_0 down (byte levels: they stay); a Q4_0 down (nibbles: they move).
            for (dm, slots) in [(None, 2), (Some(&down8), 2), (Some(&down), 3)] {
                let mut t = dm.map(TransposedDown::new);
                let before = t.as_ref().map(sum);
                let r = NeuronRecords::new(&gate, &up, t.as_mut()).unwrap();
                let m = r.matrix();
                assert_eq!(r.slots(), slots, "{ty:?}");
                assert_eq!((m.rows, m.cols, m.ty), (slots * n_ff, d, ty));
                assert_eq!(r.bytes(), slots * gate.row_bytes() * n_ff);
                for i in 0..n_ff {
                    assert_eq!(m.row(slots * i), gate.row(i), "{ty:?} gate row {i}");
                    assert_eq!(m.row(slots * i + 1), up.row(i), "{ty:?} up row {i}");
                }
                assert_eq!(t.as_ref().map(sum), before, "{ty:?}: down sums changed");
            }
        }
    }

    /// The sparse FFN over listed candidates gives the same bits from the records (with and
    /// without the down levels) as from the separate matrices, for the relu rule (up read
    /// only where the gate passes), the gate rule, and the product rule (up read for every
    /// candidate).
    #[test]
    fn sparse_ffn_is_unchanged_by_the_records() {
        use crate::model::FfnKind;
        use crate::sparse::{FfnWeights, LayerThreshold, SparseLayer, SparseScratch, SparsityRule};

        let (d, n_ff, ty) = (256, 1024, GgmlType::Q4_0);
        let (g, u, dn) = (
            random_matrix(ty, n_ff, d, 1),
            random_matrix(ty, n_ff, d, 2),
            random_matrix(ty, d, n_ff, 3),
        );
        let gate = QMatrix::new(ty, n_ff, d, &g).unwrap();
        let up = QMatrix::new(ty, n_ff, d, &u).unwrap();
        let down = QMatrix::new(ty, d, n_ff, &dn).unwrap();
        let x: Vec<f32> = (0..d)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        for (kind, rule, t) in [
            (FfnKind::ReGlu, SparsityRule::Relu, 0.0),
            (FfnKind::SwiGlu, SparsityRule::Gate, 0.05),
            (FfnKind::SwiGlu, SparsityRule::Product, 0.02),
        ] {
            // 0: the model's matrices; 1: records of gate and up; 2: and the down levels.
            let layer = |how: usize| {
                let mut down = TransposedDown::new(&down);
                let records = match how {
                    0 => None,
                    1 => NeuronRecords::new(&gate, &up, None),
                    _ => NeuronRecords::new(&gate, &up, Some(&mut down)),
                };
                assert_eq!(
                    records.as_ref().map(|r| r.slots()),
                    [None, Some(2), Some(3)][how]
                );
                SparseLayer {
                    threshold: LayerThreshold { rule, t },
                    predictor: None,
                    down,
                    records,
                    block_freq: Vec::new(),
                }
            };
            let w = FfnWeights {
                gate: Some(gate),
                up,
            };
            // A listed candidate set (as a predictor's): the records are read for those.
            let listed: Vec<u32> = (0..n_ff as u32).filter(|j| j % 3 != 1).collect();
            let run = |l: &SparseLayer| {
                let mut s = SparseScratch::default();
                let mut out = vec![0f32; d];
                l.forward_listed(kind, &w, &x, &listed, false, &mut s, &mut out);
                (out, s.counters.computed)
            };
            let (a, ka) = run(&layer(0));
            assert!(ka > 0 && ka < n_ff as u64, "{kind:?}: {ka} neurons kept");
            assert!(a.iter().any(|&v| v != 0.0), "{kind:?}");
            for how in [1, 2] {
                let (b, kb) = run(&layer(how));
                assert_eq!(ka, kb, "{kind:?}");
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{kind:?} records {how}"
                );
            }
        }
    }

    #[test]
    fn mismatched_matrices_get_no_records() {
        let g = random_matrix(GgmlType::Q4_0, 8, 64, 1);
        let u = random_matrix(GgmlType::Q8_0, 8, 64, 2);
        let u4 = random_matrix(GgmlType::Q4_0, 4, 64, 3);
        let gate = QMatrix::new(GgmlType::Q4_0, 8, 64, &g).unwrap();
        let up8 = QMatrix::new(GgmlType::Q8_0, 8, 64, &u).unwrap();
        let up_short = QMatrix::new(GgmlType::Q4_0, 4, 64, &u4).unwrap();
        assert!(NeuronRecords::new(&gate, &up8, None).is_none());
        assert!(NeuronRecords::new(&gate, &up_short, None).is_none());
    }
}
