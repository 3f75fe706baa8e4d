//! The dense layer split's sizing (`backend::layer_split`): how many whole layers fit a VRAM
//! budget next to the fixed part, on a synthetic model.
mod common;

use powerinfer::backend::layer_split::{fixed_bytes, layer_bytes, layers_within};
use powerinfer::gguf::GgufFile;
use powerinfer::model::ModelConfig;

#[test]
fn whole_layers_that_fit_the_budget() {
    let path = common::scratch("layer-split", "m.gguf");
    common::synth_small(&path, "q8_0", 3, 0.9);
    let file = GgufFile::open(&path).unwrap();
    let c = ModelConfig::from_gguf(&file, None).unwrap();
    let ctx = 256;
    let fixed = fixed_bytes(&file, &c, ctx);
    // The KV cache alone: 2 (keys, values) × layers × positions × kv_dim × 2 bytes.
    assert!(fixed > 2 * (c.n_layer * ctx * c.kv_dim() * 2) as u64);
    let per: Vec<u64> = (0..c.n_layer).map(|il| layer_bytes(&file, il)).collect();
    assert!(per.iter().all(|&b| b > 0));
    // Every tensor is the fixed part's or one layer's.
    let all: u64 = file.tensors.iter().map(|t| t.n_bytes() as u64).sum();
    assert_eq!(
        fixed - 2 * (c.n_layer * ctx * c.kv_dim() * 2) as u64 + per.iter().sum::<u64>(),
        all
    );
    assert_eq!(layers_within(&file, &c, ctx, 0), 0);
    assert_eq!(layers_within(&file, &c, ctx, fixed - 1), 0);
    let mut budget = fixed;
    for (n, &b) in per.iter().enumerate() {
        assert_eq!(layers_within(&file, &c, ctx, budget), n);
        assert_eq!(layers_within(&file, &c, ctx, budget + b - 1), n);
        budget += b;
    }
    assert_eq!(layers_within(&file, &c, ctx, budget), c.n_layer);
    assert_eq!(layers_within(&file, &c, ctx, u64::MAX), c.n_layer);
}
