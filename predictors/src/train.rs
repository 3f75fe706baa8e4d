//! Training one layer's predictor: SVD (or random) init, mini-batch Adam on weighted BCE, then a
//! uniform output-bias shift calibrated on validation rows for the target recall, over a ladder
//! of ranks until the predicted sparsity is close enough to the true one, and (given what a
//! predicted neuron costs, [`TrainConfig::neuron_bytes`]) on while a larger rank lowers the
//! bytes a token reads.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::adam::Adam;
use crate::calibrate::recall_threshold;
use crate::dataset::Dataset;
use crate::error::{check_len, PredictorError, Result};
use crate::metrics::Confusion;
use crate::mlp::{Mlp, Workspace};
use crate::predictor::Predictor;
use crate::rng::Rng;
use crate::svd::{randomized_svd, Svd};

/// The layer's dequantised gate matrix (or up matrix for a non-gated FFN), `rows = d_out` by
/// `cols = d_in`, row-major: its truncated SVD starts the predictor at the gate's low-rank image.
#[derive(Debug, Clone, Copy)]
pub struct GateInit<'a> {
    pub w: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

/// Reported after every epoch of every rank tried.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub rank: usize,
    /// 1-based.
    pub epoch: usize,
    pub epochs: usize,
    /// Mean training loss over the epoch.
    pub loss: f64,
}

pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

#[derive(Clone)]
pub struct TrainConfig {
    /// Hidden widths to try, in order; each is capped at min(d_in, d_out).
    pub ranks: Vec<usize>,
    /// Validation recall the calibrated threshold guarantees.
    pub target_recall: f32,
    /// A rank is accepted when predicted sparsity ≥ true sparsity − this.
    pub max_sparsity_loss: f32,
    /// Bytes the sparse FFN reads for each neuron it is told to compute (its gate, up and
    /// down rows). With it, the ladder goes on past the first accepted rank while the next
    /// rank lowers the bytes a token reads: the predictor's own ([`Predictor::selection_bytes`])
    /// plus this times the neurons it predicts. A larger predictor that predicts fewer neurons
    /// can read less in all (the synthetic models' rank-32 gates: precision 0.85 at rank 16,
    /// 0.99 at rank 32).
    pub neuron_bytes: Option<f64>,
    pub epochs: usize,
    pub batch_size: usize,
    /// Adam's peak learning rate (cosine-decayed to a tenth over training).
    pub lr: f32,
    /// Weight of a positive label in the BCE; `None` derives neg/pos from the training labels,
    /// clipped to [1, max_pos_weight], so recall is favoured.
    pub pos_weight: Option<f32>,
    pub max_pos_weight: f32,
    pub svd_oversample: usize,
    pub svd_power_iters: usize,
    pub seed: u64,
    pub progress: Option<ProgressFn>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            ranks: vec![16, 32, 64, 128, 256, 512],
            target_recall: 0.95,
            max_sparsity_loss: 0.10,
            neuron_bytes: None,
            epochs: 12,
            batch_size: 256,
            lr: 5e-3,
            pos_weight: None,
            max_pos_weight: 8.0,
            svd_oversample: 10,
            svd_power_iters: 3,
            seed: 0x5EED,
            progress: None,
        }
    }
}

impl std::fmt::Debug for TrainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainConfig")
            .field("ranks", &self.ranks)
            .field("target_recall", &self.target_recall)
            .field("max_sparsity_loss", &self.max_sparsity_loss)
            .field("neuron_bytes", &self.neuron_bytes)
            .field("epochs", &self.epochs)
            .field("batch_size", &self.batch_size)
            .field("lr", &self.lr)
            .field("pos_weight", &self.pos_weight)
            .field("max_pos_weight", &self.max_pos_weight)
            .field("svd_oversample", &self.svd_oversample)
            .field("svd_power_iters", &self.svd_power_iters)
            .field("seed", &self.seed)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(PredictorError::Config(m.into()));
        if self.ranks.is_empty() || self.ranks.contains(&0) {
            return bad("ranks must be non-empty and positive");
        }
        if !(self.target_recall > 0.0 && self.target_recall <= 1.0) {
            return bad("target_recall must be in (0, 1]");
        }
        if !(self.max_sparsity_loss >= 0.0 && self.max_sparsity_loss <= 1.0) {
            return bad("max_sparsity_loss must be in [0, 1]");
        }
        if self
            .neuron_bytes
            .is_some_and(|b| !(b > 0.0 && b.is_finite()))
        {
            return bad("neuron_bytes must be positive and finite");
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs and batch_size must be positive");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be positive and finite");
        }
        if let Some(w) = self.pos_weight {
            if !(w > 0.0 && w.is_finite()) {
                return bad("pos_weight must be positive and finite");
            }
        }
        if !(self.max_pos_weight >= 1.0 && self.max_pos_weight.is_finite()) {
            return bad("max_pos_weight must be at least 1");
        }
        Ok(())
    }
}

