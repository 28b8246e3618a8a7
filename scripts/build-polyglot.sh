#!/usr/bin/env bash
# Build the Python and JavaScript example handlers into plugins/target/polyglot/:
#   python_uppercase.wasm  from plugins/python-uppercase/ with componentize-py (PyPI)
#   js_uppercase.wasm      from plugins/js-uppercase/     with componentize-js (npm)
#   python_enrich.wasm     from plugins/python-enrich/    (requests, world `plugin`)
#   js_enrich.wasm         from plugins/js-enrich/        (requests, world `plugin`)
#
# The tools are pinned and installed project-locally when missing or at
# another version, never globally:
#   componentize-py  -> .local/venv (a Python venv)
#   componentize-js  -> plugins/js-uppercase/node_modules (`npm ci` from its lock file)
# A component is rebuilt only when its inputs changed (sources, wit/, the tool
# version, the build flags); the hash of those is kept beside it in `.stamp`.
#
# Usage: bash scripts/build-polyglot.sh [python] [js] [python-enrich] [js-enrich]
#        (no argument: all four)
# Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Pinned tool versions. The npm pin must match plugins/js-uppercase/package.json.
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0

# The host links WASI p2 (granting nothing) but not wasi:http, which
# componentize-js's engine imports by default for fetch(): switch those
# features off at build time instead of growing the host (docs/javascript.md).
JS_FLAGS=(--wit "$root/wit" --world-name batch-plugin --disable http fetch-event)
PY_FLAGS=(-d "$root/wit" -w batch-plugin componentize -p "$root/plugins/python-uppercase" app)
JS_ENRICH_FLAGS=(--wit "$root/wit" --world-name plugin --disable http fetch-event)
PY_ENRICH_FLAGS=(-d "$root/wit" -w plugin componentize -p "$root/plugins/python-enrich" app)

out="$root/plugins/target/polyglot"
venv="$root/.local/venv"
jsdir="$root/plugins/js-uppercase"

say() { echo "build-polyglot: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(python js python-enrich js-enrich)
for t in "${targets[@]}"; do
  case "$t" in python | js | python-enrich | js-enrich) ;; *) die "unknown target '$t' (python, js, python-enrich or js-enrich)" ;; esac
done

mkdir -p "$out"
# One build at a time (tests and set-up may call this concurrently).
exec 9>"$out/.lock"
flock 9

# Hash of a list of words and the contents of files (sorted paths).
inputs_hash() {
  local words=$1
  shift
  {
    printf '%s\n' "$words"
    for f in $(printf '%s\n' "$@" | LC_ALL=C sort); do
      printf '%s\n' "${f#"$root"/}"
      sha256sum <"$f"
    done
  } | sha256sum | cut -d' ' -f1
}

# Up to date when the component exists and its stamp matches.
fresh() {
  [ -f "$out/$1.wasm" ] && [ -f "$out/$1.stamp" ] && [ "$(cat "$out/$1.stamp")" = "$2" ]
}

wit_files() { find "$root/wit" -name '*.wit' -type f; }

ensure_componentize_py() {
  if [ -x "$venv/bin/componentize-py" ] &&
    [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" = "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
    return
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed to install componentize-py (apt-get install python3 python3-venv)"
  say "installing componentize-py $COMPONENTIZE_PY_VERSION into .local/venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >&2 || die "cannot create $venv (apt-get install python3-venv?)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION" >&2
  [ "$("$venv/bin/componentize-py" --version)" = "componentize-py $COMPONENTIZE_PY_VERSION" ] ||
    die "componentize-py $COMPONENTIZE_PY_VERSION did not install"
}

ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing Node.js and npm from Debian's packages"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) >&2 ||
      die "apt-get could not install nodejs and npm"
  else
    die "Node.js and npm are needed to build the JavaScript plugin (apt-get install nodejs npm)"
  fi
}

