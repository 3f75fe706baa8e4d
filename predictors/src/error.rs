//! The crate's error type: every bad input is reported, never panicked on.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum PredictorError {
    /// A buffer or matrix does not have the length its stated shape implies.
    #[error("{what}: expected length {expected}, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Two objects that must agree on a dimension do not.
    #[error("{what}: {a} != {b}")]
    Mismatch {
        what: &'static str,
        a: usize,
        b: usize,
    },
    /// A range of output neurons that is not inside `0..d_out`.
    #[error("neuron range {start}..{end} is not inside 0..{d_out}")]
    Range {
        start: usize,
        end: usize,
        d_out: usize,
    },
    /// A dimension that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// A training setting outside its valid range.
    #[error("invalid training config: {0}")]
    Config(String),
    /// A dataset with no rows where rows are needed.
    #[error("{0} dataset is empty")]
    EmptyDataset(&'static str),
    /// A non-finite value in data that must be finite.
    #[error("{0} contains a non-finite value")]
    NonFinite(&'static str),
}

pub type Result<T> = std::result::Result<T, PredictorError>;

/// Checks that `got` equals `expected`, naming `what` otherwise.
pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(PredictorError::Shape {
            what,
            expected,
            got,
        })
    }
}
