#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing (system packages,
# tansu, the Python tools the tests use, NVIDIA's compiler from PyPI), then checks
# formatting and lints, compiles the CUDA build, and runs every test. `.ci/run` runs exactly
# this; the tansu tests fail here (instead of skipping) when tansu is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh --with-tansu --with-cuda
cargo fmt --all --check
cargo clippy --release --locked --all-targets -- -D warnings
# The CUDA build compiles (no GPU here to run it on).
bash scripts/cuda-check.sh --bin eglr
# Not an EGLR_* variable: those override the pipeline of every eglr process the tests run.
TANSU_REQUIRED=1 cargo test --release --locked "$@"
