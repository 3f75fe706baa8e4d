//! The profile sidecar: one GGUF file next to the model (`MODEL.powerinfer.gguf`) with
//! everything `profile` learnt — thresholds, neuron frequencies, predictors and the hot-neuron
//! placement — tied to the model it was made for.

use std::io::Read;
use std::path::{Path, PathBuf};

use half::f16;
use sha2::{Digest, Sha256};

use super::{LayerThreshold, SparsityRule};
use crate::gguf::{GgufError, GgufFile, GgufWriter, Value, ValueType};
use crate::quant::GgmlType;

const ARCH: &str = "powerinfer-sidecar";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("sidecar {path}: {source}")]
    Gguf { path: PathBuf, source: GgufError },
    #[error("no sidecar at {0}: run `powerinfer profile` on the model first")]
    Missing(PathBuf),
    #[error("sidecar {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error(
        "sidecar {path} was made for another model (its fingerprint {want}, this model {got}): \
         run `powerinfer profile` on this model"
    )]
    WrongModel {
        path: PathBuf,
        want: String,
        got: String,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A predictor's weights as stored: `logits = W2 · relu(W1 · x + b1) + b2`.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictorWeights {
    pub d_in: usize,
    pub rank: usize,
    pub d_out: usize,
    /// `rank × d_in`, row-major.
    pub w1: Vec<f16>,
    pub b1: Vec<f32>,
    /// `d_out × rank`, row-major.
    pub w2: Vec<f16>,
    pub b2: Vec<f32>,
}

impl PredictorWeights {
    pub fn n_bytes(&self) -> usize {
        2 * (self.w1.len() + self.w2.len()) + 4 * (self.b1.len() + self.b2.len())
    }

