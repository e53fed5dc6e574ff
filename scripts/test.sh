#!/usr/bin/env bash
# The project's test command. It builds, fetches the base encoder once (pip's cache is reused)
# and validates the data. It then checks that the default model is not less safe than its
# recorded evaluation, and runs every test in release mode, because candle is too slow unoptimised.
set -euo pipefail
cd "$(dirname "$0")/.."
cybertriage() { cargo run --release --locked --quiet -- "$@"; }
cargo build --release --locked
cybertriage fetch-base
cybertriage data check
cybertriage eval --data eval/testset.jsonl --out eval/reports/ci --baseline eval/baseline/report.json
cargo bench --locked --no-run   # compiles the criterion benches, so that they cannot rot
# --no-fail-fast runs every test binary even after a failure, so one run lists every failing test.
cargo test --release --locked --no-fail-fast -- --test-threads="${CYBERTRIAGE_TEST_THREADS:-2}"
