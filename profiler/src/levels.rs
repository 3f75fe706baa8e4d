//! Per-layer sparsity levels under a perplexity budget.
//!
//! Each evaluation is a forward pass over held-out text, so the search spends few of them:
//! 1. the base perplexity (every layer at the ladder's first level);
//! 2. each layer alone at one or two probe levels, which gives its sensitivity curve
//!    (interpolated between the probes, costs measured as `ln(ppl / base)` so that independent
//!    layers' costs add);
//! 3. a greedy order of moves that always raises the layer whose next move costs least per unit
//!    of sparsity, so layers that tolerate more get more;
//! 4. a bracketing search along that order for the longest prefix whose *measured* perplexity
//!    stays within the budget, starting at the additive model's guess.
//!
//! The result is always a measured configuration, so `final_ppl <= base_ppl · (1 + max_rise)`
//! holds by construction, whatever the interaction between layers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why the search could not run: bad arguments, a bad perplexity, or the caller's evaluation
/// failed (its error is kept as is).
#[derive(Debug)]
pub enum LevelError<E> {
    InvalidInput(String),
    BadPerplexity { levels: Vec<f32>, ppl: f64 },
    Eval(E),
}

impl<E: fmt::Display> fmt::Display for LevelError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LevelError::InvalidInput(m) => write!(f, "invalid level search input: {m}"),
            LevelError::BadPerplexity { levels, ppl } => {
                write!(f, "evaluation returned perplexity {ppl} (not finite and > 0) for levels {levels:?}")
            }
            LevelError::Eval(e) => write!(f, "perplexity evaluation failed: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for LevelError<E> {}

/// What an evaluation was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// All layers at the ladder's first level.
    Base,
    /// One layer alone raised to a probe level.
    Probe { layer: usize },
    /// The first `moves` moves of the greedy order.
    Verify { moves: usize },
    /// One more rung for `layer` on top of the search's result.
    Fill { layer: usize },
}

/// One evaluation of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelStep {
    pub kind: StepKind,
    pub levels: Vec<f32>,
    pub ppl: f64,
    pub within_budget: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelChoice {
    /// Chosen sparsity per layer, in layer order.
    pub levels: Vec<f32>,
    pub base_ppl: f64,
    /// Measured perplexity at `levels`.
    pub final_ppl: f64,
    pub evaluations: usize,
    pub steps: Vec<LevelStep>,
}

impl LevelChoice {
    pub fn mean_level(&self) -> f64 {
        self.levels.iter().map(|&s| s as f64).sum::<f64>() / self.levels.len().max(1) as f64
    }
}

/// Knobs of the search; the defaults suit ladders of about ten rungs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelOptions {
    /// Ladder indices (each > 0) at which every layer is measured alone; the top rung is always
    /// measured. Empty means the middle and top rungs. One probe per layer halves that stage's
    /// cost; two follow curved sensitivity better.
    pub probes: Vec<usize>,
    /// At most this many extra evaluations spent, after the search, on single-rung raises that
    /// the model predicts still fit the budget left over.
    pub fill_evaluations: usize,
}

impl Default for LevelOptions {
    fn default() -> Self {
        Self {
            probes: Vec::new(),
            fill_evaluations: 6,
        }
    }
}

/// Chooses per-layer levels from `ladder` (strictly increasing; its first rung is the base,
/// usually 0) such that the measured perplexity is at most `base · (1 + max_rise)`, raising the
/// mean level as far as the evaluations show it can go. `eval` returns the held-out perplexity
/// for per-layer sparsities.
pub fn choose_levels<E, F>(
    n_layers: usize,
    ladder: &[f32],
    max_rise: f64,
    eval: F,
) -> Result<LevelChoice, LevelError<E>>
where
    F: FnMut(&[f32]) -> Result<f64, E>,
{
    choose_levels_with(n_layers, ladder, max_rise, &LevelOptions::default(), eval)
}

