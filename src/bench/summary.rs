//! Median and spread of repeated measurements: on a shared 2-core machine single runs are
//! noise, so every speed is reported as the median with its quartiles and extremes.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation between order statistics).
    pub q1: f64,
    pub q3: f64,
    /// Every run, in the order measured.
    pub runs: Vec<f64>,
}

impl Summary {
    pub fn new(runs: Vec<f64>) -> Summary {
        let mut s = runs.clone();
        s.sort_by(f64::total_cmp);
        Summary {
            median: quantile(&s, 0.5),
            min: s.first().copied().unwrap_or(0.0),
            max: s.last().copied().unwrap_or(0.0),
            q1: quantile(&s, 0.25),
            q3: quantile(&s, 0.75),
            runs,
        }
    }
}

/// The `p` quantile of sorted values, interpolating linearly between neighbours; 0 when empty.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => {
            let h = p * (n - 1) as f64;
            let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_counts() {
        let s = Summary::new(vec![5.0, 1.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        assert_eq!(s.runs, vec![5.0, 1.0, 3.0]);
        let s = Summary::new(vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
        assert_eq!((s.q1, s.q3), (1.75, 3.25));
    }

    /// Against a brute-force definition: the median has as many runs at or below it as at or
    /// above it.
    #[test]
    fn median_splits_the_runs() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in 1..40 {
            let runs: Vec<f64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 1000) as f64
                })
                .collect();
            let m = Summary::new(runs.clone()).median;
            let below = runs.iter().filter(|&&v| v <= m).count();
            let above = runs.iter().filter(|&&v| v >= m).count();
            assert!(below * 2 >= n && above * 2 >= n, "{runs:?} median {m}");
        }
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Summary::new(vec![]).median, 0.0);
    }
}
