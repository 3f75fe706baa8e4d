//! Hyper-parameters of a model, read from GGUF metadata.

use crate::gguf::GgufFile;

use super::ModelError;

/// Architectures we can run. Each differs from plain llama only in a few switches of
/// [`ModelConfig`]; the forward pass is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "gemma3" => Ok(Arch::Gemma3),
            other => Err(ModelError::UnsupportedArch(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (x[2i], x[2i+1]): llama GGUFs, whose Q/K rows the converter permuted.
    Normal,
    /// Halves (x[i], x[i + d/2]): qwen2, gemma3 (GPT-NeoX layout).
    Neox,
}

/// The FFN's non-linearity and gating. Sparse (ReLU-family) models are recognised here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// silu(gate) * up.
    SwiGlu,
    /// gelu_tanh(gate) * up.
    GeGlu,
    /// relu(gate) * up (ReluLLaMA, ProSparse).
    ReGlu,
    /// relu(gate) * relu(up) (Bamboo / TurboSparse).
    DReLU,
    /// relu(up), no gate matrix (OPT-style plain FFN).
    Relu,
}

impl FfnKind {
    /// Parse an activation name as given in metadata or on the command line. `gated` says
    /// whether the model has an `ffn_gate` tensor, which decides what plain "relu" means.
    pub fn parse(name: &str, gated: bool) -> Result<FfnKind, ModelError> {
        let kind = match name.to_ascii_lowercase().as_str() {
            "silu" | "swiglu" | "swish" => FfnKind::SwiGlu,
            "gelu" | "geglu" | "gelu_tanh" | "gelu_pytorch_tanh" => FfnKind::GeGlu,
            "reglu" => FfnKind::ReGlu,
            "drelu" => FfnKind::DReLU,
            "relu" if gated => FfnKind::ReGlu,
            "relu" => FfnKind::Relu,
            other => {
                return Err(ModelError::Config(format!(
                    "unknown FFN activation {other:?} (silu, gelu, relu, reglu, drelu)"
                )))
            }
        };
        if kind.is_gated() != gated {
            return Err(ModelError::Config(format!(
                "FFN activation {name:?} {} a gate matrix, but the model {} one",
                if kind.is_gated() { "needs" } else { "takes no" },
                if gated { "has" } else { "has no" }
            )));
        }
        Ok(kind)
    }

    pub fn is_gated(self) -> bool {
        !matches!(self, FfnKind::Relu)
    }

    /// ReLU-family FFNs have exact zeros: sparse equals dense when the active set is exact.
    pub fn is_relu_family(self) -> bool {
        matches!(self, FfnKind::ReGlu | FfnKind::DReLU | FfnKind::Relu)
    }

    pub fn name(self) -> &'static str {
        match self {
            FfnKind::SwiGlu => "silu",
            FfnKind::GeGlu => "gelu",
            FfnKind::ReGlu => "reglu",
            FfnKind::DReLU => "drelu",
            FfnKind::Relu => "relu",
        }
    }
}

/// Metadata key under which we store (and read) the FFN activation of a model, prefixed by
/// the architecture name: `llama.ffn_activation = "relu"`.
pub const FFN_ACTIVATION_KEY: &str = "ffn_activation";

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions per head (the rest pass through).
    pub rope_dim: usize,
    pub rope_base: f32,
    /// Rope base of sliding-window layers (gemma3 uses 10 000 there).
    pub rope_base_local: f32,
    pub rope_style: RopeStyle,
    pub rms_eps: f32,
    pub context_length: usize,
    pub vocab_size: usize,
    /// Sliding-window size for local layers; `None` when every layer is global.
    pub sliding_window: Option<usize>,
    /// Per layer: does it use the sliding window?
    pub layer_local: Vec<bool>,
    pub ffn: FfnKind,
    /// Multiplier applied to token embeddings (gemma: sqrt(d_model)).
    pub embed_scale: Option<f32>,
    /// Multiplier of q·k.
    pub attn_scale: f32,
}

