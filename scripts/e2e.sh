#!/usr/bin/env bash
# End-to-end latency and throughput of serving (issue 16), the same two runs on two
# brokers: as fast as possible (throughput, nothing may be missing) and at a fixed rate
# (p50/p99), on the embedded broker (`eglr demo`: load, broker and serve in one
# process) and on tansu (`eglr serve` and `eglr loadgen` as processes of their own).
# During the fixed-rate tansu run it samples serve's resident memory every 10 s.
# Writes docs/perf/e2e-*.json and docs/perf/serve-rss*.csv (unix seconds, RSS in KiB).
#
# usage: scripts/e2e.sh [--requests N] [--rate R] [--minutes M] [--tansu-batches one|ordinary]
#   N requests as fast as possible (default 50000); R requests/s for M minutes at the
#   fixed rate (defaults 1000 and 1). On tansu every record is its own batch by default
#   (see below); `ordinary` measures librdkafka's batching, which loses records on tansu
#   whenever serve's intake pauses. Needs tansu (deploy/install-deps.sh --with-tansu).
set -euo pipefail
cd "$(dirname "$0")/.."

requests=50000
rate=1000
minutes=1
tansu_batches=one
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) requests=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        --tansu-batches) tansu_batches=$2; shift 2 ;;
        -h|--help) sed -n 2,13p "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
done
tansu=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
[ -x "$tansu" ] || { echo "no tansu: run deploy/install-deps.sh --with-tansu" >&2; exit 69; }
cargo build --release --locked --bin eglr
eglr=target/release/eglr
out=docs/perf
mkdir -p "$out"
export RUST_LOG=warn
paced=$(python3 -c "print(int($rate * $minutes * 60))")

# The embedded broker. The first demo also trains the demo model (data/demo).
[ "$tansu_batches" = ordinary ] || "$eglr" demo --requests "$requests" --json "$out/e2e-embedded-fastest.json" > /dev/null
[ "$tansu_batches" = ordinary ] || "$eglr" demo --requests "$paced" --rate "$rate" --json "$out/e2e-embedded-paced.json" > /dev/null

# tansu. Every record is its own batch: tansu 0.6 skips the rest of a record batch when
# a fetch starts inside it, which serve's intake does after every pause
# (tests/common/mod.rs, ONE_RECORD_PER_BATCH).
if [ "$tansu_batches" = one ]; then
    export EGLR_KAFKA__PROPERTIES__BATCH_NUM_MESSAGES=1
fi
serve_pid=
tansu_pid=
trap 'kill $serve_pid $tansu_pid 2> /dev/null || true' EXIT

tansu_run() { # NAME LOADGEN-ARGS...: a fresh broker (memory storage), serve, one load run
    local name=$1; shift
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    local brokers="127.0.0.1:$port"
    "$tansu" broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
        --storage-engine memory://tansu/ > /dev/null 2>&1 &
    tansu_pid=$!
    for _ in $(seq 100); do (exec 3<> "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done
    "$eglr" serve --brokers "$brokers" --create-topics --model-store data/demo/models \
        --metrics-addr 127.0.0.1:0 > /dev/null &
    serve_pid=$!
    sleep 3
    if [ "$name" = paced ]; then
        (while kill -0 "$serve_pid" 2> /dev/null; do
            echo "$(date +%s),$(awk '/VmRSS/ {print $2}' "/proc/$serve_pid/status" 2> /dev/null)"
            sleep 10
        done) > "$out/serve-rss$suffix.csv" &
    fi
    "$eglr" loadgen --brokers "$brokers" --world data/demo/world.json "$@" \
        --json "$out/e2e-tansu-$name$suffix.json" > /dev/null
    kill -TERM "$serve_pid"
    wait "$serve_pid" || true
    kill "$tansu_pid"
    wait "$tansu_pid" 2> /dev/null || true
}
suffix=$([ "$tansu_batches" = one ] || echo "-$tansu_batches")
tansu_run fastest --requests "$requests"
tansu_run paced --requests "$paced" --rate "$rate"

python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
print(f"{'broker':9} {'run':8} {'requests':>8} {'missing':>7} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'serve p50':>9} {'serve p99':>9}")
for broker in ("embedded", "tansu", "tansu-ordinary"):
    for run in ("fastest", "paced"):
        name = f"{out}/e2e-{broker.split('-')[0]}-{run}" + ("-ordinary" if "-" in broker else "") + ".json"
        if not os.path.exists(name):
            continue
        r = json.load(open(name))
        print(f"{broker:9} {run:8} {r['requests']:>8} {r['missing']:>7} {r['throughput_rps']:>7.0f} "
              f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['server_p50_ms']:>9.1f} {r['server_p99_ms']:>9.1f}")
for name in ("serve-rss.csv", "serve-rss-ordinary.csv"):
    if not os.path.exists(f"{out}/{name}"):
        continue
    rss = [int(f) for f in (l.strip().split(",")[1] for l in open(f"{out}/{name}")) if f]
    if rss:
        print(f"serve RSS over the paced tansu run ({name}): first {rss[0] / 1024:.0f} MiB, "
              f"after a minute {rss[min(6, len(rss) - 1)] / 1024:.0f} MiB, last {rss[-1] / 1024:.0f} MiB, "
              f"max {max(rss) / 1024:.0f} MiB ({len(rss)} samples, 10 s apart)")
EOF
