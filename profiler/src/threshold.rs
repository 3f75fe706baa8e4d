//! Per-layer activation thresholds for models whose activation is never exactly zero (SiLU,
//! GeLU): a neuron counts as inactive when its value is at most the layer's threshold, and the
//! threshold is the quantile of the layer's values that gives the wanted sparsity.
//!
//! Values are sampled with a bounded reservoir (Li's "Algorithm L": it draws random numbers only
//! on replacements, so most values cost one comparison) seeded per layer, so a run is
//! reproducible and the result does not depend on how the values were split into calls.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rng::SplitMix64;

/// Which value decides whether a neuron is active; the engine computes it, the calibrator
/// only sees the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparsityRule {
    /// ReLU-family activation: inactive exactly when the activation is zero (threshold 0).
    Relu,
    /// CATS: `|act(gate)|` against the threshold.
    Gate,
    /// `|act(gate) · up|` against the threshold.
    Product,
}

impl SparsityRule {
    pub fn name(self) -> &'static str {
        match self {
            SparsityRule::Relu => "relu",
            SparsityRule::Gate => "gate",
            SparsityRule::Product => "product",
        }
    }

    /// Whether thresholds must be calibrated (ReLU models use 0).
    pub fn needs_calibration(self) -> bool {
        self != SparsityRule::Relu
    }
}

impl fmt::Display for SparsityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SparsityRule {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relu" => Ok(SparsityRule::Relu),
            "gate" => Ok(SparsityRule::Gate),
            "product" => Ok(SparsityRule::Product),
            _ => Err(ThresholdError::UnknownRule(s.to_string())),
        }
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum ThresholdError {
    #[error("unknown sparsity rule {0:?}: expected relu, gate or product")]
    UnknownRule(String),
    #[error("reservoir capacity must be at least 1")]
    ZeroCapacity,
    #[error("layer {layer} is out of range: the calibrator has {n_layers} layers")]
    LayerOutOfRange { layer: usize, n_layers: usize },
    #[error("sparsity {0} is outside [0, 1]")]
    BadSparsity(f32),
    #[error("layer {0} has no samples: observe its values before asking for a threshold")]
    NoSamples(usize),
    #[error("{given} sparsities given for {n_layers} layers")]
    CountMismatch { given: usize, n_layers: usize },
}

/// One layer's reservoir of `|v|` samples.
#[derive(Debug, Clone)]
struct Reservoir {
    samples: Vec<f32>,
    seen: u64,
    /// Index (in the stream) of the next value to enter, once the reservoir is full.
    next: u64,
    /// Algorithm L's running maximum of the uniform keys.
    w: f64,
    rng: SplitMix64,
}

impl Reservoir {
    fn new(seed: u64) -> Self {
        Self {
            samples: Vec::new(),
            seen: 0,
            next: 0,
            w: 1.0,
            rng: SplitMix64::new(seed),
        }
    }

    fn advance(&mut self, k: usize) {
        let u = self.rng.next_open01();
        self.w *= (u.ln() / k as f64).exp();
        let u = self.rng.next_open01();
        let skip = (u.ln() / (1.0 - self.w).ln()).floor();
        // A NaN or huge skip (w rounding to 1) means no further value will enter.
        let skip = if skip.is_finite() && skip >= 0.0 {
            skip as u64
        } else {
            u64::MAX
        };
        self.next = self.next.saturating_add(skip).saturating_add(1);
    }

    fn observe(&mut self, values: &[f32], k: usize) {
        let mut rest = values;
        while self.samples.len() < k {
            let Some((v, tail)) = rest.split_first() else {
                return;
            };
            self.samples.push(v.abs());
            self.seen += 1;
            rest = tail;
            if self.samples.len() == k {
                // `next` is the stream index of the last value taken; the first skip counts on.
                self.next = self.seen - 1;
                self.advance(k);
            }
        }
        let start = self.seen;
        let end = start + rest.len() as u64;
        while self.next < end {
            let v = rest[(self.next - start) as usize].abs();
            let slot = self.rng.below(k as u64) as usize;
            self.samples[slot] = v;
            self.advance(k);
        }
        self.seen = end;
    }
}

/// Collects per-layer samples of the rule's values and turns them into thresholds.
#[derive(Debug, Clone)]
pub struct ThresholdCalibrator {
    capacity: usize,
    layers: Vec<Reservoir>,
}

