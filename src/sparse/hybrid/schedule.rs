//! The hybrid FFN of one token row, written once for every [`HybridDevice`].

use std::time::Instant;

use super::{HybridDevice, LayerTimeline, PhaseStats, Span};
use crate::model::FfnKind;
use crate::sparse::{FfnWeights, SparseLayer, SparseScratch};

/// Host buffers of the hybrid FFN, reused from call to call, and its phase totals.
#[derive(Default)]
pub struct HybridHost {
    x: Vec<f32>,
    cold: Vec<u32>,
    partial: Vec<f32>,
    pub phases: PhaseStats,
}

/// `y = FFN(x)` for one row: the device's hot neurons and the host's cold ones (`cpu` is the
/// layer's CPU sparse executor, run over the cold neurons the device selected), in the
/// order of the module doc. `hs` is the sequence's host scratch (its counters count the cold
/// part only).
#[allow(clippy::too_many_arguments)]
pub fn ffn_row<D: HybridDevice>(
    dev: &D,
    l: &D::Layer,
    cpu: &SparseLayer,
    kind: FfnKind,
    w: &FfnWeights,
    x: &D::Tensor,
    oracle: bool,
    f32_act: bool,
    ds: &mut D::Scratch,
    hs: &mut SparseScratch,
    y: &mut D::Tensor,
) {
    let mut host = std::mem::take(&mut hs.hybrid);
    let timed = host.phases.timed;
    let t0 = Instant::now();
    dev.select(l, x, oracle, ds);
    if timed {
        dev.wait();
    }
    let t1 = Instant::now();
    dev.fetch(l, x, ds, &mut host.x, &mut host.cold);
    let t2 = Instant::now();

    let (xh, cold, partial) = (&host.x, &host.cold, &mut host.partial);
    partial.clear();
    partial.resize(cpu.down.d_model, 0.0);
    let cold_span = dev.hot_while(l, x, ds, y, timed, || {
        let c0 = Instant::now();
        if !cold.is_empty() {
            cpu.forward_listed(kind, w, xh, cold, f32_act, hs, partial);
        }
        Span::new(c0, Instant::now())
    });
    let t3 = Instant::now();
    if timed {
        dev.wait();
    }
    let t4 = Instant::now();
    dev.merge(y, &host.partial, ds);
    if timed {
        dev.wait();
    }
    let t5 = Instant::now();
    host.phases.add(LayerTimeline {
        predict: Span::new(t0, t1),
        mask: Span::new(t1, t2),
        hot: dev.hot_span(ds),
        cold: cold_span,
        hot_wait: Span::new(t3, t4),
        merge: Span::new(t4, t5),
    });
    hs.hybrid = host;
}
