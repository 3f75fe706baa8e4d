//! Single-token predictor: the selection the engine runs (`predict`: f16 hidden layer, 8-bit
//! output layer through the `Selector`), and the f16 logits forward (`logits`), serial and split
//! over rayon (only `logits` takes the split).

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

fn predict(bencher: divan::Bencher, d_in: usize, rank: usize, d_out: usize) {
    let (p, x) = make(d_in, rank, d_out, false);
    let mut scratch = Scratch::new();
    let mut active = Vec::new();
    bencher.bench_local(|| {
        p.predict(divan::black_box(&x), &mut scratch, &mut active)
            .unwrap();
        active.len()
    });
}

fn logits(bencher: divan::Bencher, d_in: usize, rank: usize, d_out: usize, parallel: bool) {
    let (p, x) = make(d_in, rank, d_out, parallel);
    let mut scratch = Scratch::new();
    let mut out = vec![0f32; d_out];
    bencher.bench_local(|| {
        p.logits(divan::black_box(&x), &mut scratch, &mut out)
            .unwrap();
        out[0]
    });
}

#[divan::bench]
fn predict_2048_128_8192(bencher: divan::Bencher) {
    predict(bencher, 2048, 128, 8192);
}

#[divan::bench]
fn predict_576_64_1536(bencher: divan::Bencher) {
    predict(bencher, 576, 64, 1536);
}

#[divan::bench(args = [false, true])]
fn logits_2048_128_8192(bencher: divan::Bencher, parallel: bool) {
    logits(bencher, 2048, 128, 8192, parallel);
}
