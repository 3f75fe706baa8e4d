//! Errors of the quant API boundary (shape and type checks); hot kernels assert instead.

use super::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    #[error("{op} is not supported for type {ty}")]
    Unsupported { op: &'static str, ty: GgmlType },
    #[error("{what}: {n} elements is not a whole number of {ty} blocks ({block} each)")]
    NotBlockAligned {
        what: &'static str,
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    #[error("{what}: expected {expected} bytes/elements, got {got}")]
    BadLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}
