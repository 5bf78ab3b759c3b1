#!/usr/bin/env bash
# The Kafka bench side by side with a reference broker (BENCHMARKS.md, issue 5): tansu, a
# Kafka-compatible Rust broker, on its in-memory storage, gets the same librdkafka phases as
# Weir in every run, right after Weir's.
#
#   bash scripts/bench-kafka-compare.sh              # 3 runs of 1,000,000 records
#   KAFKA_BENCH_RUNS=5 bash scripts/bench-kafka-compare.sh
#
# tansu is a tool, not part of Weir: it is installed from crates.io with `cargo install` into
# TANSU_ROOT (default ~/.cache/weir-bench/tansu-0.6.0-dynostore; the first build takes ~15 minutes
# on 2 cores).
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

root=${TANSU_ROOT:-$HOME/.cache/weir-bench/tansu-0.6.0-dynostore}
version=0.6.0
if ! "$root/bin/tansu" --version 2>/dev/null | grep -q "$version"; then
  cargo install --locked tansu --version "$version" --features dynostore --root "$root"
fi
command -v kcat >/dev/null || { apt-get update -qq && apt-get install -y -qq kcat; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$root/bin/tansu" broker \
  --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ --silent >"$log" 2>&1 &
tansu=$!
trap 'kill $tansu 2>/dev/null; wait $tansu 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 $tansu 2>/dev/null || { cat "$log"; echo "tansu exited" >&2; exit 1; }
  sleep 0.1
done
"$root/bin/tansu" --version
KAFKA_BENCH_COMPARE="tansu=127.0.0.1:$port" KAFKA_BENCH_COMPARE_PID=$tansu cargo bench --bench kafka
