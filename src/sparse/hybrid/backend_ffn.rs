//! `Backend::sparse_ffn` for a backend that is its own hybrid device (the CUDA backend, the
//! stand-in): the same code for both, so that the stand-in's model-level tests cover it.

use super::{ffn_row, HybridDevice};
use crate::backend::Backend;
use crate::model::FfnKind;
use crate::sparse::{FfnWeights, SparseLayer, SparseScratch};

/// The hybrid FFN of layer `il` over every row of `x` (one row at a time; a multi-row batch
/// is the sparse prefill). False when no layers are on the device or a weight has no host
/// bytes.
#[allow(clippy::too_many_arguments)]
pub fn sparse_ffn_rows<B>(
    b: &B,
    layers: Option<&[<B as HybridDevice>::Layer]>,
    il: usize,
    layer: &SparseLayer,
    kind: FfnKind,
    gate: Option<&<B as Backend>::Weight>,
    up: &<B as Backend>::Weight,
    x: &<B as Backend>::Tensor,
    oracle: bool,
    scratch: &mut SparseScratch,
    dev: &mut Option<<B as HybridDevice>::Scratch>,
    out: &mut <B as Backend>::Tensor,
) -> bool
where
    B: Backend + HybridDevice<Tensor = <B as Backend>::Tensor>,
{
    let Some(layers) = layers else {
        return false;
    };
    let (Some(l), Some(up)) = (layers.get(il), b.host_matrix(up)) else {
        return false;
    };
    let gate = match gate.map(|g| b.host_matrix(g)) {
        Some(None) => return false,
        g => g.flatten(),
    };
    let w = FfnWeights { gate, up };
    let ds = dev.get_or_insert_with(|| b.new_scratch(layers));
    let rows = b.rows(x);
    if rows == 1 {
        ffn_row(b, l, layer, kind, &w, x, oracle, false, ds, scratch, out);
        return true;
    }
    let mut xr = b.new_tensor();
    let mut ys = Vec::with_capacity(rows);
    for r in 0..rows {
        b.copy_rows(x, r, 1, &mut xr);
        let mut y = b.new_tensor();
        ffn_row(
            b, l, layer, kind, &w, &xr, oracle, false, ds, scratch, &mut y,
        );
        ys.push(y);
    }
    b.concat_rows(&ys.iter().collect::<Vec<_>>(), out);
    true
}
