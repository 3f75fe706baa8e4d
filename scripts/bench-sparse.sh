#!/usr/bin/env bash
# The sparse FFN's benchmark on the SYNTHETIC 1B-class ReLU model of BENCHMARKS.md: dense vs
# oracle-sparse vs predicted-sparse decode, 2 threads, prompt 64, decode 64, 5 interleaved
# repetitions, with the roofline; table on stdout, JSON and SVG in target/bench/.
# Makes what is missing first: the model (`synth`, seconds) and its profile (~15 min on 2 cores).
# Usage: scripts/bench-sparse.sh [--no-mmap]   (POWERINFER_SYN: working folder)
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
for a in "$@"; do
  case "$a" in
    --no-mmap) extra+=(--no-mmap) ;;
    *) echo "unknown argument $a (expected --no-mmap)" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -q
# The profile's calibration text and the bench's teacher-forced decode text.
scripts/fetch-corpus.sh
pi="$PWD/target/release/powerinfer"
dir="${POWERINFER_SYN:-$HOME/.cache/powerinfer/synthetic}"
mkdir -p "$dir" target/bench
m="$dir/syn1b.gguf"
[ -f "$m" ] || "$pi" synth -o "$m" --hidden 2048 --ffn 8192 --layers 16 --heads 32 --kv-heads 8 \
  --activation reglu --type q4_0 --sparsity 0.9 --skew 1 --vocab 32000 --seed 1 -t 2
[ -f "$dir/syn1b.powerinfer.gguf" ] || "$pi" profile -m "$m" -t 2
"$pi" bench -m "$m" -t 2 -p 64 -n 64 -r 5 "${extra[@]}" \
  --json-out target/bench/syn1b.json --plot target/bench/syn1b.svg
