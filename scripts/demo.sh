#!/usr/bin/env bash
# Run wasmgate end to end on this machine, with nothing started by hand:
# a local nats-server on 127.0.0.1:14222 (its own JetStream folder), the
# uppercase plugin, the gateway from examples/uppercase.toml, and a client that
# sends a message and a request through the plugin. Stops everything on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
nats=$(bash scripts/setup.sh | grep '^/' | head -n 1)
echo "demo: building the gateway" >&2
cargo build --quiet -p wasmgate -p wasmgate-tests --bins

work=$(mktemp -d)
pids=()
cleanup() {
  # The gateway first (it drains while the server is still there), then the server.
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

if (exec 3<>/dev/tcp/127.0.0.1/14222) 2>/dev/null; then
  echo "demo: port 14222 is already in use; stop whatever listens there first" >&2
  exit 1
fi
"$nats" -a 127.0.0.1 -p 14222 -js -sd "$work/js" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/14222) 2>/dev/null && break
  sleep 0.1
done
echo "demo: nats-server up on 127.0.0.1:14222" >&2

target/debug/wasmgate run --config examples/uppercase.toml &
pids+=($!)
target/debug/demo-client nats://127.0.0.1:14222 127.0.0.1:18480
echo "demo: done; stopping the gateway (it drains) and the server" >&2