ensure_componentize_js() {
  ensure_node
  grep -q "\"@bytecodealliance/componentize-js\": \"$COMPONENTIZE_JS_VERSION\"" "$jsdir/package.json" ||
    die "plugins/js-uppercase/package.json does not pin @bytecodealliance/componentize-js $COMPONENTIZE_JS_VERSION"
  local lock marker="$jsdir/node_modules/.wasmgate-lock-sha256"
  lock=$(sha256sum <"$jsdir/package-lock.json" | cut -d' ' -f1)
  if [ -x "$jsdir/node_modules/.bin/componentize-js" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$lock" ]; then
    return
  fi
  say "installing componentize-js $COMPONENTIZE_JS_VERSION into plugins/js-uppercase/node_modules (npm ci)"
  (cd "$jsdir" && npm ci --no-audit --no-fund --loglevel=error) >&2
  echo "$lock" >"$marker"
}

# Move a finished build into place and record its stamp.
finish() {
  local name=$1 stamp=$2 tmp=$3 started=$4
  mv -f "$tmp" "$out/$name.wasm"
  echo "$stamp" >"$out/$name.stamp"
  say "built plugins/target/polyglot/$name.wasm ($(($(date +%s) - started)) s, $(stat -c %s "$out/$name.wasm") bytes)"
}

# build_python NAME SOURCE-DIR FLAGS...
build_python() {
  local name=$1 src=$2 stamp
  shift 2
  local flags=("$@")
  mapfile -t files < <(find "$src" -type f -name '*.py' -not -path '*/__pycache__/*'; wit_files)
  stamp=$(inputs_hash "componentize-py $COMPONENTIZE_PY_VERSION ${flags[*]#"$root"}" "${files[@]}")
  if fresh "$name" "$stamp"; then
    say "$name.wasm is up to date"
    return
  fi
  ensure_componentize_py
  say "building $name.wasm with componentize-py $COMPONENTIZE_PY_VERSION"
  local tmp="$out/.$name.wasm.tmp" started
  started=$(date +%s)
  rm -f "$tmp"
  # componentize-py writes bytecode caches next to the sources otherwise.
  PYTHONDONTWRITEBYTECODE=1 "$venv/bin/componentize-py" "${flags[@]}" -o "$tmp" >&2
  finish "$name" "$stamp" "$tmp" "$started"
}

# build_js NAME SOURCE-FILE FLAGS...: with the componentize-js of plugins/js-uppercase.
build_js() {
  local name=$1 source=$2 stamp
  shift 2
  local flags=("$@")
  mapfile -t files < <(echo "$source"; echo "$jsdir/package.json"; echo "$jsdir/package-lock.json"; wit_files)
  stamp=$(inputs_hash "componentize-js $COMPONENTIZE_JS_VERSION ${flags[*]#"$root"}" "${files[@]}")
  if fresh "$name" "$stamp"; then
    say "$name.wasm is up to date"
    return
  fi
  ensure_componentize_js
  say "building $name.wasm with componentize-js $COMPONENTIZE_JS_VERSION"
  local tmp="$out/.$name.wasm.tmp" started
  started=$(date +%s)
  rm -f "$tmp"
  (cd "$jsdir" && node_modules/.bin/componentize-js "$source" "${flags[@]}" --out "$tmp") >&2
  [ -s "$tmp" ] || die "componentize-js wrote no component"
  finish "$name" "$stamp" "$tmp" "$started"
}

for t in "${targets[@]}"; do
  case "$t" in
    python) build_python python_uppercase "$root/plugins/python-uppercase" "${PY_FLAGS[@]}" ;;
    js) build_js js_uppercase "$jsdir/src/uppercase.js" "${JS_FLAGS[@]}" ;;
    python-enrich) build_python python_enrich "$root/plugins/python-enrich" "${PY_ENRICH_FLAGS[@]}" ;;
    js-enrich) build_js js_enrich "$root/plugins/js-enrich/enrich.js" "${JS_ENRICH_FLAGS[@]}" ;;
  esac
done
