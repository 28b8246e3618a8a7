#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up (which also builds the Python
# and JavaScript plugins with their pinned tools and installs the pinned
# current nats-server), the Rust SDK's unit tests, then every unit and
# integration test of the workspace on the current nats-server, and again on
# the machine's own when it has an older one. Ends with one summary line,
# `tests: N passed, N failed`, over every cargo test run.
set -euo pipefail
cd "$(dirname "$0")/.."
# A whole run is usually a fresh build (CI clones afresh): incremental data
# would only add gigabytes of disk. Set CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
servers=$(bash scripts/setup.sh | grep '^/')
log=$(mktemp)
trap 'rm -f "$log"' EXIT
(cd plugins && cargo test --locked -p wasmgate-plugin) 2>&1 | tee "$log"
status=0
for nats in $servers; do
  version=$("$nats" --version)
  echo "=== the workspace's tests on $version ($nats)" | tee -a "$log"
  NATS_SERVER_BIN="$nats" cargo test --workspace --locked 2>&1 | tee -a "$log" || status=1
done
awk '/^=== / { print }
     /^test result:/ { passed += $4; failed += $6 }
     END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit $status
