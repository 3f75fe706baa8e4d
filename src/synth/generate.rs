//! Streams a synthetic model to disk: metadata and tensor layout first, then every tensor's
//! rows, made in parallel chunks from per-row random streams, quantised and appended.
//! Memory stays bounded by one chunk, whatever the model size.

use std::io::Write;
use std::path::Path;

use rayon::prelude::*;

use super::frequency::power_law;
use super::projection::{norm, SparseProjection, BIAS_CHANNELS};
use super::rng::{stream_seed, Rng};
use super::{vocab, SynthError, SynthSpec, SYNTH_KEY_PREFIX};
use crate::gguf::{GgufWriter, TensorDataWriter, Value, ValueType};
use crate::model::{FfnKind, FFN_ACTIVATION_KEY};
use crate::quant::{quantize_row, GgmlType};

/// Root-mean-square of what each attention or FFN block adds to the unit-scale residual.
/// Small, so the residual's statistics (and with them the neurons' firing rates) stay those
/// of the embedding from the first layer to the last.
const RESIDUAL_UPDATE: f32 = 0.02;
/// Target bytes of quantised rows made per parallel step.
const CHUNK_BYTES: usize = 8 << 20;
/// Stream namespace of the per-layer choices (neuron order, projection bases).
const LAYER_STREAMS: u64 = 1 << 40;

/// What a finished run produced.
#[derive(Clone, Debug)]
pub struct SynthSummary {
    pub file_bytes: u64,
    pub n_params: u64,
    pub n_tensors: usize,
}

/// How a tensor's rows are made.
#[derive(Clone, Copy, Debug)]
enum Recipe {
    /// Norm weights.
    Ones,
    /// Token embeddings: the constant bias channels, then a random unit-variance vector.
    Embedding,
    /// Independent N(0, std²) entries; the first `zero_rows` rows are zero (outputs that
    /// must not touch the bias channels).
    Normal { std: f32, zero_rows: usize },
    /// The layer's sparse gate.
    SparseGate,
    /// The layer's sparse up projection (plain relu, drelu).
    SparseUp,
}

struct Plan {
    name: String,
    /// ggml order: dims[0] is the row length.
    dims: Vec<u64>,
    ty: GgmlType,
    recipe: Recipe,
    layer: Option<usize>,
}

impl Plan {
    fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    fn rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }
}

fn plans(s: &SynthSpec) -> Vec<Plan> {
    let (d, f, kv) = (s.hidden as u64, s.ffn as u64, s.kv_dim() as u64);
    let wt = s.weight_type;
    let unit = 1.0 / (s.hidden as f32).sqrt();
    let density = (1.0 - s.sparsity) as f32;
    let mut out = vec![Plan {
        name: "token_embd.weight".into(),
        dims: vec![d, s.vocab as u64],
        ty: wt,
        recipe: Recipe::Embedding,
        layer: None,
    }];
    for l in 0..s.layers {
        let mut add = |name: &str, dims: Vec<u64>, ty, recipe| {
            out.push(Plan {
                name: format!("blk.{l}.{name}.weight"),
                dims,
                ty,
                recipe,
                layer: Some(l),
            })
        };
        let dense = Recipe::Normal {
            std: unit,
            zero_rows: 0,
        };
        add("attn_norm", vec![d], GgmlType::F32, Recipe::Ones);
        add("attn_q", vec![d, d], wt, dense);
        add("attn_k", vec![d, kv], wt, dense);
        add("attn_v", vec![d, kv], wt, dense);
        // Values are about unit scale and attention averages them, so this bounds the update.
        let wo = Recipe::Normal {
            std: RESIDUAL_UPDATE / (s.hidden as f32).sqrt(),
            zero_rows: BIAS_CHANNELS,
        };
        add("attn_output", vec![d, d], wt, wo);
        add("ffn_norm", vec![d], GgmlType::F32, Recipe::Ones);
        let up = match s.activation {
            FfnKind::ReGlu => {
                add("ffn_gate", vec![d, f], wt, Recipe::SparseGate);
                dense
            }
            FfnKind::DReLU => {
                add("ffn_gate", vec![d, f], wt, Recipe::SparseGate);
                Recipe::SparseUp
            }
            _ => Recipe::SparseUp,
        };
        add("ffn_up", vec![d, f], wt, up);
        // About density·ffn activations of order one are summed per output.
        let down = Recipe::Normal {
            std: RESIDUAL_UPDATE / (density.max(1e-3) * s.ffn as f32).sqrt(),
            zero_rows: BIAS_CHANNELS,
        };
        add("ffn_down", vec![f, d], wt, down);
    }
    out.push(Plan {
        name: "output_norm.weight".into(),
        dims: vec![d],
        ty: GgmlType::F32,
        recipe: Recipe::Ones,
        layer: None,
    });
    out.push(Plan {
        name: "output.weight".into(),
        dims: vec![d, s.vocab as u64],
        ty: wt,
        recipe: Recipe::Normal {
            std: 2.0 * unit,
            zero_rows: 0,
        },
        layer: None,
    });
    out
}

