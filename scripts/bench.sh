#!/usr/bin/env bash
# The benchmark suite (issue 5), one command on a fresh machine: set-up, a
# release build, then every benchmark on loopback (about 2 minutes on 2
# cores, plus the first release build). Writes bench-results/results.json,
# a timestamped copy, and bench-results/chart.svg. See docs/benchmarks.md.
#
#   bash scripts/bench.sh                 # everything
#   bash scripts/bench.sh --quick         # smaller runs, a smoke test (~1 min)
#   bash scripts/bench.sh --only core,overhead
#   bash scripts/bench.sh --only latency       # request-reply round trips, gateway against a native responder
#   bash scripts/bench.sh --only request       # a request made from a handler, against a native enricher
#   bash scripts/bench.sh --only scale,fairness  # 100-10,000 bindings; a light binding beside a saturated one
#   bash scripts/bench.sh --publish       # also copy results and chart to docs/bench/
set -euo pipefail
cd "$(dirname "$0")/.."
nats=$(bash scripts/setup.sh | grep '^/' | head -n 1)
export NATS_SERVER_BIN="$nats"
echo "bench: building in release" >&2
cargo build --release --locked --quiet -p wasmgate -p wasmgate-tests --bin wasmgate --bin bench
echo "bench: $(nproc) cores; $(uptime)" >&2
target/release/bench run "$@"
# The Criterion micro-benchmarks (tests/benches/calls.rs; about a minute),
# unless only some sections or a smoke test were asked for. Reports under
# target/criterion/, compared with the previous run there.
case " $* " in
  *" --only "*|*" --quick "*) ;;
  *)
    echo "bench: Criterion micro-benchmarks (cargo bench --bench calls)" >&2
    cargo bench --locked --quiet -p wasmgate-tests --bench calls
    ;;
esac
