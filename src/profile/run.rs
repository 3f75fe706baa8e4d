//! The profile run, step by step (see `powerinfer profile --help` for the user's view).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use powerinfer_predictors::{Dataset, GateInit, TrainConfig};
use powerinfer_profiler::{
    choose_levels, train_layers, ActivationStats, EventFn, FixedItem, LayerData, LayerMeasures,
    LayerNeurons, Placement, Placer, ProfileSummary, RunConfig, SparsityTarget,
    ThresholdCalibrator, TrainEvent,
};

use super::collector::{CalibrationPass, CollectPass};
use crate::backend::{Backend, CpuBackend};
use crate::corpus::{self, CorpusError};
use crate::generate::Engine;
use crate::model::{FfnKind, Model, ModelError};
use crate::perplexity::Scorer;
use crate::quant;
use crate::sparse::sidecar::{self, PredictorWeights, SidecarError};
use crate::sparse::{FfnMode, LayerThreshold, Sidecar, SidecarLayer, SparsityRule};

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Corpus(#[from] CorpusError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error("profile: {0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> ProfileError {
    ProfileError::Other(e.to_string())
}

/// What the thresholds aim for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// ReLU-family models: active means non-zero; no threshold.
    Natural,
    /// The same fraction S of entries below threshold in every layer.
    Sparsity(f32),
    /// Per-layer levels chosen so that held-out perplexity rises at most this much (0.05 = 5%).
    MaxPplRise(f64),
}

#[derive(Clone, Debug)]
pub struct ProfileOptions {
    pub corpus: PathBuf,
    /// Calibration tokens (the held-out split comes on top).
    pub tokens: usize,
    pub heldout_tokens: usize,
    /// Tokens per forward window.
    pub window: usize,
    pub rule: SparsityRule,
    pub target: Target,
    pub recall: f32,
    pub ranks: Vec<usize>,
    pub epochs: usize,
    /// Training rows per layer (the rest of the calibration tokens only feed statistics).
    pub train_rows: usize,
    pub vram_budget: Option<u64>,
    /// Context length whose KV cache the placement reserves.
    pub ctx: usize,
    pub seed: u64,
}

/// Callbacks for the binary's progress bars.
pub trait ProfileProgress: Sync {
    fn stage(&self, name: &str);
    fn tokens(&self, done: usize, total: usize);
    fn train(&self, event: &TrainEvent);
}

pub struct ProfileResult {
    pub sidecar: Sidecar,
    pub summary: ProfileSummary,
    /// Per-layer sparsity levels chosen under `--max-ppl-rise` (with base and final perplexity).
    pub levels: Option<(Vec<f32>, f64, f64)>,
    /// Measured by the activation statistics: mean sparsity and the share of activations the
    /// top 20% of neurons carry.
    pub measured_sparsity: f64,
    pub top20_share: f64,
}

/// Pack token sequences into windows of at most `window` tokens (documents are not split
/// unless longer than a window).
fn pack(docs: &[Vec<u32>], window: usize) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = Vec::new();
    let mut cur = Vec::new();
    for d in docs {
        for piece in d.chunks(window) {
            if cur.len() + piece.len() > window && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur.extend_from_slice(piece);
        }
    }
    if cur.len() >= 2 {
        out.push(cur);
    }
    out
}

fn run_windows(
    model: &Model<CpuBackend>,
    windows: &[Vec<u32>],
    obs: &mut dyn crate::model::FfnObserver,
    progress: &dyn ProfileProgress,
) -> Result<(), ProfileError> {
    let total: usize = windows.iter().map(Vec::len).sum();
    let mut done = 0;
    let n_ctx = windows.iter().map(Vec::len).max().unwrap_or(1);
    let mut st = model.new_state(n_ctx);
    for w in windows {
        st.reset();
        model.forward_observed(&mut st, w, false, Some(&mut *obs))?;
        done += w.len();
        progress.tokens(done, total);
    }
    Ok(())
}

/// Held-out perplexity with every layer's FFN masked by `th` (dense compute).
fn masked_ppl(
    model: &Model<CpuBackend>,
    windows: &[Vec<u32>],
    th: Option<Arc<[LayerThreshold]>>,
) -> Result<f64, ModelError> {
    let mut scorer = Scorer::default();
    let n_ctx = windows.iter().map(Vec::len).max().unwrap_or(1);
    let mut st = model.new_state(n_ctx);
    st.ffn_mode = th.map_or(FfnMode::Dense, FfnMode::Masked);
    for w in windows {
        st.reset();
        let logits = model.forward(&mut st, w, true)?;
        scorer.add_window(w, logits, None);
    }
    Ok(scorer.report().perplexity)
}