/// `choose_levels` with explicit options.
pub fn choose_levels_with<E, F>(
    n_layers: usize,
    ladder: &[f32],
    max_rise: f64,
    options: &LevelOptions,
    eval: F,
) -> Result<LevelChoice, LevelError<E>>
where
    F: FnMut(&[f32]) -> Result<f64, E>,
{
    validate(n_layers, ladder, max_rise, &options.probes)?;
    let top = ladder.len() - 1;
    let mut probes: Vec<usize> = if options.probes.is_empty() {
        vec![top / 2, top]
    } else {
        options.probes.clone()
    };
    probes.push(top);
    probes.retain(|&p| p > 0);
    probes.sort_unstable();
    probes.dedup();

    let mut search = Search {
        eval,
        steps: Vec::new(),
        limit: 0.0,
    };
    let base_levels = vec![ladder[0]; n_layers];
    let base_ppl = search.measure(StepKind::Base, &base_levels)?;
    search.limit = base_ppl * (1.0 + max_rise);
    let budget = (1.0 + max_rise).ln();
    if top == 0 {
        return Ok(search.finish(base_levels, base_ppl, base_ppl));
    }

    // Step 2: sensitivity of each layer alone, then modelled over the whole ladder.
    let mut costs = Vec::with_capacity(n_layers);
    for layer in 0..n_layers {
        let mut points = vec![(ladder[0], 0.0f64)];
        for &p in &probes {
            let mut levels = base_levels.clone();
            levels[layer] = ladder[p];
            let ppl = search.measure(StepKind::Probe { layer }, &levels)?;
            // Noise can make a probe look better than base; a move never earns budget back.
            points.push((ladder[p], (ppl / base_ppl).ln().max(0.0)));
        }
        costs.push(model_curve(ladder, &points));
    }

    // Step 3: the greedy order of single-rung moves, and the model's cost after each.
    let moves = greedy_moves(ladder, &costs);
    let mut predicted = vec![0.0];
    let mut at = vec![0usize; n_layers];
    for &layer in &moves {
        predicted.push(
            predicted.last().unwrap() + costs[layer][at[layer] + 1] - costs[layer][at[layer]],
        );
        at[layer] += 1;
    }
    let rungs_after = |k: usize| -> Vec<usize> {
        let mut idx = vec![0usize; n_layers];
        moves[..k].iter().for_each(|&layer| idx[layer] += 1);
        idx
    };
    let levels_of = |idx: &[usize]| -> Vec<f32> { idx.iter().map(|&i| ladder[i]).collect() };

    // Step 4: bracket the longest measured-good prefix. `lo` is known good, `hi` known bad
    // (or one past the end). Start at the model's guess, gallop away from it in the direction
    // the measurement points (the boundary is usually near), then bisect.
    let (mut lo, mut lo_ppl) = (0usize, base_ppl);
    let mut hi = moves.len() + 1;
    let mut next = predicted
        .iter()
        .rposition(|&p| p <= budget)
        .unwrap_or(0)
        .max(1);
    let mut stride = 1usize;
    let mut direction: Option<bool> = None; // Some(true): galloping up, Some(false): down
    while hi - lo > 1 {
        let k = if next > lo && next < hi {
            next
        } else {
            lo + (hi - lo) / 2
        };
        let ppl = search.measure(StepKind::Verify { moves: k }, &levels_of(&rungs_after(k)))?;
        let ok = ppl <= search.limit;
        if ok {
            (lo, lo_ppl) = (k, ppl);
        } else {
            hi = k;
        }
        match direction {
            None => direction = Some(ok),
            Some(d) if d != ok => next = usize::MAX, // bracketed: bisect from here on
            Some(_) => {}
        }
        if next != usize::MAX {
            next = if ok {
                k.saturating_add(stride)
            } else {
                k.saturating_sub(stride)
            };
            stride *= 2;
        }
    }

    // Step 5: the prefix ends where the next move no longer fits, but a cheaper move of another
    // layer may. Try single-rung raises the model says fit the slack, cheapest first.
    let mut idx = rungs_after(lo);
    let mut ppl = lo_ppl;
    let mut refused = vec![false; n_layers];
    if hi <= moves.len() {
        refused[moves[hi - 1]] = true; // measured: that layer's next rung does not fit
    }
    for _ in 0..options.fill_evaluations {
        let slack = budget - (ppl / base_ppl).ln();
        let candidate = (0..n_layers)
            .filter(|&l| idx[l] < top && !refused[l])
            .map(|l| (costs[l][idx[l] + 1] - costs[l][idx[l]], l))
            .filter(|&(c, _)| c <= slack)
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, layer)) = candidate else { break };
        idx[layer] += 1;
        let trial = search.measure(StepKind::Fill { layer }, &levels_of(&idx))?;
        if trial <= search.limit {
            ppl = trial;
        } else {
            idx[layer] -= 1;
            refused[layer] = true;
        }
    }
    let levels = levels_of(&idx);
    Ok(search.finish(levels, base_ppl, ppl))
}

