//! Errors of the quantisation API boundary (bad lengths, unsupported type/operation pairs).

use super::GgmlType;

#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The operation has no implementation for this element type.
    #[error("{op} is not supported for type {ty}")]
    Unsupported { op: &'static str, ty: GgmlType },
    /// An element count that is not a whole number of blocks.
    #[error("{n} elements is not a multiple of the {ty} block length {block}")]
    PartialBlock {
        ty: GgmlType,
        n: usize,
        block: usize,
    },
    /// A buffer of the wrong size for the element count.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
}