impl ThresholdCalibrator {
    /// `capacity` samples are kept per layer (memory: 4 bytes each); `seed` fixes the sampling.
    pub fn new(n_layers: usize, capacity: usize, seed: u64) -> Result<Self, ThresholdError> {
        if capacity == 0 {
            return Err(ThresholdError::ZeroCapacity);
        }
        let layers = (0..n_layers)
            .map(|l| Reservoir::new(seed ^ (l as u64).wrapping_mul(0xA24B_AED4_963E_E407)))
            .collect();
        Ok(Self { capacity, layers })
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    fn layer(&self, layer: usize) -> Result<&Reservoir, ThresholdError> {
        self.layers
            .get(layer)
            .ok_or(ThresholdError::LayerOutOfRange {
                layer,
                n_layers: self.layers.len(),
            })
    }

    /// Feeds values of `layer` (any number, any split into calls); their absolute values are
    /// sampled.
    pub fn observe(&mut self, layer: usize, values: &[f32]) -> Result<(), ThresholdError> {
        let n_layers = self.layers.len();
        let k = self.capacity;
        let r = self
            .layers
            .get_mut(layer)
            .ok_or(ThresholdError::LayerOutOfRange { layer, n_layers })?;
        r.observe(values, k);
        Ok(())
    }

    /// Values seen for `layer` so far.
    pub fn seen(&self, layer: usize) -> Result<u64, ThresholdError> {
        Ok(self.layer(layer)?.seen)
    }

    /// Samples held for `layer` (at most the capacity).
    pub fn samples(&self, layer: usize) -> Result<&[f32], ThresholdError> {
        Ok(&self.layer(layer)?.samples)
    }

    /// The threshold `t` such that a fraction `sparsity` of the layer's sampled values satisfy
    /// `|v| <= t`: the `ceil(sparsity · n)`-th smallest sample. Sparsity 0 gives 0 (only exact
    /// zeros count as inactive).
    pub fn threshold(&self, layer: usize, sparsity: f32) -> Result<f32, ThresholdError> {
        if !(0.0..=1.0).contains(&sparsity) {
            return Err(ThresholdError::BadSparsity(sparsity));
        }
        let samples = &self.layer(layer)?.samples;
        if samples.is_empty() {
            return Err(ThresholdError::NoSamples(layer));
        }
        let n = samples.len();
        let k = ((sparsity as f64 * n as f64).ceil() as usize).min(n);
        if k == 0 {
            return Ok(0.0);
        }
        let mut copy = samples.clone();
        let (_, t, _) = copy.select_nth_unstable_by(k - 1, f32::total_cmp);
        Ok(*t)
    }

    /// One threshold per layer, for per-layer sparsities.
    pub fn thresholds(&self, sparsities: &[f32]) -> Result<Vec<f32>, ThresholdError> {
        if sparsities.len() != self.layers.len() {
            return Err(ThresholdError::CountMismatch {
                given: sparsities.len(),
                n_layers: self.layers.len(),
            });
        }
        sparsities
            .iter()
            .enumerate()
            .map(|(l, &s)| self.threshold(l, s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SiLU-like values: mostly small with a heavy tail, signed.
    fn random_values(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let g = -rng.next_open01().ln(); // exponential
                let sign = if rng.next_u64() & 1 == 0 { -1.0 } else { 1.0 };
                (sign * g * g * 0.3) as f32
            })
            .collect()
    }

    /// The exact quantile by a full sort, independent of the selection code.
    fn exact(values: &[f32], s: f32) -> f32 {
        let mut a: Vec<f32> = values.iter().map(|v| v.abs()).collect();
        a.sort_by(f32::total_cmp);
        let k = (s as f64 * a.len() as f64).ceil() as usize;
        if k == 0 {
            0.0
        } else {
            a[k - 1]
        }
    }

    #[test]
    fn equals_exact_quantile_when_everything_fits() {
        let mut rng = SplitMix64::new(1);
        let values = random_values(&mut rng, 5000);
        let mut cal = ThresholdCalibrator::new(1, 5000, 9).unwrap();
        cal.observe(0, &values).unwrap();
        for s in [0.0f32, 0.1, 0.37, 0.5, 0.9, 0.999, 1.0] {
            assert_eq!(cal.threshold(0, s).unwrap(), exact(&values, s), "s = {s}");
        }
        // The defining property: a fraction >= s of the entries are at most t.
        let t = cal.threshold(0, 0.7).unwrap();
        let at_most = values.iter().filter(|v| v.abs() <= t).count() as f64 / 5000.0;
        assert!((0.7..0.7 + 1.0 / 5000.0 + 1e-12).contains(&at_most));
    }

    #[test]
    fn sampled_quantile_is_close_on_full_data_even_when_sorted() {
        let mut rng = SplitMix64::new(2);
        let mut values = random_values(&mut rng, 400_000);
        for sorted in [false, true] {
            if sorted {
                // Order is the worst case for a biased sampler: early values are all small.
                values.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
            }
            let mut cal = ThresholdCalibrator::new(1, 20_000, 4).unwrap();
            cal.observe(0, &values).unwrap();
            assert_eq!(cal.samples(0).unwrap().len(), 20_000);
            assert_eq!(cal.seen(0).unwrap(), 400_000);
            for s in [0.3f32, 0.5, 0.8, 0.95] {
                let t = cal.threshold(0, s).unwrap();
                let frac =
                    values.iter().filter(|v| v.abs() <= t).count() as f64 / values.len() as f64;
                assert!(
                    (frac - s as f64).abs() < 0.015,
                    "sorted {sorted} s {s}: got {frac}"
                );
            }
        }
    }

    #[test]
    fn every_position_is_kept_with_probability_k_over_n() {
        // Uniform sampling: over many seeds each of n stream positions lands in a k-slot
        // reservoir k/n of the time (here 0.25, standard error about 0.003).
        let (n, k, trials) = (20usize, 5usize, 20_000u64);
        let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut hits = vec![0u64; n];
        for seed in 0..trials {
            let mut cal = ThresholdCalibrator::new(1, k, seed).unwrap();
            cal.observe(0, &values).unwrap();
            for &v in cal.samples(0).unwrap() {
                hits[v as usize] += 1;
            }
        }
        for (i, &h) in hits.iter().enumerate() {
            let p = h as f64 / trials as f64;
            assert!(
                (p - 0.25).abs() < 0.015,
                "position {i} kept with probability {p}"
            );
        }
    }

    #[test]
    fn independent_of_call_split_and_reproducible() {
        let mut rng = SplitMix64::new(3);
        let values = random_values(&mut rng, 30_000);
        let mut whole = ThresholdCalibrator::new(2, 1000, 77).unwrap();
        whole.observe(1, &values).unwrap();
        let mut pieces = ThresholdCalibrator::new(2, 1000, 77).unwrap();
        let mut at = 0;
        for len in (1..).map(|i| (i * 37) % 900 + 1) {
            let end = (at + len).min(values.len());
            pieces.observe(1, &values[at..end]).unwrap();
            at = end;
            if at == values.len() {
                break;
            }
        }
        assert_eq!(whole.samples(1).unwrap(), pieces.samples(1).unwrap());
        let mut other_seed = ThresholdCalibrator::new(2, 1000, 78).unwrap();
        other_seed.observe(1, &values).unwrap();
        assert_ne!(whole.samples(1).unwrap(), other_seed.samples(1).unwrap());
        assert!(matches!(
            whole.threshold(0, 0.5),
            Err(ThresholdError::NoSamples(0))
        ));
    }

    #[test]
    fn rule_names_and_bad_input() {
        for rule in [
            SparsityRule::Relu,
            SparsityRule::Gate,
            SparsityRule::Product,
        ] {
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{}\"", rule.name()));
            assert_eq!(serde_json::from_str::<SparsityRule>(&json).unwrap(), rule);
            assert_eq!(rule.name().parse::<SparsityRule>().unwrap(), rule);
        }
        assert!("silu".parse::<SparsityRule>().is_err());
        assert!(matches!(
            ThresholdCalibrator::new(1, 0, 0),
            Err(ThresholdError::ZeroCapacity)
        ));
        let mut cal = ThresholdCalibrator::new(2, 10, 0).unwrap();
        assert!(matches!(
            cal.observe(2, &[1.0]),
            Err(ThresholdError::LayerOutOfRange { .. })
        ));
        cal.observe(0, &[1.0, -2.0]).unwrap();
        assert!(matches!(
            cal.threshold(0, 1.5),
            Err(ThresholdError::BadSparsity(_))
        ));
        assert!(matches!(
            cal.thresholds(&[0.5]),
            Err(ThresholdError::CountMismatch { .. })
        ));
    }
}
