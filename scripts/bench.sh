#!/usr/bin/env bash
# The benchmark suite (issue 5), one command on a fresh machine: set-up, a
# release build, then every benchmark on loopback (about 2 minutes on 2
# cores, plus the first release build). Writes bench-results/results.json,
# a timestamped copy, and bench-results/chart.svg. See docs/benchmarks.md.
#
#   bash scripts/bench.sh                 # everything
#   bash scripts/bench.sh --quick         # smaller runs, a smoke test (~1 min)
#   bash scripts/bench.sh --only core,overhead
#   bash scripts/bench.sh --publish       # also copy results and chart to docs/bench/
set -euo pipefail
cd "$(dirname "$0")/.."
nats=$(bash scripts/setup.sh | tail -n 1)
export NATS_SERVER_BIN="$nats"
echo "bench: building in release" >&2
cargo build --release --locked --quiet -p wasmgate -p wasmgate-tests --bin wasmgate --bin bench
echo "bench: $(nproc) cores; $(uptime)" >&2
exec target/release/bench run "$@"
