//! The hybrid FFN's device on one GPU ([`HybridDevice`] for [`CudaBackend`]): predictors and
//! hot neurons in VRAM, everything on the backend's one stream, so the upload and merge of
//! the cold partial are ordered after the hot kernels without the host waiting for them.

use std::time::{Duration, Instant};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaSlice};

use super::device::check;
use super::sparse::SparseScratch;
use super::{CudaBackend, CudaHotFfn, CudaPredictor, CudaTensor};
use crate::sparse::hybrid::{HybridDevice, HybridError, LayerUpload, Span};

/// One layer in VRAM: its predictor, its hot neurons, and its cold neuron ids (the predictor's
/// logits are compacted over them too, so that only the active cold ids reach the host).
pub struct CudaHybridLayer {
    pred: Option<CudaPredictor>,
    hot: CudaHotFfn,
    /// `0..n_hot`: the hot list of oracle mode.
    all_hot: CudaSlice<u32>,
    cold_ids: CudaSlice<u32>,
    cold: Vec<u32>,
}

impl CudaHybridLayer {
    pub fn n_hot(&self) -> usize {
        self.hot.n_hot
    }

    pub fn n_cold(&self) -> usize {
        self.cold.len()
    }
}

/// A sequence's device buffers.
pub struct CudaHybridScratch {
    s: SparseScratch,
    cold_active: CudaSlice<u32>,
    cold_count: CudaSlice<u32>,
    /// The last `select` chose every neuron (oracle mode, or no predictor).
    all: bool,
    merge: CudaTensor,
    /// Events around the last timed hot part, and when it was launched.
    timing: Option<(CudaEvent, CudaEvent, Instant)>,
}

fn device_err(e: impl std::fmt::Display) -> HybridError {
    HybridError::Device(e.to_string())
}

impl HybridDevice for CudaBackend {
    type Tensor = CudaTensor;
    type Layer = CudaHybridLayer;
    type Scratch = CudaHybridScratch;

    fn upload_layer(&self, l: &LayerUpload) -> Result<CudaHybridLayer, HybridError> {
        let cold = l.cold()?;
        let pred = l
            .predictor
            .map(|p| {
                self.load_predictor(&p.w1, &p.b1, &p.w2, &p.b2, p.rank, p.d_in, p.d_out)
                    .map_err(device_err)
            })
            .transpose()?;
        let all: Vec<u32> = (0..l.hot.len() as u32).collect();
        Ok(CudaHybridLayer {
            pred,
            hot: self.upload_hot_rows(l).map_err(device_err)?,
            all_hot: self.gpu.upload(&all),
            cold_ids: self.gpu.upload(&cold),
            cold,
        })
    }

    fn new_scratch(&self, layers: &[CudaHybridLayer]) -> CudaHybridScratch {
        let rank = layers
            .iter()
            .filter_map(|l| l.pred.as_ref().map(|p| p.rank))
            .max()
            .unwrap_or(1);
        let n_hot = layers.iter().map(|l| l.hot.n_hot).max().unwrap_or(1);
        let n_cold = layers.iter().map(|l| l.cold.len()).max().unwrap_or(1);
        CudaHybridScratch {
            s: self.sparse_scratch_for(rank, n_hot),
            cold_active: self.gpu.alloc(n_cold),
            cold_count: self.gpu.alloc(1),
            all: true,
            merge: CudaTensor::default(),
            timing: None,
        }
    }

    fn select(&self, l: &CudaHybridLayer, x: &CudaTensor, oracle: bool, s: &mut Self::Scratch) {
        match (&l.pred, oracle) {
            (Some(p), false) => {
                self.predict(p, x, &mut s.s);
                self.compact_active(&l.hot, &mut s.s);
                self.compact(
                    &s.s.logits,
                    &l.cold_ids,
                    l.cold.len(),
                    &mut s.cold_active,
                    &mut s.cold_count,
                );
                s.all = false;
            }
            _ => {
                let n = l.hot.n_hot;
                if n > 0 {
                    self.gpu.copy(&l.all_hot, 0, &mut s.s.active, 0, n);
                }
                self.gpu.upload_into(&[n as u32], &mut s.s.count);
                s.all = true;
            }
        }
    }

    fn fetch(
        &self,
        l: &CudaHybridLayer,
        x: &CudaTensor,
        s: &mut Self::Scratch,
        x_host: &mut Vec<f32>,
        cold: &mut Vec<u32>,
    ) {
        *x_host = self.download(x);
        cold.clear();
        if s.all {
            cold.extend_from_slice(&l.cold);
            return;
        }
        let n = self.gpu.download(&s.cold_count, 1)[0] as usize;
        if n > 0 {
            let pos = self.gpu.download(&s.cold_active, n);
            cold.extend(pos.iter().map(|&k| l.cold[k as usize]));
        }
    }

    fn hot_while<R>(
        &self,
        l: &CudaHybridLayer,
        x: &CudaTensor,
        s: &mut Self::Scratch,
        y: &mut CudaTensor,
        timed: bool,
        host: impl FnOnce() -> R,
    ) -> R {
        let event = || {
            check(
                self.gpu
                    .stream
                    .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)),
                "event record",
            )
        };
        let start = timed.then(|| (event(), Instant::now()));
        self.hot_ffn(&l.hot, x, &mut s.s, y);
        s.timing = start.map(|(e0, t)| (e0, event(), t));
        host()
    }

    fn merge(&self, y: &mut CudaTensor, cold: &[f32], s: &mut Self::Scratch) {
        self.merge_cold(y, cold, &mut s.merge);
    }

    fn wait(&self) {
        self.gpu.sync();
    }

    /// The hot kernels' time between their events, placed at their launch: the stream is
    /// idle then (`fetch` waited for it), so they start within a launch latency of it.
    fn hot_span(&self, s: &Self::Scratch) -> Option<Span> {
        let (e0, e1, t) = s.timing.as_ref()?;
        let ms = check(e0.elapsed_ms(e1), "event timing");
        Some(Span::new(
            *t,
            *t + Duration::from_secs_f64(ms.max(0.0) as f64 / 1e3),
        ))
    }
}
