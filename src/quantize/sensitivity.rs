//! How much each weight matrix suffers from the low-precision type, measured on the inputs it
//! actually sees: the model runs over calibration text, every matrix's inputs are recorded,
//! and its error is the mean over tokens of ‖(W − Ŵ)x‖², Ŵ being W after requantisation.

use rayon::prelude::*;

use super::convert::requantize_rows;
use super::plan::weight_matrices;
use super::target::fit_type;
use super::QuantizeError;
use crate::backend::Backend;
use crate::gguf::{GgufFile, TensorInfo};
use crate::model::{FfnObserver, FfnTaps, Model};
use crate::quant::{dequantize_row, GgmlType};

/// One matrix's measured error.
#[derive(Clone, Debug, PartialEq)]
pub struct Sensitivity {
    pub name: String,
    pub params: u64,
    /// Mean over calibration tokens of the squared norm of the output error.
    pub error: f64,
}

/// Every matrix input seen on the calibration tokens, row-major (tokens × width).
#[derive(Default)]
pub struct Calibration {
    pub tokens: Vec<u32>,
    /// Per layer: the attention norm's output (input of q, k, v).
    pub attn_in: Vec<Vec<f32>>,
    /// Per layer: the attention result (input of the output projection).
    pub att: Vec<Vec<f32>>,
    /// Per layer: the FFN norm's output (input of gate and up).
    pub ffn_in: Vec<Vec<f32>>,
    /// Per layer: what multiplies the down projection.
    pub act: Vec<Vec<f32>>,
    /// The final norm's output (input of the output head).
    pub head_in: Vec<f32>,
    /// The embedding scale (gemma), which multiplies an embedding row's error.
    pub embed_scale: f32,
}

impl FfnObserver for Calibration {
    fn observe(&mut self, layer: usize, _rows: usize, taps: FfnTaps<'_>) {
        self.ffn_in[layer].extend_from_slice(taps.input);
        self.act[layer].extend_from_slice(taps.act);
    }
    fn wants_matrix_inputs(&self) -> bool {
        true
    }
    fn observe_attn(&mut self, layer: usize, _rows: usize, input: &[f32], att: &[f32]) {
        self.attn_in[layer].extend_from_slice(input);
        self.att[layer].extend_from_slice(att);
    }
    fn observe_head(&mut self, _rows: usize, input: &[f32]) {
        self.head_in.extend_from_slice(input);
    }
}

impl Calibration {
    /// Run `model` (dense) over `seqs`, each from an empty cache, up to `max_tokens` tokens
    /// in all, recording every matrix input.
    pub fn run<B: Backend>(
        model: &Model<B>,
        seqs: &[Vec<u32>],
        max_tokens: usize,
    ) -> Result<Calibration, QuantizeError> {
        let n_layer = model.config.n_layer;
        let mut c = Calibration {
            attn_in: vec![Vec::new(); n_layer],
            att: vec![Vec::new(); n_layer],
            ffn_in: vec![Vec::new(); n_layer],
            act: vec![Vec::new(); n_layer],
            embed_scale: model.config.embed_scale.unwrap_or(1.0),
            ..Calibration::default()
        };
        let n_ctx = model.config.context_length.max(1);
        for seq in seqs {
            let left = max_tokens.saturating_sub(c.tokens.len());
            let n = seq.len().min(left).min(n_ctx);
            if n == 0 {
                break;
            }
            let mut st = model.new_state(n);
            model.forward_observed(
                &mut st,
                &seq[..n],
                true,
                Some(&mut c as &mut dyn FfnObserver),
            )?;
            c.tokens.extend_from_slice(&seq[..n]);
        }
        if c.tokens.is_empty() {
            return Err(QuantizeError::NoCalibration);
        }
        Ok(c)
    }

    /// The recorded inputs of the matrix `name`, when it is one the forward pass multiplies
    /// by activations.
    fn dense_input(&self, name: &str) -> Option<&[f32]> {
        if name == "output.weight" {
            return Some(&self.head_in);
        }
        let rest = name.strip_prefix("blk.")?;
        let (layer, what) = rest.split_once('.')?;
        let il: usize = layer.parse().ok()?;
        let v = match what {
            "attn_q.weight" | "attn_k.weight" | "attn_v.weight" => self.attn_in.get(il)?,
            "attn_output.weight" => self.att.get(il)?,
            "ffn_gate.weight" | "ffn_up.weight" => self.ffn_in.get(il)?,
            "ffn_down.weight" => self.act.get(il)?,
            _ => return None,
        };
        Some(v)
    }
}

