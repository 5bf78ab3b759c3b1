#!/usr/bin/env bash
# The project's test command: sets up what the tests need on a fresh Debian machine with Rust,
# then runs every test of the workspace. README.md and .ci/run call exactly this.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

# Nothing outside cargo is needed yet; later suites (real Kafka clients) install theirs here,
# so a test never skips because a tool is missing.
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
