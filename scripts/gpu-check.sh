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
#                                          dense benchmark (GPU, then CPU), logs into $OUT
set -euo pipefail
cd "$(dirname "$0")/.."
stash=/tmp/powerinfer-gpu
tests=(cuda_kernels cuda_model cuda_compile)

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
    echo "== sparse on the GPU: a clear refusal"
    if "$stash/bin/powerinfer" run -m "$m" --gpu --sparse -p hi -n 1 2>"$out/sparse-gpu.err"; then
      status=1
    fi
    cat "$out/sparse-gpu.err"
    grep -q "sparse FFN on the GPU: not yet" "$out/sparse-gpu.err" || status=1
    echo "== serve on the GPU (batched decode through concat_rows)"
    serve_check "$m" >"$out/serve-gpu.log" 2>&1 || status=1
    cat "$out/serve-gpu.log"
  else
    echo "no model carried: benchmark skipped"
  fi
  echo "gpu-check: $([ $status = 0 ] && echo PASS || echo FAIL)"
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
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