/// Bytes of the tensors that must be on the GPU before any neuron, in priority order.
fn fixed_items<B: Backend>(model: &Model<B>, ctx: usize, predictor_bytes: u64) -> Vec<FixedItem> {
    let f = &model.file;
    let sum = |pred: &dyn Fn(&str) -> bool| -> u64 {
        f.tensors
            .iter()
            .filter(|t| pred(&t.name))
            .map(|t| t.n_bytes() as u64)
            .sum()
    };
    let c = &model.config;
    let kv = 2 * c.n_layer as u64 * ctx as u64 * c.kv_dim() as u64 * 2;
    let head = if f.tensor_info("output.weight").is_some() {
        sum(&|n| n == "output.weight")
    } else {
        sum(&|n| n == "token_embd.weight")
    };
    vec![
        FixedItem {
            name: "attention".into(),
            bytes: sum(&|n| n.contains(".attn_")),
        },
        FixedItem {
            name: format!("kv cache ({ctx} positions, f16)"),
            bytes: kv,
        },
        FixedItem {
            name: "predictors".into(),
            bytes: predictor_bytes,
        },
        FixedItem {
            name: "norms".into(),
            bytes: sum(&|n| n.contains("norm")) - sum(&|n| n.contains("attn_norm")),
        },
        FixedItem {
            name: "output head".into(),
            bytes: head,
        },
    ]
}

/// Solve the placement for `budget` bytes from per-neuron frequencies (`freq[layer]`).
pub fn placement_for<B: Backend>(
    model: &Model<B>,
    freq: &[Vec<f32>],
    predictor_bytes: u64,
    ctx: usize,
    budget: u64,
) -> Result<Placement, ProfileError> {
    let c = &model.config;
    let layers = (0..c.n_layer)
        .map(|il| {
            let t = |name: &str| model.file.tensor_info(&format!("blk.{il}.{name}.weight"));
            let row = |name: &str| t(name).map_or(0, |i| i.row_bytes() as u64);
            // A neuron: its gate and up rows, and its column of down (a row's share).
            let down = t("ffn_down").map_or(0, |i| i.n_bytes() as u64 / c.n_ff as u64);
            LayerNeurons {
                values: freq[il].iter().map(|&v| v as f64).collect(),
                bytes_per_neuron: row("ffn_gate") + row("ffn_up") + down,
            }
        })
        .collect();
    let placer = Placer::new(fixed_items(model, ctx, predictor_bytes), layers).map_err(other)?;
    placer.solve(budget, 32).map_err(other)
}

