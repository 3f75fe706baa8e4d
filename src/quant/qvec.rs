//! An activation vector prepared once for dot products with rows of a given weight type.

use super::GgmlType;

/// The format ggml pairs with weights of type `ty` for dot products: Q8_0 for Q4_0/Q5_0/Q8_0,
/// Q8_1 (which carries d*sum for the offset term) for Q4_1/Q5_1, Q8_K for the k-quants and
/// plain f32 for float weights. `None` for types without a dot kernel.
pub fn activation_type(ty: GgmlType) -> Option<GgmlType> {
    use GgmlType::*;
    match ty {
        F32 | F16 | BF16 => Some(F32),
        Q4_0 | Q5_0 | Q8_0 => Some(Q8_0),
        Q4_1 | Q5_1 => Some(Q8_1),
        Q2_K | Q3_K | Q4_K | Q5_K | Q6_K => Some(Q8_K),
        _ => None,
    }
}

/// `x` quantised for weight type `ty`. Buffers are kept across [`QuantizedVec::set`] calls so
/// that a decode loop does not allocate per token. A length that is not a whole number of
/// blocks is zero-padded (the padding contributes nothing to dot products).
#[derive(Clone, Debug)]
pub struct QuantizedVec {
    act: GgmlType,
    len: usize,
    f: Vec<f32>,
    q: Vec<u8>,
}

impl QuantizedVec {
    pub fn new(ty: GgmlType, x: &[f32]) -> Self {
        let mut v = QuantizedVec {
            act: GgmlType::F32,
            len: 0,
            f: Vec::new(),
            q: Vec::new(),
        };
        v.set(ty, x);
        v
    }

    /// Re-quantise `x` for weight type `ty`, reusing the buffers.
    pub fn set(&mut self, ty: GgmlType, x: &[f32]) {
        self.len = x.len();
        // Types without a dot kernel keep f32; vec_dot rejects them.
        self.act = activation_type(ty).unwrap_or(GgmlType::F32);
        self.f.clear();
        self.q.clear();
        if self.act == GgmlType::F32 {
            self.f.extend_from_slice(x);
            return;
        }
        let bl = self.act.block_len();
        let bb = self.act.block_bytes();
        let nb = x.len().div_ceil(bl);
        self.q.resize(nb * bb, 0);
        let quant = super::dot::activation_quantizer(self.act);
        let full = x.len() / bl;
        for (xb, qb) in x.chunks_exact(bl).zip(self.q.chunks_exact_mut(bb)) {
            quant(xb, qb);
        }
        if full < nb {
            let mut pad = [0.0f32; 256];
            let tail = &x[full * bl..];
            pad[..tail.len()].copy_from_slice(tail);
            quant(&pad[..bl], &mut self.q[full * bb..]);
        }
    }

    /// Number of elements of the original vector.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The format the vector is held in (F32, Q8_0, Q8_1 or Q8_K).
    pub fn activation_type(&self) -> GgmlType {
        self.act
    }

    /// The quantised blocks (empty for the f32 format).
    pub fn bytes(&self) -> &[u8] {
        &self.q
    }

    /// The values, for the f32 format (empty otherwise).
    pub fn floats(&self) -> &[f32] {
        &self.f
    }

    /// Number of blocks held (elements for f32), including a zero-padded tail block.
    pub fn n_blocks(&self) -> usize {
        if self.act == GgmlType::F32 {
            self.f.len()
        } else {
            self.q.len() / self.act.block_bytes()
        }
    }
}
