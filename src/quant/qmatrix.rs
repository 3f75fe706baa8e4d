//! A borrowed, row-major quantised weight matrix (typically a view into a memory-mapped GGUF).

use super::{GgmlType, QuantError};

#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that `ty` has a dot kernel and that `data` holds exactly `rows` rows of `cols`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        if !super::has_dot(ty) {
            return Err(QuantError::Unsupported {
                op: "matrix-vector product",
                ty,
            });
        }
        let rb = ty.row_bytes(cols).ok_or(QuantError::NotBlockAligned {
            what: "QMatrix cols",
            ty,
            n: cols,
            block: ty.block_len(),
        })?;
        let expected = rb.checked_mul(rows).ok_or(QuantError::BadLength {
            what: "QMatrix data",
            expected: usize::MAX,
            got: data.len(),
        })?;
        if data.len() != expected {
            return Err(QuantError::BadLength {
                what: "QMatrix data",
                expected,
                got: data.len(),
            });
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    pub fn row(&self, i: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }
}