fn metadata(w: &mut GgufWriter, s: &SynthSpec) -> Result<(), SynthError> {
    let u32v = |x: usize| Value::U32(x as u32);
    let arch = "llama";
    w.add_str("general.architecture", arch)?;
    w.add_str(
        "general.name",
        format!(
            "synthetic-{}-{}x{}",
            s.activation.name(),
            s.layers,
            s.hidden
        ),
    )?;
    w.add_str(
        "general.description",
        "SYNTHETIC model with random weights made by `powerinfer synth`: its activations are \
         shaped for sparsity tests and benchmarks, its text output is meaningless",
    )?;
    w.add(
        "general.file_type",
        Value::U32(crate::quantize::file_type(s.weight_type)),
    )?;
    if !matches!(
        s.weight_type,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
    ) {
        w.add("general.quantization_version", Value::U32(2))?;
    }
    let k = |key: &str| format!("{arch}.{key}");
    w.add(k("vocab_size"), u32v(s.vocab))?;
    w.add(k("context_length"), u32v(s.ctx))?;
    w.add(k("embedding_length"), u32v(s.hidden))?;
    w.add(k("block_count"), u32v(s.layers))?;
    w.add(k("feed_forward_length"), u32v(s.ffn))?;
    w.add(k("rope.dimension_count"), u32v(s.head_dim()))?;
    w.add(k("rope.freq_base"), Value::F32(10_000.0))?;
    w.add(k("attention.head_count"), u32v(s.heads))?;
    w.add(k("attention.head_count_kv"), u32v(s.kv_heads))?;
    w.add(k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))?;
    w.add_str(k(FFN_ACTIVATION_KEY), s.activation.name())?;
    let sk = |key: &str| format!("{SYNTH_KEY_PREFIX}{key}");
    w.add(sk("sparsity"), Value::F32(s.sparsity as f32))?;
    w.add(sk("skew"), Value::F32(s.skew as f32))?;
    w.add(sk("seed"), Value::U64(s.seed))?;

    let v = vocab::build(s.vocab);
    w.add_str("tokenizer.ggml.model", "llama")?;
    w.add_str("tokenizer.ggml.pre", "default")?;
    let arr = |ty, items: Vec<Value>| Value::Array(ty, items);
    w.add(
        "tokenizer.ggml.tokens",
        arr(
            ValueType::String,
            v.pieces.into_iter().map(Value::String).collect(),
        ),
    )?;
    w.add(
        "tokenizer.ggml.scores",
        arr(
            ValueType::F32,
            v.scores.into_iter().map(Value::F32).collect(),
        ),
    )?;
    w.add(
        "tokenizer.ggml.token_type",
        arr(
            ValueType::I32,
            v.types.into_iter().map(Value::I32).collect(),
        ),
    )?;
    w.add("tokenizer.ggml.unknown_token_id", Value::U32(vocab::UNK_ID))?;
    w.add("tokenizer.ggml.bos_token_id", Value::U32(vocab::BOS_ID))?;
    w.add("tokenizer.ggml.eos_token_id", Value::U32(vocab::EOS_ID))?;
    w.add("tokenizer.ggml.add_bos_token", Value::Bool(true))?;
    w.add("tokenizer.ggml.add_eos_token", Value::Bool(false))?;
    Ok(())
}

/// One layer's sparse projections, made when its first tensor is reached.
struct LayerProjections {
    layer: usize,
    gate: Option<SparseProjection>,
    up: Option<SparseProjection>,
}

