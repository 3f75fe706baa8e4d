//! The machine's memory read bandwidth, measured the way decode reads weights: every thread of
//! the pool streams its own contiguous part of a buffer far larger than the caches. This is the
//! roof that a memory-bound decode step can at best reach.

use std::hint::black_box;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::Summary;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bandwidth {
    pub buffer_mib: usize,
    pub threads: usize,
    /// GB/s (10^9 bytes) of each timed pass.
    pub passes_gb_s: Summary,
    /// The best pass: what the memory system can deliver, the roof for the roofline.
    pub gb_s: f64,
}

/// Read a `mib`-MiB buffer `passes` times with the current rayon pool (after one untimed pass
/// that pages it in) and report the read rate of each pass.
pub fn measure_read_bandwidth(mib: usize, passes: usize) -> Bandwidth {
    let words = (mib.max(1) << 20) / 8;
    let threads = rayon::current_num_threads();
    // Parallel first touch; distinct values so that nothing can be folded away.
    let mut buf = vec![0u64; words];
    let chunk = words.div_ceil(threads * 4).max(1);
    buf.par_chunks_mut(chunk).enumerate().for_each(|(c, s)| {
        for (i, v) in s.iter_mut().enumerate() {
            *v = (c * chunk + i) as u64 ^ 0x9e37_79b9_7f4a_7c15;
        }
    });
    black_box(read_all(&buf, chunk));
    let mut rates = Vec::with_capacity(passes);
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        black_box(read_all(black_box(&buf), chunk));
        rates.push((words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    let passes_gb_s = Summary::new(rates);
    Bandwidth {
        buffer_mib: mib,
        threads,
        gb_s: passes_gb_s.max,
        passes_gb_s,
    }
}

/// Sum every word, one contiguous chunk per task.
fn read_all(buf: &[u64], chunk: usize) -> u64 {
    buf.par_chunks(chunk)
        .map(sum_words)
        .reduce(|| 0, u64::wrapping_add)
}

/// Four independent accumulators so that the adds vectorise and never limit the read rate.
fn sum_words(s: &[u64]) -> u64 {
    let mut acc = [0u64; 4];
    let mut it = s.chunks_exact(4);
    for c in &mut it {
        for k in 0..4 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    let tail = it.remainder().iter().fold(0u64, |a, &v| a.wrapping_add(v));
    acc.iter().fold(tail, |a, &v| a.wrapping_add(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_matches_scalar_sum() {
        let v: Vec<u64> = (0..1003u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let want = v.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        assert_eq!(sum_words(&v), want);
        assert_eq!(read_all(&v, 100), want);
    }

    #[test]
    fn reports_positive_rates() {
        let b = measure_read_bandwidth(4, 3);
        assert_eq!(b.passes_gb_s.runs.len(), 3);
        assert!(b.gb_s > 0.0 && b.gb_s >= b.passes_gb_s.median);
    }
}
