#!/usr/bin/env bash
# The project's test command: build, fetch the base encoder (once; pip's cache is reused),
# validate the data, then run every test in release mode (candle is too slow unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
./target/release/cybertriage fetch-base
cargo test --release --locked -- --test-threads="${CYBERTRIAGE_TEST_THREADS:-2}"
