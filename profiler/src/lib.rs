//! Profiling for sparse inference: activation statistics, threshold calibration, per-layer
//! sparsity levels under a perplexity budget, neuron placement and the run's summary.
//! Independent of the engine: everything here takes plain slices.

pub mod levels;
pub mod placement;
mod rng;
pub mod stats;
pub mod summary;
pub mod threshold;
pub mod train;

pub use levels::{
    choose_levels, choose_levels_with, LevelChoice, LevelError, LevelOptions, LevelStep, StepKind,
};
pub use placement::{FixedItem, LayerNeurons, LayerPlacement, Placement, PlacementError, Placer};
pub use stats::{ActivationStats, StatsError, StatsExport};
pub use summary::{
    LayerMeasures, LayerSummary, ProfileSummary, RunConfig, SparsityTarget, SummaryError,
    SummaryTotals,
};
pub use threshold::{SparsityRule, ThresholdCalibrator, ThresholdError};
pub use train::{
    labels_from_values, layer_measures, train_layers, EventFn, LayerData, TrainError, TrainEvent,
};
