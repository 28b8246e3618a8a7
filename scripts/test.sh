#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
nats=$(bash scripts/setup.sh | tail -n 1)
export NATS_SERVER_BIN="$nats"
cargo test --workspace --locked
