//! The CUDA backend: the same [`Backend`](super::Backend) as the CPU one, on one GPU.
//!
//! Kernels are the `.cu` files of cuda/, compiled by NVRTC for the device at first use and
//! cached on disk (see `kernels`). The driver and NVRTC are loaded at run time: a build
//! needs no CUDA toolkit, and a machine without them gets a [`CudaError`] from
//! [`CudaBackend::new`] (never a panic), so callers can fall back to the CPU.

mod backend;
mod device;
mod error;
mod hybrid;
pub mod kernels;
mod sparse;
mod split;
mod tensor;
pub mod twins;
mod weight;

pub use backend::{CudaBackend, CudaKvCache, MAX_HEAD_DIM};
pub use device::unavailable_reason;
pub use error::CudaError;
pub use hybrid::{CudaHybridLayer, CudaHybridScratch};
pub use sparse::{CudaHotFfn, CudaPredictor, SparseScratch};
pub use tensor::CudaTensor;
pub use weight::{kernel_suffix, CudaWeight};
