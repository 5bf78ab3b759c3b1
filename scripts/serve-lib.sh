# Shared by the benchmark scripts: a scratch directory and `weir serve` on a fresh data
# directory in it.
#
#   . scripts/serve-lib.sh                        # sets WORK; stops SERVER and removes WORK at exit
#   serve_weir BINARY WORKDIR PORT DURABILITY     # sets SERVER to its pid
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

WORK=$(mktemp -d)
SERVER=
cleanup_weir() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup_weir EXIT