/// Mean over the `n_tok` rows of `inputs` of ‖(W − Ŵ)x‖² for the matrix `t`, Ŵ being its
/// rows converted to `to`.
pub fn matrix_error(
    file: &GgufFile,
    t: &TensorInfo,
    to: GgmlType,
    inputs: &[f32],
    n_tok: usize,
) -> Result<f64, QuantizeError> {
    let view = file.view(t);
    let cols = t.row_len();
    let rb = view.row_bytes();
    let rows: Vec<usize> = (0..t.n_rows()).collect();
    let sum = rows
        .par_chunks(64)
        .map_init(
            RowError::default,
            |re, chunk| -> Result<f64, QuantizeError> {
                let mut s = 0.0f64;
                for &r in chunk {
                    re.error_row(t.ty, &view.data[r * rb..(r + 1) * rb], to, cols)?;
                    for x in inputs.chunks_exact(cols).take(n_tok) {
                        let d = dot(&re.e, x) as f64;
                        s += d * d;
                    }
                }
                Ok(s)
            },
        )
        .try_reduce(|| 0.0, |a, b| Ok(a + b))?;
    Ok(sum / n_tok as f64)
}

/// Mean over `tokens` of the squared error of the embedding row each looks up, times the
/// embedding scale squared.
fn lookup_error(
    file: &GgufFile,
    t: &TensorInfo,
    to: GgmlType,
    tokens: &[u32],
    scale: f32,
) -> Result<f64, QuantizeError> {
    let view = file.view(t);
    let mut re = RowError::default();
    let mut s = 0.0f64;
    for &tok in tokens {
        re.error_row(t.ty, view.row(tok as usize), to, t.row_len())?;
        s += re.e.iter().map(|&v| (v * v) as f64).sum::<f64>();
    }
    Ok(s * (scale * scale) as f64 / tokens.len() as f64)
}

/// ‖W − Ŵ‖²_F: the error under inputs of unit variance, for matrices whose inputs the
/// calibration does not record.
fn weight_error(file: &GgufFile, t: &TensorInfo, to: GgmlType) -> Result<f64, QuantizeError> {
    let view = file.view(t);
    let mut re = RowError::default();
    let mut s = 0.0f64;
    for r in 0..t.n_rows() {
        re.error_row(t.ty, view.row(r), to, t.row_len())?;
        s += re.e.iter().map(|&v| (v * v) as f64).sum::<f64>();
    }
    Ok(s)
}

/// Scratch for one row's error `e = w − ŵ`.
#[derive(Default)]
struct RowError {
    w: Vec<f32>,
    e: Vec<f32>,
    scratch: Vec<f32>,
    q: Vec<u8>,
}

impl RowError {
    fn error_row(
        &mut self,
        from: GgmlType,
        src: &[u8],
        to: GgmlType,
        cols: usize,
    ) -> Result<(), QuantizeError> {
        self.w.resize(cols, 0.0);
        self.e.resize(cols, 0.0);
        self.q.resize(to.row_bytes(cols).unwrap_or(0), 0);
        dequantize_row(from, src, &mut self.w)?;
        requantize_rows(from, src, to, cols, &mut self.scratch, &mut self.q)?;
        dequantize_row(to, &self.q, &mut self.e)?;
        for (e, &w) in self.e.iter_mut().zip(&self.w) {
            *e = w - *e;
        }
        Ok(())
    }
}

/// f32 dot product in eight lanes (vectorises without unsafe code).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Measure every weight matrix of `file` against `ty` (each matrix's fallback where its rows
/// do not fit): on its recorded inputs; the embedding table by the rows the calibration tokens
/// look up, plus its error as the output head when the model ties the two.
pub fn measure(
    file: &GgufFile,
    calib: &Calibration,
    ty: GgmlType,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Sensitivity>, QuantizeError> {
    let n_tok = calib.tokens.len();
    let tied = file.tensor_info("output.weight").is_none();
    let matrices = weight_matrices(file)?;
    let mut out = Vec::with_capacity(matrices.len());
    for (i, t) in matrices.iter().enumerate() {
        progress(i, matrices.len());
        let to = fit_type(ty, t.row_len());
        let error = if t.name == "token_embd.weight" {
            let mut e = lookup_error(file, t, to, &calib.tokens, calib.embed_scale)?;
            if tied {
                e += matrix_error(file, t, to, &calib.head_in, n_tok)?;
            }
            e
        } else if let Some(x) = calib.dense_input(&t.name) {
            matrix_error(file, t, to, x, n_tok)?
        } else {
            weight_error(file, t, to)?
        };
        out.push(Sensitivity {
            name: t.name.clone(),
            params: t.n_elements(),
            error,
        });
    }
    progress(matrices.len(), matrices.len());
    Ok(out)
}
