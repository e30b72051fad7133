#!/usr/bin/env bash
# Decode throughput of `eglr bench` against the PyTorch reference decode loop
# (../shared/bench/ref_eglr_torch.py), measured side by side in the same run: each
# round runs the reference, then eglr, on the same cores, and reports the ratio of
# that round. The machine is noisy, so the ratio of each round is what counts, not an
# absolute figure. Writes docs/perf/decode-vs-torch.json.
#
# usage: scripts/perf.sh [--rounds N] [--reference PATH] [--python PYTHON]
#   PYTHON defaults to .tools/torch/bin/python (install: deploy/install-deps.sh --with-torch)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3
reference=../shared/bench/ref_eglr_torch.py
python=.tools/torch/bin/python
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --reference) reference=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        -h|--help) sed -n 2,10p "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done
[ -f "$reference" ] || { echo "no reference script at $reference (--reference PATH)" >&2; exit 66; }
"$python" -c 'import torch' 2>/dev/null || {
    echo "no PyTorch for $python: run deploy/install-deps.sh --with-torch (or pass --python)" >&2
    exit 69
}
cargo build --release --locked --bin eglr
eglr=target/release/eglr
cores=$(nproc)
out=docs/perf
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

lists_per_s() { sed -n 's/.*lists\/s=\([0-9.]*\).*/\1/p'; }
for round in $(seq 1 "$rounds"); do
    # Batch 256 on every core: the reference with as many threads, eglr with as many
    # workers. Batch 1: one thread against one worker (latency per list).
    t256=$("$python" "$reference" --batch 256 --pool 20 --k 3 --theta 0 --threads "$cores" --iters 20 | lists_per_s)
    RUST_LOG=warn "$eglr" bench --pools 20 --batches 256 --decoders host,candle \
        --workers "$cores" --seconds 3 --json "$tmp/e256-$round.json" > /dev/null
    t1=$("$python" "$reference" --batch 1 --pool 20 --k 3 --theta 0 --threads 1 --iters 100 | lists_per_s)
    RUST_LOG=warn "$eglr" bench --pools 20 --batches 1 --decoders host,candle \
        --workers 1 --seconds 3 --json "$tmp/e1-$round.json" > /dev/null
    echo "$round $t256 $t1" >> "$tmp/torch.txt"
done

python3 - "$tmp" "$out/decode-vs-torch.json" "$cores" <<'EOF'
import json, sys, statistics
tmp, dest, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
rounds = []
for line in open(f"{tmp}/torch.txt"):
    r, t256, t1 = line.split()
    e256 = {m["decoder"]: m for m in json.load(open(f"{tmp}/e256-{r}.json"))}
    e1 = {m["decoder"]: m for m in json.load(open(f"{tmp}/e1-{r}.json"))}
    rounds.append({
        "round": int(r),
        "torch_batch256_lists_per_s": float(t256),
        "eglr_batch256_lists_per_s": e256["host"]["lists_per_s"],
        "eglr_candle_batch256_lists_per_s": e256["candle"]["lists_per_s"],
        "ratio_batch256": e256["host"]["lists_per_s"] / float(t256),
        "torch_batch1_ms_per_list": 1000.0 / float(t1),
        "eglr_batch1_ms_per_list": e1["host"]["ms_per_list"],
        "eglr_candle_batch1_ms_per_list": e1["candle"]["ms_per_list"],
    })
ratios = [r["ratio_batch256"] for r in rounds]
summary = {
    "cores": cores,
    "rounds": rounds,
    "ratio_batch256_min": min(ratios),
    "ratio_batch256_median": statistics.median(ratios),
    "eglr_batch1_ms_per_list_median": statistics.median(r["eglr_batch1_ms_per_list"] for r in rounds),
}
json.dump(summary, open(dest, "w"), indent=2)
print(f"{'round':>5}  {'torch 256':>10}  {'eglr 256':>9}  {'ratio':>6}  {'torch 1 ms':>10}  {'eglr 1 ms':>9}")
for r in rounds:
    print(f"{r['round']:>5}  {r['torch_batch256_lists_per_s']:>10.0f}  {r['eglr_batch256_lists_per_s']:>9.0f}  "
          f"{r['ratio_batch256']:>5.2f}x  {r['torch_batch1_ms_per_list']:>10.3f}  {r['eglr_batch1_ms_per_list']:>9.3f}")
print(f"batch 256 ratio: median {summary['ratio_batch256_median']:.2f}x, lowest {summary['ratio_batch256_min']:.2f}x; written to {dest}")
EOF
