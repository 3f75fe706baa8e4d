//! Hot-first neuron order (`quantize --neuron-order SIDECAR`): each layer's FFN neurons
//! renumbered by falling firing frequency, as a profile measured it.
//!
//! Why: the FFN computes the same function under any renumbering of its neurons (gate and up
//! rows, down columns and FFN biases move together), but the sparse FFN's cost depends on
//! where the active neurons sit. Block formats share one scale among 32 consecutive neurons
//! of each down row, and the sparse down accumulation reads a scale row for every block that
//! holds an active neuron: with the hot neurons side by side, fewer blocks hold one. Neurons
//! that fire together also become runs of adjacent rows, which the hardware prefetcher
//! streams instead of fetching them one scattered row at a time; and a GPU's hot neurons are
//! one contiguous range.
//!
//! Down's columns cross its quantisation blocks, so a quantised down matrix is requantised
//! after the renumbering: exact from f32 or f16 sources, one more rounding from a quantised
//! one (quantise from the f16 model where there is one).

use super::QuantizeError;

/// Per layer, the old index of each new neuron: `layer(l)[new] = old`.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronOrder {
    layers: Vec<Vec<u32>>,
}

/// How one tensor's data moves under a [`NeuronOrder`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Renumber<'a> {
    /// Row `i` of the output is row `perm[i]` of the input (gate and up matrices).
    Rows(&'a [u32]),
    /// Element `i` of every output row is element `perm[i]` of the input row (the down
    /// matrix, and 1-D FFN biases).
    Columns(&'a [u32]),
}

impl NeuronOrder {
    /// Neurons by falling frequency, ties in their old order; `freq[l]` is layer `l`'s.
    pub fn hot_first(freq: &[Vec<f32>]) -> NeuronOrder {
        let layers = freq
            .iter()
            .map(|f| {
                let mut perm: Vec<u32> = (0..f.len() as u32).collect();
                // A stable sort keeps equal frequencies (e.g. never-active neurons) in order.
                perm.sort_by(|&a, &b| f[b as usize].total_cmp(&f[a as usize]));
                perm
            })
            .collect();
        NeuronOrder { layers }
    }

    /// From explicit permutations; each must hold `0..n_ff` once.
    pub fn from_layers(layers: Vec<Vec<u32>>) -> Result<NeuronOrder, QuantizeError> {
        for (l, perm) in layers.iter().enumerate() {
            let mut seen = vec![false; perm.len()];
            for &j in perm {
                match seen.get_mut(j as usize) {
                    Some(s) if !*s => *s = true,
                    _ => {
                        return Err(QuantizeError::NeuronOrder(format!(
                            "layer {l}: not a permutation of 0..{}",
                            perm.len()
                        )))
                    }
                }
            }
        }
        Ok(NeuronOrder { layers })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn layer(&self, l: usize) -> &[u32] {
        &self.layers[l]
    }

    /// How tensor `name` (of `n_rows` rows of `row_len`) moves, `None` when it does not.
    /// A tensor of the FFN whose shape does not have the layer's neuron count where the
    /// renumbering needs it is an error (e.g. a fused gate-and-up matrix).
    pub fn renumbering(
        &self,
        name: &str,
        n_rows: usize,
        row_len: usize,
    ) -> Result<Option<Renumber<'_>>, QuantizeError> {
        let Some(rest) = name.strip_prefix("blk.") else {
            return Ok(None);
        };
        let Some((layer, tensor)) = rest.split_once('.') else {
            return Ok(None);
        };
        let Ok(l) = layer.parse::<usize>() else {
            return Ok(None);
        };
        let rows = matches!(tensor, "ffn_gate.weight" | "ffn_up.weight");
        let columns = matches!(tensor, "ffn_down.weight" | "ffn_gate.bias" | "ffn_up.bias");
        if !rows && !columns {
            return Ok(None);
        }
        let perm = self.layers.get(l).ok_or_else(|| {
            QuantizeError::NeuronOrder(format!(
                "{name}: the order has {} layers",
                self.layers.len()
            ))
        })?;
        let (got, what) = if rows {
            (n_rows, "rows")
        } else {
            (row_len, "elements per row")
        };
        if got != perm.len() {
            return Err(QuantizeError::NeuronOrder(format!(
                "{name}: {got} {what}, but the order has {} neurons in layer {l}",
                perm.len()
            )));
        }
        Ok(Some(if rows {
            Renumber::Rows(perm)
        } else {
            Renumber::Columns(perm)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hottest_first_and_ties_keep_their_order() {
        let o = NeuronOrder::hot_first(&[vec![0.1, 0.5, 0.0, 0.5, 0.9, 0.0]]);
        assert_eq!(o.layer(0), [4, 1, 3, 0, 2, 5]);
    }

    #[test]
    fn which_tensors_move_and_how() {
        let o = NeuronOrder::from_layers(vec![vec![2, 0, 1], vec![0, 1, 2]]).unwrap();
        assert_eq!(
            o.renumbering("blk.0.ffn_gate.weight", 3, 8).unwrap(),
            Some(Renumber::Rows(&[2, 0, 1]))
        );
        assert_eq!(
            o.renumbering("blk.1.ffn_down.weight", 8, 3).unwrap(),
            Some(Renumber::Columns(&[0, 1, 2]))
        );
        assert_eq!(
            o.renumbering("blk.0.ffn_up.bias", 1, 3).unwrap(),
            Some(Renumber::Columns(&[2, 0, 1]))
        );
        for name in [
            "blk.0.attn_q.weight",
            "output.weight",
            "blk.0.ffn_norm.weight",
        ] {
            assert_eq!(o.renumbering(name, 3, 8).unwrap(), None);
        }
        // A fused gate+up matrix (2·n_ff rows) and a layer the order lacks are errors.
        let e = o.renumbering("blk.0.ffn_up.weight", 6, 8).unwrap_err();
        assert!(e.to_string().contains("6 rows"), "{e}");
        assert!(o.renumbering("blk.2.ffn_up.weight", 3, 8).is_err());
        assert!(NeuronOrder::from_layers(vec![vec![0, 0, 1]]).is_err());
        assert!(NeuronOrder::from_layers(vec![vec![0, 3, 1]]).is_err());
    }
}
