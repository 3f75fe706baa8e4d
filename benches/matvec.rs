//! Matrix-vector throughput (weight GB/s) for the formats and shapes of the registry models,
//! plus a plain memory-read bandwidth measurement as the roofline.
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench matvec`.

use divan::counter::BytesCount;
use divan::Bencher;
use half::f16;
use powerinfer::quant::{matmul, matvec_q, GgmlType, QMatrix, QuantizedVec};
use rayon::prelude::*;

fn main() {
    divan::main();
}

/// Byte offsets of the f16 scale fields per block (everything else may be random bytes).
fn f16_fields(t: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match t {
        Q4_0 | Q5_0 | Q8_0 => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

fn random_matrix(t: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let n = t.row_bytes(cols).unwrap() * rows;
    let mut v: Vec<u8> = (0..n).map(|_| next() as u8).collect();
    if t == GgmlType::F32 {
        for c in v.chunks_exact_mut(4) {
            c.copy_from_slice(&((next() % 1000) as f32 / 1000.0).to_le_bytes());
        }
    }
    for b in v.chunks_exact_mut(t.block_bytes()) {
        for &o in f16_fields(t) {
            b[o..o + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        }
    }
    v
}

/// (type, rows, cols): the products a decode step of SmolLM2 / Qwen2.5-0.5B / Gemma3 runs.
/// k-quants need cols % 256 == 0, so 896-wide inputs use Q5_0/Q8_0 in those models.
const CASES: &[(GgmlType, usize, usize)] = &[
    (GgmlType::Q4_1, 576, 1536),
    (GgmlType::Q4_1, 1536, 576),
    (GgmlType::Q8_0, 576, 1536),
    (GgmlType::Q8_0, 1536, 576),
    (GgmlType::Q8_0, 49152, 576),
    (GgmlType::Q4_K, 896, 4864),
    (GgmlType::Q5_0, 896, 4864),
    (GgmlType::Q5_0, 4864, 896),
    (GgmlType::Q6_K, 896, 4864),
    (GgmlType::Q8_0, 4864, 896),
    (GgmlType::Q4_K, 2048, 8192),
    (GgmlType::Q6_K, 2048, 8192),
    (GgmlType::F32, 576, 1536),
];

struct Case(GgmlType, usize, usize);
impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{}", self.0, self.1, self.2)
    }
}

fn cases() -> impl Iterator<Item = Case> {
    CASES.iter().map(|&(t, r, c)| Case(t, r, c))
}

#[divan::bench(args = cases())]
fn matvec(bencher: Bencher, case: &Case) {
    let &Case(t, rows, cols) = case;
    let data = random_matrix(t, rows, cols);
    let w = QMatrix::new(t, rows, cols, &data).unwrap();
    let x: Vec<f32> = (0..cols)
        .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
        .collect();
    let qx = QuantizedVec::new(t, &x);
    let mut y = vec![0.0f32; rows];
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| matvec_q(&w, divan::black_box(&qx), &mut y));
}

/// Prefill: 64 inputs at once; counts weight bytes once per call (what a batched kernel reads).
#[divan::bench(args = [Case(GgmlType::Q4_1, 1536, 576), Case(GgmlType::Q4_K, 896, 4864)])]
fn matmul_64(bencher: Bencher, case: &Case) {
    let &Case(t, rows, cols) = case;
    let n = 64;
    let data = random_matrix(t, rows, cols);
    let w = QMatrix::new(t, rows, cols, &data).unwrap();
    let xs: Vec<f32> = (0..n * cols)
        .map(|i| ((i * 7919) % 200) as f32 / 100.0 - 1.0)
        .collect();
    let mut ys = vec![0.0f32; n * rows];
    bencher
        .counter(BytesCount::new(data.len()))
        .bench_local(|| matmul(&w, divan::black_box(&xs), &mut ys));
}

/// Read bandwidth roofline: sum a 512 MiB buffer with the rayon pool.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn read_bandwidth_512mib(bencher: Bencher) {
    let buf: Vec<u64> = (0..(512usize << 20) / 8).map(|i| i as u64).collect();
    bencher
        .counter(BytesCount::new(buf.len() * 8))
        .bench_local(|| {
            buf.par_chunks(1 << 16)
                .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                .reduce(|| 0, u64::wrapping_add)
        });
}