/// The evaluations made so far, and the limit they are judged against.
struct Search<F> {
    eval: F,
    steps: Vec<LevelStep>,
    limit: f64,
}

impl<F> Search<F> {
    fn measure<E>(&mut self, kind: StepKind, levels: &[f32]) -> Result<f64, LevelError<E>>
    where
        F: FnMut(&[f32]) -> Result<f64, E>,
    {
        let ppl = (self.eval)(levels).map_err(LevelError::Eval)?;
        if !(ppl.is_finite() && ppl > 0.0) {
            return Err(LevelError::BadPerplexity {
                levels: levels.to_vec(),
                ppl,
            });
        }
        // The base step sets the limit, so it is within budget by definition.
        let within_budget = kind == StepKind::Base || ppl <= self.limit;
        self.steps.push(LevelStep {
            kind,
            levels: levels.to_vec(),
            ppl,
            within_budget,
        });
        Ok(ppl)
    }

    fn finish(self, levels: Vec<f32>, base_ppl: f64, final_ppl: f64) -> LevelChoice {
        LevelChoice {
            levels,
            base_ppl,
            final_ppl,
            evaluations: self.steps.len(),
            steps: self.steps,
        }
    }
}

fn validate<E>(
    n_layers: usize,
    ladder: &[f32],
    max_rise: f64,
    probes: &[usize],
) -> Result<(), LevelError<E>> {
    let bad = |m: String| Err(LevelError::InvalidInput(m));
    if n_layers == 0 {
        return bad("no layers".into());
    }
    if ladder.is_empty() {
        return bad("empty ladder".into());
    }
    if ladder.iter().any(|s| !(0.0..=1.0).contains(s)) {
        return bad(format!("ladder {ladder:?} has a level outside [0, 1]"));
    }
    if ladder.windows(2).any(|w| w[0] >= w[1]) {
        return bad(format!("ladder {ladder:?} is not strictly increasing"));
    }
    if !(max_rise.is_finite() && max_rise >= 0.0) {
        return bad(format!("max_rise {max_rise} is not a finite value >= 0"));
    }
    if let Some(p) = probes.iter().find(|&&p| p == 0 || p >= ladder.len()) {
        return bad(format!(
            "probe index {p} is not a rung above the first of {} rungs",
            ladder.len()
        ));
    }
    Ok(())
}

/// A layer's modelled cost at every rung from its measured points (the first is the base at
/// cost 0). Between two positive points the curve is a power law through both (sensitivity
/// grows steeply with sparsity); up to the first probe it is a power law with the next segment's
/// exponent when that is convex, else a straight line. Never decreasing.
fn model_curve(ladder: &[f32], points: &[(f32, f64)]) -> Vec<f64> {
    let s0 = points[0].0 as f64;
    let mut out = Vec::with_capacity(ladder.len());
    let mut running = 0.0f64;
    for &s in ladder {
        let s = s as f64;
        let j = points
            .iter()
            .position(|p| p.0 as f64 >= s)
            .unwrap_or(points.len() - 1);
        let (sb, cb) = (points[j].0 as f64, points[j].1);
        let c = if j == 0 || sb == s {
            cb
        } else {
            let (sa, ca) = (points[j - 1].0 as f64, points[j - 1].1);
            let linear = ca + (cb - ca) * (s - sa) / (sb - sa);
            if j >= 2 && ca > 0.0 && cb > 0.0 {
                // Power law in the distance from the base rung through both points.
                let b = (cb / ca).ln() / ((sb - s0) / (sa - s0)).ln();
                ca * ((s - s0) / (sa - s0)).powf(b)
            } else if j == 1 && cb > 0.0 {
                match points.get(2) {
                    Some(&(sc, cc)) if cc > cb => {
                        let b = (cc / cb).ln() / ((sc as f64 - s0) / (sb - s0)).ln();
                        if b >= 1.0 {
                            cb * ((s - s0) / (sb - s0)).powf(b)
                        } else {
                            linear
                        }
                    }
                    _ => linear,
                }
            } else {
                linear
            }
        };
        running = running.max(c);
        out.push(running);
    }
    out
}

