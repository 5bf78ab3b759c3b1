#!/usr/bin/env bash
# The project's test command: sets up what the tests need on a fresh Debian machine with Rust,
# then runs every test of the workspace. README.md and .ci/run call exactly this.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# Real Kafka clients for tests/kafka_clients.rs: kcat (Debian's, librdkafka 2.0.2, the strictest
# about tagged fields); in a virtualenv, confluent-kafka (a current librdkafka), kafka-python and
# aiokafka; kafkajs from npm. Installed here so that no test skips because a tool is missing.
if ! command -v kcat >/dev/null; then
  sudo_=""
  [ "$(id -u)" -ne 0 ] && sudo_="sudo"
  $sudo_ apt-get install -y kcat >/dev/null 2>&1 || { $sudo_ apt-get update >/dev/null && $sudo_ apt-get install -y kcat >/dev/null; }
fi
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import confluent_kafka, kafka, aiokafka" 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/kafka/requirements.txt
fi
if [ ! -d tests/kafka/node_modules/kafkajs ]; then
  (cd tests/kafka && npm install --no-save --no-audit --no-fund --silent kafkajs@2.2.4)
fi
export KAFKA_CLIENTS_PYTHON="$repo/.venv/bin/python"
export KAFKA_CLIENTS_KCAT="$(command -v kcat)"
export WEIR_KILL9_ITERATIONS="${WEIR_KILL9_ITERATIONS:-50}"
cargo test --workspace --lib --bins --tests --examples --locked
cargo test --workspace --doc --locked

# The examples run as a user would run them, each in a fresh directory (they write ./weir-data).
for example in quickstart embedded; do
  dir="$(mktemp -d)"
  (cd "$dir" && cargo run --quiet --locked --manifest-path "$repo/Cargo.toml" --example "$example")
  rm -rf "$dir"
done
echo "examples: 2 passed, 0 failed"

# The remote client alone (`default-features = false`): no actor system, no storage backend in
# its dependency tree, no warning in that configuration, and `examples/remote.rs` built that way
# against a `weir serve`, twice (the second run resumes its group after the first).
cargo clippy --no-default-features --lib --example remote --locked -- -D warnings
if cargo tree --no-default-features -e normal --prefix none --locked | grep -E "^(actix|sled|weir-(memory|segment|sled)) "; then
  echo "the remote-only build depends on the broker (above)" >&2
  exit 1
fi
dir="$(mktemp -d)"
printf 'data_dir = "%s/data"\n[listeners]\nnative = "127.0.0.1:0"\nkafka = "127.0.0.1:0"\n' "$dir" >"$dir/weir.toml"
cargo build --quiet --locked --bin weir
"${CARGO_TARGET_DIR:-$repo/target}/debug/weir" serve --config "$dir/weir.toml" >"$dir/serve.log" 2>&1 &
server=$!
addr=""
for _ in $(seq 100); do
  addr="$(sed -n 's/^weir: native listener on //p' "$dir/serve.log")"
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { cat "$dir/serve.log" >&2; kill "$server"; exit 1; }
for run in 1 2; do
  cargo run --quiet --locked --no-default-features --example remote -- "$addr" >"$dir/remote.out" ||
    { cat "$dir/remote.out" "$dir/serve.log" >&2; kill "$server"; exit 1; }
done
kill -TERM "$server"
wait "$server"
rm -rf "$dir"
echo "remote-only client: passed"
