#!/usr/bin/env bash
# The main job on a fresh machine: installs the system packages the build needs, then
# runs `eglr demo` on the embedded Kafka broker (a small model is trained on first use).
# Arguments go to `eglr demo`, e.g. `scripts/demo.sh --requests 5000` or `--loop`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cargo run --release --locked -- demo "$@"
