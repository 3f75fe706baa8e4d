use std::sync::Arc;

use crate::gguf::GgufFile;
use crate::quant::{GgmlType, QMatrix};

/// A weight matrix that stays in the memory-mapped file: no copy is made at load.
pub struct CpuWeight {
    file: Arc<GgufFile>,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    start: usize,
    len: usize,
}

impl CpuWeight {
    pub fn new(file: Arc<GgufFile>, ty: GgmlType, rows: usize, cols: usize, start: usize) -> Self {
        let len = ty.row_bytes(cols).expect("validated by the GGUF reader") * rows;
        CpuWeight {
            file,
            ty,
            rows,
            cols,
            start,
            len,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.file.bytes()[self.start..self.start + self.len]
    }

    pub fn qmatrix(&self) -> QMatrix<'_> {
        QMatrix {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: self.bytes(),
        }
    }
}
