#!/usr/bin/env bash
# Greedy completions of the same prompt by llama.cpp and by powerinfer, side by side, for each
# GGUF given: shows that a file (e.g. a `powerinfer quantize` output) loads in llama.cpp and
# that both engines agree on it. llama.cpp comes prebuilt (CPU) with the npm package
# node-llama-cpp, installed once into ~/.cache/powerinfer/node-llama-cpp (needs node and npm).
#
#   scripts/llama-cpp-check.sh [-p PROMPT] [-n TOKENS] MODEL.gguf...
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="The capital of France is"
n=16
while getopts "p:n:" o; do
  case "$o" in
    p) prompt="$OPTARG" ;;
    n) n="$OPTARG" ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-p PROMPT] [-n TOKENS] MODEL.gguf..." >&2; exit 2; }
command -v npm >/dev/null || { echo "error: npm not found (install Node.js 20+)" >&2; exit 1; }
dir="${HOME}/.cache/powerinfer/node-llama-cpp"
if [ ! -d "${dir}/node_modules/node-llama-cpp" ]; then
  mkdir -p "${dir}"
  echo '{"name":"powerinfer-llama-cpp-check","private":true,"type":"module"}' >"${dir}/package.json"
  npm install --prefix "${dir}" --no-audit --no-fund --loglevel=error node-llama-cpp@3.22.1
fi
cp scripts/llama-cpp-complete.mjs "${dir}/complete.mjs"
bin=target/release/powerinfer
[ -x "$bin" ] || cargo build --release --locked
models=()
for m in "$@"; do models+=("$(realpath "$m")"); done
node "${dir}/complete.mjs" "$prompt" "$n" "${models[@]}" | while read -r line; do
  model="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["model"])' "$line")"
  theirs="$(python3 -c 'import json,sys; print(repr(json.loads(sys.argv[1])["text"]))' "$line")"
  # `run` ends its output with one newline of its own.
  ours="$("$bin" run -m "$model" -p "$prompt" -n "$n" --temp 0 -t 2 2>/dev/null |
    python3 -c 'import sys; s = sys.stdin.read(); print(repr(s[:-1] if s.endswith("\n") else s))')"
  same=$([ "$theirs" = "$ours" ] && echo same || echo DIFFERENT)
  printf '%s\n  llama.cpp:  %s\n  powerinfer: %s\n  %s\n' "$model" "$theirs" "$ours" "$same"
done
