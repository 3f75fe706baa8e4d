//! What the hybrid schedule needs from the device that holds the hot neurons.

use powerinfer_predictors::Predictor;

use super::Span;
use crate::model::FfnKind;
use crate::quant::QMatrix;
use crate::sparse::sidecar::PredictorWeights;
use crate::sparse::LayerThreshold;

#[derive(Debug, thiserror::Error)]
pub enum HybridError {
    #[error("hybrid FFN layer {layer}: {msg}")]
    Layer { layer: usize, msg: String },
    #[error("hybrid FFN on the device: {0}")]
    Device(String),
}

/// One layer's sparse FFN as the host holds it, and which of its neurons go to the device.
pub struct LayerUpload<'a> {
    pub layer: usize,
    pub kind: FfnKind,
    pub threshold: LayerThreshold,
    pub predictor: Option<&'a PredictorWeights>,
    /// `[n_ff][d_model]` (absent for the plain kind).
    pub gate: Option<QMatrix<'a>>,
    pub up: QMatrix<'a>,
    /// `[d_model][n_ff]`.
    pub down: QMatrix<'a>,
    /// Neurons placed on the device, ascending; the others are cold.
    pub hot: &'a [u32],
}

impl LayerUpload<'_> {
    pub fn n_ff(&self) -> usize {
        self.up.rows
    }

    pub fn d_model(&self) -> usize {
        self.up.cols
    }

    /// The cold neurons (ascending), after checking that the hot list is ascending and in range.
    pub fn cold(&self) -> Result<Vec<u32>, HybridError> {
        let n_ff = self.n_ff();
        let bad = |msg: String| HybridError::Layer {
            layer: self.layer,
            msg,
        };
        if !self.hot.windows(2).all(|w| w[0] < w[1]) {
            return Err(bad("hot neurons are not strictly ascending".into()));
        }
        if let Some(&id) = self.hot.last().filter(|&&id| id as usize >= n_ff) {
            return Err(bad(format!("hot neuron {id} outside the FFN's {n_ff}")));
        }
        let mut hot = self.hot.iter().peekable();
        Ok((0..n_ff as u32)
            .filter(|id| {
                let is_hot = hot.peek() == Some(&id);
                if is_hot {
                    hot.next();
                }
                !is_hot
            })
            .collect())
    }

    /// The host predictor (the stand-in's; the CUDA device uploads the weights instead).
    pub fn host_predictor(&self) -> Result<Option<Predictor>, HybridError> {
        self.predictor
            .map(|p| {
                p.to_predictor().map_err(|e| HybridError::Layer {
                    layer: self.layer,
                    msg: format!("predictor: {e}"),
                })
            })
            .transpose()
    }
}

/// A device that runs the predictor and the hot neurons of every layer. Calls on one sequence
/// come in the order of [`super::ffn_row`]: `select`, `fetch`, `hot_while`, `merge`; the device
/// may run them asynchronously as long as it keeps that order (one CUDA stream does).
pub trait HybridDevice: Sync {
    /// An activation row on the device.
    type Tensor: Send + Sync;
    /// One layer's predictor and hot neurons on the device.
    type Layer: Send + Sync;
    /// Per-sequence device buffers.
    type Scratch: Send;

    /// Put one layer on the device.
    fn upload_layer(&self, l: &LayerUpload) -> Result<Self::Layer, HybridError>;
    /// Buffers for a sequence over `layers`.
    fn new_scratch(&self, layers: &[Self::Layer]) -> Self::Scratch;
    /// Choose the active neurons of the row `x`: the predictor's (every neuron in oracle mode
    /// or without a predictor), split into the hot list (kept on the device) and the cold one.
    fn select(&self, l: &Self::Layer, x: &Self::Tensor, oracle: bool, s: &mut Self::Scratch);
    /// Copy the row and the active cold neurons (ascending ids) to the host; waits for
    /// `select`.
    fn fetch(
        &self,
        l: &Self::Layer,
        x: &Self::Tensor,
        s: &mut Self::Scratch,
        x_host: &mut Vec<f32>,
        cold: &mut Vec<u32>,
    );
    /// Start the hot FFN of `x` into `y` (the rule applied to every hot activation), run
    /// `host` meanwhile, and return its result once `host` is done; the hot part may still be
    /// running. With `timed`, the device keeps what [`HybridDevice::hot_span`] needs.
    fn hot_while<R>(
        &self,
        l: &Self::Layer,
        x: &Self::Tensor,
        s: &mut Self::Scratch,
        y: &mut Self::Tensor,
        timed: bool,
        host: impl FnOnce() -> R,
    ) -> R;
    /// `y += cold`, ordered after the hot part.
    fn merge(&self, y: &mut Self::Tensor, cold: &[f32], s: &mut Self::Scratch);
    /// Wait until all the device's queued work is done (for per-phase timing only).
    fn wait(&self);
    /// When the last timed hot part ran, after [`HybridDevice::wait`].
    fn hot_span(&self, s: &Self::Scratch) -> Option<Span>;
}

impl From<HybridError> for crate::model::ModelError {
    fn from(e: HybridError) -> Self {
        crate::model::ModelError::Config(e.to_string())
    }
}
