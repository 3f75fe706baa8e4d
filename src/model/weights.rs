//! Named weight tensors of a decoder, loaded onto a backend.

use std::sync::Arc;

use super::{ModelConfig, ModelError};
use crate::backend::Backend;
use crate::gguf::{GgufFile, TensorInfo};
use crate::quant::{self, GgmlType};

/// Types the matmul kernels take as weights (the activation-only formats are excluded).
fn is_weight_type(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2_K | Q3_K | Q4_K | Q5_K | Q6_K
    )
}

pub struct LayerWeights<B: Backend> {
    pub attn_norm: B::Tensor,
    pub wq: B::Weight,
    pub wk: B::Weight,
    pub wv: B::Weight,
    pub bq: Option<B::Tensor>,
    pub bk: Option<B::Tensor>,
    pub bv: Option<B::Tensor>,
    /// Per-head RMS norms of queries and keys (gemma3).
    pub q_norm: Option<B::Tensor>,
    pub k_norm: Option<B::Tensor>,
    pub wo: B::Weight,
    /// Norm of the attention output before the residual add (gemma3).
    pub post_attn_norm: Option<B::Tensor>,
    pub ffn_norm: B::Tensor,
    pub gate: Option<B::Weight>,
    pub up: B::Weight,
    pub down: B::Weight,
    /// Norm of the FFN output before the residual add (gemma3).
    pub post_ffn_norm: Option<B::Tensor>,
}

pub struct Weights<B: Backend> {
    pub token_embd: B::Weight,
    pub output_norm: B::Tensor,
    /// The output head; the embedding table when the model ties them.
    pub output: B::Weight,
    pub layers: Vec<LayerWeights<B>>,
}

struct Loader<'a, B: Backend> {
    backend: &'a B,
    file: &'a Arc<GgufFile>,
}

impl<B: Backend> Loader<'_, B> {
    fn info(&self, name: &str) -> Result<&TensorInfo, ModelError> {
        self.file
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn check(&self, info: &TensorInfo, cols: usize, rows: Option<usize>) -> Result<(), ModelError> {
        let ok = info.row_len() == cols && rows.is_none_or(|r| info.n_rows() == r);
        if !ok {
            return Err(ModelError::BadTensor {
                name: info.name.clone(),
                msg: format!(
                    "shape {:?}, expected [{cols}, {}]",
                    info.dims,
                    rows.map_or("?".into(), |r| r.to_string())
                ),
            });
        }
        Ok(())
    }

    fn matrix(
        &self,
        name: &str,
        cols: usize,
        rows: Option<usize>,
    ) -> Result<B::Weight, ModelError> {
        let info = self.info(name)?;
        self.check(info, cols, rows)?;
        if !is_weight_type(info.ty) {
            return Err(ModelError::BadTensor {
                name: name.to_string(),
                msg: format!("type {} is not supported for weight matrices", info.ty),
            });
        }
        self.backend.load_weight(self.file, info)
    }

    fn vector(&self, name: &str, len: usize) -> Result<B::Tensor, ModelError> {
        let info = self.info(name)?;
        if info.n_elements() as usize != len {
            return Err(ModelError::BadTensor {
                name: name.to_string(),
                msg: format!("shape {:?}, expected {len} elements", info.dims),
            });
        }
        let view = self.file.view(info);
        let mut data = vec![0f32; len];
        quant::dequantize_row(info.ty, view.data, &mut data)?;
        Ok(self.backend.load_vector(&data))
    }

    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<B::Tensor>, ModelError> {
        match self.file.tensor_info(name) {
            None => Ok(None),
            Some(_) => self.vector(name, len).map(Some),
        }
    }
}

impl<B: Backend> Weights<B> {
    pub fn load(backend: &B, file: &Arc<GgufFile>, c: &ModelConfig) -> Result<Self, ModelError> {
        let l = Loader { backend, file };
        let d = c.d_model;
        let token_embd = l.matrix("token_embd.weight", d, Some(c.vocab_size))?;
        let output = match file.tensor_info("output.weight") {
            Some(_) => l.matrix("output.weight", d, Some(c.vocab_size))?,
            None => l.matrix("token_embd.weight", d, Some(c.vocab_size))?,
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}");
            let gate = if c.ffn.is_gated() {
                Some(l.matrix(&n("ffn_gate.weight"), d, Some(c.n_ff))?)
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm.weight"), d)?,
                wq: l.matrix(&n("attn_q.weight"), d, Some(c.q_dim()))?,
                wk: l.matrix(&n("attn_k.weight"), d, Some(c.kv_dim()))?,
                wv: l.matrix(&n("attn_v.weight"), d, Some(c.kv_dim()))?,
                bq: l.opt_vector(&n("attn_q.bias"), c.q_dim())?,
                bk: l.opt_vector(&n("attn_k.bias"), c.kv_dim())?,
                bv: l.opt_vector(&n("attn_v.bias"), c.kv_dim())?,
                q_norm: l.opt_vector(&n("attn_q_norm.weight"), c.head_dim)?,
                k_norm: l.opt_vector(&n("attn_k_norm.weight"), c.head_dim)?,
                wo: l.matrix(&n("attn_output.weight"), c.q_dim(), Some(d))?,
                post_attn_norm: l.opt_vector(&n("post_attention_norm.weight"), d)?,
                ffn_norm: l.vector(&n("ffn_norm.weight"), d)?,
                gate,
                up: l.matrix(&n("ffn_up.weight"), d, Some(c.n_ff))?,
                down: l.matrix(&n("ffn_down.weight"), c.n_ff, Some(d))?,
                post_ffn_norm: l.opt_vector(&n("post_ffw_norm.weight"), d)?,
            });
        }
        Ok(Weights {
            token_embd,
            output_norm: l.vector("output_norm.weight", d)?,
            output,
            layers,
        })
    }
}
