//! How a sequence evaluates its FFNs.

use std::sync::Arc;

use super::LayerThreshold;

/// Chosen per sequence ([`crate::model::State::ffn_mode`]), so one loaded model can be run
/// dense, oracle-sparse and predicted-sparse side by side (bench, perplexity --compare-dense).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum FfnMode {
    /// Every neuron, as the model file defines it.
    #[default]
    Dense,
    /// Dense compute, then every entry the per-layer rule deems inactive is zeroed: the
    /// quality of a threshold setting without a sidecar (profile's level search).
    Masked(Arc<[LayerThreshold]>),
    /// Sparse execution over the exact active set (computed from the true activations with the
    /// sidecar's thresholds): for ReLU models equal to dense.
    Oracle,
    /// Sparse execution over the neurons the sidecar's predictors select: the real mode.
    Predicted,
}

impl FfnMode {
    pub fn name(&self) -> &'static str {
        match self {
            FfnMode::Dense => "dense",
            FfnMode::Masked(_) => "masked",
            FfnMode::Oracle => "oracle",
            FfnMode::Predicted => "predicted",
        }
    }

    /// Does this mode need the sidecar's per-layer data loaded into the model?
    pub fn needs_sidecar(&self) -> bool {
        matches!(self, FfnMode::Oracle | FfnMode::Predicted)
    }
}
