//! Training data for one layer: FFN inputs (after the norm) and which neurons fired for each.

use crate::bit_matrix::BitMatrix;
use crate::error::{check_len, PredictorError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    d_in: usize,
    x: Vec<f32>,
    labels: BitMatrix,
}

impl Dataset {
    /// `x` is `labels.rows() × d_in`, row-major.
    pub fn new(d_in: usize, x: Vec<f32>, labels: BitMatrix) -> Result<Self> {
        if d_in == 0 {
            return Err(PredictorError::Zero("dataset d_in"));
        }
        if labels.cols() == 0 {
            return Err(PredictorError::Zero("dataset d_out (label columns)"));
        }
        check_len("dataset x (rows × d_in)", labels.rows() * d_in, x.len())?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(PredictorError::NonFinite("dataset x"));
        }
        Ok(Dataset { d_in, x, labels })
    }

    /// An empty dataset to fill with [`Dataset::push`].
    pub fn empty(d_in: usize, d_out: usize) -> Result<Self> {
        Self::new(d_in, Vec::new(), BitMatrix::with_cols(d_out))
    }

    /// Appends one token: its FFN input and the indices of the neurons that fired.
    pub fn push(&mut self, x: &[f32], active: &[u32]) -> Result<()> {
        check_len("dataset row x (d_in)", self.d_in, x.len())?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(PredictorError::NonFinite("dataset row x"));
        }
        self.labels.push_row_indices(active)?;
        self.x.extend_from_slice(x);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.labels.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn d_in(&self) -> usize {
        self.d_in
    }

    pub fn d_out(&self) -> usize {
        self.labels.cols()
    }

    /// All inputs, `len() × d_in`, row-major.
    pub fn x(&self) -> &[f32] {
        &self.x
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.x[i * self.d_in..(i + 1) * self.d_in]
    }

    pub fn labels(&self) -> &BitMatrix {
        &self.labels
    }

    /// Splits into the first `n` rows and the rest (e.g. train / validation).
    pub fn split_at(&self, n: usize) -> (Dataset, Dataset) {
        let n = n.min(self.len());
        let head: Vec<usize> = (0..n).collect();
        let tail: Vec<usize> = (n..self.len()).collect();
        (self.select(&head), self.select(&tail))
    }

    fn select(&self, rows: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(rows.len() * self.d_in);
        for &r in rows {
            x.extend_from_slice(self.row(r));
        }
        Dataset {
            d_in: self.d_in,
            x,
            labels: self.labels.select_rows(rows),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_split_and_errors() {
        let mut d = Dataset::empty(3, 5).unwrap();
        d.push(&[1.0, 2.0, 3.0], &[4, 0]).unwrap();
        d.push(&[4.0, 5.0, 6.0], &[2]).unwrap();
        d.push(&[7.0, 8.0, 9.0], &[]).unwrap();
        assert!(d.push(&[1.0, 2.0], &[0]).is_err());
        assert!(d.push(&[1.0, 2.0, 3.0], &[5]).is_err());
        assert!(d.push(&[1.0, f32::NAN, 3.0], &[1]).is_err());
        assert_eq!(d.len(), 3);
        assert_eq!(d.x().len(), 9);
        let (a, b) = d.split_at(2);
        assert_eq!(a.len(), 2);
        assert_eq!(b.row(0), &[7.0, 8.0, 9.0]);
        assert!(a.labels().get(0, 4) && a.labels().get(1, 2) && !a.labels().get(1, 4));
        assert!(Dataset::new(3, vec![0.5; 5], BitMatrix::zeros(2, 4)).is_err());
        assert!(Dataset::new(0, vec![], BitMatrix::zeros(0, 4)).is_err());
    }
}
