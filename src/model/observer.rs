//! A window on each layer's feed-forward block during a forward pass. The profiler records
//! activation statistics through it without the engine knowing anything of the profiler.

/// One layer's FFN tensors for a batch of `rows` tokens, row-major on the host.
pub struct FfnTaps<'a> {
    /// The FFN input after its RMS norm (`rows × n_embd`): what gate and up multiply, and
    /// what the activation predictors read.
    pub input: &'a [f32],
    /// Gate pre-activation (`rows × n_ff`); empty for non-gated FFNs.
    pub gate: &'a [f32],
    /// Up pre-activation (`rows × n_ff`).
    pub up: &'a [f32],
    /// What multiplies the down matrix (`rows × n_ff`): `act(gate) * up`, or `relu(up)`.
    pub act: &'a [f32],
}

/// Sees every layer's FFN, in layer order, once per evaluated batch.
pub trait FfnObserver {
    fn observe(&mut self, layer: usize, rows: usize, taps: FfnTaps<'_>);
}
