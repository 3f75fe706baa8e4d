//! `powerinfer profile`: drive the model over calibration text, feed the profiler crate, train
//! the predictors, place neurons, and write the sidecar.

mod collector;
mod hot;
mod run;

pub use collector::{rule_values, CalibrationPass, CollectPass};
pub use hot::{hot_for_budget, placement_of_sidecar, HotPlacement};
pub use run::{
    placement_for, profile, ProfileError, ProfileOptions, ProfileProgress, ProfileResult, Target,
};
