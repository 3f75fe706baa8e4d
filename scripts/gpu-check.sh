#!/usr/bin/env bash
# GPU checks from prebuilt binaries: the machine with the GPU has no Rust toolchain and no
# network, so everything is built here and carried there (cuda/README.md has the walk-through).
#
#   scripts/gpu-check.sh pack [PART_MIB]   here: build, strip and lay out .gpu/ (git-ignored):
#                                          .gpu/bin (binaries), .gpu/p0, .gpu/p1, ... (model
#                                          files cut into parts of PART_MIB, default 40)
#   scripts/gpu-check.sh stash             there: keep whatever of .gpu/ this call carried in
#                                          /tmp/powerinfer-gpu (for models split over calls)
#   scripts/gpu-check.sh run               there: stash, rebuild the models from their parts,
#                                          run the GPU tests (a missing GPU fails them) and a
#                                          dense benchmark (GPU, then CPU), then the hybrid
#                                          checks and bench (see hybrid_bench), logs into $OUT
#   scripts/gpu-check.sh hybrid            there: only the hybrid checks and bench
set -euo pipefail
cd "$(dirname "$0")/.."
stash=/tmp/powerinfer-gpu
tests=(cuda_kernels cuda_model cuda_compile hybrid)

pack() {
  local part_mib="${1:-40}"
  rm -rf .gpu && mkdir -p .gpu/bin
  cargo build --release --locked
  cp target/release/powerinfer .gpu/bin/
  local args=() t exe
  for t in "${tests[@]}"; do args+=(--test "$t"); done
  # cargo prints "Executable tests/NAME.rs (target/release/deps/NAME-HASH)" per test binary.
  cargo test --release --locked --no-run "${args[@]}" 2>&1 |
    sed -n 's/.*Executable tests\/\([a-z_]*\)\.rs (\(.*\))/\1 \2/p' |
    while read -r t exe; do cp "$exe" ".gpu/bin/$t"; done
  strip --strip-debug .gpu/bin/*
  local models="${POWERINFER_MODELS:-$HOME/.cache/powerinfer/models}"
  local tmp
  tmp="$(mktemp -d)"
  if [ -e "$models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    (cd "$tmp" && split -b "${part_mib}M" -d -a 2 \
      "$models/SmolLM2-135M-Instruct.Q4_1.gguf" SmolLM2-135M-Instruct.Q4_1.gguf.part)
  fi
  local i=0 f
  for f in "$tmp"/*; do
    [ -e "$f" ] || continue
    mkdir -p ".gpu/p$i" && mv "$f" ".gpu/p$i/" && i=$((i + 1))
  done
  rmdir "$tmp"
  du -sh .gpu/* | sed 's/^/  /'
  echo "carry .gpu/bin in the last call and one .gpu/pN per call (see cuda/README.md)"
}

do_stash() {
  mkdir -p "$stash/bin" "$stash/parts"
  [ -d .gpu/bin ] && cp -f .gpu/bin/* "$stash/bin/"
  local d
  for d in .gpu/p*; do
    [ -d "$d" ] && cp -f "$d"/* "$stash/parts/"
  done
  ls -la "$stash/bin" "$stash/parts"
}

run() {
  do_stash
  local out="${OUT:-/tmp/powerinfer-gpu-out}"
  mkdir -p "$out" "$stash/models"
  local parts name
  for parts in "$stash"/parts/*.part00; do
    [ -e "$parts" ] || continue
    name="$(basename "${parts%.part00}")"
    cat "$stash/parts/$name".part* >"$stash/models/$name"
  done
  ls -la "$stash/models"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  # NVRTC: the image's toolkit, else the one pip installed for PyTorch.
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)/nvidia/cu13/lib; do
    [ -e "$d/libnvrtc.so.13" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && break
  done
  export POWERINFER_MODELS="$stash/models" POWERINFER_REQUIRE_GPU=1
  export POWERINFER_KERNEL_CACHE="$stash/kernels" RUST_BACKTRACE=1
  local status=0 t
  for t in "${tests[@]}"; do
    echo "== $t"
    # --nocapture: the relative errors each test prints go into the log.
    "$stash/bin/$t" --test-threads=1 --nocapture 2>&1 | tee "$out/$t.log" || status=1
  done
  local m="$stash/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ -e "$m" ]; then
    echo "== bench"
    "$stash/bin/powerinfer" bench -m "$m" --gpu -p 64 -n 64 -r 5 --json-out "$out/bench-gpu.json" || status=1
    "$stash/bin/powerinfer" bench -m "$m" --cpu -p 64 -n 64 -r 3 --json-out "$out/bench-cpu.json" || status=1
    "$stash/bin/powerinfer" run -m "$m" --gpu -p "The capital of France is" -n 16 --temp 0 || status=1
    echo "== serve on the GPU (batched decode through concat_rows)"
    serve_check "$m" >"$out/serve-gpu.log" 2>&1 || status=1
    cat "$out/serve-gpu.log"
  else
    echo "no model carried: benchmark skipped"
  fi
  hybrid_bench "$out" || status=1
  echo "gpu-check: $([ $status = 0 ] && echo PASS || echo FAIL)"
  return $status
}

# The environment of `run`, for `hybrid` alone.
gpu_env() {
  do_stash >/dev/null
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    $(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)/nvidia/cu13/lib; do
    [ -e "$d/libnvrtc.so.13" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" && break
  done
  export POWERINFER_KERNEL_CACHE="$stash/kernels" RUST_BACKTRACE=1
}

# The hybrid FFN on a synthetic 7B-shaped ReLU llama made here (Mistral-7B's shape: hidden
# 4096, FFN 14336, 32 layers, 32 heads, 8 KV heads; ReGLU, 90% sparse, q4_0, about 4 GB) and
# profiled on generated text: a greedy run through it, then `bench` of the hybrid FFN
# (predicted) against the dense layer split at the same VRAM budget, 30% of the model file,
# and the CPU alone for reference. Every step whose output is already in the stash is
# skipped, so a call that ran out of time can be finished by the next (while the machine is
# warm).
hybrid_bench() {
  local out="$1" bin="$stash/bin/powerinfer" status=0
  mkdir -p "$out"
  local m="$stash/models/synth-7b.gguf" corpus="$stash/models/synth-corpus.txt"
  local sc="$stash/models/synth-7b.powerinfer.gguf"
  mkdir -p "$stash/models"
  echo "== hybrid: synthetic 7B-shaped model"
  [ -e "$m" ] || "$bin" synth -o "$m" --hidden 4096 --ffn 14336 --layers 32 --heads 32 \
    --kv-heads 8 --activation reglu --sparsity 0.9 --skew 1 --type q4_0 --seed 1 || return 1
  [ -e "$corpus" ] || python3 - "$corpus" <<'PY'
import random, sys
random.seed(7)
words = "the of and to in is was for on that with as by at from his her it an be this are".split()
words += ["w%d" % i for i in range(3000)]
with open(sys.argv[1], "w") as f:
    for _ in range(300):
        f.write(" ".join(random.choice(words) for _ in range(80)) + "\n\n")
PY
  [ -e "$sc" ] || "$bin" profile -m "$m" --corpus "$corpus" --tokens 1024 --heldout 256 \
    --ranks 64,128 --epochs 2 --train-rows 1024 -c 512 || return 1
  local budget
  budget="$(python3 -c "import os,sys; print(round(0.3 * os.path.getsize(sys.argv[1]) / 2**30, 3))" "$m")"
  echo "== hybrid: VRAM budget ${budget} GiB (30% of the model)"
  local common=(-m "$m" -c 512 -p 32 -n 64 -r 3)
  "$bin" run "${common[@]:0:4}" --sparse --vram-budget "$budget" --profile-phases --temp 0 \
    -p "the of and" -n 16 2>&1 | tee "$out/hybrid-run.log" || status=1
  "$bin" bench "${common[@]}" --modes oracle,predicted --vram-budget "$budget" --profile-phases \
    --json-out "$out/bench-hybrid.json" 2>&1 | tee "$out/bench-hybrid.log" || status=1
  grep -q "hybrid FFN phases" "$out/bench-hybrid.log" || status=1
  "$bin" bench "${common[@]}" --modes dense --vram-budget "$budget" \
    --json-out "$out/bench-layer-split.json" 2>&1 | tee "$out/bench-layer-split.log" || status=1
  "$bin" bench "${common[@]}" --modes dense,predicted --cpu -r 2 \
    --json-out "$out/bench-hybrid-cpu.json" 2>&1 | tee "$out/bench-hybrid-cpu.log" || status=1
  return $status
}

# Start `serve --gpu` on a free port, ask three completions at once, stop it.
serve_check() {
  local log pid port
  log="$(mktemp)"
  "$stash/bin/powerinfer" serve -m "$1" --gpu --port 0 --parallel 3 >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 60); do
    port="$(sed -n 's/.*listening on http:\/\/[0-9.]*:\([0-9]*\).*/\1/p' "$log")"
    [ -n "$port" ] && break
    sleep 1
  done
  cat "$log"
  [ -n "$port" ] || { kill "$pid"; return 1; }
  local rc=0
  python3 - "$port" <<'PY' || rc=1
import json, sys, urllib.request
from concurrent.futures import ThreadPoolExecutor
url = f"http://127.0.0.1:{sys.argv[1]}/v1/completions"
def ask(p):
    body = json.dumps({"prompt": p, "max_tokens": 8, "temperature": 0}).encode()
    req = urllib.request.Request(url, body, {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["text"]
prompts = ["The capital of France is", "1, 2, 3,", "Once upon a time"]
with ThreadPoolExecutor(3) as ex:
    for p, t in zip(prompts, ex.map(ask, prompts)):
        print(repr(p), "->", repr(t))
PY
  kill "$pid"
  return $rc
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  stash) do_stash ;;
  run) run ;;
  hybrid) gpu_env && hybrid_bench "${OUT:-/tmp/powerinfer-gpu-out}" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
