#!/usr/bin/env bash
# Dense-engine speed on the registry models, llama-bench style: prompt 64, decode 64,
# 2 threads, 5 repetitions, median. Prints a table per model and writes JSON to target/bench/.
# Usage: scripts/bench.sh [threads]   (models from scripts/fetch-models.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-2}"
cargo build --release --locked -q
dir="${POWERINFER_MODELS:-$HOME/.cache/powerinfer/models}"
mkdir -p target/bench
for m in SmolLM2-135M-Instruct.Q4_1 gemma-3-270m.Q4_K_M qwen2.5-coder-0.5b.Q4_K_M; do
  f="$dir/$m.gguf"
  [ -f "$f" ] || { echo "skipping $m: not installed (scripts/fetch-models.sh)"; continue; }
  target/release/powerinfer bench -m "$f" -t "$threads" -p 64 -n 64 -r 5 --json-out "target/bench/$m.json"
done
