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

    /// Whether [`FfnObserver::observe_attn`] and [`FfnObserver::observe_head`] are wanted;
    /// the host copies they need are made only then.
    fn wants_matrix_inputs(&self) -> bool {
        false
    }

    /// One layer's attention matrix inputs (`rows` tokens, row-major): `input` after the
    /// attention norm (what q, k and v multiply), `att` the attention result (what the output
    /// projection multiplies). The quantiser measures each matrix's error on them.
    fn observe_attn(&mut self, _layer: usize, _rows: usize, _input: &[f32], _att: &[f32]) {}

    /// The output head's input (the final norm's output) for the rows whose logits are
    /// computed: every token with `all_logits`, else the last.
    fn observe_head(&mut self, _rows: usize, _input: &[f32]) {}
}
