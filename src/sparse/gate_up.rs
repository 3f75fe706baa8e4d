//! The gate and up rows of a gated FFN side by side: row `2i` of the copy is neuron `i`'s gate
//! row and row `2i + 1` its up row, byte for byte as in the model.
//!
//! Why a copy: the sparse FFN reads a scattered ~10% of the neurons, and each of them costs a
//! short run in gate and, when its gate passes, another in up, 9.4 MB away (1B-class Q4_0
//! layer). Side by side, the hardware prefetcher that follows the gate row runs on into the up
//! row, so the up read mostly finds its lines already on the way. On the 2-vCPU VM,
//! `benches/sparse_ffn.rs` `gather_gate_then_up`: 24-25 GB/s paired against 17.4-17.7 GB/s
//! from the two matrices. The cost is memory: gate and up once more (the model keeps its own
//! for the dense path and prefill). The values are the model's own, so the sparse result is
//! unchanged to the bit.

use rayon::prelude::*;

use crate::huge_vec::HugeVec;
use crate::quant::{GgmlType, QMatrix};

/// Neuron `i`'s gate row followed by its up row, for every neuron of a layer.
pub struct GateUpPairs {
    ty: GgmlType,
    n_ff: usize,
    cols: usize,
    data: HugeVec<u8>,
}

impl GateUpPairs {
    /// The paired copy of `gate` and `up`, or `None` when they differ in type or shape (the
    /// sparse FFN then reads the two matrices as they are).
    pub fn new(gate: &QMatrix, up: &QMatrix) -> Option<GateUpPairs> {
        if gate.ty != up.ty || gate.rows != up.rows || gate.cols != up.cols {
            return None;
        }
        let rb = gate.row_bytes();
        let mut data = HugeVec::zeroed(2 * rb * gate.rows);
        data.par_chunks_mut(2 * rb)
            .enumerate()
            .for_each(|(i, pair)| {
                pair[..rb].copy_from_slice(gate.row(i));
                pair[rb..].copy_from_slice(up.row(i));
            });
        Some(GateUpPairs {
            ty: gate.ty,
            n_ff: gate.rows,
            cols: gate.cols,
            data,
        })
    }

    /// The copy as one matrix of `2 n_ff` rows: gate of neuron `i` at `2i`, up at `2i + 1`.
    pub fn matrix(&self) -> QMatrix<'_> {
        QMatrix {
            ty: self.ty,
            rows: 2 * self.n_ff,
            cols: self.cols,
            data: &self.data,
        }
    }

    /// Bytes held (for memory reports).
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
    fn rows_alternate_gate_and_up_unchanged() {
        for ty in [GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K] {
            let (rows, cols) = (37, 256);
            let g = random_matrix(ty, rows, cols, 1);
            let u = random_matrix(ty, rows, cols, 2);
            let gate = QMatrix::new(ty, rows, cols, &g).unwrap();
            let up = QMatrix::new(ty, rows, cols, &u).unwrap();
            let p = GateUpPairs::new(&gate, &up).unwrap();
            let m = p.matrix();
            assert_eq!((m.rows, m.cols, m.ty), (2 * rows, cols, ty));
            assert_eq!(p.bytes(), g.len() + u.len());
            for i in 0..rows {
                assert_eq!(m.row(2 * i), gate.row(i), "{ty:?} gate row {i}");
                assert_eq!(m.row(2 * i + 1), up.row(i), "{ty:?} up row {i}");
            }
        }
    }

    /// The sparse FFN gives the same bits from the pairs as from the separate matrices, for
    /// both gated kinds whose up read depends on the gate and one that reads every up row.
    #[test]
    fn sparse_ffn_is_unchanged_by_the_pairs() {
        use crate::model::FfnKind;
        use crate::sparse::down::TransposedDown;
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
            let layer = |pairs: bool| SparseLayer {
                threshold: LayerThreshold { rule, t },
                predictor: None,
                down: TransposedDown::new(&down),
                gate_up: pairs.then(|| GateUpPairs::new(&gate, &up).unwrap()),
            };
            let w = FfnWeights {
                gate: Some(gate),
                up,
            };
            let run = |l: &SparseLayer| {
                let mut s = SparseScratch::default();
                let mut out = vec![0f32; d];
                l.forward_row(kind, &w, &x, true, false, &mut s, &mut out);
                (out, s.counters.computed)
            };
            let (a, ka) = run(&layer(false));
            let (b, kb) = run(&layer(true));
            assert!(ka > 0 && ka < n_ff as u64, "{kind:?}: {ka} neurons kept");
            assert_eq!(ka, kb, "{kind:?}");
            assert!(a.iter().any(|&v| v != 0.0), "{kind:?}");
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn mismatched_matrices_are_not_paired() {
        let g = random_matrix(GgmlType::Q4_0, 8, 64, 1);
        let u = random_matrix(GgmlType::Q8_0, 8, 64, 2);
        let u4 = random_matrix(GgmlType::Q4_0, 4, 64, 3);
        let gate = QMatrix::new(GgmlType::Q4_0, 8, 64, &g).unwrap();
        let up8 = QMatrix::new(GgmlType::Q8_0, 8, 64, &u).unwrap();
        let up_short = QMatrix::new(GgmlType::Q4_0, 4, 64, &u4).unwrap();
        assert!(GateUpPairs::new(&gate, &up8).is_none());
        assert!(GateUpPairs::new(&gate, &up_short).is_none());
    }
}