/// Quality of the chosen predictor on the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerReport {
    pub rank: usize,
    pub recall: f32,
    pub precision: f32,
    pub predicted_sparsity: f32,
    pub true_sparsity: f32,
    /// Whether the chosen rank kept sparsity within `max_sparsity_loss` at the target recall.
    pub met_target: bool,
    /// `(rank, recall, predicted_sparsity)` of every rank trained, in order.
    pub tried: Vec<(usize, f32, f32)>,
    pub pos_weight: f32,
    /// False when the untrained SVD start calibrated sparser than the trained net and was kept.
    pub trained: bool,
    pub train_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub predictor: Predictor,
    pub report: LayerReport,
}

/// Trains the predictor of one layer; see the module doc for the procedure.
pub fn train_layer(
    train: &Dataset,
    val: &Dataset,
    init: Option<&GateInit>,
    cfg: &TrainConfig,
) -> Result<TrainOutcome> {
    let start = Instant::now();
    cfg.validate()?;
    if train.is_empty() {
        return Err(PredictorError::EmptyDataset("training"));
    }
    if val.is_empty() {
        return Err(PredictorError::EmptyDataset("validation"));
    }
    let (d_in, d_out) = (train.d_in(), train.d_out());
    let mismatch = |what, a, b| Err(PredictorError::Mismatch { what, a, b });
    if val.d_in() != d_in {
        return mismatch("validation vs training d_in", val.d_in(), d_in);
    }
    if val.d_out() != d_out {
        return mismatch("validation vs training d_out", val.d_out(), d_out);
    }
    if let Some(g) = init {
        if g.rows != d_out {
            return mismatch("gate init rows vs d_out", g.rows, d_out);
        }
        if g.cols != d_in {
            return mismatch("gate init cols vs d_in", g.cols, d_in);
        }
        check_len("gate init matrix (rows × cols)", g.rows * g.cols, g.w.len())?;
    }

    let cap = d_in.min(d_out);
    let mut ranks: Vec<usize> = Vec::new();
    for r in cfg.ranks.iter().map(|&r| r.min(cap)) {
        if !ranks.contains(&r) {
            ranks.push(r);
        }
    }
    let col_counts = train.labels().col_counts();
    let pos_total: u64 = col_counts.iter().sum();
    let all = (train.len() * d_out) as u64;
    let pos_weight = cfg.pos_weight.unwrap_or_else(|| {
        let ratio = (all - pos_total) as f64 / pos_total.max(1) as f64;
        (ratio as f32).clamp(1.0, cfg.max_pos_weight)
    });
    let svd = match init {
        Some(g) => {
            let k = ranks.iter().max().copied().unwrap_or(1).div_ceil(2);
            Some(randomized_svd(
                g.w,
                g.rows,
                g.cols,
                k,
                cfg.svd_oversample,
                cfg.svd_power_iters,
                cfg.seed,
            )?)
        }
        None => None,
    };

    let mut tried = Vec::new();
    let mut best: Option<(Predictor, Confusion, bool)> = None;
    let mut met = false;
    for &rank in &ranks {
        let mut rng = Rng::new(cfg.seed ^ (rank as u64).wrapping_mul(0x9E37_79B9));
        let mut net = initial_net(
            svd.as_ref(),
            rank,
            d_in,
            d_out,
            &col_counts,
            train.len(),
            &mut rng,
        );
        // The SVD start is already a good predictor; keep it if training (a noisy, finite
        // optimisation of a proxy loss) ends up worse on the validation rows.
        let untrained = match svd {
            Some(_) => {
                match_firing_rates(&mut net, train, &col_counts);
                Some(calibrate(&net, val, cfg.target_recall)?)
            }
            None => None,
        };
        fit(&mut net, train, pos_weight, rank, cfg, &mut rng);
        let ((predictor, conf), was_trained) =
            match (calibrate(&net, val, cfg.target_recall)?, untrained) {
                (trained, Some(start))
                    if start.1.predicted_sparsity() > trained.1.predicted_sparsity() =>
                {
                    (start, false)
                }
                (trained, _) => (trained, true),
            };
        tried.push((rank, conf.recall(), conf.predicted_sparsity()));
        let ok = conf.predicted_sparsity() >= conf.true_sparsity() - cfg.max_sparsity_loss;
        if met {
            // Past the first accepted rank (only with `neuron_bytes`): keep climbing while a
            // rank reads less a token than the best so far.
            let (b, bc, _) = best.as_ref().expect("met implies a best");
            let cheaper = cfg
                .neuron_bytes
                .is_some_and(|nb| token_bytes(&predictor, &conf, nb) < token_bytes(b, bc, nb));
            if ok && cheaper {
                best = Some((predictor, conf, was_trained));
                continue;
            }
            break;
        }
        let better = best
            .as_ref()
            .is_none_or(|(_, b, _)| conf.predicted_sparsity() > b.predicted_sparsity());
        if ok || better {
            best = Some((predictor, conf, was_trained));
        }
        if ok {
            met = true;
            if cfg.neuron_bytes.is_none() {
                break;
            }
        }
    }
    let (predictor, conf, trained) = best.expect("at least one rank is tried");
    let report = LayerReport {
        rank: predictor.rank(),
        recall: conf.recall(),
        precision: conf.precision(),
        predicted_sparsity: conf.predicted_sparsity(),
        true_sparsity: conf.true_sparsity(),
        met_target: met,
        tried,
        pos_weight,
        trained,
        train_seconds: start.elapsed().as_secs_f64(),
    };
    Ok(TrainOutcome { predictor, report })
}

