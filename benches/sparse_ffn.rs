//! The memory-bound steps of the sparse FFN on a 1B-class layer (d_model 2048, 8192 neurons,
//! Q4_0, as the synthetic benchmark model): the gather-matvec over the predicted rows of gate
//! (and of gate then up, from the two matrices or their per-neuron records), and the
//! accumulation of the kept neurons' down columns. GB/s = bytes touched / time.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench sparse_ffn`. Each iteration uses the next of
//! several layer copies (beyond the last-level cache) so weights come from DRAM as in decode.
//! The active sets are random (seeded) at the fractions the synthetic 90%-sparse model shows
//! in predicted mode: ~15% of rows gathered, ~6% of neurons kept.

use std::sync::atomic::{AtomicUsize, Ordering};

use divan::counter::BytesCount;
use divan::Bencher;
use powerinfer::quant::{gather_matvec, quantize_row, GgmlType, QMatrix, QuantizedVec};
use powerinfer::sparse::down::TransposedDown;
use powerinfer::sparse::records::NeuronRecords;

fn main() {
    divan::main();
}

const D: usize = 2048;
const N_FF: usize = 8192;
/// Layer copies cycled through: the bytes one iteration touches (~1.5 MB) times this must
/// exceed the 32 MiB last-level cache, or the touched lines stay cached between visits.
const COPIES: usize = 48;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// A Q4_0 matrix of random weights, `rows` × `cols`.
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let ty = GgmlType::Q4_0;
    let rb = cols / ty.block_len() * ty.block_bytes();
    let mut rng = Rng(seed | 1);
    let mut data = vec![0u8; rows * rb];
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        row.iter_mut().for_each(|v| *v = rng.f32());
        quantize_row(ty, &row, &mut data[r * rb..(r + 1) * rb]).unwrap();
    }
    data
}

/// `k` distinct ascending indices below `n`.
fn subset(n: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed | 1);
    let mut pick = vec![false; n];
    let mut left = k;
    while left > 0 {
        let i = (rng.next() % n as u64) as usize;
        if !pick[i] {
            pick[i] = true;
            left -= 1;
        }
    }
    (0..n as u32).filter(|&i| pick[i as usize]).collect()
}

#[divan::bench(args = [0.06, 0.15, 0.5, 1.0])]
fn gather_gate(bencher: Bencher, frac: f64) {
    let one = matrix(N_FF, D, 1);
    let mats: Vec<Vec<u8>> = (0..COPIES).map(|_| one.clone()).collect();
    let rows = subset(N_FF, (N_FF as f64 * frac) as usize, 3);
    let mut rng = Rng(9);
    let x: Vec<f32> = (0..D).map(|_| rng.f32()).collect();
    let qx = QuantizedVec::new(GgmlType::Q4_0, &x);
    let mut y = vec![0f32; rows.len()];
    let next = AtomicUsize::new(0);
    let rb = D / 32 * 18;
    bencher
        .counter(BytesCount::new(rows.len() * rb))
        .bench_local(|| {
            let c = next.fetch_add(1, Ordering::Relaxed) % COPIES;
            let w = QMatrix::new(GgmlType::Q4_0, N_FF, D, &mats[c]).unwrap();
            gather_matvec(&w, &rows, &qx, &mut y);
            divan::black_box(&y);
        });
}

/// Layers of gate and up cycled through by `gather_gate_then_up`: 18.9 MB each, 302 MB in all.
const GATE_UP_COPIES: usize = 16;

/// Gate rows of 12% of the neurons, then up rows of three quarters of them (the ones whose
/// ReLU gate passed), from the model's two matrices or from their per-neuron records.
#[divan::bench(args = [false, true])]
fn gather_gate_then_up(bencher: Bencher, records: bool) {
    let ty = GgmlType::Q4_0;
    let (g, u) = (matrix(N_FF, D, 1), matrix(N_FF, D, 2));
    let layers: Vec<(Vec<u8>, Vec<u8>, Option<NeuronRecords>)> = (0..GATE_UP_COPIES)
        .map(|_| {
            let (g, u) = (g.clone(), u.clone());
            let r = records.then(|| {
                let gate = QMatrix::new(ty, N_FF, D, &g).unwrap();
                NeuronRecords::new(&gate, &QMatrix::new(ty, N_FF, D, &u).unwrap(), None).unwrap()
            });
            (g, u, r)
        })
        .collect();
    let gated = subset(N_FF, N_FF * 12 / 100, 3);
    let kept: Vec<u32> = gated.iter().copied().filter(|&i| i % 4 != 0).collect();
    // Row `slots·i + which` of the records (0 gate, 1 up), or row `i` of either matrix.
    let slots = layers[0].2.as_ref().map(|r| r.slots() as u32);
    let rows = |list: &[u32], which: u32| -> Vec<u32> {
        match slots {
            Some(s) => list.iter().map(|&i| s * i + which).collect(),
            None => list.to_vec(),
        }
    };
    let (gate_rows, up_rows) = (rows(&gated, 0), rows(&kept, 1));
    let mut rng = Rng(9);
    let x: Vec<f32> = (0..D).map(|_| rng.f32()).collect();
    let qx = QuantizedVec::new(ty, &x);
    let (mut yg, mut yu) = (vec![0f32; gate_rows.len()], vec![0f32; up_rows.len()]);
    let next = AtomicUsize::new(0);
    let rb = D / 32 * 18;
    bencher
        .counter(BytesCount::new((gate_rows.len() + up_rows.len()) * rb))
        .bench_local(|| {
            let (g, u, r) = &layers[next.fetch_add(1, Ordering::Relaxed) % GATE_UP_COPIES];
            let (gate, up) = match r {
                Some(p) => (p.matrix(), p.matrix()),
                None => (
                    QMatrix::new(ty, N_FF, D, g).unwrap(),
                    QMatrix::new(ty, N_FF, D, u).unwrap(),
                ),
            };
            gather_matvec(&gate, &gate_rows, &qx, &mut yg);
            gather_matvec(&up, &up_rows, &qx, &mut yu);
            divan::black_box((&yg, &yu));
        });
}

#[divan::bench(args = [0.03, 0.06, 0.10])]
fn down_accumulate(bencher: Bencher, frac: f64) {
    let data = matrix(D, N_FF, 100);
    let downs: Vec<TransposedDown> = (0..COPIES)
        .map(|_| TransposedDown::new(&QMatrix::new(GgmlType::Q4_0, D, N_FF, &data).unwrap()))
        .collect();
    let active = subset(N_FF, (N_FF as f64 * frac) as usize, 5);
    let mut rng = Rng(11);
    let a: Vec<f32> = (0..N_FF).map(|_| rng.f32()).collect();
    let mut out = vec![0f32; D];
    let mut tmp = Vec::new();
    let next = AtomicUsize::new(0);
    bencher
        .counter(BytesCount::new(downs[0].bytes_read(&active)))
        .bench_local(|| {
            let c = next.fetch_add(1, Ordering::Relaxed) % COPIES;
            downs[c].accumulate(&active, &a, None, &mut out, &mut tmp);
            divan::black_box(&out);
        });
}
