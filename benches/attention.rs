//! Decode attention over the KV cache for one query row, on the synthetic 1B model's shape
//! (32 query heads, 8 KV heads of 64) and SmolLM2's (9 heads, 3 KV heads of 64), at a few
//! cache lengths. The cache (f16) fits in L2 at these lengths: this is arithmetic, not
//! bandwidth.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench attention`.

use divan::Bencher;
use powerinfer::backend::cpu::CpuTensor;
use powerinfer::backend::{AttnParams, Backend, CpuBackend};

fn main() {
    divan::main();
}

fn rand_vec(n: usize, seed: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Attention at position `pos` over `layers` layers' caches, one layer an iteration in turn:
/// with one layer its cache stays in L2; with enough of them (beyond the last-level cache) it
/// comes from DRAM, as in decoding, where each layer's cache is read once a token between
/// hundreds of MB of weights.
fn run(bencher: Bencher, n_head: usize, n_head_kv: usize, pos: usize, layers: usize) {
    let hd = 64;
    let kv_dim = n_head_kv * hd;
    let b = CpuBackend::new();
    let mut seed = 5;
    let mut cache = b.new_kv_cache(layers, pos + 1, kv_dim, hd);
    let k = CpuTensor::from_vec(rand_vec((pos + 1) * kv_dim, &mut seed), pos + 1, kv_dim);
    let v = CpuTensor::from_vec(rand_vec((pos + 1) * kv_dim, &mut seed), pos + 1, kv_dim);
    for l in 0..layers {
        b.store_kv(&mut cache, l, 0, &k, &v);
    }
    let mut layer = 0;
    let q = CpuTensor::from_vec(
        rand_vec(n_head * hd, &mut seed)
            .iter()
            .map(|x| x * 8.0)
            .collect(),
        1,
        n_head * hd,
    );
    let p = AttnParams {
        n_head,
        n_head_kv,
        head_dim: hd,
        scale: 0.125,
        window: None,
    };
    let mut out = CpuTensor::default();
    bencher.bench_local(|| {
        b.attention(&q, &cache, layer, pos, p, &mut out);
        layer = (layer + 1) % layers;
        divan::black_box(&out);
    });
}

#[divan::bench(args = [96, 320, 1024])]
fn syn1b(bencher: Bencher, pos: usize) {
    run(bencher, 32, 8, pos, 1)
}

/// The cache from DRAM: 1,024 layers of ~200 KB at position 96.
#[divan::bench(args = [96, 320])]
fn syn1b_cold(bencher: Bencher, pos: usize) {
    run(bencher, 32, 8, pos, 100_000 / pos.max(1))
}

#[divan::bench(args = [96, 320, 1024])]
fn smollm2(bencher: Bencher, pos: usize) {
    run(bencher, 9, 3, pos, 1)
}
