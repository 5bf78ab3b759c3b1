# Shared by the benchmark scripts: a scratch directory and `weir serve` on a fresh data
# directory in it.
#
#   . scripts/serve-lib.sh                        # sets WORK; stops SERVER and removes WORK at exit
#   serve_weir BINARY WORKDIR PORT DURABILITY     # sets SERVER to its pid
#   cpu PID                                       # its CPU seconds so far
#   ab_medians [WHAT]                             # medians of the A/B lines in $WORK/results
#
# Segment storage under WORKDIR/data (wiped first), the native listener on 127.0.0.1:PORT, the
# Kafka listener on a free port, `[topic_defaults] durability = DURABILITY`; returns once the
# broker answers, or exits the script with its log.
serve_weir() {
    local bin=$1 work=$2 port=$3 durability=$4
    rm -rf "$work/data"
    printf 'data_dir = "%s/data"\n[listeners]\nnative = "127.0.0.1:%s"\nkafka = "127.0.0.1:0"\n[topic_defaults]\ndurability = "%s"\n' \
        "$work" "$port" "$durability" >"$work/weir.toml"
    "$bin" serve --config "$work/weir.toml" >"$work/serve.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 50); do
        "$bin" topic list --broker "127.0.0.1:$port" >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "weir serve did not start:" >&2
    cat "$work/serve.log" >&2
    exit 1
}

cpu() { # pid -> CPU seconds (utime + stime)
    awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"
}

median() { # values on stdin, one per line
    sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The A/B scripts write "LABEL RATE SERVER_CPU_PER_MILLION" lines to $WORK/results; this prints
# each label's medians, WHAT after the rate ("consumed", say).
ab_medians() {
    local label rate per_m
    for label in A B; do
        rate=$(awk -v l="$label" '$1 == l { print $2 }' "$WORK/results" | median)
        per_m=$(awk -v l="$label" '$1 == l { print $3 }' "$WORK/results" | median)
        echo "median $label: $(echo "$rate" | awk '{ printf "%.2f", $1 / 1e6 }') M records/s${1:+ $1}, server CPU $per_m s per million records"
    done
}

WORK=$(mktemp -d)
SERVER=
cleanup_weir() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup_weir EXIT
