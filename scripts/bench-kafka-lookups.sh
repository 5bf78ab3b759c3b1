#!/usr/bin/env bash
# Two Kafka-side measurements of BENCHMARKS.md ("Session 9"), for one or more `weir` binaries
# side by side, alternating (build an older commit's binary to compare against; the default
# is this checkout's release build):
#
#   bash scripts/bench-kafka-lookups.sh max-timestamp [BINARY...]
#       ListOffsets MAX_TIMESTAMP (-3) three times on a partition of 5,000,000 records of
#       100 B, then the same data directory opened by each other binary (same answer?)
#   bash scripts/bench-kafka-lookups.sh partitions [BINARY...]
#       confluent-kafka consume(10000) of 2,000,000 records from a 16-partition topic, three
#       times with librdkafka's defaults, three with fetch.queue.backoff.ms=10, and three with
#       that and fetch.max.bytes=2097152 (each fetch's budget runs out after two partitions:
#       the rest must not be read in vain), per round; two rounds. Each consume prints the
#       server's CPU time during it (utime + stime, in ticks of 10 ms)
#
# Needs kcat and confluent-kafka in ./.venv (`bash scripts/test.sh` sets both up).
# Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:?max-timestamp or partitions}
shift
if [ $# -eq 0 ]; then
  cargo build --release --bin weir
  set -- target/release/weir
fi
python=${PYTHON:-$PWD/.venv/bin/python}
"$python" -c 'import confluent_kafka' || { echo "confluent-kafka missing: run bash scripts/test.sh" >&2; exit 1; }
command -v kcat >/dev/null || { echo "kcat missing: run bash scripts/test.sh" >&2; exit 1; }

work=$(mktemp -d)
server=
stop() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; }
trap 'stop; rm -rf "$work"' EXIT
port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
boot=127.0.0.1:$port
printf 'data_dir = "%s/data"\n[listeners]\nnative = "127.0.0.1:0"\nkafka = "%s"\n[topic_defaults]\ndurability = "interval"\n' \
  "$work" "$boot" >"$work/weir.toml"

# serve BINARY: starts it on the data directory as it is; returns once Kafka clients connect.
serve() {
  "$1" serve --config "$work/weir.toml" >"$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    kcat -b "$boot" -L -m 1 >/dev/null 2>&1 && return
    sleep 0.1
  done
  cat "$work/serve.log" >&2
  exit 1
}

records() { # N: a file of N lines of 100 B
  "$python" -c "import sys; sys.stdout.write(('w' * 100 + '\n') * $1)" >"$work/records.txt"
}

case $what in
  max-timestamp)
    records 1000000
    for bin in "$@"; do
      rm -rf "$work/data"
      serve "$bin"
      for _ in 1 2 3 4 5; do
        kcat -b "$boot" -P -t mt -p 0 -X linger.ms=5 -X batch.size=1000000 -l "$work/records.txt"
      done
      echo "$bin: partition of $(du -sh "$work/data/logs/mt-0" | cut -f1)"
      stop
      for other in "$@"; do
        serve "$other"
        BOOT=$boot "$python" - "$other" <<'PY'
import os, sys, time
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
a = AdminClient({"bootstrap.servers": os.environ["BOOT"]})
for _ in range(3):
    t = time.time()
    f = a.list_offsets({TopicPartition("mt", 0): OffsetSpec.max_timestamp()})
    info = next(iter(f.values())).result(60)
    print(f"  {sys.argv[1]}: offset {info.offset} at {info.timestamp} in {1000 * (time.time() - t):.1f} ms")
PY
        stop
      done
    done
    ;;
  partitions)
    records 1000000
    for round in 1 2; do
      for bin in "$@"; do
        rm -rf "$work/data"
        serve "$bin"
        BOOT=$boot "$python" -c '
import os
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": os.environ["BOOT"]})
for f in a.create_topics([NewTopic("mp", num_partitions=16, replication_factor=1)]).values():
    f.result(30)'
        for _ in 1 2; do
          kcat -b "$boot" -P -t mp -X linger.ms=5 -X batch.size=1000000 -l "$work/records.txt"
        done
        for extra in "" "fetch.queue.backoff.ms=10" "fetch.queue.backoff.ms=10,fetch.max.bytes=2097152"; do
          for _ in 1 2 3; do
            cpu_before=$(awk '{print $14 + $15}' "/proc/$server/stat")
            BOOT=$boot "$python" - "$bin" "$round" "$extra" <<'PY'
import os, sys, time
from confluent_kafka import Consumer, TopicPartition
conf = {"bootstrap.servers": os.environ["BOOT"], "group.id": "mp", "enable.auto.commit": False}
for setting in filter(None, sys.argv[3].split(",")):
    k, v = setting.split("=", 1)
    conf[k] = v
c = Consumer(conf)
c.assign([TopicPartition("mp", p, 0) for p in range(16)])
n, t0 = 0, None
while n < 2_000_000:
    got = c.consume(10000, 10)
    if not got:
        raise SystemExit(f"no records for 10 s after {n}")
    t0 = t0 or time.time()
    n += len(got)
c.close()
print(f"round {sys.argv[2]} {sys.argv[1]} {sys.argv[3] or 'defaults'}: {n / (time.time() - t0) / 1e6:.2f} M records/s", end="")
PY
            echo ", server CPU $(($(awk '{print $14 + $15}' "/proc/$server/stat") - cpu_before)) ticks"
          done
        done
        stop
      done
    done
    ;;
  *)
    echo "max-timestamp or partitions" >&2
    exit 2
    ;;
esac
