#!/usr/bin/env bash
# The main job: installs what it needs (.ci/setup: wasm target, Packer, Terraform, Ansible),
# builds the host and the stage plugins, then runs the golden-image pipeline.
# Usage: examples/golden-image/run.sh [capstan run flags; default --env dev]
set -euo pipefail
cd "$(dirname "$0")/../.."
# The pipeline file names the plugins under ./target: build there.
unset CARGO_TARGET_DIR
.ci/setup
cargo build --release --locked --target wasm32-wasip2 \
    -p capstan-packer -p capstan-terraform -p capstan-approval -p capstan-ansible -p capstan-smoke-test \
    -p capstan-command
cargo build --release --locked -p capstan
if [ $# -eq 0 ]; then set -- --env dev; fi
exec target/release/capstan run examples/golden-image/pipeline.toml "$@"
