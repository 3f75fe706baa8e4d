//! The bench report: per-mode speeds with their ratio to dense, bytes per decoded token, and
//! where that puts each mode against the measured memory bandwidth (the roofline).

use serde::{Deserialize, Serialize};

use super::{Bandwidth, DecodeTraffic, LlamaCppComparison, Machine, ModeRuns, Summary};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub path: String,
    pub name: Option<String>,
    pub arch: String,
    /// Random weights from `powerinfer synth`: figures say so.
    pub synthetic: bool,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_ff: usize,
    pub ffn: String,
    pub file_mib: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModeReport {
    pub mode: String,
    pub prefill_tok_s: Summary,
    pub decode_tok_s: Summary,
    /// Median over dense median (absent when dense was not measured).
    pub prefill_vs_dense: Option<f64>,
    pub decode_vs_dense: Option<f64>,
    /// Bytes read per decoded token: the FFN part and everything.
    pub ffn_bytes_per_token: f64,
    pub bytes_per_token: f64,
    /// bytes_per_token × median decode tok/s.
    pub achieved_gb_s: f64,
    /// achieved_gb_s / measured bandwidth, in percent.
    pub roofline_pct: f64,
    /// The decode speed the measured bandwidth allows for these bytes.
    pub roofline_tok_s: f64,
    /// Sparse modes: fraction of FFN neurons the predictor (or the oracle) selected, and
    /// fraction actually computed through down.
    pub predicted_fraction: Option<f64>,
    pub computed_fraction: Option<f64>,
}

impl ModeReport {
    /// `n_past` is the prompt length: decoding starts after it.
    pub fn new(
        runs: &ModeRuns,
        dense: Option<&ModeRuns>,
        traffic: &DecodeTraffic,
        bandwidth_gb_s: f64,
        n_past: usize,
        n_gen: usize,
    ) -> ModeReport {
        let prefill = Summary::new(runs.prefill_tok_s.clone());
        let decode = Summary::new(runs.decode_tok_s.clone());
        let ratio = |mine: f64, f: fn(&ModeRuns) -> &Vec<f64>| {
            dense.map(|d| mine / Summary::new(f(d).clone()).median)
        };
        let (ffn, total) = match runs.sparse_ffn_bytes_per_token() {
            Some(ffn) => (ffn, traffic.sparse_per_token(ffn, n_past, n_gen)),
            None => (
                traffic.ffn_bytes as f64,
                traffic.dense_per_token(n_past, n_gen),
            ),
        };
        let achieved = total * decode.median / 1e9;
        let c = &runs.decode_counters;
        let frac = |x: u64| (c.neurons > 0).then(|| x as f64 / c.neurons as f64);
        ModeReport {
            mode: runs.mode.name().to_string(),
            prefill_vs_dense: ratio(prefill.median, |r| &r.prefill_tok_s),
            decode_vs_dense: ratio(decode.median, |r| &r.decode_tok_s),
            prefill_tok_s: prefill,
            decode_tok_s: decode,
            ffn_bytes_per_token: ffn,
            bytes_per_token: total,
            achieved_gb_s: achieved,
            roofline_pct: 100.0 * achieved / bandwidth_gb_s,
            roofline_tok_s: bandwidth_gb_s * 1e9 / total,
            predicted_fraction: frac(c.predicted),
            computed_fraction: frac(c.computed),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub model: ModelInfo,
    pub backend: String,
    pub threads: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub reps: usize,
    /// Where the prompt and decode inputs came from: `text PATH (teacher-forced)` or
    /// `random prompt, greedy`.
    #[serde(default)]
    pub decode_inputs: String,
    pub bandwidth: Bandwidth,
    pub traffic: DecodeTraffic,
    pub modes: Vec<ModeReport>,
    /// The first mode's speeds, where earlier reports had them.
    pub prefill_tok_s: Summary,
    pub decode_tok_s: Summary,
    /// Peak resident memory of the process (VmHWM), and what it is allowed to be made of.
    pub peak_rss_mib: Option<f64>,
    pub model_file_mib: f64,
    /// How much of the model's bytes the kernel maps in 2 MiB pages after the runs (Linux;
    /// mappings that only partly overlap the model count whole); the rest is in 4 KiB pages,
    /// which slow decoding, or was never read (`page_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_huge_page_mib: Option<f64>,
    pub kv_cache_mib: f64,
    pub n_ctx: usize,
    /// llama.cpp's llama-bench on the same model and settings (`--compare-llama-cpp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llama_cpp: Option<LlamaCppComparison>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sparse::{FfnMode, SparseCounters};

    fn runs(mode: FfnMode, decode: Vec<f64>, bytes: u64) -> ModeRuns {
        let n = decode.len() as u64;
        ModeRuns {
            mode,
            prefill_tok_s: vec![100.0; decode.len()],
            decode_tok_s: decode,
            decode_counters: SparseCounters {
                rows: if bytes > 0 { 4 * n } else { 0 },
                neurons: if bytes > 0 { 400 * n } else { 0 },
                predicted: 80 * n,
                computed: 40 * n,
                bytes: bytes * n,
            },
            decoded: n,
        }
    }

    /// Worked by hand: 10 decode tok/s over 1000 + 100 + 10·(8 + 1) bytes.
    #[test]
    fn roofline_numbers() {
        let t = DecodeTraffic {
            layer_bytes: 1000,
            ffn_bytes: 600,
            head_bytes: 100,
            kv_bytes_per_pos: 10,
        };
        let dense = runs(FfnMode::Dense, vec![9.0, 10.0, 11.0], 0);
        let r = ModeReport::new(&dense, Some(&dense), &t, 1e-6, 8, 1);
        assert_eq!(r.bytes_per_token, 1190.0);
        assert!((r.achieved_gb_s - 1190.0 * 10.0 / 1e9).abs() < 1e-15);
        assert!((r.roofline_pct - 100.0 * 11_900.0 / 1000.0).abs() < 1e-9);
        assert!((r.roofline_tok_s - 1000.0 / 1190.0).abs() < 1e-12);
        assert_eq!(r.decode_vs_dense, Some(1.0));
        assert_eq!(r.predicted_fraction, None);

        let sparse = runs(FfnMode::Predicted, vec![30.0, 20.0, 25.0], 60);
        let s = ModeReport::new(&sparse, Some(&dense), &t, 1e-6, 8, 1);
        assert_eq!(s.bytes_per_token, 1190.0 - 600.0 + 60.0);
        assert_eq!(s.decode_vs_dense, Some(2.5));
        assert_eq!(s.predicted_fraction, Some(0.2));
        assert_eq!(s.computed_fraction, Some(0.1));
    }
}
