#!/usr/bin/env bash
# The whole test suite: installs the registry models the tests use (cached, sha256-verified),
# then runs every test of the workspace. Model tests are built optimised ([profile.test]).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh smollm2 gemma3 qwen05
# With the models installed, a test that cannot find one fails instead of skipping.
export POWERINFER_REQUIRE_MODELS=1
cargo test --workspace --locked "$@"
