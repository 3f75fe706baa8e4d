//! Counters of speculative decoding, for run's stats line and bench.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpecStats {
    /// Target forward passes that checked drafts (one per round).
    pub verifies: usize,
    /// Tokens the draft proposed.
    pub drafted: usize,
    /// Drafted tokens that stood.
    pub accepted: usize,
    /// Tokens decided by the rounds (accepted drafts plus each round's own target token).
    pub tokens: usize,
}

impl SpecStats {
    /// Share of drafted tokens that were accepted.
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / self.drafted.max(1) as f64
    }

    /// Tokens gained per target forward pass (1 for plain decoding).
    pub fn tokens_per_verify(&self) -> f64 {
        self.tokens as f64 / self.verifies.max(1) as f64
    }
}
