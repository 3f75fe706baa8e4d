//! Training every layer's predictor: the predictors crate trains one layer; this runs it over
//! the layers in order, reports each layer's progress with its layer number, and turns the
//! engine's plain activation slices into the labels it needs.

use std::sync::Arc;

use powerinfer_predictors::{
    train_layer, BitMatrix, Dataset, GateInit, LayerReport, PredictorError, Progress, TrainConfig,
    TrainOutcome,
};
use thiserror::Error;

use crate::summary::LayerMeasures;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum TrainError {
    #[error("layer {layer}: {source}")]
    Layer {
        layer: usize,
        source: PredictorError,
    },
    #[error("labels: {rows} rows of {n_ff} neurons need {expected} values, got {got}")]
    LabelShape {
        rows: usize,
        n_ff: usize,
        expected: usize,
        got: usize,
    },
    #[error("labels: threshold {0} is not a finite value >= 0")]
    BadThreshold(f32),
    #[error("labels: {0}")]
    Labels(PredictorError),
}

/// One layer's data: training and validation rows, and optionally the gate matrix whose SVD
/// starts the predictor.
#[derive(Debug, Clone, Copy)]
pub struct LayerData<'a> {
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub gate: Option<GateInit<'a>>,
}

/// What the callback hears, in order: for each layer `Started`, its `Epoch`s, then `Done`.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Started {
        layer: usize,
        n_layers: usize,
        train_rows: usize,
        val_rows: usize,
    },
    Epoch {
        layer: usize,
        progress: Progress,
    },
    Done {
        layer: usize,
        report: LayerReport,
    },
}

/// Shared so the predictors crate's per-epoch hook can forward to it from its threads.
pub type EventFn = Arc<dyn Fn(&TrainEvent) + Send + Sync>;

