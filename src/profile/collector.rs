//! Observers that turn each layer's FFN tensors into what the profiler needs: the values the
//! sparsity rule tests, threshold samples, activation statistics and predictor training rows.

use powerinfer_predictors::Dataset;
use powerinfer_profiler::{ActivationStats, ThresholdCalibrator};

use crate::model::{FfnKind, FfnObserver, FfnTaps};
use crate::sparse::{gate_act, SparsityRule};

/// The values the rule compares with its threshold (`|v| > t` means active): the activation
/// itself for ReLU models and the product rule, `act(gate)` for the gate (CATS) rule.
pub fn rule_values(kind: FfnKind, rule: SparsityRule, taps: &FfnTaps<'_>, out: &mut Vec<f32>) {
    out.clear();
    match rule {
        SparsityRule::Relu | SparsityRule::Product => out.extend_from_slice(taps.act),
        // The same non-linearity the engine's gate rule tests (sparse::mask_activation).
        SparsityRule::Gate => out.extend(taps.gate.iter().map(|&g| gate_act(kind, g))),
    }
}

/// Pass 1 (SiLU/GeLU models): samples of |value| per layer for the quantile thresholds.
pub struct CalibrationPass<'a> {
    pub kind: FfnKind,
    pub rule: SparsityRule,
    pub calibrator: &'a mut ThresholdCalibrator,
    pub buf: Vec<f32>,
}

impl FfnObserver for CalibrationPass<'_> {
    fn observe(&mut self, layer: usize, _rows: usize, taps: FfnTaps<'_>) {
        rule_values(self.kind, self.rule, &taps, &mut self.buf);
        self.buf.iter_mut().for_each(|v| *v = v.abs());
        self.calibrator
            .observe(layer, &self.buf)
            .expect("layer index within the model");
    }
}

/// Pass 2: activation statistics under the chosen thresholds, and (input, active set) rows
/// for the predictors, up to `cap` rows per layer.
pub struct CollectPass<'a> {
    pub kind: FfnKind,
    pub rule: SparsityRule,
    pub thresholds: &'a [f32],
    pub stats: Option<&'a mut ActivationStats>,
    pub data: &'a mut [Dataset],
    pub cap: usize,
    pub buf: Vec<f32>,
    pub active: Vec<u32>,
}

impl FfnObserver for CollectPass<'_> {
    fn observe(&mut self, layer: usize, rows: usize, taps: FfnTaps<'_>) {
        rule_values(self.kind, self.rule, &taps, &mut self.buf);
        let t = self.thresholds[layer];
        if let Some(stats) = self.stats.as_deref_mut() {
            stats
                .record(layer, rows, &self.buf, t)
                .expect("layer shape within the model");
        }
        let n_ff = self.buf.len() / rows;
        let d = taps.input.len() / rows;
        let ds = &mut self.data[layer];
        for r in 0..rows {
            if ds.len() >= self.cap {
                break;
            }
            self.active.clear();
            let vals = &self.buf[r * n_ff..(r + 1) * n_ff];
            self.active.extend(
                vals.iter()
                    .enumerate()
                    .filter(|(_, v)| v.abs() > t)
                    .map(|(j, _)| j as u32),
            );
            ds.push(&taps.input[r * d..(r + 1) * d], &self.active)
                .expect("row shapes match the dataset");
        }
    }
}
