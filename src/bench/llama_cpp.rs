//! `powerinfer bench --compare-llama-cpp`: the same measurement by llama.cpp's `llama-bench`
//! (same model, threads, prompt and generation lengths, repetitions), read from its JSON
//! output, so a report shows both engines' speeds side by side.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::BenchError;

/// One test of llama-bench's `-o json` output (the fields this comparison reads; llama-bench
/// writes many more).
#[derive(Clone, Debug, Deserialize)]
struct LlamaBenchTest {
    n_prompt: usize,
    n_gen: usize,
    avg_ts: f64,
    #[serde(default)]
    stddev_ts: f64,
    #[serde(default)]
    samples_ts: Vec<f64>,
    #[serde(default)]
    build_commit: Option<String>,
}

/// llama-bench's speed for one test, tokens per second.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaSpeed {
    /// Median of its per-repetition speeds (its mean when it gave none), comparable to our
    /// medians.
    pub median: f64,
    pub avg: f64,
    pub stddev: f64,
    pub samples: Vec<f64>,
}

impl LlamaSpeed {
    fn of(t: &LlamaBenchTest) -> LlamaSpeed {
        let median = if t.samples_ts.is_empty() {
            t.avg_ts
        } else {
            let mut s = t.samples_ts.clone();
            s.sort_by(f64::total_cmp);
            let n = s.len();
            if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            }
        };
        LlamaSpeed {
            median,
            avg: t.avg_ts,
            stddev: t.stddev_ts,
            samples: t.samples_ts.clone(),
        }
    }
}

/// llama-bench's prefill (`ppP`) and decode (`tgN`) speeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaBenchResult {
    pub llama_bench: String,
    pub build_commit: Option<String>,
    pub prefill_tok_s: LlamaSpeed,
    pub decode_tok_s: LlamaSpeed,
}

/// Our speeds beside llama.cpp's, with our median over its median.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LlamaCppComparison {
    #[serde(flatten)]
    pub llama: LlamaBenchResult,
    /// The FFN mode whose speeds are compared (dense when measured).
    pub mode: String,
    pub prefill_ratio: f64,
    pub decode_ratio: f64,
}

impl LlamaCppComparison {
    pub fn new(
        llama: LlamaBenchResult,
        mode: &str,
        prefill_median: f64,
        decode_median: f64,
    ) -> Self {
        LlamaCppComparison {
            prefill_ratio: prefill_median / llama.prefill_tok_s.median,
            decode_ratio: decode_median / llama.decode_tok_s.median,
            mode: mode.to_string(),
            llama,
        }
    }
}

/// The llama-bench to run: `explicit` if given (it must exist), else `llama-bench` on `PATH`.
pub fn find_llama_bench(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(BenchError::LlamaBench(format!(
                "--llama-bench {} does not exist",
                p.display()
            )))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("llama-bench"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BenchError::LlamaBench(
                "llama-bench not found on PATH (install llama.cpp or give --llama-bench PATH)"
                    .into(),
            )
        })
}

/// Picks the prefill test (`n_prompt` tokens, no generation) and the decode test (`n_gen`
/// tokens, no prompt) out of llama-bench's JSON array.
pub fn parse_llama_bench_json(
    text: &str,
    n_prompt: usize,
    n_gen: usize,
) -> Result<(Option<String>, LlamaSpeed, LlamaSpeed), BenchError> {
    let tests: Vec<LlamaBenchTest> = serde_json::from_str(text)
        .map_err(|e| BenchError::LlamaBench(format!("unreadable llama-bench JSON: {e}")))?;
    let find = |p: usize, g: usize| {
        tests
            .iter()
            .find(|t| t.n_prompt == p && t.n_gen == g)
            .ok_or_else(|| {
                BenchError::LlamaBench(format!(
                    "llama-bench output has no test with n_prompt {p} and n_gen {g}"
                ))
            })
    };
    let pp = find(n_prompt, 0)?;
    let tg = find(0, n_gen)?;
    Ok((
        pp.build_commit.clone(),
        LlamaSpeed::of(pp),
        LlamaSpeed::of(tg),
    ))
}

/// Runs `exe -m model -t threads -p n_prompt -n n_gen -r reps -o json` and reads its speeds.
pub fn run_llama_bench(
    exe: &Path,
    model: &Path,
    threads: usize,
    n_prompt: usize,
    n_gen: usize,
    reps: usize,
) -> Result<LlamaBenchResult, BenchError> {
    let out = Command::new(exe)
        .arg("-m")
        .arg(model)
        .args(["-t", &threads.to_string()])
        .args(["-p", &n_prompt.to_string()])
        .args(["-n", &n_gen.to_string()])
        .args(["-r", &reps.to_string()])
        .args(["-o", "json"])
        .output()
        .map_err(|e| BenchError::LlamaBench(format!("running {}: {e}", exe.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").trim();
        return Err(BenchError::LlamaBench(format!(
            "{} failed ({}): {last}",
            exe.display(),
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (build_commit, prefill_tok_s, decode_tok_s) =
        parse_llama_bench_json(&text, n_prompt, n_gen)?;
    Ok(LlamaBenchResult {
        llama_bench: exe.display().to_string(),
        build_commit,
        prefill_tok_s,
        decode_tok_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = r#"[
      {"build_commit": "0c1e570", "build_number": 1, "model_filename": "m.gguf", "n_threads": 2,
       "n_prompt": 64, "n_gen": 0, "n_depth": 0, "avg_ns": 1, "stddev_ns": 0,
       "avg_ts": 101.0, "stddev_ts": 2.0, "samples_ns": [1, 1, 1], "samples_ts": [99.0, 104.0, 100.0]},
      {"build_commit": "0c1e570", "build_number": 1, "model_filename": "m.gguf", "n_threads": 2,
       "n_prompt": 0, "n_gen": 32, "n_depth": 0, "avg_ns": 1, "stddev_ns": 0,
       "avg_ts": 20.5, "stddev_ts": 0.5, "samples_ns": [1, 1], "samples_ts": [20.0, 21.0]}
    ]"#;

    #[test]
    fn reads_prefill_and_decode_tests() {
        let (commit, pp, tg) = parse_llama_bench_json(OUT, 64, 32).unwrap();
        assert_eq!(commit.as_deref(), Some("0c1e570"));
        assert_eq!((pp.median, pp.avg, pp.stddev), (100.0, 101.0, 2.0));
        assert_eq!((tg.median, tg.avg), (20.5, 20.5));
        assert_eq!(tg.samples, [20.0, 21.0]);
        let c = LlamaCppComparison::new(
            LlamaBenchResult {
                llama_bench: "llama-bench".into(),
                build_commit: commit,
                prefill_tok_s: pp,
                decode_tok_s: tg,
            },
            "dense",
            150.0,
            41.0,
        );
        assert_eq!((c.prefill_ratio, c.decode_ratio), (1.5, 2.0));
    }

    #[test]
    fn a_missing_test_or_bad_json_is_an_error() {
        let e = parse_llama_bench_json(OUT, 128, 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_prompt 128"), "{e}");
        assert!(parse_llama_bench_json("not json", 64, 32).is_err());
    }
}