/// The whole profile of `engine`'s model (loaded from `model_path`).
pub fn profile(
    engine: &Engine<CpuBackend>,
    model_path: &Path,
    opts: &ProfileOptions,
    progress: &dyn ProfileProgress,
) -> Result<ProfileResult, ProfileError> {
    let t0 = Instant::now();
    let model = &engine.model;
    let c = &model.config;
    let (n_layer, n_ff, d) = (c.n_layer, c.n_ff, c.d_model);
    let relu_family = matches!(c.ffn, FfnKind::Relu | FfnKind::ReGlu | FfnKind::DReLU);
    if relu_family != (opts.rule == SparsityRule::Relu) {
        return Err(other(format!(
            "rule {} does not suit a model with FFN activation {}",
            opts.rule.name(),
            c.ffn.name()
        )));
    }
    if opts.rule == SparsityRule::Relu && opts.target != Target::Natural {
        return Err(other(
            "ReLU-family models are sparse by themselves: drop --target-sparsity/--max-ppl-rise",
        ));
    }

    // Text: calibration and a held-out split taken from the end.
    progress.stage("tokenizing the corpus");
    let docs = corpus::load(&opts.corpus)?;
    let seqs = corpus::tokenize(
        &docs,
        &engine.tokenizer,
        &engine.template,
        opts.tokens + opts.heldout_tokens,
    )?;
    let total: usize = seqs.iter().map(Vec::len).sum();
    let mut split = seqs.len();
    let mut tail = 0;
    while split > 1 && tail < opts.heldout_tokens.min(total / 5) {
        split -= 1;
        tail += seqs[split].len();
    }
    let window = opts.window.min(c.context_length).max(2);
    let calib = pack(&seqs[..split], window);
    let heldout = pack(&seqs[split..], window);
    let calib_tokens: usize = calib.iter().map(Vec::len).sum();
    if calib.is_empty() || heldout.is_empty() {
        return Err(other(format!(
            "corpus {} gives too little text ({total} tokens)",
            opts.corpus.display()
        )));
    }

    // Thresholds.
    let mut levels = None;
    let thresholds: Vec<f32> = match opts.target {
        Target::Natural => vec![0.0; n_layer],
        target => {
            progress.stage("calibrating thresholds");
            let mut cal = ThresholdCalibrator::new(n_layer, 1 << 18, opts.seed).map_err(other)?;
            let mut pass = CalibrationPass {
                kind: c.ffn,
                rule: opts.rule,
                calibrator: &mut cal,
                buf: Vec::new(),
            };
            run_windows(model, &calib, &mut pass, progress)?;
            let th_for = |lv: &[f32]| -> Result<Vec<f32>, ProfileError> {
                lv.iter()
                    .enumerate()
                    .map(|(l, &s)| {
                        if s <= 0.0 {
                            Ok(0.0)
                        } else {
                            cal.threshold(l, s).map_err(other)
                        }
                    })
                    .collect()
            };
            match target {
                Target::Sparsity(s) => th_for(&vec![s; n_layer])?,
                Target::MaxPplRise(rise) => {
                    progress.stage("choosing per-layer levels (held-out perplexity)");
                    let ladder: Vec<f32> = (0..=9).map(|i| i as f32 / 10.0).collect();
                    let eval_windows: Vec<Vec<u32>> = heldout.iter().take(4).cloned().collect();
                    let choice = choose_levels(n_layer, &ladder, rise, |lv: &[f32]| {
                        let th = th_for(lv)?;
                        let masks: Arc<[LayerThreshold]> = th
                            .iter()
                            .map(|&t| LayerThreshold { rule: opts.rule, t })
                            .collect();
                        masked_ppl(model, &eval_windows, Some(masks)).map_err(ProfileError::from)
                    })
                    .map_err(other)?;
                    let th = th_for(&choice.levels)?;
                    levels = Some((choice.levels.clone(), choice.base_ppl, choice.final_ppl));
                    th
                }
                Target::Natural => unreachable!(),
            }
        }
    };

    // Statistics and training rows (calibration), validation rows (held-out).
    progress.stage("recording activations");
    let mut stats = ActivationStats::uniform(n_layer, n_ff);
    let empty = || Dataset::empty(d, n_ff).map_err(other);
    let mut train: Vec<Dataset> = (0..n_layer).map(|_| empty()).collect::<Result<_, _>>()?;
    let mut pass = CollectPass {
        kind: c.ffn,
        rule: opts.rule,
        thresholds: &thresholds,
        stats: Some(&mut stats),
        data: &mut train,
        cap: opts.train_rows,
        buf: Vec::new(),
        active: Vec::new(),
    };
    run_windows(model, &calib, &mut pass, progress)?;
    let mut val: Vec<Dataset> = (0..n_layer).map(|_| empty()).collect::<Result<_, _>>()?;
    let mut pass = CollectPass {
        kind: c.ffn,
        rule: opts.rule,
        thresholds: &thresholds,
        stats: None,
        data: &mut val,
        cap: (opts.train_rows / 4).max(256),
        buf: Vec::new(),
        active: Vec::new(),
    };
    run_windows(model, &heldout, &mut pass, progress)?;

    // Predictors, initialised from each layer's gate matrix (up for plain ReLU).
    progress.stage("training predictors");
    let mut gates = Vec::with_capacity(n_layer);
    for lw in &model.weights.layers {
        let m = lw.gate.as_ref().unwrap_or(&lw.up).qmatrix();
        let mut w = vec![0f32; m.rows * m.cols];
        for (r, out) in w.chunks_exact_mut(m.cols).enumerate() {
            quant::dequantize_row(m.ty, m.row(r), out).map_err(other)?;
        }
        gates.push(w);
    }
    let data: Vec<LayerData> = (0..n_layer)
        .map(|l| LayerData {
            train: &train[l],
            val: &val[l],
            gate: Some(GateInit {
                w: &gates[l],
                rows: n_ff,
                cols: d,
            }),
        })
        .collect();
    // What the sparse FFN reads for one predicted neuron: its gate and up rows and its down
    // column (for the rank ladder's trade of predictor bytes against predicted neurons).
    let neuron_bytes = model.weights.layers.first().map(|lw| {
        let row = |w: &crate::backend::cpu::CpuWeight| w.qmatrix().row_bytes() as f64;
        let down = lw.down.qmatrix();
        lw.gate.as_ref().map_or(0.0, row)
            + row(&lw.up)
            + (down.rows * down.row_bytes()) as f64 / n_ff as f64
    });
    let cfg = TrainConfig {
        ranks: opts.ranks.clone(),
        neuron_bytes,
        target_recall: opts.recall,
        epochs: opts.epochs,
        seed: opts.seed,
        ..TrainConfig::default()
    };
    // Training runs on a scoped thread; its events come back over a channel to this one,
    // which owns the progress display.
    let (tx, rx) = std::sync::mpsc::channel::<TrainEvent>();
    let sink: EventFn = Arc::new(move |e: &TrainEvent| {
        let _ = tx.send(e.clone());
    });
    let outcomes = std::thread::scope(|s| {
        let h = s.spawn(|| train_layers(&data, &cfg, Some(sink)));
        for e in rx {
            progress.train(&e);
        }
        h.join().expect("training thread")
    })
    .map_err(other)?;
    drop(gates);

    // Placement.
    let freq: Vec<Vec<f32>> = (0..n_layer)
        .map(|l| {
            stats
                .frequencies(l)
                .map(|f| f.into_iter().map(|v| v as f32).collect())
                .map_err(other)
        })
        .collect::<Result<_, _>>()?;
    let predictor_bytes: u64 = outcomes.iter().map(|o| o.predictor.n_bytes() as u64).sum();
    let placement = match opts.vram_budget {
        Some(b) => Some(placement_for(model, &freq, predictor_bytes, opts.ctx, b)?),
        None => None,
    };

    // Summary and sidecar.
    let measures: Vec<LayerMeasures> = outcomes
        .iter()
        .zip(&thresholds)
        .map(|(o, &t)| LayerMeasures {
            recall: o.report.recall as f64,
            precision: o.report.precision as f64,
            predicted_sparsity: o.report.predicted_sparsity as f64,
            true_sparsity: o.report.true_sparsity as f64,
            rank: o.report.rank,
            predictor_bytes: o.predictor.n_bytes() as u64,
            threshold: t,
        })
        .collect();
    let model_bytes = model.file.bytes().len() as u64;
    let run_cfg = RunConfig {
        model: model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        corpus: opts.corpus.display().to_string(),
        tokens: calib_tokens as u64,
        rule: opts.rule,
        target: match opts.target {
            Target::Natural => {
                SparsityTarget::Sparsity(stats.mean_sparsity().unwrap_or(0.0) as f32)
            }
            Target::Sparsity(s) => SparsityTarget::Sparsity(s),
            Target::MaxPplRise(r) => SparsityTarget::MaxPplRise(r),
        },
        recall_target: opts.recall as f64,
        budget_bytes: opts.vram_budget,
    };
    let summary = ProfileSummary::new(
        run_cfg.clone(),
        model_bytes,
        &measures,
        t0.elapsed().as_secs_f64(),
    )
    .map_err(other)?;
    let layers = (0..n_layer)
        .map(|l| {
            let p = &outcomes[l].predictor;
            SidecarLayer {
                threshold: LayerThreshold {
                    rule: opts.rule,
                    t: thresholds[l],
                },
                freq: freq[l].clone(),
                predictor: Some(PredictorWeights {
                    d_in: p.d_in(),
                    rank: p.rank(),
                    d_out: p.d_out(),
                    w1: p.w1().to_vec(),
                    b1: p.b1().to_vec(),
                    w2: p.w2().to_vec(),
                    b2: p.b2().to_vec(),
                }),
                hot: placement
                    .as_ref()
                    .map(|pl| pl.layers[l].hot.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    progress.stage("hashing the model file");
    let sidecar = Sidecar {
        model_fingerprint: sidecar::model_fingerprint(&model.file),
        model_sha256: sidecar::file_sha256(model_path)?,
        model_name: run_cfg.model.clone(),
        d_model: d,
        n_ff,
        layers,
        vram_budget: opts.vram_budget.unwrap_or(0),
        config_json: serde_json::to_string(&run_cfg).map_err(other)?,
        summary_json: summary.to_json(),
    };
    Ok(ProfileResult {
        sidecar,
        summary,
        levels,
        measured_sparsity: stats.mean_sparsity().unwrap_or(0.0),
        top20_share: stats.top20_share().unwrap_or(0.0),
    })
}
