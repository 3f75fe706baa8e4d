//! A row-major bit matrix: one bit per (token, neuron) "fired" label, 64 per word.

use crate::error::{PredictorError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BitMatrix {
    rows: usize,
    cols: usize,
    words_per_row: usize,
    words: Vec<u64>,
}

impl BitMatrix {
    /// An all-zero matrix.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        let words_per_row = cols.div_ceil(64);
        BitMatrix {
            rows,
            cols,
            words_per_row,
            words: vec![0; rows * words_per_row],
        }
    }

    /// An empty matrix with `cols` columns, ready for `push_row_*`.
    pub fn with_cols(cols: usize) -> Self {
        Self::zeros(0, cols)
    }

    /// Builds from raw words (`rows * ceil(cols / 64)` of them, bit `c % 64` of word `c / 64` is column `c`).
    /// Bits past `cols` in a row's last word must be zero.
    pub fn from_words(rows: usize, cols: usize, words: Vec<u64>) -> Result<Self> {
        let words_per_row = cols.div_ceil(64);
        crate::error::check_len("bit matrix words", rows * words_per_row, words.len())?;
        let m = BitMatrix {
            rows,
            cols,
            words_per_row,
            words,
        };
        if !cols.is_multiple_of(64) {
            let tail_mask = !0u64 << (cols % 64);
            if (0..rows).any(|r| m.row_words(r)[words_per_row - 1] & tail_mask != 0) {
                return Err(PredictorError::Config(
                    "bit matrix has bits set past its last column".into(),
                ));
            }
        }
        Ok(m)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// All words, row after row.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    pub fn row_words(&self, r: usize) -> &[u64] {
        &self.words[r * self.words_per_row..(r + 1) * self.words_per_row]
    }

    pub fn get(&self, r: usize, c: usize) -> bool {
        assert!(
            r < self.rows && c < self.cols,
            "bit ({r}, {c}) out of range"
        );
        self.words[r * self.words_per_row + c / 64] >> (c % 64) & 1 == 1
    }

    pub fn set(&mut self, r: usize, c: usize, v: bool) {
        assert!(
            r < self.rows && c < self.cols,
            "bit ({r}, {c}) out of range"
        );
        let w = &mut self.words[r * self.words_per_row + c / 64];
        let bit = 1u64 << (c % 64);
        if v {
            *w |= bit;
        } else {
            *w &= !bit;
        }
    }

    /// Appends a row whose set columns are `active` (any order, duplicates allowed).
    pub fn push_row_indices(&mut self, active: &[u32]) -> Result<()> {
        let start = self.words.len();
        self.words.resize(start + self.words_per_row, 0);
        for &c in active {
            let c = c as usize;
            if c >= self.cols {
                self.words.truncate(start);
                return Err(PredictorError::Shape {
                    what: "active neuron index (must be below the column count)",
                    expected: self.cols,
                    got: c,
                });
            }
            self.words[start + c / 64] |= 1 << (c % 64);
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends a row from one bool per column.
    pub fn push_row_bools(&mut self, bits: &[bool]) -> Result<()> {
        crate::error::check_len("bit matrix row", self.cols, bits.len())?;
        let start = self.words.len();
        self.words.resize(start + self.words_per_row, 0);
        for (c, _) in bits.iter().enumerate().filter(|(_, &b)| b) {
            self.words[start + c / 64] |= 1 << (c % 64);
        }
        self.rows += 1;
        Ok(())
    }

    /// Number of set bits in the whole matrix.
    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Number of set bits in each column.
    pub fn col_counts(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.cols];
        for r in 0..self.rows {
            for (wi, &w) in self.row_words(r).iter().enumerate() {
                let mut w = w;
                while w != 0 {
                    counts[wi * 64 + w.trailing_zeros() as usize] += 1;
                    w &= w - 1;
                }
            }
        }
        counts
    }

    /// Writes row `r` as 0.0/1.0 values into `out` (length `cols`).
    pub(crate) fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let words = self.row_words(r);
        for (c, o) in out.iter_mut().enumerate() {
            *o = (words[c / 64] >> (c % 64) & 1) as f32;
        }
    }

    /// A new matrix made of the given rows, in order.
    pub fn select_rows(&self, rows: &[usize]) -> BitMatrix {
        let mut words = Vec::with_capacity(rows.len() * self.words_per_row);
        for &r in rows {
            words.extend_from_slice(self.row_words(r));
        }
        BitMatrix {
            rows: rows.len(),
            cols: self.cols,
            words_per_row: self.words_per_row,
            words,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn push_get_and_counts_agree_with_a_bool_reference() {
        let (rows, cols) = (13, 130);
        let mut rng = Rng::new(3);
        let truth: Vec<Vec<bool>> = (0..rows)
            .map(|_| (0..cols).map(|_| rng.uniform() < 0.3).collect())
            .collect();
        let mut a = BitMatrix::with_cols(cols);
        let mut b = BitMatrix::with_cols(cols);
        for row in &truth {
            a.push_row_bools(row).unwrap();
            let idx: Vec<u32> = (0..cols as u32)
                .filter(|&c| row[c as usize])
                .rev()
                .collect();
            b.push_row_indices(&idx).unwrap();
        }
        assert_eq!(a, b);
        for (r, row) in truth.iter().enumerate() {
            for (c, &t) in row.iter().enumerate() {
                assert_eq!(a.get(r, c), t);
            }
        }
        let ones: usize = truth.iter().flatten().filter(|&&t| t).count();
        assert_eq!(a.count_ones(), ones as u64);
        let col_counts = a.col_counts();
        for c in 0..cols {
            assert_eq!(
                col_counts[c],
                truth.iter().filter(|row| row[c]).count() as u64
            );
        }
        let sel = a.select_rows(&[4, 0]);
        assert_eq!(sel.row_words(0), a.row_words(4));
        assert_eq!(sel.row_words(1), a.row_words(0));
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut m = BitMatrix::with_cols(70);
        assert!(m.push_row_indices(&[3, 70]).is_err());
        assert_eq!(m.rows(), 0);
        assert!(m.push_row_bools(&[true; 69]).is_err());
        assert!(BitMatrix::from_words(2, 70, vec![0; 3]).is_err());
        assert!(BitMatrix::from_words(1, 70, vec![0, 1 << 6]).is_err());
        assert!(BitMatrix::from_words(1, 70, vec![7, 1 << 5]).is_ok());
    }
}