    /// The runnable predictor (its constructor checks the shapes).
    pub fn to_predictor(
        &self,
    ) -> Result<powerinfer_predictors::Predictor, powerinfer_predictors::PredictorError> {
        powerinfer_predictors::Predictor::from_parts(
            self.d_in,
            self.rank,
            self.d_out,
            self.w1.clone(),
            self.b1.clone(),
            self.w2.clone(),
            self.b2.clone(),
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SidecarLayer {
    pub threshold: LayerThreshold,
    /// Fraction of calibration tokens for which each neuron was active.
    pub freq: Vec<f32>,
    pub predictor: Option<PredictorWeights>,
    /// Neurons placed on the GPU (ascending), for the budget in `vram_budget`.
    pub hot: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sidecar {
    /// Quick identity of the model file, checked on load (see [`model_fingerprint`]).
    pub model_fingerprint: String,
    /// sha256 of the whole model file, for the record.
    pub model_sha256: String,
    pub model_name: String,
    pub d_model: usize,
    pub n_ff: usize,
    pub layers: Vec<SidecarLayer>,
    /// VRAM budget the placement was solved for, in bytes (0: none).
    pub vram_budget: u64,
    /// The run's configuration and summary, as JSON (for `inspect` and reports).
    pub config_json: String,
    pub summary_json: String,
}

/// Default sidecar path: `dir/NAME.gguf` → `dir/NAME.powerinfer.gguf`.
pub fn default_path(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    model.with_file_name(format!("{stem}.powerinfer.gguf"))
}

/// sha256 of a file, streamed.
pub fn file_sha256(path: &Path) -> Result<String, SidecarError> {
    let io = |source| SidecarError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// A fingerprint cheap enough to check on every load of a multi-GB model: sha256 over the
/// file length, the header (metadata and tensor table) and 64 KiB sampled at 64 evenly spaced
/// points of the tensor data.
pub fn model_fingerprint(file: &GgufFile) -> String {
    let bytes = file.bytes();
    let mut h = Sha256::new();
    h.update((bytes.len() as u64).to_le_bytes());
    let data_start = file.data_offset.min(bytes.len());
    h.update(&bytes[..data_start]);
    let data = &bytes[data_start..];
    const POINTS: usize = 64;
    const SPAN: usize = 1024;
    for i in 0..POINTS {
        let at = data.len().saturating_sub(SPAN) * i / (POINTS - 1);
        h.update(&data[at..(at + SPAN).min(data.len())]);
    }
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn f16_bytes(v: &[f16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl Sidecar {
    /// Write atomically to `path`.
    pub fn write(&self, path: &Path) -> Result<(), SidecarError> {
        let gerr = |source| SidecarError::Gguf {
            path: path.to_path_buf(),
            source,
        };
        let mut w = GgufWriter::new();
        let n_layer = self.layers.len();
        w.add_str("general.architecture", ARCH).map_err(gerr)?;
        w.add("powerinfer.version", Value::U32(VERSION))
            .map_err(gerr)?;
        w.add_str("powerinfer.model.fingerprint", &self.model_fingerprint)
            .map_err(gerr)?;
        w.add_str("powerinfer.model.sha256", &self.model_sha256)
            .map_err(gerr)?;
        w.add_str("powerinfer.model.name", &self.model_name)
            .map_err(gerr)?;
        w.add("powerinfer.d_model", Value::U64(self.d_model as u64))
            .map_err(gerr)?;
        w.add("powerinfer.n_ff", Value::U64(self.n_ff as u64))
            .map_err(gerr)?;
        w.add("powerinfer.n_layer", Value::U64(n_layer as u64))
            .map_err(gerr)?;
        w.add("powerinfer.vram_budget", Value::U64(self.vram_budget))
            .map_err(gerr)?;
        let strs = |f: &dyn Fn(&SidecarLayer) -> String| {
            Value::Array(
                ValueType::String,
                self.layers.iter().map(|l| Value::String(f(l))).collect(),
            )
        };
        w.add(
            "powerinfer.rules",
            strs(&|l| l.threshold.rule.name().to_string()),
        )
        .map_err(gerr)?;
        w.add(
            "powerinfer.thresholds",
            Value::Array(
                ValueType::F32,
                self.layers
                    .iter()
                    .map(|l| Value::F32(l.threshold.t))
                    .collect(),
            ),
        )
        .map_err(gerr)?;
        w.add_str("powerinfer.config", &self.config_json)
            .map_err(gerr)?;
        w.add_str("powerinfer.summary", &self.summary_json)
            .map_err(gerr)?;

        let mut blobs: Vec<Vec<u8>> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            if l.freq.len() != self.n_ff {
                return Err(self.invalid(path, format!("layer {i}: {} frequencies", l.freq.len())));
            }
            w.add_tensor(format!("blk.{i}.freq"), &[self.n_ff as u64], GgmlType::F32)
                .map_err(gerr)?;
            blobs.push(f32_bytes(&l.freq));
            if !l.hot.is_empty() {
                w.add_tensor(format!("blk.{i}.hot"), &[l.hot.len() as u64], GgmlType::I32)
                    .map_err(gerr)?;
                blobs.push(u32_bytes(&l.hot));
            }
            if let Some(p) = &l.predictor {
                let (d, r, o) = (p.d_in as u64, p.rank as u64, p.d_out as u64);
                w.add_tensor(format!("blk.{i}.pred.w1"), &[d, r], GgmlType::F16)
                    .map_err(gerr)?;
                blobs.push(f16_bytes(&p.w1));
                w.add_tensor(format!("blk.{i}.pred.b1"), &[r], GgmlType::F32)
                    .map_err(gerr)?;
                blobs.push(f32_bytes(&p.b1));
                w.add_tensor(format!("blk.{i}.pred.w2"), &[r, o], GgmlType::F16)
                    .map_err(gerr)?;
                blobs.push(f16_bytes(&p.w2));
                w.add_tensor(format!("blk.{i}.pred.b2"), &[o], GgmlType::F32)
                    .map_err(gerr)?;
                blobs.push(f32_bytes(&p.b2));
            }
        }
        let names: Vec<String> = w.tensors().iter().map(|t| t.name.clone()).collect();
        w.write_file(path, |tw| {
            for (name, blob) in names.iter().zip(&blobs) {
                tw.write_tensor_data(name, blob)?;
            }
            Ok::<(), GgufError>(())
        })
        .map_err(gerr)
    }

    fn invalid(&self, path: &Path, msg: String) -> SidecarError {
        SidecarError::Invalid {
            path: path.to_path_buf(),
            msg,
        }
    }

    /// Read a sidecar; every shape is checked so that a corrupt file fails here, not later.
    pub fn read(path: &Path) -> Result<Sidecar, SidecarError> {
        if !path.exists() {
            return Err(SidecarError::Missing(path.to_path_buf()));
        }
        let gerr = |source| SidecarError::Gguf {
            path: path.to_path_buf(),
            source,
        };
        let bad = |msg: String| SidecarError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let f = GgufFile::open(path).map_err(gerr)?;
        if f.architecture() != Some(ARCH) {
            return Err(bad(format!(
                "not a powerinfer sidecar (general.architecture is {:?})",
                f.architecture()
            )));
        }
        let req_str = |k: &str| -> Result<String, SidecarError> {
            Ok(f.require(k, f.get_str(k)).map_err(gerr)?.to_string())
        };
        let req_u64 = |k: &str| f.require(k, f.get_u64(k)).map_err(gerr);
        let version = req_u64("powerinfer.version")?;
        if version != VERSION as u64 {
            return Err(bad(format!(
                "version {version}, this build reads {VERSION}: re-run `powerinfer profile`"
            )));
        }
        let d_model = req_u64("powerinfer.d_model")? as usize;
        let n_ff = req_u64("powerinfer.n_ff")? as usize;
        let n_layer = req_u64("powerinfer.n_layer")? as usize;
        let arr = |k: &str| -> Result<Vec<Value>, SidecarError> {
            let a = f.require(k, f.get_array(k)).map_err(gerr)?;
            if a.len() != n_layer {
                return Err(bad(format!(
                    "{k} has {} entries for {n_layer} layers",
                    a.len()
                )));
            }
            Ok(a.to_vec())
        };
        let rules = arr("powerinfer.rules")?;
        let thresholds = arr("powerinfer.thresholds")?;
        let mut layers = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let rule = match &rules[i] {
                Value::String(s) => s.parse::<SparsityRule>().ok(),
                _ => None,
            }
            .ok_or_else(|| bad(format!("layer {i}: bad rule {:?}", rules[i])))?;
            let t = match thresholds[i] {
                Value::F32(t) if t.is_finite() && t >= 0.0 => t,
                ref v => return Err(bad(format!("layer {i}: bad threshold {v:?}"))),
            };
            let tensor = |name: String, ty: GgmlType, dims: &[usize]| {
                let info = f
                    .tensor_info(&name)
                    .ok_or_else(|| bad(format!("tensor {name} missing")))?;
                let want: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
                if info.ty != ty || info.dims != want {
                    return Err(bad(format!(
                        "tensor {name}: {} {:?}, expected {ty} {want:?}",
                        info.ty, info.dims
                    )));
                }
                Ok(f.view(info).data.to_vec())
            };
            let f32s = |b: Vec<u8>| -> Vec<f32> {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            let f16s = |b: Vec<u8>| -> Vec<f16> {
                b.chunks_exact(2)
                    .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            };
            let freq = f32s(tensor(format!("blk.{i}.freq"), GgmlType::F32, &[n_ff])?);
            let hot = match f.tensor_info(&format!("blk.{i}.hot")) {
                None => Vec::new(),
                Some(info) => {
                    let n = info.n_elements() as usize;
                    let b = tensor(format!("blk.{i}.hot"), GgmlType::I32, &[n])?;
                    let hot: Vec<u32> = b
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if hot.windows(2).any(|w| w[0] >= w[1])
                        || hot.iter().any(|&h| h as usize >= n_ff)
                    {
                        return Err(bad(format!(
                            "layer {i}: hot index not ascending within {n_ff}"
                        )));
                    }
                    hot
                }
            };
            let predictor = match f.tensor_info(&format!("blk.{i}.pred.w1")) {
                None => None,
                Some(info) => {
                    let rank = *info.dims.get(1).unwrap_or(&0) as usize;
                    if rank == 0 {
                        return Err(bad(format!("layer {i}: predictor rank 0")));
                    }
                    Some(PredictorWeights {
                        d_in: d_model,
                        rank,
                        d_out: n_ff,
                        w1: f16s(tensor(
                            format!("blk.{i}.pred.w1"),
                            GgmlType::F16,
                            &[d_model, rank],
                        )?),
                        b1: f32s(tensor(format!("blk.{i}.pred.b1"), GgmlType::F32, &[rank])?),
                        w2: f16s(tensor(
                            format!("blk.{i}.pred.w2"),
                            GgmlType::F16,
                            &[rank, n_ff],
                        )?),
                        b2: f32s(tensor(format!("blk.{i}.pred.b2"), GgmlType::F32, &[n_ff])?),
                    })
                }
            };
            layers.push(SidecarLayer {
                threshold: LayerThreshold { rule, t },
                freq,
                predictor,
                hot,
            });
        }
        Ok(Sidecar {
            model_fingerprint: req_str("powerinfer.model.fingerprint")?,
            model_sha256: req_str("powerinfer.model.sha256")?,
            model_name: req_str("powerinfer.model.name")?,
            d_model,
            n_ff,
            layers,
            vram_budget: req_u64("powerinfer.vram_budget")?,
            config_json: req_str("powerinfer.config")?,
            summary_json: req_str("powerinfer.summary")?,
        })
    }

    /// Fail unless this sidecar was made for `model` (loaded from `model_path`).
    pub fn check_model(&self, path: &Path, model: &GgufFile) -> Result<(), SidecarError> {
        let got = model_fingerprint(model);
        if got != self.model_fingerprint {
            return Err(SidecarError::WrongModel {
                path: path.to_path_buf(),
                want: self.model_fingerprint[..16.min(self.model_fingerprint.len())].to_string(),
                got: got[..16].to_string(),
            });
        }
        Ok(())
    }
}