/// Trains `layers[l]`'s predictor for every `l`, in order, with the same settings; the first
/// failing layer stops the run and is named in the error.
pub fn train_layers(
    layers: &[LayerData<'_>],
    cfg: &TrainConfig,
    on_event: Option<EventFn>,
) -> Result<Vec<TrainOutcome>, TrainError> {
    let n_layers = layers.len();
    let mut out = Vec::with_capacity(n_layers);
    for (layer, data) in layers.iter().enumerate() {
        let mut layer_cfg = cfg.clone();
        if let Some(f) = &on_event {
            f(&TrainEvent::Started {
                layer,
                n_layers,
                train_rows: data.train.len(),
                val_rows: data.val.len(),
            });
            let f = Arc::clone(f);
            let inner = cfg.progress.clone();
            layer_cfg.progress = Some(Arc::new(move |p: &Progress| {
                if let Some(inner) = &inner {
                    inner(p);
                }
                f(&TrainEvent::Epoch {
                    layer,
                    progress: p.clone(),
                });
            }));
        }
        let outcome = train_layer(data.train, data.val, data.gate.as_ref(), &layer_cfg)
            .map_err(|source| TrainError::Layer { layer, source })?;
        if let Some(f) = &on_event {
            f(&TrainEvent::Done {
                layer,
                report: outcome.report.clone(),
            });
        }
        out.push(outcome);
    }
    Ok(out)
}

/// Activity labels from a layer's values (`rows × n_ff`, row-major): neuron `j` of row `r` is
/// active iff `|value| > threshold`, the same test as `ActivationStats::record`.
pub fn labels_from_values(
    rows: usize,
    n_ff: usize,
    values: &[f32],
    threshold: f32,
) -> Result<BitMatrix, TrainError> {
    let expected = rows.saturating_mul(n_ff);
    if values.len() != expected {
        return Err(TrainError::LabelShape {
            rows,
            n_ff,
            expected,
            got: values.len(),
        });
    }
    if !(threshold.is_finite() && threshold >= 0.0) {
        return Err(TrainError::BadThreshold(threshold));
    }
    let words_per_row = n_ff.div_ceil(64);
    let mut words = vec![0u64; rows * words_per_row];
    if n_ff > 0 {
        for (row, dst) in values
            .chunks_exact(n_ff)
            .zip(words.chunks_exact_mut(words_per_row))
        {
            for (chunk, w) in row.chunks(64).zip(dst.iter_mut()) {
                *w = chunk.iter().enumerate().fold(0u64, |acc, (b, v)| {
                    acc | (((v.abs() > threshold) as u64) << b)
                });
            }
        }
    }
    BitMatrix::from_words(rows, n_ff, words).map_err(TrainError::Labels)
}

/// A trained layer's line of the profile summary.
pub fn layer_measures(outcome: &TrainOutcome, threshold: f32) -> LayerMeasures {
    let r = &outcome.report;
    LayerMeasures {
        recall: r.recall as f64,
        precision: r.precision as f64,
        predicted_sparsity: r.predicted_sparsity as f64,
        true_sparsity: r.true_sparsity as f64,
        rank: r.rank,
        predictor_bytes: outcome.predictor.n_bytes() as u64,
        threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::sync::Mutex;

    fn normal(rng: &mut SplitMix64) -> f32 {
        // Box-Muller.
        let (u, v) = (rng.next_open01(), rng.next_open01());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }

    /// A layer whose neurons fire by a hidden linear rule on the input (like a gate).
    fn synthetic_layer(
        rng: &mut SplitMix64,
        rows: usize,
        d_in: usize,
        n_ff: usize,
    ) -> (Dataset, Vec<f32>) {
        let w: Vec<f32> = (0..n_ff * d_in).map(|_| normal(rng)).collect();
        let x: Vec<f32> = (0..rows * d_in).map(|_| normal(rng)).collect();
        let mut acts = vec![0f32; rows * n_ff];
        for r in 0..rows {
            for j in 0..n_ff {
                let z: f32 = (0..d_in).map(|i| w[j * d_in + i] * x[r * d_in + i]).sum();
                acts[r * n_ff + j] = (z - 1.5).max(0.0); // ReLU with a bias: sparse
            }
        }
        let labels = labels_from_values(rows, n_ff, &acts, 0.0).unwrap();
        (Dataset::new(d_in, x, labels).unwrap(), w)
    }

    fn small_cfg() -> TrainConfig {
        TrainConfig {
            ranks: vec![8],
            epochs: 3,
            batch_size: 64,
            target_recall: 0.9,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn labels_match_a_direct_test_of_each_value() {
        let mut rng = SplitMix64::new(81);
        let (rows, n_ff) = (7, 130); // a partial last word
        let values: Vec<f32> = (0..rows * n_ff).map(|_| normal(&mut rng)).collect();
        let m = labels_from_values(rows, n_ff, &values, 0.7).unwrap();
        for r in 0..rows {
            for j in 0..n_ff {
                assert_eq!(m.get(r, j), values[r * n_ff + j].abs() > 0.7);
            }
        }
        assert!(matches!(
            labels_from_values(2, 3, &[0.0; 5], 0.0),
            Err(TrainError::LabelShape { .. })
        ));
        assert!(matches!(
            labels_from_values(1, 1, &[0.0], -1.0),
            Err(TrainError::BadThreshold(_))
        ));
    }

    #[test]
    fn trains_each_layer_in_order_like_a_direct_call() {
        let mut rng = SplitMix64::new(82);
        let (d_in, n_ff) = (16, 48);
        let sets: Vec<(Dataset, Dataset, Vec<f32>)> = (0..2)
            .map(|_| {
                let (d, w) = synthetic_layer(&mut rng, 600, d_in, n_ff);
                let (train, val) = d.split_at(450);
                (train, val, w)
            })
            .collect();
        let layers: Vec<LayerData> = sets
            .iter()
            .enumerate()
            .map(|(l, (train, val, w))| LayerData {
                train,
                val,
                // Layer 1 starts from its gate's SVD, layer 0 from random weights.
                gate: (l == 1).then(|| GateInit {
                    w,
                    rows: n_ff,
                    cols: d_in,
                }),
            })
            .collect();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let on_event: EventFn = Arc::new(move |e: &TrainEvent| {
            let tag = match e {
                TrainEvent::Started {
                    layer, n_layers, ..
                } => format!("start {layer}/{n_layers}"),
                TrainEvent::Epoch { layer, progress } => {
                    format!("epoch {layer} {}", progress.epoch)
                }
                TrainEvent::Done { layer, .. } => format!("done {layer}"),
            };
            sink.lock().unwrap().push(tag);
        });
        let cfg = small_cfg();
        let outcomes = train_layers(&layers, &cfg, Some(on_event)).unwrap();
        assert_eq!(outcomes.len(), 2);
        let expect: Vec<String> = (0..2)
            .flat_map(|l| {
                std::iter::once(format!("start {l}/2"))
                    .chain((1..=3).map(move |e| format!("epoch {l} {e}")))
                    .chain(std::iter::once(format!("done {l}")))
            })
            .collect();
        assert_eq!(*events.lock().unwrap(), expect);

        // Each layer's result is what training that layer alone gives (training is seeded).
        for (l, data) in layers.iter().enumerate() {
            let alone = train_layer(data.train, data.val, data.gate.as_ref(), &cfg).unwrap();
            assert_eq!(alone.report.recall, outcomes[l].report.recall);
            assert_eq!(
                alone.report.predicted_sparsity,
                outcomes[l].report.predicted_sparsity
            );
            assert_eq!(alone.predictor.w1(), outcomes[l].predictor.w1());
            let m = layer_measures(&outcomes[l], 0.0);
            assert_eq!(m.predictor_bytes, outcomes[l].predictor.n_bytes() as u64);
            assert_eq!(m.rank, outcomes[l].report.rank);
            // The hidden rule is learnable: the calibrated recall holds on validation rows.
            assert!(m.recall >= 0.9 - 1e-6, "layer {l} recall {}", m.recall);
        }
    }

    #[test]
    fn a_failing_layer_is_named() {
        let mut rng = SplitMix64::new(83);
        let (good, _) = synthetic_layer(&mut rng, 100, 8, 16);
        let (train, val) = good.split_at(80);
        let (other, _) = synthetic_layer(&mut rng, 100, 9, 16);
        let layers = [
            LayerData {
                train: &train,
                val: &val,
                gate: None,
            },
            LayerData {
                train: &train,
                val: &other,
                gate: None,
            }, // d_in 9 vs 8
        ];
        let err = train_layers(&layers, &small_cfg(), None).unwrap_err();
        assert!(matches!(err, TrainError::Layer { layer: 1, .. }), "{err}");
        assert!(err.to_string().starts_with("layer 1:"));
    }
}
