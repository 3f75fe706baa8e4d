//! Per-neuron activation statistics gathered while the model reads a corpus: how often each FFN
//! neuron fires and how much activation it carries. These drive neuron placement (hot neurons go to
//! the GPU) and report how skewed a model's activations are.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Rows per rayon task; below two tasks' worth the calling thread does the work alone.
const ROWS_PER_TASK: usize = 16;

#[derive(Debug, Error, PartialEq)]
pub enum StatsError {
    #[error("layer {layer} is out of range: the statistics have {n_layers} layers")]
    LayerOutOfRange { layer: usize, n_layers: usize },
    #[error("layer {layer}: {len} values is not {rows} rows of {n_ff} neurons")]
    ShapeMismatch {
        layer: usize,
        rows: usize,
        n_ff: usize,
        len: usize,
    },
    #[error("threshold {0} is not a finite value >= 0")]
    BadThreshold(f32),
    #[error("fraction {0} is outside [0, 1]")]
    BadFraction(f64),
    #[error(
        "cannot merge statistics of different shapes (neurons per layer {left:?} vs {right:?})"
    )]
    MergeShape { left: Vec<usize>, right: Vec<usize> },
    #[error("exported statistics are inconsistent: {0}")]
    BadExport(String),
}

/// Counts of active tokens and activation mass per neuron, for every layer.
///
/// A neuron is active on a token when `|value| > threshold`. Mass sums `|value|` over the active
/// tokens only: entries under the threshold are skipped by the sparse engine, so they carry none
/// of the work that placement tries to put on the GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationStats {
    n_ff: Vec<usize>,
    tokens: Vec<u64>,
    counts: Vec<Vec<u64>>,
    mass: Vec<Vec<f64>>,
}

/// The statistics as flat vectors (layers concatenated), for storage in a GGUF sidecar or JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsExport {
    /// Neurons per layer.
    pub n_ff: Vec<u64>,
    /// Tokens recorded per layer.
    pub tokens: Vec<u64>,
    /// Active-token counts, `sum(n_ff)` entries, layer after layer.
    pub counts: Vec<u64>,
    /// Activation mass, same layout as `counts`.
    pub mass: Vec<f64>,
}

