//! Requantising a model file (`powerinfer quantize`): every weight matrix to one type, or a
//! mix where the matrices most sensitive on calibration text keep a higher precision.

mod convert;
mod error;
mod plan;
mod sensitivity;
mod target;

pub use convert::{check_distinct, requantize_in_memory, requantize_rows, write, Summary};
pub use error::QuantizeError;
pub use plan::{
    choose_kept, is_weight_matrix, plan_mixed, plan_uniform, weight_matrices, MatrixPlan, Plan,
};
pub use sensitivity::{matrix_error, measure, Calibration, Sensitivity};
pub use target::{file_type, fit_type, parse_keep, parse_type, KEEP_NAMES, TYPE_NAMES};
