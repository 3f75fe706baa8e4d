//! Which FFN entries count as active: the profiler's rule, with its per-layer threshold.

use serde::{Deserialize, Serialize};

/// relu (exact zeros), gate (CATS: |act(gate)| ≤ t skips the whole neuron) or product
/// (|act(gate)·up| ≤ t skips only the down column, keeping much more quality).
pub use powerinfer_profiler::SparsityRule;

/// One layer's rule and threshold: active iff the rule's value has |v| > t.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerThreshold {
    pub rule: SparsityRule,
    pub t: f32,
}