impl ActivationStats {
    /// Empty statistics for layers with the given neuron counts.
    pub fn new(n_ff_per_layer: &[usize]) -> Self {
        Self {
            n_ff: n_ff_per_layer.to_vec(),
            tokens: vec![0; n_ff_per_layer.len()],
            counts: n_ff_per_layer.iter().map(|&n| vec![0; n]).collect(),
            mass: n_ff_per_layer.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// Empty statistics for `n_layers` layers of `n_ff` neurons each.
    pub fn uniform(n_layers: usize, n_ff: usize) -> Self {
        Self::new(&vec![n_ff; n_layers])
    }

    pub fn n_layers(&self) -> usize {
        self.n_ff.len()
    }

    pub fn n_ff(&self, layer: usize) -> Result<usize, StatsError> {
        self.check_layer(layer)?;
        Ok(self.n_ff[layer])
    }

    /// Tokens recorded for `layer`.
    pub fn tokens(&self, layer: usize) -> Result<u64, StatsError> {
        self.check_layer(layer)?;
        Ok(self.tokens[layer])
    }

    /// Active-token count per neuron of `layer`.
    pub fn counts(&self, layer: usize) -> Result<&[u64], StatsError> {
        self.check_layer(layer)?;
        Ok(&self.counts[layer])
    }

    /// Activation mass per neuron of `layer`.
    pub fn mass(&self, layer: usize) -> Result<&[f64], StatsError> {
        self.check_layer(layer)?;
        Ok(&self.mass[layer])
    }

    fn check_layer(&self, layer: usize) -> Result<(), StatsError> {
        if layer < self.n_ff.len() {
            Ok(())
        } else {
            Err(StatsError::LayerOutOfRange {
                layer,
                n_layers: self.n_ff.len(),
            })
        }
    }

    /// Adds `rows` tokens of one layer: `values` is `rows × n_ff` row-major (the activation that
    /// multiplies the down projection, or whatever value the sparsity rule tests).
    pub fn record(
        &mut self,
        layer: usize,
        rows: usize,
        values: &[f32],
        threshold: f32,
    ) -> Result<(), StatsError> {
        self.check_layer(layer)?;
        let n_ff = self.n_ff[layer];
        if rows.checked_mul(n_ff) != Some(values.len()) {
            return Err(StatsError::ShapeMismatch {
                layer,
                rows,
                n_ff,
                len: values.len(),
            });
        }
        if !(threshold.is_finite() && threshold >= 0.0) {
            return Err(StatsError::BadThreshold(threshold));
        }
        if rows == 0 || n_ff == 0 {
            self.tokens[layer] += rows as u64;
            return Ok(());
        }
        let counts = &mut self.counts[layer];
        let mass = &mut self.mass[layer];
        if rows < 2 * ROWS_PER_TASK {
            accumulate(values, n_ff, threshold, counts, mass);
        } else {
            // Each task sums its rows into its own buffers (one allocation per task), then the
            // partial sums are added in task order, so results do not depend on scheduling.
            let partials: Vec<(Vec<u64>, Vec<f64>)> = values
                .par_chunks(ROWS_PER_TASK * n_ff)
                .map(|chunk| {
                    let mut c = vec![0u64; n_ff];
                    let mut m = vec![0f64; n_ff];
                    accumulate(chunk, n_ff, threshold, &mut c, &mut m);
                    (c, m)
                })
                .collect();
            for (c, m) in partials {
                counts.iter_mut().zip(&c).for_each(|(a, b)| *a += b);
                mass.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
            }
        }
        self.tokens[layer] += rows as u64;
        Ok(())
    }

    /// Fraction of tokens on which each neuron of `layer` was active (zeros before any token).
    pub fn frequencies(&self, layer: usize) -> Result<Vec<f64>, StatsError> {
        self.check_layer(layer)?;
        let t = self.tokens[layer];
        Ok(self.counts[layer]
            .iter()
            .map(|&c| if t == 0 { 0.0 } else { c as f64 / t as f64 })
            .collect())
    }

    /// Fraction of inactive (token, neuron) entries of `layer`; `None` before any token.
    pub fn sparsity(&self, layer: usize) -> Result<Option<f64>, StatsError> {
        self.check_layer(layer)?;
        let entries = self.tokens[layer] as f64 * self.n_ff[layer] as f64;
        if entries == 0.0 {
            return Ok(None);
        }
        let active: u64 = self.counts[layer].iter().sum();
        Ok(Some(1.0 - active as f64 / entries))
    }

    /// Fraction of inactive entries over all layers, each entry weighing the same (so a layer
    /// with more tokens or neurons weighs more); `None` before any token.
    pub fn mean_sparsity(&self) -> Option<f64> {
        let mut entries = 0f64;
        let mut active = 0u64;
        for l in 0..self.n_layers() {
            entries += self.tokens[l] as f64 * self.n_ff[l] as f64;
            active += self.counts[l].iter().sum::<u64>();
        }
        (entries > 0.0).then(|| 1.0 - active as f64 / entries)
    }

    /// Share of `layer`'s activations carried by its most frequent `fraction` of neurons
    /// (rounded up to whole neurons); `None` when the layer has no activation yet.
    pub fn top_share(&self, layer: usize, fraction: f64) -> Result<Option<f64>, StatsError> {
        self.check_layer(layer)?;
        let (top, total) = self.top_and_total(layer, fraction)?;
        Ok((total > 0).then(|| top as f64 / total as f64))
    }

    /// Share of all activations carried by the most frequent `fraction` of each layer's neurons.
    pub fn overall_top_share(&self, fraction: f64) -> Result<Option<f64>, StatsError> {
        let mut top = 0u64;
        let mut total = 0u64;
        for l in 0..self.n_layers() {
            let (t, a) = self.top_and_total(l, fraction)?;
            top += t;
            total += a;
        }
        Ok((total > 0).then(|| top as f64 / total as f64))
    }

    /// The common case of `overall_top_share`: the top 20% (PowerInfer's power-law observation).
    pub fn top20_share(&self) -> Option<f64> {
        self.overall_top_share(0.2).ok().flatten()
    }

    fn top_and_total(&self, layer: usize, fraction: f64) -> Result<(u64, u64), StatsError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(StatsError::BadFraction(fraction));
        }
        let counts = &self.counts[layer];
        let k = ((fraction * counts.len() as f64).ceil() as usize).min(counts.len());
        let total: u64 = counts.iter().sum();
        if k == 0 {
            return Ok((0, total));
        }
        let mut sorted = counts.clone();
        // Only the k largest are needed, in any order.
        sorted.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        Ok((sorted[..k].iter().sum(), total))
    }

