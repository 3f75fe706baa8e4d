#!/usr/bin/env bash
# The whole test suite: installs the registry models the tests use (cached, sha256-verified),
# then runs every test of the workspace. Model tests are built optimised ([profile.test]).
# Ends with one total line over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh smollm2 gemma3 qwen05
scripts/fetch-corpus.sh
# Tools of the server tests (tests/serve): the real `openai` Python client, and headless
# Chromium with chromedriver (driven through selenium) for the chat page. CI runs as root
# on a fresh Debian machine; elsewhere the tests say what is missing.
python3 -m pip install --quiet --disable-pip-version-check openai selenium
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null &&
  ! { command -v chromium && command -v chromedriver; } >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
# NVRTC (CUDA 13) for the test that compiles every CUDA kernel; no GPU or driver is needed.
# Installed once, quietly, into the cache; pip is only asked when the library is missing.
nvrtc_dir="${HOME}/.cache/powerinfer/nvrtc"
nvrtc_lib="${nvrtc_dir}/nvidia/cu13/lib"
if [ ! -e "${nvrtc_lib}/libnvrtc.so.13" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "${nvrtc_dir}" "nvidia-cuda-nvrtc>=13,<14" >/dev/null 2>&1 || true
fi
if [ -e "${nvrtc_lib}/libnvrtc.so.13" ]; then
  export LD_LIBRARY_PATH="${nvrtc_lib}${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
fi
# With the models installed, a test that cannot find one fails instead of skipping.
export POWERINFER_REQUIRE_MODELS=1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "total: %d passed, %d failed, %d skipped\n", p, f, i }' \
  "${log}"
exit "$status"
