#!/usr/bin/env bash
# Installs the system packages eglr needs to build on Debian 12 (run as root or with
# sudo). Idempotent: installs only what is missing.
#   - a C toolchain and make: rdkafka builds its bundled librdkafka 2.12 from source
#     (Debian's librdkafka is 2.0, too old to link against)
#   - pkg-config and zlib headers: librdkafka's compression
#   - a Rust toolchain (cargo) must already be installed, e.g. with rustup
set -euo pipefail
packages=(build-essential make pkg-config zlib1g-dev)
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
