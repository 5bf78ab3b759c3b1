#!/usr/bin/env bash
# A/B of two `weir` binaries serving a librdkafka consumer on their Kafka listener, alternating
# so that both meet the same machine state; reports the consumer's rate and the server's CPU
# per million records (BENCHMARKS.md, "Segment reads without zeroing"):
#
#   bash scripts/bench-kafka-consume-ab.sh OLD_BINARY NEW_BINARY
#   PAIRS=4 RECORDS=2000000 PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 \
#     bash scripts/bench-kafka-consume-ab.sh /tmp/weir-old target/release/weir
#
# The client is the Kafka bench's client child (`cargo bench --bench kafka --no-run` builds
# it; `KAFKA_BENCH_CHILD`, benches/kafka.rs): each run starts a fresh `weir serve` of that
# binary (segment storage, `interval` durability), produces RECORDS records of 100 B into a
# new topic (not timed), then consumes them through librdkafka's batch calls, with PRELOAD in
# `LD_PRELOAD` if set.
set -euo pipefail
OLD=$(realpath "$1")
NEW=$(realpath "$2")
cd "$(dirname "$0")/.."
. scripts/serve-lib.sh
PAIRS=${PAIRS:-4}
RECORDS=${RECORDS:-2000000}
PRELOAD=${PRELOAD:-}
PORT=${PORT:-19394}
CHILD=$(cargo bench --bench kafka --no-run 2>&1 |
    sed -n 's/.*Executable benches\/kafka.rs (\(.*\))/\1/p')
[ -x "$CHILD" ] || { echo "no Kafka bench binary ($CHILD)" >&2; exit 1; }

run() { # label binary
    local label=$1 bin=$2
    serve_weir "$bin" "$WORK" "$PORT" interval
    local boot=
    for _ in $(seq 50); do
        boot=$(sed -n 's/^weir: kafka listener on //p' "$WORK/serve.log")
        [ -n "$boot" ] && break
        sleep 0.1
    done
    KAFKA_BENCH_CHILD="produce $boot ab $RECORDS" "$CHILD" >/dev/null
    local c0 rate c1
    c0=$(cpu "$SERVER")
    rate=$(LD_PRELOAD=$PRELOAD KAFKA_BENCH_CHILD="consume $boot ab $RECORDS" "$CHILD")
    c1=$(cpu "$SERVER")
    kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
    SERVER=
    local per_m
    per_m=$(echo "$c0 $c1 $RECORDS" | awk '{ printf "%.3f", ($2 - $1) * 1e6 / $3 }')
    echo "$label $rate $per_m" >>"$WORK/results"
    echo "$label: consumed $(echo "$rate" | awk '{ printf "%.2f", $1 / 1e6 }') M records/s | server CPU $per_m s/M"
}

echo "A = $OLD, B = $NEW; $PAIRS pairs of $RECORDS records${PRELOAD:+, client on $PRELOAD}"
for _ in $(seq "$PAIRS"); do
    run A "$OLD"
    run B "$NEW"
done
ab_medians consumed
