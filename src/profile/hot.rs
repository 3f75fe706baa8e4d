//! The hot neurons of every layer for a VRAM budget at load time (`--vram-budget`): the
//! sidecar's own placement when it was solved for that budget, otherwise re-solved from its
//! frequencies with the profiler's placer, as `powerinfer place` does.

use powerinfer_profiler::Placement;

use super::{placement_for, ProfileError};
use crate::backend::Backend;
use crate::model::Model;
use crate::sparse::Sidecar;

/// The hot lists (ascending, one per layer).
pub struct HotPlacement {
    pub hot: Vec<Vec<u32>>,
    /// For a re-solved placement, the share of the activation frequency its hot neurons
    /// carry; `None` when the sidecar's own placement was taken.
    pub value_fraction: Option<f64>,
}

/// The placement of `sc` for `budget` bytes with a KV cache of `ctx` positions.
pub fn hot_for_budget<B: Backend>(
    model: &Model<B>,
    sc: &Sidecar,
    budget: u64,
    ctx: usize,
) -> Result<HotPlacement, ProfileError> {
    if sc.vram_budget == budget {
        return Ok(HotPlacement {
            hot: sc.layers.iter().map(|l| l.hot.clone()).collect(),
            value_fraction: None,
        });
    }
    let ctx = ctx.clamp(1, model.config.context_length.max(1));
    let p = placement_of_sidecar(model, sc, ctx, budget)?;
    Ok(HotPlacement {
        value_fraction: Some(p.value_fraction),
        hot: p.layers.into_iter().map(|l| l.hot).collect(),
    })
}

/// The placer's solution for `budget` bytes from the frequencies and predictor sizes stored in
/// `sc` (what `powerinfer place` writes back, and what a mismatched budget is re-solved to).
pub fn placement_of_sidecar<B: Backend>(
    model: &Model<B>,
    sc: &Sidecar,
    ctx: usize,
    budget: u64,
) -> Result<Placement, ProfileError> {
    let freq: Vec<Vec<f32>> = sc.layers.iter().map(|l| l.freq.clone()).collect();
    let predictor_bytes: u64 = sc
        .layers
        .iter()
        .filter_map(|l| l.predictor.as_ref())
        .map(|p| p.n_bytes() as u64)
        .sum();
    placement_for(model, &freq, predictor_bytes, ctx, budget)
}
