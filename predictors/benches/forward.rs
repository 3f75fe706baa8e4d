//! Single-token predictor forward (d_in 2048, rank 128, d_out 8192), serial and split over rayon.

use half::f16;
use powerinfer_predictors::{Predictor, Scratch};

fn main() {
    divan::main();
}

fn make(d_in: usize, rank: usize, d_out: usize, parallel: bool) -> (Predictor, Vec<f32>) {
    // A cheap deterministic pseudo-random fill; the values only need to be non-trivial.
    let mut s = 0x1234_5678u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32) - 0.5
    };
    let w1 = (0..rank * d_in)
        .map(|_| f16::from_f32(next() * 0.1))
        .collect();
    let w2 = (0..d_out * rank)
        .map(|_| f16::from_f32(next() * 0.1))
        .collect();
    let b1 = (0..rank).map(|_| next()).collect();
    let b2 = (0..d_out).map(|_| next()).collect();
    let mut p = Predictor::from_parts(d_in, rank, d_out, w1, b1, w2, b2).unwrap();
    p.set_parallel_min_weights(if parallel { 0 } else { usize::MAX });
    let x = (0..d_in).map(|_| next()).collect();
    (p, x)
}

#[divan::bench(args = [false, true])]
fn predict_2048_128_8192(bencher: divan::Bencher, parallel: bool) {
    let (p, x) = make(2048, 128, 8192, parallel);
    let mut scratch = Scratch::new();
    let mut active = Vec::new();
    bencher.bench_local(|| {
        p.predict(divan::black_box(&x), &mut scratch, &mut active)
            .unwrap();
        active.len()
    });
}

#[divan::bench(args = [false, true])]
fn predict_576_64_1536(bencher: divan::Bencher, parallel: bool) {
    let (p, x) = make(576, 64, 1536, parallel);
    let mut scratch = Scratch::new();
    let mut active = Vec::new();
    bencher.bench_local(|| {
        p.predict(divan::black_box(&x), &mut scratch, &mut active)
            .unwrap();
        active.len()
    });
}