impl ModelConfig {
    /// Read the configuration. `activation` overrides the FFN activation from metadata.
    pub fn from_gguf(f: &GgufFile, activation: Option<&str>) -> Result<ModelConfig, ModelError> {
        let arch_name = f
            .architecture()
            .ok_or_else(|| ModelError::Config("general.architecture missing".into()))?;
        let arch = Arch::from_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize, ModelError> {
            let full = key(k);
            Ok(f.require(&full, f.get_usize(&full))?)
        };
        let d_model = req("embedding_length")?;
        let n_layer = req("block_count")?;
        let n_ff = req("feed_forward_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = f
            .get_usize(&key("attention.head_count_kv"))?
            .unwrap_or(n_head);
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(ModelError::Config(format!(
                "head counts {n_head}/{n_head_kv}: query heads must be a multiple of KV heads"
            )));
        }
        let head_dim = match f.get_usize(&key("attention.key_length"))? {
            Some(k) => k,
            None => {
                if d_model % n_head != 0 {
                    return Err(ModelError::Config(format!(
                        "embedding_length {d_model} is not divisible by head_count {n_head}"
                    )));
                }
                d_model / n_head
            }
        };
        if let Some(v) = f.get_usize(&key("attention.value_length"))? {
            if v != head_dim {
                return Err(ModelError::Config(format!(
                    "value_length {v} differs from key_length {head_dim}: not supported"
                )));
            }
        }
        let rope_dim = f
            .get_usize(&key("rope.dimension_count"))?
            .unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(ModelError::Config(format!(
                "rope.dimension_count {rope_dim} must be even and at most the head size {head_dim}"
            )));
        }
        let rope_base = f.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let rms_eps = f
            .get_f32(&key("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-5);
        let context_length = f.get_usize(&key("context_length"))?.unwrap_or(2048);
        let vocab_size = match f.get_usize(&key("vocab_size"))? {
            Some(v) => v,
            None => f
                .get_array("tokenizer.ggml.tokens")?
                .map(|a| a.len())
                .or_else(|| f.tensor_info("token_embd.weight").map(|t| t.n_rows()))
                .ok_or_else(|| ModelError::Config("vocabulary size unknown".into()))?,
        };

        let gated = f.tensor_info("blk.0.ffn_gate.weight").is_some();
        let act_name = match activation {
            Some(a) => Some(a.to_string()),
            None => f.get_str(&key(FFN_ACTIVATION_KEY))?.map(str::to_string),
        };
        let ffn = match (act_name, arch) {
            (Some(a), _) => FfnKind::parse(&a, gated)?,
            (None, Arch::Gemma3) => FfnKind::GeGlu,
            (None, _) => FfnKind::parse("silu", gated)?,
        };

        let (rope_style, sliding_window, layer_local, embed_scale, rope_base_local) = match arch {
            Arch::Llama => (
                RopeStyle::Normal,
                None,
                vec![false; n_layer],
                None,
                rope_base,
            ),
            Arch::Qwen2 => (RopeStyle::Neox, None, vec![false; n_layer], None, rope_base),
            Arch::Gemma3 => {
                let window = f.get_usize(&key("attention.sliding_window"))?;
                // Every sixth layer attends globally, the others within the window.
                let local = (0..n_layer).map(|il| (il + 1) % 6 != 0).collect();
                (
                    RopeStyle::Neox,
                    window,
                    local,
                    Some((d_model as f32).sqrt()),
                    10_000.0,
                )
            }
        };
        let layer_local = if sliding_window.is_some() {
            layer_local
        } else {
            vec![false; n_layer]
        };

        Ok(ModelConfig {
            arch,
            n_layer,
            d_model,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            rope_dim,
            rope_base,
            rope_base_local,
            rope_style,
            rms_eps,
            context_length,
            vocab_size,
            sliding_window,
            layer_local,
            ffn,
            embed_scale,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
        })
    }

    /// Width of one token's keys (or values) in the cache.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffn_activation_names() {
        assert_eq!(FfnKind::parse("relu", true).unwrap(), FfnKind::ReGlu);
        assert_eq!(FfnKind::parse("relu", false).unwrap(), FfnKind::Relu);
        assert_eq!(FfnKind::parse("SiLU", true).unwrap(), FfnKind::SwiGlu);
        assert!(FfnKind::parse("drelu", false).is_err());
        let e = FfnKind::parse("tanh", true).unwrap_err().to_string();
        assert!(e.contains("tanh"), "{e}");
    }
}