fn initial_net(
    svd: Option<&Svd>,
    rank: usize,
    d_in: usize,
    d_out: usize,
    col_counts: &[u64],
    n: usize,
    rng: &mut Rng,
) -> Mlp {
    match svd {
        Some(svd) => Mlp::from_svd(svd, rank, rng),
        None => {
            // Start each output at its neuron's log-odds so early steps learn x-dependence.
            let b2 = col_counts
                .iter()
                .map(|&c| {
                    let p = ((c as f64 + 0.5) / (n as f64 + 1.0)).clamp(1e-4, 1.0 - 1e-4);
                    (p / (1.0 - p)).ln() as f32
                })
                .collect();
            Mlp::random(d_in, rank, d_out, b2, rng)
        }
    }
}

/// Rows used to set the SVD-initialised output biases.
const RATE_ROWS: usize = 2048;

/// Sets each output bias so the untrained net fires neuron i on the same share of training rows as
/// the labels do. The SVD start gives the gate's pre-activation, whose firing threshold differs per
/// neuron and can be several units away: far more than Adam's small steps would cover.
fn match_firing_rates(net: &mut Mlp, data: &Dataset, col_counts: &[u64]) {
    let n = data.len().min(RATE_ROWS);
    let d_out = net.d_out;
    let mut ws = Workspace::default();
    net.b2.iter_mut().for_each(|b| *b = 0.0);
    net.forward(&data.x()[..n * data.d_in()], n, &mut ws);
    let mut col = vec![0f32; n];
    for (i, (b, &count)) in net.b2.iter_mut().zip(col_counts).enumerate() {
        for (r, c) in col.iter_mut().enumerate() {
            *c = ws.z[r * d_out + i];
        }
        let rate = count as f64 / data.len() as f64;
        // Fire on the top `rate` share: the threshold is the (1 − rate) quantile.
        let idx = (((1.0 - rate) * n as f64) as usize).min(n - 1);
        let (_, &mut q, _) = col.select_nth_unstable_by(idx, f32::total_cmp);
        *b = -q;
    }
}

