#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (which also builds the Python
# and JavaScript plugins with their pinned tools), the Rust SDK's unit tests,
# then every unit and integration test of the workspace. Ends with one
# summary line, `tests: N passed, N failed`, over every cargo test run.
set -euo pipefail
cd "$(dirname "$0")/.."
nats=$(bash scripts/setup.sh | tail -n 1)
export NATS_SERVER_BIN="$nats"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
(cd plugins && cargo test --locked -p wasmgate-plugin) 2>&1 | tee "$log"
cargo test --workspace --locked 2>&1 | tee -a "$log"
awk '/^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
