//! The profile's summary: how well each layer's predictor does, how sparse the layer is, what
//! the predictors cost, and the run's settings, as an aligned text table or one JSON object.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::threshold::SparsityRule;

#[derive(Debug, Error, PartialEq)]
pub enum SummaryError {
    #[error("a summary needs at least one layer")]
    NoLayers,
    #[error("model size must be > 0 bytes")]
    ZeroModelBytes,
    #[error("layer {layer}: {field} = {value} is not in [0, 1]")]
    OutOfUnitRange {
        layer: usize,
        field: &'static str,
        value: f64,
    },
    #[error("layer {layer}: threshold {value} is not a finite value >= 0")]
    BadThreshold { layer: usize, value: f32 },
    #[error("wall time {0} s is not a finite value >= 0")]
    BadWallTime(f64),
    #[error("summary JSON: {0}")]
    Json(String),
}

/// What the run aimed for: a fixed sparsity, or the most sparsity a perplexity rise allows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparsityTarget {
    Sparsity(f32),
    MaxPplRise(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub model: String,
    pub corpus: String,
    pub tokens: u64,
    pub rule: SparsityRule,
    pub target: SparsityTarget,
    pub recall_target: f64,
    /// VRAM budget for placement, when one was given.
    pub budget_bytes: Option<u64>,
}

/// One layer's measurements, as the run produces them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMeasures {
    /// Share of truly active neurons that the predictor marks active.
    pub recall: f64,
    /// Share of predicted-active neurons that are truly active.
    pub precision: f64,
    /// Share of neurons the predictor marks inactive (what the engine skips).
    pub predicted_sparsity: f64,
    /// Share of neurons truly inactive.
    pub true_sparsity: f64,
    pub rank: usize,
    pub predictor_bytes: u64,
    pub threshold: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    pub layer: usize,
    pub recall: f64,
    pub precision: f64,
    pub predicted_sparsity: f64,
    pub true_sparsity: f64,
    pub rank: usize,
    pub predictor_bytes: u64,
    /// Predictor bytes as a percentage of the model file.
    pub predictor_percent: f64,
    pub threshold: f32,
}

/// Means over layers (each layer weighs the same); predictor bytes and percent are totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryTotals {
    pub recall: f64,
    pub precision: f64,
    pub predicted_sparsity: f64,
    pub true_sparsity: f64,
    pub rank: f64,
    pub predictor_bytes: u64,
    pub predictor_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileSummary {
    pub config: RunConfig,
    pub model_bytes: u64,
    pub layers: Vec<LayerSummary>,
    pub overall: SummaryTotals,
    pub wall_seconds: f64,
}

impl ProfileSummary {
    /// `layers[l]` is layer `l`'s measures.
    pub fn new(
        config: RunConfig,
        model_bytes: u64,
        layers: &[LayerMeasures],
        wall_seconds: f64,
    ) -> Result<Self, SummaryError> {
        if layers.is_empty() {
            return Err(SummaryError::NoLayers);
        }
        if model_bytes == 0 {
            return Err(SummaryError::ZeroModelBytes);
        }
        if !(wall_seconds.is_finite() && wall_seconds >= 0.0) {
            return Err(SummaryError::BadWallTime(wall_seconds));
        }
        let percent = |bytes: u64| bytes as f64 / model_bytes as f64 * 100.0;
        let mut out = Vec::with_capacity(layers.len());
        for (layer, m) in layers.iter().enumerate() {
            for (field, value) in [
                ("recall", m.recall),
                ("precision", m.precision),
                ("predicted_sparsity", m.predicted_sparsity),
                ("true_sparsity", m.true_sparsity),
            ] {
                if !(0.0..=1.0).contains(&value) {
                    return Err(SummaryError::OutOfUnitRange {
                        layer,
                        field,
                        value,
                    });
                }
            }
            if !(m.threshold.is_finite() && m.threshold >= 0.0) {
                return Err(SummaryError::BadThreshold {
                    layer,
                    value: m.threshold,
                });
            }
            out.push(LayerSummary {
                layer,
                recall: m.recall,
                precision: m.precision,
                predicted_sparsity: m.predicted_sparsity,
                true_sparsity: m.true_sparsity,
                rank: m.rank,
                predictor_bytes: m.predictor_bytes,
                predictor_percent: percent(m.predictor_bytes),
                threshold: m.threshold,
            });
        }
        let n = out.len() as f64;
        let mean = |f: fn(&LayerSummary) -> f64| out.iter().map(f).sum::<f64>() / n;
        let predictor_bytes = out.iter().map(|l| l.predictor_bytes).sum();
        let overall = SummaryTotals {
            recall: mean(|l| l.recall),
            precision: mean(|l| l.precision),
            predicted_sparsity: mean(|l| l.predicted_sparsity),
            true_sparsity: mean(|l| l.true_sparsity),
            rank: mean(|l| l.rank as f64),
            predictor_bytes,
            predictor_percent: percent(predictor_bytes),
        };
        Ok(Self {
            config,
            model_bytes,
            layers: out,
            overall,
            wall_seconds,
        })
    }

