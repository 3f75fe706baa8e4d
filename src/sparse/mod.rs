//! The sparse FFN: which neurons are active, the sidecar that `profile` writes, and the
//! executor that computes only the active neurons.

mod rule;
pub mod sidecar;

pub use rule::{LayerThreshold, SparsityRule};
pub use sidecar::{Sidecar, SidecarError, SidecarLayer};
