//! The CUDA backend (WIP).

mod error;
pub mod kernels;

pub use error::CudaError;