    /// One JSON object on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a summary has only serialisable fields")
    }

    pub fn from_json(text: &str) -> Result<Self, SummaryError> {
        serde_json::from_str(text).map_err(|e| SummaryError::Json(e.to_string()))
    }

    /// The run's settings, then one aligned row per layer and a row of means.
    pub fn render_table(&self) -> String {
        let c = &self.config;
        let target = match c.target {
            SparsityTarget::Sparsity(s) => format!("sparsity {s:.2}"),
            SparsityTarget::MaxPplRise(r) => format!("max perplexity rise {:.1}%", r * 100.0),
        };
        let budget = c.budget_bytes.map_or("none".to_string(), human_bytes);
        let mut text = format!(
            "model {} | corpus {} | {} tokens | rule {} | {} | recall target {:.3} | budget {} | {:.1} s\n",
            c.model, c.corpus, c.tokens, c.rule, target, c.recall_target, budget, self.wall_seconds
        );
        let header = [
            "layer",
            "recall",
            "precision",
            "pred sparsity",
            "true sparsity",
            "rank",
            "predictor",
            "% model",
            "threshold",
        ];
        let mut rows: Vec<Vec<String>> = self
            .layers
            .iter()
            .map(|l| {
                vec![
                    l.layer.to_string(),
                    format!("{:.4}", l.recall),
                    format!("{:.4}", l.precision),
                    format!("{:.4}", l.predicted_sparsity),
                    format!("{:.4}", l.true_sparsity),
                    l.rank.to_string(),
                    human_bytes(l.predictor_bytes),
                    format!("{:.2}", l.predictor_percent),
                    format!("{:.5}", l.threshold),
                ]
            })
            .collect();
        let o = &self.overall;
        rows.push(vec![
            "mean".into(),
            format!("{:.4}", o.recall),
            format!("{:.4}", o.precision),
            format!("{:.4}", o.predicted_sparsity),
            format!("{:.4}", o.true_sparsity),
            format!("{:.1}", o.rank),
            human_bytes(o.predictor_bytes),
            format!("{:.2}", o.predictor_percent),
            String::new(),
        ]);
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].len())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| -> String {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            padded.join("  ") + "\n"
        };
        text += &line(&header);
        text += &line(
            &widths
                .iter()
                .map(|&w| "-".repeat(w))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        for r in &rows {
            text += &line(&r.iter().map(String::as_str).collect::<Vec<_>>());
        }
        text
    }
}

