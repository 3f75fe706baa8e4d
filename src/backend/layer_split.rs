//! The dense layer-split baseline (llama.cpp's `-ngl`): the weights of the first N decoder
//! layers in VRAM, the others read by the CPU. It is what a plain engine does with a VRAM
//! budget too small for the model, so the hybrid FFN is benchmarked against it at the same
//! budget. Everything else stays as on the GPU (embeddings, output head, norms, the KV cache
//! of every layer, attention itself): only the matmuls of a host layer's weights run on the
//! CPU, their input copied down and their output up.

use crate::gguf::GgufFile;
use crate::model::ModelConfig;

/// The layer a tensor belongs to (`blk.N.…`), if any.
pub fn tensor_layer(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Bytes the GPU holds before any layer's weights: every tensor outside the layers
/// (embeddings, output head, final norm) and the f16 KV cache of `ctx` positions.
pub fn fixed_bytes(file: &GgufFile, c: &ModelConfig, ctx: usize) -> u64 {
    let outside: u64 = file
        .tensors
        .iter()
        .filter(|t| tensor_layer(&t.name).is_none())
        .map(|t| t.n_bytes() as u64)
        .sum();
    outside + 2 * c.n_layer as u64 * ctx as u64 * c.kv_dim() as u64 * 2
}

/// Bytes of layer `il`'s tensors.
pub fn layer_bytes(file: &GgufFile, il: usize) -> u64 {
    file.tensors
        .iter()
        .filter(|t| tensor_layer(&t.name) == Some(il))
        .map(|t| t.n_bytes() as u64)
        .sum()
}

/// How many whole layers, from the first, fit in `budget` bytes next to the fixed part.
pub fn layers_within(file: &GgufFile, c: &ModelConfig, ctx: usize, budget: u64) -> usize {
    let mut left = budget.saturating_sub(fixed_bytes(file, c, ctx));
    (0..c.n_layer)
        .take_while(|&il| {
            let b = layer_bytes(file, il);
            let fits = b <= left;
            left = left.saturating_sub(b);
            fits
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::tensor_layer;

    #[test]
    fn layer_numbers_come_from_the_name() {
        assert_eq!(tensor_layer("blk.0.ffn_up.weight"), Some(0));
        assert_eq!(tensor_layer("blk.17.attn_q.weight"), Some(17));
        assert_eq!(tensor_layer("token_embd.weight"), None);
        assert_eq!(tensor_layer("output_norm.weight"), None);
        assert_eq!(tensor_layer("blk.x.ffn_up.weight"), None);
    }
}
