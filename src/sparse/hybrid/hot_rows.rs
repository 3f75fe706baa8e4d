//! The hot neurons of a layer packed for a device: gate and up rows compacted in the model's
//! format (row k is neuron `hot[k]`), down transposed to f16 `[n_hot][d_model]` so that one
//! neuron's column is contiguous. The CUDA device uploads exactly this; the stand-in keeps it.

use half::f16;

use super::{HybridError, LayerUpload};
use crate::quant;

pub struct HotRows {
    pub row_bytes: usize,
    pub gate: Option<Vec<u8>>,
    pub up: Vec<u8>,
    pub down_t: Vec<f16>,
}

impl HotRows {
    pub fn pack(l: &LayerUpload) -> Result<HotRows, HybridError> {
        let bad = |msg: String| HybridError::Layer {
            layer: l.layer,
            msg,
        };
        let (n_ff, d_model) = (l.n_ff(), l.d_model());
        if l.gate.is_some() != l.kind.is_gated() {
            return Err(bad(format!(
                "FFN kind {} {} a gate matrix",
                l.kind.name(),
                if l.kind.is_gated() {
                    "needs"
                } else {
                    "takes no"
                }
            )));
        }
        if let Some(g) = &l.gate {
            if (g.ty, g.rows, g.cols) != (l.up.ty, n_ff, d_model) {
                return Err(bad("gate and up differ in type or shape".into()));
            }
        }
        if (l.down.rows, l.down.cols) != (d_model, n_ff) {
            return Err(bad(format!(
                "down is {}x{}, expected {d_model}x{n_ff}",
                l.down.rows, l.down.cols
            )));
        }
        if let Some(&id) = l.hot.iter().find(|&&id| id as usize >= n_ff) {
            return Err(bad(format!("hot neuron {id} outside the FFN's {n_ff}")));
        }
        let row_bytes = l.up.row_bytes();
        let pick = |m: &quant::QMatrix| -> Vec<u8> {
            l.hot
                .iter()
                .flat_map(|&id| m.row(id as usize))
                .copied()
                .collect()
        };
        // Column `id` of down is element `id` of every row: transpose the hot columns.
        let mut down_t = vec![f16::ZERO; l.hot.len() * d_model];
        let mut row = vec![0f32; n_ff];
        for d in 0..d_model {
            quant::dequantize_row(l.down.ty, l.down.row(d), &mut row)
                .map_err(|e| bad(e.to_string()))?;
            for (k, &id) in l.hot.iter().enumerate() {
                down_t[k * d_model + d] = f16::from_f32(row[id as usize]);
            }
        }
        Ok(HotRows {
            row_bytes,
            gate: l.gate.as_ref().map(pick),
            up: pick(&l.up),
            down_t,
        })
    }
}