/// Bytes in binary units with one decimal (B under 1 KiB).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn config() -> RunConfig {
        RunConfig {
            model: "smollm2".into(),
            corpus: "wiki.txt".into(),
            tokens: 4096,
            rule: SparsityRule::Product,
            target: SparsityTarget::MaxPplRise(0.05),
            recall_target: 0.99,
            budget_bytes: Some(3 << 30),
        }
    }

    fn random_measures(rng: &mut SplitMix64, n: usize) -> Vec<LayerMeasures> {
        (0..n)
            .map(|_| LayerMeasures {
                recall: 0.9 + 0.1 * rng.next_open01(),
                precision: 0.3 + 0.5 * rng.next_open01(),
                predicted_sparsity: 0.5 + 0.3 * rng.next_open01(),
                true_sparsity: 0.6 + 0.3 * rng.next_open01(),
                rank: 32 + rng.below(200) as usize,
                predictor_bytes: 10_000 + rng.below(2_000_000),
                threshold: rng.next_open01() as f32 * 0.1,
            })
            .collect()
    }

    #[test]
    fn means_and_percentages_match_direct_sums() {
        let mut rng = SplitMix64::new(61);
        let measures = random_measures(&mut rng, 7);
        let model_bytes = 90_000_000;
        let s = ProfileSummary::new(config(), model_bytes, &measures, 12.5).unwrap();
        let mut recall = 0.0;
        let mut bytes = 0u64;
        for (l, m) in measures.iter().enumerate() {
            recall += m.recall;
            bytes += m.predictor_bytes;
            assert_eq!(s.layers[l].layer, l);
            assert!(
                (s.layers[l].predictor_percent - 100.0 * m.predictor_bytes as f64 / 9e7).abs()
                    < 1e-12
            );
        }
        assert!((s.overall.recall - recall / 7.0).abs() < 1e-12);
        assert_eq!(s.overall.predictor_bytes, bytes);
        assert!((s.overall.predictor_percent - 100.0 * bytes as f64 / 9e7).abs() < 1e-12);
        let ranks: usize = measures.iter().map(|m| m.rank).sum();
        assert!((s.overall.rank - ranks as f64 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn json_is_one_object_that_round_trips() {
        let mut rng = SplitMix64::new(62);
        let s = ProfileSummary::new(config(), 1 << 28, &random_measures(&mut rng, 3), 1.0).unwrap();
        let json = s.to_json();
        assert!(!json.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v.is_object());
        assert_eq!(v["config"]["rule"], "product");
        assert_eq!(v["config"]["target"]["max_ppl_rise"], 0.05);
        assert_eq!(v["layers"].as_array().unwrap().len(), 3);
        let back = ProfileSummary::from_json(&json).unwrap();
        assert_eq!(back.layers.len(), 3);
        assert_eq!(back.config, s.config);
        assert_eq!(back.overall.predictor_bytes, s.overall.predictor_bytes);
        assert!(matches!(
            ProfileSummary::from_json("{}"),
            Err(SummaryError::Json(_))
        ));
    }

    #[test]
    fn table_columns_line_up() {
        let mut rng = SplitMix64::new(63);
        let s =
            ProfileSummary::new(config(), 1 << 28, &random_measures(&mut rng, 12), 3.25).unwrap();
        let table = s.render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("smollm2") && lines[0].contains("rule product"));
        assert!(lines[0].contains("max perplexity rise 5.0%") && lines[0].contains("3.0 GiB"));
        // Header, rule, 12 layers, mean: all the same width, columns separated at the same places.
        let body = &lines[1..];
        assert_eq!(body.len(), 15);
        let width = body[0].len();
        assert!(body.iter().all(|l| l.len() == width), "{table}");
        let gaps = |l: &str| -> Vec<usize> { l.match_indices("  ").map(|(i, _)| i).collect() };
        let rule_gaps = gaps(body[1]);
        assert_eq!(rule_gaps.len(), 8);
        for l in body {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert!(!cols.is_empty());
            for &g in &rule_gaps {
                assert_eq!(&l[g..g + 2], "  ", "column break at {g} in {l:?}");
            }
        }
        assert!(body[2].trim_start().starts_with("0 "));
        assert!(body[14].trim_start().starts_with("mean"));
        assert!(table.contains(&format!("{:.4}", s.layers[5].recall)));
    }

    #[test]
    fn bad_measures_are_errors() {
        let mut rng = SplitMix64::new(64);
        let mut m = random_measures(&mut rng, 2);
        assert_eq!(
            ProfileSummary::new(config(), 1, &[], 0.0).unwrap_err(),
            SummaryError::NoLayers
        );
        assert_eq!(
            ProfileSummary::new(config(), 0, &m, 0.0).unwrap_err(),
            SummaryError::ZeroModelBytes
        );
        m[1].recall = 1.5;
        assert!(matches!(
            ProfileSummary::new(config(), 1, &m, 0.0),
            Err(SummaryError::OutOfUnitRange {
                layer: 1,
                field: "recall",
                ..
            })
        ));
        m[1].recall = 0.5;
        m[0].threshold = -1.0;
        assert!(matches!(
            ProfileSummary::new(config(), 1, &m, 0.0),
            Err(SummaryError::BadThreshold { layer: 0, .. })
        ));
        m[0].threshold = 0.0;
        assert!(matches!(
            ProfileSummary::new(config(), 1, &m, f64::NAN),
            Err(SummaryError::BadWallTime(_))
        ));
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
