//! What to generate: the shape, activation, sparsity and storage type of a synthetic model.

use super::projection::BIAS_CHANNELS;
use super::vocab;
use super::SynthError;
use crate::model::FfnKind;
use crate::quant::GgmlType;

#[derive(Clone, Debug)]
pub struct SynthSpec {
    pub hidden: usize,
    pub ffn: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub ctx: usize,
    /// One of the ReLU family: [`FfnKind::Relu`], [`FfnKind::ReGlu`] or [`FfnKind::DReLU`].
    pub activation: FfnKind,
    /// Target mean fraction of zero activations, in [0, 1).
    pub sparsity: f64,
    /// Power-law exponent of neuron firing frequency against rank; 0 means all alike.
    pub skew: f64,
    /// Storage type of the weight matrices (norms are always F32).
    pub weight_type: GgmlType,
    pub seed: u64,
}

impl SynthSpec {
    /// A small llama-shaped model; callers adjust fields from here.
    pub fn small(activation: FfnKind, sparsity: f64, skew: f64) -> SynthSpec {
        SynthSpec {
            hidden: 256,
            ffn: 1024,
            layers: 4,
            heads: 4,
            kv_heads: 4,
            vocab: 1024,
            ctx: 1024,
            activation,
            sparsity,
            skew,
            weight_type: GgmlType::F16,
            seed: 1,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim()
    }

    /// Parse a synthetic activation name: only the ReLU family has exact zeros.
    pub fn parse_activation(name: &str) -> Result<FfnKind, SynthError> {
        match name.to_ascii_lowercase().as_str() {
            "relu" => Ok(FfnKind::Relu),
            "reglu" => Ok(FfnKind::ReGlu),
            "drelu" => Ok(FfnKind::DReLU),
            other => Err(SynthError::Spec(format!(
                "unknown activation {other:?}: synthetic models are relu, reglu or drelu"
            ))),
        }
    }

    /// Parse a weight type name (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0).
    pub fn parse_type(name: &str) -> Result<GgmlType, SynthError> {
        use GgmlType::*;
        let ty = match name.to_ascii_lowercase().as_str() {
            "f32" => F32,
            "f16" => F16,
            "bf16" => BF16,
            "q4_0" => Q4_0,
            "q4_1" => Q4_1,
            "q5_0" => Q5_0,
            "q5_1" => Q5_1,
            "q8_0" => Q8_0,
            other => {
                return Err(SynthError::Spec(format!(
                    "unknown weight type {other:?} (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0)"
                )))
            }
        };
        Ok(ty)
    }

    /// Check every constraint, naming the first one violated.
    pub fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::Spec(m));
        if !self.activation.is_relu_family() {
            return bad(format!(
                "activation {} has no exact zeros: use relu, reglu or drelu",
                self.activation.name()
            ));
        }
        if self.hidden < 2 * BIAS_CHANNELS || !self.hidden.is_multiple_of(BIAS_CHANNELS) {
            return bad(format!(
                "hidden size {} must be a multiple of {BIAS_CHANNELS} and at least {}",
                self.hidden,
                2 * BIAS_CHANNELS
            ));
        }
        if self.ffn == 0 || !self.ffn.is_multiple_of(32) {
            return bad(format!(
                "FFN size {} must be a positive multiple of 32",
                self.ffn
            ));
        }
        if self.layers == 0 {
            return bad("the model needs at least one layer".into());
        }
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return bad(format!(
                "hidden size {} is not divisible by the head count {}",
                self.hidden, self.heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head size {} must be even for rotary embeddings",
                self.head_dim()
            ));
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "head count {} is not a multiple of the KV head count {}",
                self.heads, self.kv_heads
            ));
        }
        let block = self.weight_type.block_len();
        if !self.kv_dim().is_multiple_of(block) {
            return bad(format!(
                "KV width {} is not a multiple of the {} block length {block}",
                self.kv_dim(),
                self.weight_type
            ));
        }
        if !(0.0..1.0).contains(&self.sparsity) {
            return bad(format!("sparsity {} must be in [0, 1)", self.sparsity));
        }
        if !(0.0..=10.0).contains(&self.skew) {
            return bad(format!("skew {} must be in [0, 10]", self.skew));
        }
        let min_vocab = vocab::min_size();
        if self.vocab < min_vocab || self.vocab > 1 << 24 {
            return bad(format!(
                "vocabulary size {} must be between {min_vocab} and {}",
                self.vocab,
                1 << 24
            ));
        }
        if self.ctx == 0 {
            return bad("context length must be positive".into());
        }
        if SynthSpec::parse_type(self.weight_type.name()).is_err() {
            return bad(format!(
                "weight type {} cannot be generated",
                self.weight_type
            ));
        }
        Ok(())
    }

    /// Weights in the file, norms included.
    pub fn n_params(&self) -> u64 {
        let (d, f, v) = (self.hidden as u64, self.ffn as u64, self.vocab as u64);
        let kv = self.kv_dim() as u64;
        let ffn_mats = if self.activation.is_gated() { 3 } else { 2 };
        let per_layer = 2 * d + d * d * 2 + 2 * d * kv + ffn_mats * d * f;
        2 * v * d + d + self.layers as u64 * per_layer
    }
}