    /// Adds another run's statistics (same layers and neuron counts) to these.
    pub fn merge(&mut self, other: &ActivationStats) -> Result<(), StatsError> {
        if self.n_ff != other.n_ff {
            return Err(StatsError::MergeShape {
                left: self.n_ff.clone(),
                right: other.n_ff.clone(),
            });
        }
        for l in 0..self.n_layers() {
            self.tokens[l] += other.tokens[l];
            self.counts[l]
                .iter_mut()
                .zip(&other.counts[l])
                .for_each(|(a, b)| *a += b);
            self.mass[l]
                .iter_mut()
                .zip(&other.mass[l])
                .for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    pub fn export(&self) -> StatsExport {
        StatsExport {
            n_ff: self.n_ff.iter().map(|&n| n as u64).collect(),
            tokens: self.tokens.clone(),
            counts: self.counts.concat(),
            mass: self.mass.concat(),
        }
    }

    /// Rebuilds statistics from `export`, checking that the vectors agree with each other.
    pub fn import(export: &StatsExport) -> Result<Self, StatsError> {
        let bad = |m: String| Err(StatsError::BadExport(m));
        if export.tokens.len() != export.n_ff.len() {
            return bad(format!(
                "{} token counts for {} layers",
                export.tokens.len(),
                export.n_ff.len()
            ));
        }
        let n_ff: Vec<usize> = export.n_ff.iter().map(|&n| n as usize).collect();
        let total: usize = n_ff.iter().sum();
        if export.counts.len() != total || export.mass.len() != total {
            return bad(format!(
                "{} counts and {} masses for {total} neurons",
                export.counts.len(),
                export.mass.len()
            ));
        }
        let mut stats = Self::new(&n_ff);
        stats.tokens.clone_from(&export.tokens);
        let mut at = 0;
        for (l, &n) in n_ff.iter().enumerate() {
            let counts = &export.counts[at..at + n];
            let mass = &export.mass[at..at + n];
            if let Some(j) = counts.iter().position(|&c| c > export.tokens[l]) {
                return bad(format!(
                    "layer {l} neuron {j} active on {} of {} tokens",
                    counts[j], export.tokens[l]
                ));
            }
            if let Some(j) = mass.iter().position(|m| !(m.is_finite() && *m >= 0.0)) {
                return bad(format!("layer {l} neuron {j} has mass {}", mass[j]));
            }
            stats.counts[l].copy_from_slice(counts);
            stats.mass[l].copy_from_slice(mass);
            at += n;
        }
        Ok(stats)
    }
}

/// The inner loop: branch-free so it vectorises.
fn accumulate(values: &[f32], n_ff: usize, threshold: f32, counts: &mut [u64], mass: &mut [f64]) {
    for row in values.chunks_exact(n_ff) {
        for ((v, c), m) in row.iter().zip(counts.iter_mut()).zip(mass.iter_mut()) {
            let a = v.abs();
            let on = a > threshold;
            *c += on as u64;
            *m += if on { a as f64 } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Random activations, roughly ReLU-like: about `zero_frac` of them exactly zero and some
    /// neurons far more active than others.
    fn random_values(rng: &mut SplitMix64, rows: usize, n_ff: usize) -> Vec<f32> {
        (0..rows * n_ff)
            .map(|i| {
                let j = i % n_ff;
                let p_on = 0.9 / (1.0 + j as f64 * 0.3);
                if rng.next_open01() < p_on {
                    (rng.next_open01() * 4.0 - 2.0) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// A scalar twin: counts and mass by plain nested loops over (row, neuron).
    fn reference(values: &[f32], rows: usize, n_ff: usize, t: f32) -> (Vec<u64>, Vec<f64>) {
        let mut c = vec![0u64; n_ff];
        let mut m = vec![0f64; n_ff];
        for r in 0..rows {
            for j in 0..n_ff {
                let v = values[r * n_ff + j].abs();
                if v > t {
                    c[j] += 1;
                    m[j] += v as f64;
                }
            }
        }
        (c, m)
    }

    #[test]
    fn record_matches_scalar_reference_small_and_parallel() {
        let mut rng = SplitMix64::new(7);
        for &(rows, n_ff, t) in &[(3usize, 17usize, 0.0f32), (100, 40, 0.5), (33, 5, 1.25)] {
            let values = random_values(&mut rng, rows, n_ff);
            let mut stats = ActivationStats::uniform(2, n_ff);
            stats.record(1, rows, &values, t).unwrap();
            let (c, m) = reference(&values, rows, n_ff, t);
            assert_eq!(stats.counts(1).unwrap(), &c[..]);
            for (a, b) in stats.mass(1).unwrap().iter().zip(&m) {
                assert!((a - b).abs() <= 1e-9 * b.max(1.0), "{a} vs {b}");
            }
            assert_eq!(stats.tokens(1).unwrap(), rows as u64);
            assert_eq!(stats.tokens(0).unwrap(), 0);
            assert!(stats.counts(0).unwrap().iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn sparsity_frequency_and_top_share_agree_with_direct_counts() {
        let mut rng = SplitMix64::new(11);
        let (rows, n_ff) = (50, 30);
        let a = random_values(&mut rng, rows, n_ff);
        let b = random_values(&mut rng, rows, n_ff);
        let mut stats = ActivationStats::uniform(2, n_ff);
        stats.record(0, rows, &a, 0.0).unwrap();
        stats.record(1, rows, &b, 0.0).unwrap();

        let zeros = |v: &[f32]| v.iter().filter(|x| **x == 0.0).count() as f64;
        let s0 = zeros(&a) / a.len() as f64;
        let s1 = zeros(&b) / b.len() as f64;
        assert!((stats.sparsity(0).unwrap().unwrap() - s0).abs() < 1e-12);
        assert!((stats.mean_sparsity().unwrap() - (s0 + s1) / 2.0).abs() < 1e-12);

        let freq = stats.frequencies(0).unwrap();
        for (j, f) in freq.iter().enumerate() {
            let on = (0..rows).filter(|r| a[r * n_ff + j] != 0.0).count();
            assert!((f - on as f64 / rows as f64).abs() < 1e-12);
        }

        // Top 20% of 30 neurons = 6: the six largest counts over the sum, by a full sort.
        let mut c = stats.counts(0).unwrap().to_vec();
        c.sort_unstable_by(|x, y| y.cmp(x));
        let expect = c[..6].iter().sum::<u64>() as f64 / c.iter().sum::<u64>() as f64;
        assert!((stats.top_share(0, 0.2).unwrap().unwrap() - expect).abs() < 1e-12);
        // Frequencies fall with the neuron index, so the top fifth carries well over a fifth.
        assert!(stats.top20_share().unwrap() > 0.4);
        assert_eq!(stats.top_share(0, 1.0).unwrap(), Some(1.0));
        assert_eq!(stats.top_share(0, 0.0).unwrap(), Some(0.0));
    }

    #[test]
    fn merge_equals_recording_both_runs() {
        let mut rng = SplitMix64::new(3);
        let (rows, n_ff) = (40, 12);
        let a = random_values(&mut rng, rows, n_ff);
        let b = random_values(&mut rng, rows, n_ff);
        let mut whole = ActivationStats::uniform(1, n_ff);
        whole.record(0, rows, &a, 0.3).unwrap();
        whole.record(0, rows, &b, 0.3).unwrap();
        let mut left = ActivationStats::uniform(1, n_ff);
        left.record(0, rows, &a, 0.3).unwrap();
        let mut right = ActivationStats::uniform(1, n_ff);
        right.record(0, rows, &b, 0.3).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left.counts(0).unwrap(), whole.counts(0).unwrap());
        assert_eq!(left.tokens(0).unwrap(), 2 * rows as u64);
        for (x, y) in left.mass(0).unwrap().iter().zip(whole.mass(0).unwrap()) {
            assert!((x - y).abs() < 1e-9);
        }
        let other = ActivationStats::uniform(1, n_ff + 1);
        assert!(matches!(
            left.merge(&other),
            Err(StatsError::MergeShape { .. })
        ));
    }

    #[test]
    fn export_import_round_trip_and_rejects_inconsistent_vectors() {
        let mut rng = SplitMix64::new(5);
        let mut stats = ActivationStats::new(&[8, 13]);
        stats
            .record(0, 9, &random_values(&mut rng, 9, 8), 0.0)
            .unwrap();
        stats
            .record(1, 4, &random_values(&mut rng, 4, 13), 0.1)
            .unwrap();
        let e = stats.export();
        assert_eq!(e.counts.len(), 21);
        assert_eq!(ActivationStats::import(&e).unwrap(), stats);
        // JSON keeps the counts exactly; serde_json's default float parsing may move the last bit.
        let back: StatsExport = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(
            (&back.n_ff, &back.tokens, &back.counts),
            (&e.n_ff, &e.tokens, &e.counts)
        );
        for (x, y) in back.mass.iter().zip(&e.mass) {
            assert!((x - y).abs() <= 1e-15 * y.abs());
        }

        let mut short = e.clone();
        short.mass.pop();
        assert!(matches!(
            ActivationStats::import(&short),
            Err(StatsError::BadExport(_))
        ));
        let mut over = e.clone();
        over.counts[0] = 10; // more than layer 0's 9 tokens
        assert!(matches!(
            ActivationStats::import(&over),
            Err(StatsError::BadExport(_))
        ));
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut stats = ActivationStats::uniform(2, 4);
        assert!(matches!(
            stats.record(2, 1, &[1.0; 4], 0.0),
            Err(StatsError::LayerOutOfRange {
                layer: 2,
                n_layers: 2
            })
        ));
        assert!(matches!(
            stats.record(0, 2, &[1.0; 7], 0.0),
            Err(StatsError::ShapeMismatch { .. })
        ));
        assert!(matches!(
            stats.record(0, 1, &[1.0; 4], f32::NAN),
            Err(StatsError::BadThreshold(_))
        ));
        assert!(matches!(
            stats.top_share(0, 1.5),
            Err(StatsError::BadFraction(_))
        ));
        assert_eq!(stats.sparsity(0).unwrap(), None);
    }
}
