//! Bytes a decode step reads from memory, from the tensors it actually touches: the roofline's
//! numerator. One token reads every matrix of every layer, the output head, one embedding row
//! and the KV cache up to its position; the sparse FFN replaces the layers' gate/up/down bytes
//! by what its counters report.

use serde::{Deserialize, Serialize};

use super::BenchError;
use crate::gguf::GgufFile;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecodeTraffic {
    /// Every tensor of the layers (`blk.*`): attention, norms and FFN.
    pub layer_bytes: u64,
    /// The FFN matrices of all layers (gate, up, down): the part the sparse FFN replaces.
    pub ffn_bytes: u64,
    /// Output norm and head (the embedding table when tied) plus one embedding row.
    pub head_bytes: u64,
    /// Keys and values of one cached position, all layers.
    pub kv_bytes_per_pos: u64,
}

const FFN_SUFFIXES: [&str; 3] = [".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"];

impl DecodeTraffic {
    /// Sizes from the model file's tensor table; `kv_elem_bytes` is the cache's element size.
    pub fn from_gguf(
        file: &GgufFile,
        kv_dim: usize,
        n_layer: usize,
        kv_elem_bytes: usize,
    ) -> Result<DecodeTraffic, BenchError> {
        let (mut layer_bytes, mut ffn_bytes) = (0u64, 0u64);
        for t in &file.tensors {
            if t.name.starts_with("blk.") {
                layer_bytes += t.n_bytes() as u64;
                if FFN_SUFFIXES.iter().any(|s| t.name.ends_with(s)) {
                    ffn_bytes += t.n_bytes() as u64;
                }
            }
        }
        let embd = file
            .tensor_info("token_embd.weight")
            .ok_or_else(|| BenchError::MissingTensor("token_embd.weight".into()))?;
        let head = file.tensor_info("output.weight").unwrap_or(embd);
        let norm = file
            .tensor_info("output_norm.weight")
            .map_or(0, |t| t.n_bytes());
        if ffn_bytes == 0 {
            return Err(BenchError::MissingTensor("blk.*.ffn_up.weight".into()));
        }
        Ok(DecodeTraffic {
            layer_bytes,
            ffn_bytes,
            head_bytes: (head.n_bytes() + norm + embd.row_bytes()) as u64,
            kv_bytes_per_pos: (2 * n_layer * kv_dim * kv_elem_bytes) as u64,
        })
    }

    /// Mean KV bytes attention reads per token when decoding `n_gen` tokens after `n_past`
    /// cached ones: the token at position p reads p + 1 positions.
    pub fn mean_kv_bytes(&self, n_past: usize, n_gen: usize) -> f64 {
        if n_gen == 0 {
            return 0.0;
        }
        // Mean of (p + 1) for p in n_past..n_past + n_gen.
        let mean_positions = n_past as f64 + (n_gen as f64 + 1.0) / 2.0;
        mean_positions * self.kv_bytes_per_pos as f64
    }

    /// Everything but the FFN matrices: the same in every mode.
    pub fn shared_bytes(&self, n_past: usize, n_gen: usize) -> f64 {
        (self.layer_bytes - self.ffn_bytes + self.head_bytes) as f64
            + self.mean_kv_bytes(n_past, n_gen)
    }

    /// Bytes per decoded token of the dense FFN.
    pub fn dense_per_token(&self, n_past: usize, n_gen: usize) -> f64 {
        self.shared_bytes(n_past, n_gen) + self.ffn_bytes as f64
    }

    /// Bytes per decoded token when the FFN read `ffn_per_token` bytes (sparse counters).
    pub fn sparse_per_token(&self, ffn_per_token: f64, n_past: usize, n_gen: usize) -> f64 {
        self.shared_bytes(n_past, n_gen) + ffn_per_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic() -> DecodeTraffic {
        DecodeTraffic {
            layer_bytes: 1000,
            ffn_bytes: 600,
            head_bytes: 100,
            kv_bytes_per_pos: 10,
        }
    }

    /// The closed form against summing position by position.
    #[test]
    fn mean_kv_matches_sum_over_positions() {
        let t = traffic();
        for (past, n) in [(0, 1), (8, 8), (64, 64), (3, 17)] {
            let sum: u64 = (past..past + n).map(|p| (p as u64 + 1) * 10).sum();
            let want = sum as f64 / n as f64;
            assert!((t.mean_kv_bytes(past, n) - want).abs() < 1e-9, "{past} {n}");
        }
    }

    #[test]
    fn sparse_replaces_only_the_ffn() {
        let t = traffic();
        let dense = t.dense_per_token(0, 1);
        assert_eq!(dense, 1000.0 + 100.0 + 10.0);
        assert_eq!(t.sparse_per_token(60.0, 0, 1), dense - 600.0 + 60.0);
    }
}
