//! matvec throughput (weight bytes / time) for the formats and shapes of the registry models,
//! plus a plain read-bandwidth measurement for the roofline.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench matvec`. Each iteration uses the next of
//! several copies of the matrix (256 MiB in all) so weights come from DRAM as in real decode,
//! not from a cache warmed by the previous iteration.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use divan::counter::BytesCount;
use divan::Bencher;
use powerinfer::quant::{matvec, GgmlType, QMatrix};
use rayon::prelude::*;

fn main() {
    divan::main();
}

#[derive(Clone, Copy)]
struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}x{}", self.ty, self.rows, self.cols)
    }
}

const fn c(ty: GgmlType, rows: usize, cols: usize) -> Case {
    Case { ty, rows, cols }
}

use GgmlType::*;
const CASES: &[Case] = &[
    // SmolLM2-135M (Q4_1 with Q8_0 embeddings/output head)
    c(Q4_1, 1536, 576),
    c(Q4_1, 576, 1536),
    c(Q8_0, 1536, 576),
    c(Q8_0, 576, 1536),
    c(Q8_0, 49152, 576),
    // Qwen2.5-0.5B / Gemma3 (Q4_K_M mixes)
    c(Q4_K, 896, 4864),
    c(Q6_K, 896, 4864),
    c(Q5_0, 4864, 896),
    c(Q8_0, 4864, 896),
    c(Q4_0, 4864, 896),
    c(Q4_0, 896, 4864),
    c(Q4_0, 151936, 896),
    // A 1B-class attention (the synthetic benchmark model: q/o and k/v projections)
    c(Q4_0, 2048, 2048),
    c(Q4_0, 512, 2048),
    // A 1B-class FFN
    c(Q4_K, 2048, 8192),
    c(Q6_K, 2048, 8192),
    c(Q4_0, 2048, 8192),
    c(Q4_1, 2048, 8192),
    c(Q8_0, 2048, 8192),
    c(F16, 2048, 8192),
];

/// Bytes of weights cycled through, well beyond the last-level cache.
const POOL_BYTES: usize = 256 << 20;

/// A matrix of plausible blocks: sane f16 scales at the start of every block (all formats
/// used here have a scale there), pseudo-random codes elsewhere.
fn matrix_bytes(case: Case) -> Vec<u8> {
    let rb = case.ty.row_bytes(case.cols).unwrap();
    let mut s = 0x1234_5678_9abc_def1u64;
    let mut v: Vec<u8> = (0..rb * case.rows)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let bb = case.ty.block_bytes();
    match case.ty {
        F16 => v
            .chunks_exact_mut(2)
            .for_each(|c| c.copy_from_slice(&scale)),
        Q6_K => v
            .chunks_exact_mut(bb)
            .for_each(|b| b[208..210].copy_from_slice(&scale)),
        _ => v.chunks_exact_mut(bb).for_each(|b| {
            b[0..2].copy_from_slice(&scale);
            b[2..4].copy_from_slice(&scale);
        }),
    }
    v
}

#[divan::bench(args = CASES, sample_count = 50)]
fn matvec_bw(bencher: Bencher, case: &Case) {
    let one = matrix_bytes(*case);
    let copies = (POOL_BYTES / one.len()).max(2);
    let pool: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * copies)
        .collect();
    let mats: Vec<QMatrix> = pool
        .chunks_exact(one.len())
        .map(|d| QMatrix::new(case.ty, case.rows, case.cols, d).unwrap())
        .collect();
    let x: Vec<f32> = (0..case.cols)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
        .collect();
    let mut y = vec![0.0f32; case.rows];
    let next = AtomicUsize::new(0);
    bencher.counter(BytesCount::new(one.len())).bench_local(|| {
        let w = &mats[next.fetch_add(1, Ordering::Relaxed) % mats.len()];
        matvec(w, divan::black_box(&x), &mut y);
        divan::black_box(&y);
    });
}

/// Read bandwidth: sum a 512 MiB buffer with all rayon threads.
#[divan::bench(sample_count = 10)]
fn read_bandwidth_512mib(bencher: Bencher) {
    let buf = vec![1u64; (512 << 20) / 8];
    bencher
        .counter(BytesCount::new(buf.len() * 8))
        .bench_local(|| {
            let s: u64 = buf
                .par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                .sum();
            divan::black_box(s)
        });
}

const PREFILL: &[Case] = &[
    c(Q4_1, 1536, 576),
    c(Q4_1, 576, 1536),
    c(Q8_0, 1536, 576),
    c(Q4_K, 896, 4864),
    c(Q5_K, 896, 4864),
    c(Q5_1, 576, 1536),
    // The 1B-class FFN of the synthetic benchmark models (`powerinfer synth`, f16 by default).
    c(Q4_0, 2048, 8192),
    c(Q8_0, 2048, 8192),
    c(F16, 2048, 8192),
];

/// Prefill: 64 inputs through one matrix; the counter is weight bytes × inputs, so GB/s is
/// comparable to matvec_bw (how much faster than 64 separate matvecs).
#[divan::bench(args = PREFILL, sample_count = 20)]
fn matmul_64(bencher: Bencher, case: &Case) {
    let data = matrix_bytes(*case);
    let w = QMatrix::new(case.ty, case.rows, case.cols, &data).unwrap();
    let n = 64;
    let xs: Vec<f32> = (0..n * case.cols)
        .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
        .collect();
    let mut ys = vec![0.0f32; n * case.rows];
    bencher
        .counter(BytesCount::new(data.len() * n))
        .bench_local(|| {
            powerinfer::quant::matmul(&w, divan::black_box(&xs), &mut ys);
            divan::black_box(&ys);
        });
}