fn layer_projections(s: &SynthSpec, layer: usize, by_rank: &[f64]) -> LayerProjections {
    let stream = |k: u64| Rng::new(stream_seed(s.seed, LAYER_STREAMS + layer as u64, k));
    // Neurons take their ranks in random order within the layer.
    let order = stream(0).permutation(s.ffn);
    let freq: Vec<f64> = order.iter().map(|&r| by_rank[r]).collect();
    let (gate, up) = match s.activation {
        FfnKind::ReGlu => (Some(freq), None),
        // Two independent tests that each pass with √p pass together with p.
        FfnKind::DReLU => {
            let half: Vec<f64> = freq.iter().map(|p| p.sqrt()).collect();
            (Some(half.clone()), Some(half))
        }
        _ => (None, Some(freq)),
    };
    LayerProjections {
        layer,
        gate: gate.map(|f| SparseProjection::new(&f, s.hidden, &mut stream(1))),
        up: up.map(|f| SparseProjection::new(&f, s.hidden, &mut stream(2))),
    }
}

fn fill_row(
    recipe: Recipe,
    proj: Option<&LayerProjections>,
    rng: &mut Rng,
    row: usize,
    out: &mut [f32],
) {
    match recipe {
        Recipe::Ones => out.fill(1.0),
        Recipe::Embedding => {
            let (head, rest) = out.split_at_mut(BIAS_CHANNELS);
            head.fill(1.0);
            rng.fill_normal(rest, 1.0);
            // Exactly unit mean square, so the RMS norm leaves the bias channels at 1.
            let scale = (rest.len() as f32).sqrt() / norm(rest).max(1e-20);
            rest.iter_mut().for_each(|v| *v *= scale);
        }
        Recipe::Normal { std, zero_rows } => {
            if row < zero_rows {
                out.fill(0.0);
            } else {
                rng.fill_normal(out, std);
            }
        }
        Recipe::SparseGate | Recipe::SparseUp => {
            let p = proj.expect("layer projections exist for layer tensors");
            let m = match recipe {
                Recipe::SparseGate => p.gate.as_ref(),
                _ => p.up.as_ref(),
            };
            m.expect("the activation has this sparse projection")
                .fill_row(row, rng, out);
        }
    }
}

/// Progress of a run: bytes of tensor data written so far and in all.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Generate the model described by `spec` into `path` (written atomically).
pub fn write_model(
    spec: &SynthSpec,
    path: &Path,
    progress: Progress<'_>,
) -> Result<SynthSummary, SynthError> {
    spec.validate()?;
    let plans = plans(spec);
    let mut w = GgufWriter::new();
    metadata(&mut w, spec)?;
    for p in &plans {
        w.add_tensor(p.name.clone(), &p.dims, p.ty)?;
    }
    let total = w.data_len();
    let file_bytes = w.file_len();
    let by_rank = power_law(spec.ffn, 1.0 - spec.sparsity, spec.skew);
    w.write_file(path, |tw| -> Result<(), SynthError> {
        let mut layer: Option<LayerProjections> = None;
        let mut done = 0u64;
        for (t, p) in plans.iter().enumerate() {
            if let Some(l) = p.layer {
                if layer.as_ref().is_none_or(|x| x.layer != l) {
                    layer = Some(layer_projections(spec, l, &by_rank));
                }
            }
            stream_tensor(tw, spec.seed, t as u64, p, layer.as_ref())?;
            done += p.ty.row_bytes(p.row_len()).unwrap_or(0) as u64 * p.rows() as u64;
            progress(done, total);
        }
        Ok(())
    })?;
    Ok(SynthSummary {
        file_bytes,
        n_params: spec.n_params(),
        n_tensors: plans.len(),
    })
}

fn stream_tensor<W: Write>(
    tw: &mut TensorDataWriter<W>,
    seed: u64,
    tensor: u64,
    p: &Plan,
    proj: Option<&LayerProjections>,
) -> Result<(), SynthError> {
    let n = p.row_len();
    let row_bytes =
        p.ty.row_bytes(n)
            .ok_or_else(|| SynthError::Spec(format!("{}: partial block", p.name)))?;
    let rows = p.rows();
    let per_chunk = (CHUNK_BYTES / row_bytes).clamp(1, rows);
    let mut buf = vec![0u8; per_chunk * row_bytes];
    tw.begin_tensor(&p.name)?;
    for start in (0..rows).step_by(per_chunk) {
        let count = per_chunk.min(rows - start);
        let out = &mut buf[..count * row_bytes];
        out.par_chunks_mut(row_bytes)
            .enumerate()
            .try_for_each_init(
                || vec![0f32; n],
                |scratch, (j, dst)| {
                    let row = start + j;
                    let mut rng = Rng::new(stream_seed(seed, tensor, row as u64));
                    fill_row(p.recipe, proj, &mut rng, row, scratch);
                    quantize_row(p.ty, scratch, dst)
                },
            )?;
        tw.write_chunk(out)?;
    }
    Ok(())
}
