#!/usr/bin/env bash
# The native-protocol benchmark of BENCHMARKS.md: `weir bench` against a `weir serve` child on
# this machine, segment storage, 100-byte records, batches of 1,000, several runs per shape,
# then the median of each figure.
#
#   bash scripts/bench-native.sh            # 3 runs per shape, 5 M records
#   RUNS=5 RECORDS=10000000 bash scripts/bench-native.sh
#
# Shapes: produce then consume (interval and always durability), produce and consume at once,
# 4 producers + 4 consumers on 8 partitions, record-by-record sends for comparison, and the
# latency shapes, produce only: at most 2 batches in the producer's buffer under `interval`
# (`--in-flight 2`), 1 under `always` (`--in-flight 1`).
# Client and server share the machine's cores; nothing else should run meanwhile. Each run's
# topic is deleted after it, so no run writes behind gigabytes of earlier runs' page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RECORDS=${RECORDS:-5000000}
PORT=${PORT:-19292}
cargo build --release --locked -q
WEIR=$PWD/target/release/weir
. scripts/serve-lib.sh
serve() { # durability
    [ -n "$SERVER" ] && kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
    serve_weir "$WEIR" "$WORK" "$PORT" "$1"
}

shape() { # name, then weir bench arguments
    local name=$1
    shift
    for run in $(seq "$RUNS"); do
        "$WEIR" bench --broker "127.0.0.1:$PORT" -n "$RECORDS" --topic "$name-$run" "$@" 2>/dev/null |
            sed "s/^/$name run $run: /" | tee -a "$WORK/results"
        # Each run's data goes when the run is done, so every run writes into the same state
        # of the page cache (on this VM, pages freed long ago are slow to reuse; BENCHMARKS.md).
        "$WEIR" topic delete "$name-$run" --broker "127.0.0.1:$PORT" >/dev/null
    done
}

echo "weir $(git rev-parse --short HEAD), $(nproc) cores, $(uname -r), $RUNS runs of $RECORDS records"
serve interval
shape interval-sequential --sequential
shape interval-concurrent
shape interval-4p4c8 --producers 4 --consumers 4 --partitions 8
shape interval-per-record --per-record --consumers 0
shape interval-latency --in-flight 2 --consumers 0
serve always
shape always-sequential --sequential
shape always-latency --in-flight 1 --consumers 0

echo
echo "medians:"
python3 - "$WORK/results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) run \d+: (produced|consumed): .*?: (\d+) records/s.*?latency p50 (\d+) (\w+), p99 (\d+) \w+, p999 (\d+) \w+", line)
    if m:
        name, side, rate, p50, unit, p99, p999 = m.groups()
        q = re.search(r"queued to acked p50 (\d+) \w+, p99 (\d+) \w+, p999 (\d+) \w+", line)
        queued = tuple(int(v) for v in q.groups()) if q else None
        rows.setdefault((name, side), []).append((int(rate), int(p50), int(p99), int(p999), unit, queued))
for (name, side), runs in rows.items():
    med = lambda i: statistics.median(r[i] for r in runs)
    line = f"{name:24} {side}: {med(0)/1e6:5.2f} M records/s  latency p50 {med(1):.0f} / p99 {med(2):.0f} / p999 {med(3):.0f} {runs[0][4]}"
    if all(r[5] for r in runs):
        q = lambda i: statistics.median(r[5][i] for r in runs)
        line += f"  (queued to acked {q(0):.0f} / {q(1):.0f} / {q(2):.0f})"
    print(line)
EOF
