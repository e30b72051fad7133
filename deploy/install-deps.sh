#!/usr/bin/env bash
# Installs what eglr needs to build on Debian 12 (run as root or with sudo), and with
# --with-tansu what its tests need too. Idempotent: installs only what is missing.
#   - a C toolchain and make: rdkafka builds its bundled librdkafka 2.12 from source
#     (Debian's librdkafka is 2.0, too old to link against)
#   - pkg-config, zlib and OpenSSL headers: librdkafka's compression, TLS and
#     SASL/SCRAM (zstd is built from source by the zstd-sys crate)
#   - a Rust toolchain (cargo) must already be installed, e.g. with rustup
# --with-cuda installs NVIDIA's CUDA 13.0 compiler and headers from PyPI wheels into
# .tools/cuda, enough for scripts/cuda-check.sh to compile the CUDA build without a GPU.
# --with-torch installs PyTorch (CPU use only, from PyPI) into .tools/torch: the
# reference decode loop scripts/perf.sh measures eglr against. Not needed by the tests.
# --with-tansu adds the test suite's brokers and tools: tansu, stunnel4 (a TLS listener
# in front of tansu), the openssl command (the tests make their own CA), Debian's
# prometheus (the server and promtool: the alert rules are tested on them), and in
# .tools/venv (from PyPI) the Kubernetes manifest validator kubernetes-validate (it
# carries the Kubernetes JSON schemas, so validating needs no network), and pyarrow
# and duckdb, which the tests read the list log with as its users would.
set -euo pipefail
with_tansu=false
with_cuda=false
with_torch=false
for arg in "$@"; do
  case "$arg" in
    --with-tansu) with_tansu=true ;;
    --with-cuda) with_cuda=true ;;
    --with-torch) with_torch=true ;;
    *) echo "usage: $0 [--with-tansu] [--with-cuda] [--with-torch]" >&2; exit 2 ;;
  esac
done
packages=(build-essential make pkg-config zlib1g-dev libssl-dev)
if $with_tansu || $with_cuda || $with_torch; then
  packages+=(python3 python3-venv)
fi
if $with_tansu; then
  packages+=(stunnel4 openssl prometheus)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
else
  echo "system packages present: ${packages[*]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
# rustfmt and clippy: scripts/test.sh checks formatting and lints.
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
# Installs the pinned PyPI packages "$@" into the virtual environment $venv, unless
# they are all there.
pip_tools() {
  local present
  present=$("$venv/bin/pip" freeze 2>/dev/null | grep -cxF -f <(printf '%s\n' "$@") || true)
  if [ "$present" -ne "$#" ]; then
    echo "installing $* into $venv"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q "$@"
  else
    echo "present in $venv: $*"
  fi
}
if $with_cuda; then
  venv="$root/.tools/cuda"
  pip_tools nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
    nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85
fi
if $with_torch; then
  venv="$root/.tools/torch"
  pip_tools torch==2.15.0 numpy==2.4.6
fi
# tansu: an independent Kafka-compatible broker for the integration tests. Building it
# takes about 25 minutes on 2 cores, so it is installed only when missing.
if ! $with_tansu; then
  exit 0
fi
if ! command -v tansu >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
  echo "installing tansu 0.6 (cargo install, about 25 minutes on 2 cores)"
  cargo install tansu --version '^0.6' --locked --features dynostore
else
  echo "tansu present"
fi
venv="$root/.tools/venv"
pip_tools kubernetes-validate==1.37.0 pyarrow==26.0.1 duckdb==2.0.1
