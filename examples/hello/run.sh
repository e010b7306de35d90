#!/usr/bin/env bash
# Builds the host and the demo plugin, then runs the hello pipeline.
# Usage: examples/hello/run.sh [extra `capstan run` flags, e.g. --env production]
set -euo pipefail
cd "$(dirname "$0")/../.."
# The pipeline file names the plugins under ./target: build there.
unset CARGO_TARGET_DIR
.ci/setup
cargo build --release --locked --target wasm32-wasip2 -p capstan-hello
cargo build --release --locked -p capstan
exec target/release/capstan run examples/hello/pipeline.toml "$@"
