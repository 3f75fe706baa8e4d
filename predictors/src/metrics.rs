//! How good a predictor is: recall (fired neurons it caught), precision, and the sparsity it leaves.

use serde::Serialize;

use crate::bit_matrix::BitMatrix;
use crate::error::{PredictorError, Result};

/// Counts of (predicted, actual) pairs over every (token, neuron).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub true_pos: u64,
    pub false_pos: u64,
    pub false_neg: u64,
    pub true_neg: u64,
}

impl Confusion {
    pub fn add(&mut self, predicted: bool, actual: bool) {
        match (predicted, actual) {
            (true, true) => self.true_pos += 1,
            (true, false) => self.false_pos += 1,
            (false, true) => self.false_neg += 1,
            (false, false) => self.true_neg += 1,
        }
    }

    pub fn merge(&mut self, o: &Confusion) {
        self.true_pos += o.true_pos;
        self.false_pos += o.false_pos;
        self.false_neg += o.false_neg;
        self.true_neg += o.true_neg;
    }

    /// Compares two bit matrices of the same shape, a word at a time.
    pub fn from_bits(predicted: &BitMatrix, labels: &BitMatrix) -> Result<Self> {
        if predicted.rows() != labels.rows() {
            return Err(PredictorError::Mismatch {
                what: "predicted vs label rows",
                a: predicted.rows(),
                b: labels.rows(),
            });
        }
        if predicted.cols() != labels.cols() {
            return Err(PredictorError::Mismatch {
                what: "predicted vs label columns",
                a: predicted.cols(),
                b: labels.cols(),
            });
        }
        let mut c = Confusion::default();
        for (&p, &y) in predicted.words().iter().zip(labels.words()) {
            c.true_pos += (p & y).count_ones() as u64;
            c.false_pos += (p & !y).count_ones() as u64;
            c.false_neg += (!p & y).count_ones() as u64;
        }
        let total = (predicted.rows() * predicted.cols()) as u64;
        c.true_neg = total - c.true_pos - c.false_pos - c.false_neg;
        Ok(c)
    }

    /// Compares per-row active lists (ascending or not, no duplicates) with the label rows.
    pub fn from_active_lists(predicted: &[Vec<u32>], labels: &BitMatrix) -> Result<Self> {
        let mut bits = BitMatrix::with_cols(labels.cols());
        for row in predicted {
            bits.push_row_indices(row)?;
        }
        Self::from_bits(&bits, labels)
    }

    pub fn total(&self) -> u64 {
        self.true_pos + self.false_pos + self.false_neg + self.true_neg
    }

    /// Share of fired neurons that were predicted; 1 when none fired.
    pub fn recall(&self) -> f32 {
        ratio(self.true_pos, self.true_pos + self.false_neg)
    }

    /// Share of predicted neurons that fired; 1 when none was predicted.
    pub fn precision(&self) -> f32 {
        ratio(self.true_pos, self.true_pos + self.false_pos)
    }

    /// Share of neurons the predictor lets the engine skip.
    pub fn predicted_sparsity(&self) -> f32 {
        1.0 - ratio0(self.true_pos + self.false_pos, self.total())
    }

    /// Share of neurons that did not fire.
    pub fn true_sparsity(&self) -> f32 {
        1.0 - ratio0(self.true_pos + self.false_neg, self.total())
    }
}

fn ratio(num: u64, den: u64) -> f32 {
    if den == 0 {
        1.0
    } else {
        (num as f64 / den as f64) as f32
    }
}

fn ratio0(num: u64, den: u64) -> f32 {
    if den == 0 {
        0.0
    } else {
        (num as f64 / den as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn word_counts_match_per_bit_counts() {
        let (rows, cols) = (9, 100);
        let mut rng = Rng::new(1);
        let mut p = BitMatrix::zeros(rows, cols);
        let mut y = BitMatrix::zeros(rows, cols);
        let mut want = Confusion::default();
        for r in 0..rows {
            for c in 0..cols {
                let (a, b) = (rng.uniform() < 0.2, rng.uniform() < 0.15);
                p.set(r, c, a);
                y.set(r, c, b);
                want.add(a, b);
            }
        }
        let got = Confusion::from_bits(&p, &y).unwrap();
        assert_eq!(got, want);
        let tp = want.true_pos as f32;
        assert_eq!(got.recall(), tp / (tp + want.false_neg as f32));
        assert_eq!(got.precision(), tp / (tp + want.false_pos as f32));
        let n = (rows * cols) as f32;
        assert!((got.true_sparsity() - (1.0 - y.count_ones() as f32 / n)).abs() < 1e-6);
        assert!((got.predicted_sparsity() - (1.0 - p.count_ones() as f32 / n)).abs() < 1e-6);
        let lists: Vec<Vec<u32>> = (0..rows)
            .map(|r| (0..cols as u32).filter(|&c| p.get(r, c as usize)).collect())
            .collect();
        assert_eq!(Confusion::from_active_lists(&lists, &y).unwrap(), want);
        assert!(Confusion::from_bits(&p, &BitMatrix::zeros(rows, cols + 1)).is_err());
    }
}
