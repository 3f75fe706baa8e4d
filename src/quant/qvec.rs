//! An activation vector prepared once for dot products with rows of a given weight type.

use super::layout::f16_at;
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

/// The values at `idx` (ascending) of `x` after the round trip through the activation format
/// of weight type `ty` that the dense kernels would quantise `x` to, written to `rounded[i]`
/// for each `i` in `idx` (other entries untouched). Only the blocks holding an index are
/// quantised, with the same quantiser as [`QuantizedVec::set`]. For Q8_1 the block sums that
/// format carries are written to `sums[block]` too. `ty` must have an integer activation
/// format.
pub fn round_activations(
    ty: GgmlType,
    x: &[f32],
    idx: &[u32],
    rounded: &mut [f32],
    mut sums: Option<&mut [f32]>,
) {
    let act = activation_type(ty).expect("weight type with an activation format");
    let (bl, bb) = (act.block_len(), act.block_bytes());
    let quant = super::dot::activation_quantizer(act);
    let (mut block, mut values) = ([0u8; 292], [0f32; 256]);
    let (block, values) = (&mut block[..bb], &mut values[..bl]);
    let mut last = usize::MAX;
    for &i in idx {
        let i = i as usize;
        let b = i / bl;
        if b != last {
            last = b;
            quant(&x[b * bl..(b + 1) * bl], block);
            super::dequantize_row(act, block, values).expect("activation formats dequantise");
            if let Some(sums) = sums.as_deref_mut() {
                sums[b] = f16_at(block, 2);
            }
        }
        rounded[i] = values[i % bl];
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random vector with a few large entries (never all zeros).
    fn vector(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let v = (s % 20_001) as f32 / 10_000.0 - 1.0;
                if i % 97 == 0 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn rounded_activations_equal_the_dense_quantisation() {
        for (ty, seed) in [
            (GgmlType::Q4_0, 1),
            (GgmlType::Q4_1, 2),
            (GgmlType::Q4_K, 3),
        ] {
            let n = 1024;
            let x = vector(n, seed);
            let idx: Vec<u32> = (0..n as u32).filter(|i| (i * 7 + seed) % 11 < 2).collect();
            let dense = QuantizedVec::new(ty, &x);
            let mut all = vec![0f32; n];
            super::super::dequantize_row(dense.activation_type(), dense.bytes(), &mut all).unwrap();
            let mut rounded = vec![f32::NAN; n];
            let nb = n / dense.activation_type().block_len();
            let mut sums = vec![f32::NAN; nb];
            let q1 = dense.activation_type() == GgmlType::Q8_1;
            round_activations(ty, &x, &idx, &mut rounded, q1.then_some(&mut sums[..]));
            for (i, (&r, &a)) in rounded.iter().zip(&all).enumerate() {
                if idx.contains(&(i as u32)) {
                    assert_eq!(r.to_bits(), a.to_bits(), "{ty} element {i}");
                } else {
                    assert!(r.is_nan(), "{ty} element {i} written but not listed");
                }
            }
            if q1 {
                let bb = GgmlType::Q8_1.block_bytes();
                for &i in &idx {
                    let b = i as usize / 32;
                    let blk = &dense.bytes()[b * bb..];
                    assert_eq!(sums[b], f16_at(blk, 2), "block sum {b}");
                }
            }
        }
    }
}
