//! `powerinfer bench --compare-llama-cpp` against a stand-in `llama-bench`: a shell script
//! that checks it was given the model, threads, lengths and repetitions of the bench, and
//! prints JSON in llama-bench's `-o json` shape with known speeds.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A directory holding an executable `llama-bench` that expects exactly
/// `-m MODEL -t 2 -p 8 -n 4 -r 2 -o json`.
fn fake_llama_bench(model: &Path) -> PathBuf {
    let dir = common::scratch("llamabench", "bin");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        r#"#!/bin/sh
want="-m {} -t 2 -p 8 -n 4 -r 2 -o json"
if [ "$*" != "$want" ]; then
  echo "unexpected arguments: $*" >&2
  exit 3
fi
# Builtins only: the test runs it with a PATH that holds nothing else.
echo '[
  {{"build_commit": "fake123", "build_number": 1, "model_filename": "m.gguf", "n_threads": 2,
   "n_prompt": 8, "n_gen": 0, "n_depth": 0, "test_time": "t", "avg_ns": 1, "stddev_ns": 0,
   "avg_ts": 110.0, "stddev_ts": 10.0, "samples_ns": [1, 1, 1], "samples_ts": [100.0, 120.0, 110.0]}},
  {{"build_commit": "fake123", "build_number": 1, "model_filename": "m.gguf", "n_threads": 2,
   "n_prompt": 0, "n_gen": 4, "n_depth": 0, "test_time": "t", "avg_ns": 1, "stddev_ns": 0,
   "avg_ts": 11.0, "stddev_ts": 1.4, "samples_ns": [1, 1], "samples_ts": [10.0, 12.0]}}
]'
"#,
        model.display()
    );
    let exe = dir.join("llama-bench");
    std::fs::write(&exe, script).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn bench_cmd(model: &Path, path_env: &str, extra: &[&str]) -> std::process::Command {
    let mut cmd = common::powerinfer_cmd();
    cmd.env("PATH", path_env).args([
        "bench",
        "-m",
        model.to_str().unwrap(),
        "--cpu",
        "-t",
        "2",
        "-c",
        "64",
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "2",
        "--modes",
        "dense",
        "--bandwidth-mib",
        "16",
    ]);
    cmd.args(extra);
    cmd
}

#[test]
fn bench_reports_llama_bench_beside_its_own_speeds() {
    let model = common::scratch("llamabench", "syn.gguf");
    common::synth_small(&model, "q4_0", 5, 0.9);
    let dir = fake_llama_bench(&model);
    let path_env = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // JSON: llama-bench found on PATH, its medians, and our dense medians over them.
    let json = common::run_ok(&mut bench_cmd(
        &model,
        &path_env,
        &["--compare-llama-cpp", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let l = &v["llama_cpp"];
    assert_eq!(l["build_commit"], "fake123");
    assert_eq!(l["mode"], "dense");
    assert_eq!(l["prefill_tok_s"]["median"], 110.0);
    assert_eq!(l["prefill_tok_s"]["stddev"], 10.0);
    assert_eq!(l["decode_tok_s"]["median"], 11.0);
    let dense = &v["modes"][0];
    let ours_pp = dense["prefill_tok_s"]["median"].as_f64().unwrap();
    let ours_tg = dense["decode_tok_s"]["median"].as_f64().unwrap();
    let rel = |a: f64, b: f64| ((a - b) / b).abs() < 1e-12;
    assert!(rel(l["prefill_ratio"].as_f64().unwrap(), ours_pp / 110.0));
    assert!(rel(l["decode_ratio"].as_f64().unwrap(), ours_tg / 11.0));

    // Table, with llama-bench given by path: its rows beside ours.
    let table = common::run_ok(&mut bench_cmd(
        &model,
        "/nonexistent",
        &["--llama-bench", dir.join("llama-bench").to_str().unwrap()],
    ));
    assert!(table.contains("(build fake123), 2 threads"), "{table}");
    assert!(table.contains("| pp8 | 110.0 | 110.0 ± 10.0 |"), "{table}");
    assert!(table.contains("| tg4 | 11.0 | 11.0 ± 1.4 |"), "{table}");
}

#[test]
fn bench_without_llama_bench_says_so() {
    let model = common::scratch("llamabench-missing", "none.gguf");
    let out = bench_cmd(&model, "/nonexistent", &["--compare-llama-cpp"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("llama-bench not found on PATH"), "{err}");

    let out = bench_cmd(
        &model,
        "/nonexistent",
        &["--llama-bench", "/no/llama-bench"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--llama-bench /no/llama-bench does not exist"),
        "{err}"
    );
}
