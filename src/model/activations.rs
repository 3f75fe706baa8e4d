//! The activation tensors one pass through the layers works in.

use crate::backend::Backend;

/// Working tensors of the layer blocks (`rows` tokens each). A sequence's [`super::State`]
/// holds one set and a batched step ([`super::DecodeBatch`]) another, so that the same
/// blocks run on a single sequence's rows or on the stacked rows of several.
pub(crate) struct Activations<B: Backend> {
    /// The residual stream.
    pub x: B::Tensor,
    /// The normalised input of the current block.
    pub h: B::Tensor,
    pub q: B::Tensor,
    pub k: B::Tensor,
    pub v: B::Tensor,
    pub att: B::Tensor,
    /// A block's output before it joins the residual stream.
    pub o: B::Tensor,
    pub gate: B::Tensor,
    /// Up projection, then the FFN activation in place.
    pub up: B::Tensor,
}

impl<B: Backend> Activations<B> {
    pub fn new(b: &B) -> Self {
        Activations {
            x: b.new_tensor(),
            h: b.new_tensor(),
            q: b.new_tensor(),
            k: b.new_tensor(),
            v: b.new_tensor(),
            att: b.new_tensor(),
            o: b.new_tensor(),
            gate: b.new_tensor(),
            up: b.new_tensor(),
        }
    }
}
