#!/usr/bin/env bash
# A/B of two `weir` binaries on the native produce path, alternating so that both meet the
# same machine state (this VM's page-cache speed swings 2x over minutes; BENCHMARKS.md):
#
#   bash scripts/bench-ab.sh OLD_BINARY NEW_BINARY [weir bench arguments ...]
#   PAIRS=5 RECORDS=5000000 DURABILITY=interval bash scripts/bench-ab.sh /tmp/weir-old target/release/weir
#
# Each run starts a fresh `weir serve` of that binary (segment storage, `[topic_defaults]
# durability = $DURABILITY`), runs `weir bench --consumers 0` with the same binary, and prints
# its summary line plus the server's CPU seconds per million records; medians at the end.
set -euo pipefail
OLD=$(realpath "$1")
NEW=$(realpath "$2")
shift 2
cd "$(dirname "$0")/.."
. scripts/serve-lib.sh
EXTRA=("$@")
PAIRS=${PAIRS:-3}
RECORDS=${RECORDS:-5000000}
DURABILITY=${DURABILITY:-interval}
PORT=${PORT:-19393}

run() { # label binary
    local label=$1 bin=$2
    serve_weir "$bin" "$WORK" "$PORT" "$DURABILITY"
    local c0 line c1
    c0=$(cpu "$SERVER")
    line=$("$bin" bench --broker "127.0.0.1:$PORT" -n "$RECORDS" --consumers 0 --topic ab "${EXTRA[@]}" 2>/dev/null |
        grep '^produced:')
    c1=$(cpu "$SERVER")
    kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
    SERVER=
    local rate
    rate=$(echo "$line" | sed -E 's/.*s: ([0-9]+) records\/s.*/\1/')
    local per_m
    per_m=$(echo "$c0 $c1 $RECORDS" | awk '{ printf "%.3f", ($2 - $1) * 1e6 / $3 }')
    echo "$label $rate $per_m" >>"$WORK/results"
    echo "$label: $line | server CPU $per_m s/M"
}

echo "A = $OLD, B = $NEW; $PAIRS pairs of $RECORDS records, durability $DURABILITY, $*"
for i in $(seq "$PAIRS"); do
    run A "$OLD" "$@"
    run B "$NEW" "$@"
done
ab_medians
