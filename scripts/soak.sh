#!/usr/bin/env bash
# The chaos soak on tansu (tests/soak.rs) for as long as asked:
#   scripts/soak.sh --minutes 30 [--seed N]
# Prints the figures and writes them to target/soak/report.json (SOAK_REPORT to
# change). Needs tansu: bash deploy/install-deps.sh --with-tansu.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="${2:?--minutes needs a number}"; shift 2 ;;
        --seed) export SOAK_SEED="${2:?--seed needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ -n "$minutes" ]] || { echo "soak.sh: --minutes N is required" >&2; exit 2; }
export SOAK_MINUTES="$minutes" TANSU_REQUIRED=1
exec cargo test --release --locked --test soak -- --nocapture