/// Mini-batch Adam over shuffled rows, cosine learning-rate decay to a tenth.
fn fit(
    net: &mut Mlp,
    data: &Dataset,
    pos_weight: f32,
    rank: usize,
    cfg: &TrainConfig,
    rng: &mut Rng,
) {
    let (d_in, d_out, n) = (data.d_in(), data.d_out(), data.len());
    let batch = cfg.batch_size.min(n);
    let steps_per_epoch = n.div_ceil(batch);
    let total_steps = (steps_per_epoch * cfg.epochs) as f32;
    let mut adam = Adam::new(net);
    let mut grad = net.zeros_like();
    let mut ws = Workspace::default();
    let mut order: Vec<usize> = (0..n).collect();
    let mut xb = vec![0f32; batch * d_in];
    let mut yb = vec![0f32; batch * d_out];
    let mut step = 0usize;
    for epoch in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0f64;
        for chunk in order.chunks(batch) {
            let b = chunk.len();
            for (i, &r) in chunk.iter().enumerate() {
                xb[i * d_in..(i + 1) * d_in].copy_from_slice(data.row(r));
                data.labels()
                    .row_to_f32(r, &mut yb[i * d_out..(i + 1) * d_out]);
            }
            let loss = net.loss_and_grad(
                &xb[..b * d_in],
                &yb[..b * d_out],
                b,
                pos_weight,
                &mut ws,
                &mut grad,
            );
            loss_sum += loss * b as f64;
            let progress = step as f32 / total_steps;
            let lr = cfg.lr * (0.1 + 0.45 * (1.0 + (std::f32::consts::PI * progress).cos()));
            adam.step(net, &mut grad, lr);
            step += 1;
        }
        if let Some(cb) = &cfg.progress {
            cb(&Progress {
                rank,
                epoch: epoch + 1,
                epochs: cfg.epochs,
                loss: loss_sum / n as f64,
            });
        }
    }
}

/// Bytes a token reads for one layer with predictor `p` (validation confusion `c`): its
/// selection plus `neuron_bytes` for each neuron it predicts.
fn token_bytes(p: &Predictor, c: &Confusion, neuron_bytes: f64) -> f64 {
    p.selection_bytes() as f64
        + (1.0 - c.predicted_sparsity() as f64) * p.d_out() as f64 * neuron_bytes
}

/// Rows of validation logits computed per forward call.
const VAL_CHUNK: usize = 512;

/// Rounds the net to the f16 predictor, finds the recall threshold on `val` with the weights the
/// engine runs (the output layer's 8-bit levels, see `selector`), folds it into b2 and returns
/// the predictor with its validation confusion.
fn calibrate(net: &Mlp, val: &Dataset, target: f32) -> Result<(Predictor, Confusion)> {
    let mut predictor = net.to_predictor()?;
    let rounded = Mlp::from_predictor(&predictor);
    let (d_in, d_out) = (val.d_in(), val.d_out());
    let mut ws = Workspace::default();
    let for_each_chunk = |ws: &mut Workspace, f: &mut dyn FnMut(usize, &[f32])| {
        for start in (0..val.len()).step_by(VAL_CHUNK) {
            let n = VAL_CHUNK.min(val.len() - start);
            rounded.forward(&val.x()[start * d_in..(start + n) * d_in], n, ws);
            f(start, &ws.z);
        }
    };
    let labels = val.labels();
    let mut pos = Vec::with_capacity(labels.count_ones() as usize);
    let mut max_logit = f32::MIN;
    for_each_chunk(&mut ws, &mut |start, z| {
        for (i, row) in z.chunks_exact(d_out).enumerate() {
            let words = labels.row_words(start + i);
            for (c, &v) in row.iter().enumerate() {
                if words[c / 64] >> (c % 64) & 1 == 1 {
                    pos.push(v);
                }
                max_logit = max_logit.max(v);
            }
        }
    });
    // Aim above the target by two standard errors of the recall estimate, so that held-out rows,
    // not just the calibration rows, keep the target.
    let p = pos.len().max(1) as f64;
    let se = (target as f64 * (1.0 - target as f64) / p).sqrt();
    let aim = (target as f64 + 2.0 * se).min(1.0) as f32;
    let t = recall_threshold(&mut pos, aim).unwrap_or(max_logit);
    let mut conf = Confusion::default();
    for_each_chunk(&mut ws, &mut |start, z| {
        for (i, row) in z.chunks_exact(d_out).enumerate() {
            let words = labels.row_words(start + i);
            for (c, &v) in row.iter().enumerate() {
                conf.add(v > t, words[c / 64] >> (c % 64) & 1 == 1);
            }
        }
    });
    predictor.shift_output_bias(-t);
    Ok((predictor, conf))
}
