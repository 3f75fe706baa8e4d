//! The sparse FFN: which neurons are active, the sidecar that `profile` writes, and the
//! executor that computes only the active neurons.

pub mod down;
mod down_simd;
mod executor;
pub mod hybrid;
mod mode;
pub mod records;
mod rule;
pub mod sidecar;

pub(crate) use executor::gate_act;
pub use executor::{
    block_frequencies, mask_activation, rule_activation, FfnWeights, SparseCounters, SparseLayer,
    SparseScratch,
};
pub use mode::FfnMode;
pub use rule::{LayerThreshold, SparsityRule};
pub use sidecar::{Sidecar, SidecarError, SidecarLayer};
