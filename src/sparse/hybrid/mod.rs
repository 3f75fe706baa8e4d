//! The hybrid FFN (PowerInfer's GPU/CPU split): a device holds each layer's predictor and its
//! hot neurons, the host computes the cold ones. Per token and layer:
//!
//! 1. predict on the device and list the active hot and active cold neurons there;
//! 2. copy the input row and the (small) active cold list to the host;
//! 3. start the hot FFN on the device, and compute the cold part on the host meanwhile with
//!    the CPU's sparse executor restricted to those cold neurons;
//! 4. upload the cold partial and add it to the hot result on the device.
//!
//! The schedule ([`ffn_row`]) is written once against [`HybridDevice`]; the CUDA backend
//! implements it, and so does [`HostDevice`], a stand-in in host memory whose hot part runs on
//! another thread, so that the merge, the phase order and the overlap are tested without a GPU.

mod backend_ffn;
mod device;
mod hot_rows;
mod phases;
mod schedule;
mod standin;
mod standin_backend;

pub use backend_ffn::sparse_ffn_rows;
pub use device::{HybridDevice, HybridError, LayerUpload};
pub use hot_rows::HotRows;
pub use phases::{LayerTimeline, PhaseStats, Span};
pub use schedule::{ffn_row, HybridHost};
pub use standin::{HostDevice, HostLayer, HostScratch};
