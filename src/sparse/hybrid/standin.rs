//! A stand-in for the GPU in host memory: the same data layout and arithmetic as the CUDA
//! kernels (compacted hot rows, f16 transposed down, f32 dots, the rule on every hot
//! activation), with the hot part run on its own thread so that it really overlaps the cold
//! part. It exists so that the hybrid schedule is tested where there is no GPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use powerinfer_predictors::{Predictor, Scratch as PredictorScratch};

use super::{HotRows, HybridDevice, HybridError, LayerUpload, Span};
use crate::backend::cpu::CpuTensor;
use crate::model::FfnKind;
use crate::quant::{self, GgmlType};
use crate::sparse::{rule_activation, LayerThreshold};

/// The stand-in device. `hot_delay` is added to every hot part, as a device's launch latency
/// would be (tests use it to make the overlap measurable on a loaded machine). It is also a
/// whole [`crate::backend::Backend`] (the CPU's, apart from the sparse FFN), so that a model
/// runs on it end to end.
#[derive(Clone, Default)]
pub struct HostDevice {
    pub hot_delay: Duration,
    /// Every layer's predictor and hot neurons, once a sidecar is attached.
    pub(super) layers: Option<Arc<Vec<HostLayer>>>,
}

impl HostDevice {
    pub fn with_hot_delay(hot_delay: Duration) -> HostDevice {
        HostDevice {
            hot_delay,
            layers: None,
        }
    }

    /// Hot neurons per layer, once a sidecar is attached.
    pub fn hot_counts(&self) -> Option<Vec<usize>> {
        self.layers
            .as_ref()
            .map(|l| l.iter().map(|l| l.n_hot).collect())
    }
}

/// One layer on the stand-in.
pub struct HostLayer {
    kind: FfnKind,
    threshold: LayerThreshold,
    ty: GgmlType,
    d_model: usize,
    predictor: Option<Predictor>,
    rows: HotRows,
    /// `hot_pos[id]`: position of neuron `id` among the hot rows, or `u32::MAX` if cold.
    hot_pos: Vec<u32>,
    n_hot: usize,
    cold: Vec<u32>,
}

#[derive(Default)]
pub struct HostScratch {
    pred: PredictorScratch,
    active: Vec<u32>,
    /// Positions into the hot rows, ascending.
    hot_active: Vec<u32>,
    cold_active: Vec<u32>,
    row: Vec<f32>,
    span: Option<Span>,
}

impl HostLayer {
    fn dot(&self, m: &[u8], k: u32, x: &[f32], row: &mut Vec<f32>) -> f32 {
        let rb = self.rows.row_bytes;
        row.resize(self.d_model, 0.0);
        quant::dequantize_row(self.ty, &m[k as usize * rb..][..rb], row)
            .expect("type checked at upload");
        row.iter().zip(x).map(|(a, b)| a * b).sum()
    }

    /// `y = Σ rule(act(gate_k · x, up_k · x)) · down_t[k]` over the active hot rows.
    fn hot_ffn(&self, x: &[f32], s: &mut HostScratch, y: &mut Vec<f32>) {
        y.clear();
        y.resize(self.d_model, 0.0);
        let mut row = std::mem::take(&mut s.row);
        for &k in &s.hot_active {
            let u = self.dot(&self.rows.up, k, x, &mut row);
            let g = match &self.rows.gate {
                Some(gm) => self.dot(gm, k, x, &mut row),
                None => 0.0,
            };
            let a = rule_activation(self.kind, self.threshold, g, u);
            if a == 0.0 {
                continue;
            }
            let col = &self.rows.down_t[k as usize * self.d_model..][..self.d_model];
            for (o, w) in y.iter_mut().zip(col) {
                *o += a * w.to_f32();
            }
        }
        s.row = row;
    }
}

impl HybridDevice for HostDevice {
    type Tensor = CpuTensor;
    type Layer = HostLayer;
    type Scratch = HostScratch;

    fn upload_layer(&self, l: &LayerUpload) -> Result<HostLayer, HybridError> {
        let cold = l.cold()?;
        let mut hot_pos = vec![u32::MAX; l.n_ff()];
        for (k, &id) in l.hot.iter().enumerate() {
            hot_pos[id as usize] = k as u32;
        }
        Ok(HostLayer {
            kind: l.kind,
            threshold: l.threshold,
            ty: l.up.ty,
            d_model: l.d_model(),
            predictor: l.host_predictor()?,
            rows: HotRows::pack(l)?,
            hot_pos,
            n_hot: l.hot.len(),
            cold,
        })
    }

    fn new_scratch(&self, _layers: &[HostLayer]) -> HostScratch {
        HostScratch::default()
    }

    fn select(&self, l: &HostLayer, x: &CpuTensor, oracle: bool, s: &mut HostScratch) {
        s.hot_active.clear();
        s.cold_active.clear();
        match (&l.predictor, oracle) {
            (Some(p), false) => {
                p.predict(&x.data, &mut s.pred, &mut s.active)
                    .expect("predictor shape checked at upload");
                for &id in &s.active {
                    match l.hot_pos[id as usize] {
                        u32::MAX => s.cold_active.push(id),
                        k => s.hot_active.push(k),
                    }
                }
            }
            _ => {
                s.hot_active.extend(0..l.n_hot as u32);
                s.cold_active.extend_from_slice(&l.cold);
            }
        }
    }

    fn fetch(
        &self,
        _l: &HostLayer,
        x: &CpuTensor,
        s: &mut HostScratch,
        x_host: &mut Vec<f32>,
        cold: &mut Vec<u32>,
    ) {
        x_host.clone_from(&x.data);
        cold.clone_from(&s.cold_active);
    }

    fn hot_while<R>(
        &self,
        l: &HostLayer,
        x: &CpuTensor,
        s: &mut HostScratch,
        y: &mut CpuTensor,
        _timed: bool,
        host: impl FnOnce() -> R,
    ) -> R {
        let delay = self.hot_delay;
        let (r, span) = std::thread::scope(|sc| {
            let hot = sc.spawn(|| {
                let t0 = Instant::now();
                if !delay.is_zero() {
                    std::thread::sleep(delay);
                }
                y.resize(1, l.d_model);
                l.hot_ffn(&x.data, s, &mut y.data);
                Span::new(t0, Instant::now())
            });
            let r = host();
            (r, hot.join().expect("stand-in hot thread"))
        });
        s.span = Some(span);
        r
    }

    fn merge(&self, y: &mut CpuTensor, cold: &[f32], _s: &mut HostScratch) {
        y.data.iter_mut().zip(cold).for_each(|(a, b)| *a += b);
    }

    fn wait(&self) {}

    fn hot_span(&self, s: &HostScratch) -> Option<Span> {
        s.span
    }
}
