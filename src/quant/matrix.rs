//! A borrowed row-major matrix of quantised rows.

use super::{activation_type, GgmlType, QuantError};

/// `rows` rows of `cols` elements of type `ty`, rows stored contiguously in `data`.
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> QMatrix<'a> {
    /// Checks that the type has dot kernels and that `data` holds exactly `rows` rows.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self, QuantError> {
        if activation_type(ty).is_none() {
            return Err(QuantError::Unsupported { op: "matvec", ty });
        }
        let rb = ty.row_bytes(cols).ok_or(QuantError::PartialBlock {
            ty,
            n: cols,
            block: ty.block_len(),
        })?;
        let expected = rb.checked_mul(rows).ok_or(QuantError::Length {
            what: "matrix data",
            expected: usize::MAX,
            got: data.len(),
        })?;
        if data.len() != expected {
            return Err(QuantError::Length {
                what: "matrix data",
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

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_len() * self.ty.block_bytes()
    }

    pub fn row(&self, i: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[i * rb..(i + 1) * rb]
    }
}
