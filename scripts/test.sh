#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (which also builds the Python
# and JavaScript plugins with their pinned tools), the Rust SDK's unit tests,
# then every unit and integration test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
nats=$(bash scripts/setup.sh | tail -n 1)
export NATS_SERVER_BIN="$nats"
(cd plugins && cargo test --locked -p wasmgate-plugin)
cargo test --workspace --locked
