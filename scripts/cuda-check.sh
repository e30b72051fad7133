#!/usr/bin/env bash
# Compiles the CUDA build (`--features cuda`: candle's CUDA backend and its kernels) on
# a machine without a GPU, with NVIDIA's compiler and headers from PyPI wheels
# (installed into .tools/cuda by `deploy/install-deps.sh --with-cuda`). It type-checks
# every CUDA code path of eglr and compiles candle's kernels to PTX; it runs nothing
# (that needs a GPU: `eglr --device cuda:0 bench`, see docs). CUDA 13.0: the newest
# toolkit the locked cudarc (0.19) knows. Arguments go to cargo (e.g. `--all-targets`).
set -euo pipefail
cd "$(dirname "$0")/.."
cuda="$(pwd)/.tools/cuda/lib/python3"*"/site-packages/nvidia/cu13"
cuda=$(echo $cuda)
[ -x "$cuda/bin/nvcc" ] || { echo "no nvcc in $cuda: run bash deploy/install-deps.sh --with-cuda" >&2; exit 1; }
export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_TOOLKIT_ROOT_DIR="$cuda"
# No GPU to ask: compile the kernels for compute capability 8.0 (A100 and later run it).
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
CARGO_TARGET_DIR=target/cuda cargo check --release --locked --features cuda "$@"
