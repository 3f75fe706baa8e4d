//! Speed of the profiler's hot spots: re-solving placement for a new budget (must take
//! milliseconds, so budgets can be tried interactively) and recording activation statistics
//! (it sees every token of every layer).
//!
//! Run: `cargo bench -p powerinfer-profiler --bench profiler`.

use divan::counter::ItemsCount;
use divan::Bencher;
use powerinfer_profiler::{ActivationStats, FixedItem, LayerNeurons, Placer};

fn main() {
    divan::main();
}

/// Deterministic pseudo-random numbers in [0, 1) (a 64-bit LCG's high bits).
fn uniform(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// (layers, neurons per layer): Qwen2.5-0.5B and a Llama-8B-sized model.
const SHAPES: [(usize, usize); 2] = [(24, 4864), (32, 14336)];

#[divan::bench(args = SHAPES)]
fn placement_resolve(bencher: Bencher, (n_layers, n_ff): (usize, usize)) {
    let layers: Vec<LayerNeurons> = (0..n_layers)
        .map(|l| LayerNeurons {
            values: uniform(n_ff, l as u64).iter().map(|u| u.powi(4)).collect(),
            bytes_per_neuron: 3 * 896 * 9 / 16 + (l as u64 % 2) * 64,
        })
        .collect();
    let total: u64 = layers
        .iter()
        .map(|l| l.values.len() as u64 * l.bytes_per_neuron)
        .sum();
    let placer = Placer::new(
        vec![FixedItem {
            name: "attention".into(),
            bytes: 1000,
        }],
        layers,
    )
    .unwrap();
    bencher.counter(ItemsCount::new(n_layers * n_ff)).bench(|| {
        placer
            .solve(divan::black_box(total / 2), 32)
            .unwrap()
            .neuron_bytes
    });
}

#[divan::bench(args = [4864, 14336])]
fn stats_record_64_rows(bencher: Bencher, n_ff: usize) {
    let rows = 64;
    let values: Vec<f32> = uniform(rows * n_ff, 9)
        .iter()
        .map(|&u| (u as f32 - 0.5) * 2.0)
        .collect();
    let mut stats = ActivationStats::uniform(1, n_ff);
    bencher
        .counter(ItemsCount::new(rows * n_ff))
        .bench_local(|| {
            stats
                .record(0, rows, divan::black_box(&values), 0.25)
                .unwrap()
        });
}