/// Layers in the order their single-rung moves are taken. Each step raises the layer whose
/// best stretch ahead (to any higher rung) costs least per unit of sparsity, so a cheap run of
/// rungs behind one steep rung is not missed; ties favour the lower layer.
fn greedy_moves(ladder: &[f32], costs: &[Vec<f64>]) -> Vec<usize> {
    let top = ladder.len() - 1;
    let mut at = vec![0usize; costs.len()];
    let mut moves = Vec::new();
    loop {
        let mut best: Option<(f64, usize, usize)> = None;
        for (layer, c) in costs.iter().enumerate() {
            let i = at[layer];
            for j in i + 1..=top {
                let rate = (c[j] - c[i]) / (ladder[j] - ladder[i]) as f64;
                if best.is_none_or(|(r, _, _)| rate < r) {
                    best = Some((rate, layer, j));
                }
            }
        }
        let Some((_, layer, to)) = best else {
            return moves;
        };
        // The whole stretch, one rung at a time, so the search can stop inside it.
        moves.extend(std::iter::repeat_n(layer, to - at[layer]));
        at[layer] = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use std::convert::Infallible;

    const LADDER: [f32; 6] = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8];

    /// A synthetic model of perplexity: per-layer costs steep at high sparsity, like real
    /// models, either power laws `c · s^p` or exponentials `c · (e^{p·s} − 1)` (which the
    /// search's power-law model does not fit exactly), with a mild interaction `gamma`.
    struct Synthetic {
        c: Vec<f64>,
        p: Vec<f64>,
        exponential: Vec<bool>,
        gamma: f64,
    }

    impl Synthetic {
        fn random(rng: &mut SplitMix64, n_layers: usize, gamma: f64) -> Self {
            let c = (0..n_layers)
                .map(|_| 0.02 + 0.4 * rng.next_open01().powi(2))
                .collect();
            let p = (0..n_layers)
                .map(|_| 1.5 + 2.5 * rng.next_open01())
                .collect();
            let exponential = (0..n_layers).map(|_| rng.next_u64() & 1 == 1).collect();
            Self {
                c,
                p,
                exponential,
                gamma,
            }
        }

        fn ppl(&self, levels: &[f32]) -> f64 {
            let d: f64 = levels
                .iter()
                .enumerate()
                .map(|(l, &s)| {
                    let s = s as f64;
                    if self.exponential[l] {
                        self.c[l] * ((self.p[l] * s).exp() - 1.0) / 10.0
                    } else {
                        self.c[l] * s.powf(self.p[l])
                    }
                })
                .sum();
            10.0 * (d * (1.0 + self.gamma * d)).exp()
        }
    }

    /// Brute force: the best mean level over every combination of rungs within the budget.
    fn brute_force(model: &Synthetic, n_layers: usize, limit: f64) -> f64 {
        let m = LADDER.len();
        let mut best = 0.0f64;
        for code in 0..m.pow(n_layers as u32) {
            let mut x = code;
            let levels: Vec<f32> = (0..n_layers)
                .map(|_| {
                    let s = LADDER[x % m];
                    x /= m;
                    s
                })
                .collect();
            if model.ppl(&levels) <= limit {
                best = best.max(levels.iter().map(|&s| s as f64).sum::<f64>() / n_layers as f64);
            }
        }
        best
    }

    fn run(model: &Synthetic, n_layers: usize, max_rise: f64) -> LevelChoice {
        let mut calls = 0;
        let choice = choose_levels(n_layers, &LADDER, max_rise, |l: &[f32]| {
            calls += 1;
            Ok::<_, Infallible>(model.ppl(l))
        })
        .unwrap();
        assert_eq!(choice.evaluations, calls);
        assert_eq!(choice.steps.len(), calls);
        choice
    }

    fn check_against_brute_force(gamma: f64, worst_allowed: f64, mean_allowed: f64) {
        let mut rng = SplitMix64::new(if gamma == 0.0 { 21 } else { 22 });
        let mut gaps = Vec::new();
        for trial in 0..40 {
            let n_layers = 3 + trial % 3;
            let model = Synthetic::random(&mut rng, n_layers, gamma);
            let max_rise = [0.02, 0.05, 0.1][trial % 3];
            let choice = run(&model, n_layers, max_rise);
            let limit = model.ppl(&vec![0.0; n_layers]) * (1.0 + max_rise);
            // The budget holds as measured, and the reported perplexity is that of the levels.
            assert_eq!(choice.final_ppl, model.ppl(&choice.levels));
            assert!(choice.final_ppl <= limit);
            assert!(choice.levels.iter().all(|s| LADDER.contains(s)));
            // Far fewer evaluations than the brute force's.
            assert!(
                choice.evaluations <= 1 + 2 * n_layers + 10,
                "{} evaluations",
                choice.evaluations
            );
            let opt = brute_force(&model, n_layers, limit);
            assert!(choice.mean_level() <= opt + 1e-9);
            gaps.push(opt - choice.mean_level());
        }
        let worst = gaps.iter().cloned().fold(0.0, f64::max);
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!(worst <= worst_allowed, "worst gap {worst} (gaps {gaps:?})");
        assert!(mean <= mean_allowed, "mean gap {mean}");
    }

    #[test]
    fn additive_costs_come_close_to_brute_force() {
        // One rung of one layer is 0.1 / n_layers, at most 0.033 here.
        check_against_brute_force(0.0, 0.04, 0.01);
    }

    #[test]
    fn mildly_non_additive_costs_come_close_to_brute_force() {
        check_against_brute_force(3.0, 0.07, 0.015);
    }

    #[test]
    fn free_layers_go_to_the_top_and_expensive_ones_stay() {
        // Layers 0 and 2 cost nothing; layer 1 alone at 0.2 already breaks the budget.
        let model = Synthetic {
            c: vec![0.0, 50.0, 0.0],
            p: vec![2.0; 3],
            exponential: vec![false; 3],
            gamma: 0.0,
        };
        let choice = run(&model, 3, 0.05);
        assert_eq!(choice.levels, vec![0.8, 0.0, 0.8]);
        assert_eq!(choice.final_ppl, 10.0);
    }

    #[test]
    fn errors_are_reported_not_panics() {
        let ok = |_: &[f32]| Ok::<f64, Infallible>(5.0);
        assert!(matches!(
            choose_levels(0, &LADDER, 0.05, ok),
            Err(LevelError::InvalidInput(_))
        ));
        assert!(matches!(
            choose_levels(2, &[0.0, 0.5, 0.3], 0.05, ok),
            Err(LevelError::InvalidInput(_))
        ));
        assert!(matches!(
            choose_levels(2, &LADDER, -0.1, ok),
            Err(LevelError::InvalidInput(_))
        ));
        assert!(matches!(
            choose_levels_with(
                2,
                &LADDER,
                0.05,
                &LevelOptions {
                    probes: vec![0],
                    fill_evaluations: 0
                },
                ok
            ),
            Err(LevelError::InvalidInput(_))
        ));
        let nan = |_: &[f32]| Ok::<f64, Infallible>(f64::NAN);
        assert!(matches!(
            choose_levels(2, &LADDER, 0.05, nan),
            Err(LevelError::BadPerplexity { .. })
        ));
        let mut n = 0;
        let failing = |_: &[f32]| {
            n += 1;
            if n < 3 {
                Ok(5.0)
            } else {
                Err("held-out text missing")
            }
        };
        let err = choose_levels(2, &LADDER, 0.05, failing).unwrap_err();
        assert!(matches!(err, LevelError::Eval("held-out text missing")));
        assert!(err.to_string().contains("held-out text missing"));
        // A one-rung ladder needs only the base.
        let choice = choose_levels(4, &[0.0], 0.05, ok).unwrap();
        assert_eq!((choice.levels, choice.evaluations), (vec![0.0; 4], 1));
    }
}
