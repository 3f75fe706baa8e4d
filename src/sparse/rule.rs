//! Which FFN entries count as active.

use serde::{Deserialize, Serialize};

/// The rule that decides whether a neuron is active for a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparsityRule {
    /// ReLU-family models: the activation is exactly zero when inactive (threshold 0).
    Relu,
    /// CATS: |act(gate)| ≤ t skips the neuron's up row and down column (and its gate row when
    /// predicted).
    Gate,
    /// |act(gate) · up| ≤ t skips only the down column, keeping much more quality.
    Product,
}

impl SparsityRule {
    pub fn name(self) -> &'static str {
        match self {
            SparsityRule::Relu => "relu",
            SparsityRule::Gate => "gate",
            SparsityRule::Product => "product",
        }
    }

    pub fn parse(s: &str) -> Option<SparsityRule> {
        Some(match s {
            "relu" => SparsityRule::Relu,
            "gate" => SparsityRule::Gate,
            "product" => SparsityRule::Product,
            _ => return None,
        })
    }
}

/// One layer's rule and threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerThreshold {
    pub rule: SparsityRule,
    pub t: f32,
}
