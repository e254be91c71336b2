# Shared by the end-to-end suites (sourced by each `run`): installing what a suite needs on a
# Debian machine, building `kept`, and running `kept serve` on a free loopback port with a fresh
# data directory that is removed, with the server, when the suite exits.
#
# Each suite prints one summary line last; everything else goes to its log.

E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_ROOT/.." && pwd)
export E2E_ROOT REPO_ROOT
ARTIFACTS="$E2E_ROOT/artifacts"
mkdir -p "$ARTIFACTS"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Node 18 or later, with npm.
need_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js" >&2
    apt_install nodejs npm
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 18 ]; then
    echo "Node.js 18 or later is needed; found $(node --version)" >&2
    return 1
  fi
}

# Python 3 that can make a virtual environment.
need_python() {
  if ! command -v python3 >/dev/null; then
    echo "installing Python" >&2
    apt_install python3 python3-venv
  fi
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3-venv
  fi
}

# `npm ci` in a suite directory, reusing node_modules when the lock file has not changed.
npm_install() {
  local dir=$1
  if [ -f "$dir/node_modules/.package-lock.json" ] &&
     cmp -s "$dir/package-lock.json" "$dir/node_modules/.kept-lock"; then
    return 0
  fi
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$dir/package-lock.json" "$dir/node_modules/.kept-lock"
}

# Builds the `kept` binary (debug) and sets KEPT_BIN. `.ci/run` has already built the workspace
# and passes its binary in KEPT_BIN, so nothing is built twice with a different feature set.
build_kept() {
  if [ -n "${KEPT_BIN:-}" ] && [ -x "$KEPT_BIN" ]; then
    return 0
  fi
  (cd "$REPO_ROOT" && cargo build -q -p kept-cli >&2)
  KEPT_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/kept"
  export KEPT_BIN
}

KEPT_PID=""
KEPT_DATA=""
stop_kept() {
  if [ -n "$KEPT_PID" ] && kill -0 "$KEPT_PID" 2>/dev/null; then
    kill -TERM "$KEPT_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$KEPT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$KEPT_PID" 2>/dev/null || true
  fi
  KEPT_PID=""
  if [ -n "$KEPT_DATA" ] && [ -z "${KEEP_E2E_DATA:-}" ]; then
    rm -rf "$KEPT_DATA"
  fi
}
trap stop_kept EXIT
trap 'exit 130' INT TERM

# Starts `kept serve` with the given extra arguments on 127.0.0.1 and a free port, in a new data
# directory (KEPT_DATA, unless already set), and sets KEPT_URL once it listens.
start_kept() {
  if [ -z "$KEPT_DATA" ]; then
    KEPT_DATA=$(mktemp -d "${TMPDIR:-/tmp}/kept-e2e.XXXXXX")
  fi
  export KEPT_DATA
  "$KEPT_BIN" serve --bind 127.0.0.1:0 --data-dir "$KEPT_DATA" \
    --database-url "$KEPT_DATA/kept.db" --log-format json --log-filter "${KEPT_LOG:-info}" "$@" \
    >"$KEPT_DATA/server.log" 2>&1 &
  KEPT_PID=$!
  KEPT_URL=""
  for _ in $(seq 1 600); do
    KEPT_URL=$(grep -o 'kept is listening on http://127\.0\.0\.1:[0-9]*' "$KEPT_DATA/server.log" |
      head -1 | sed 's/.* on //' || true)
    [ -n "$KEPT_URL" ] && break
    if ! kill -0 "$KEPT_PID" 2>/dev/null; then
      echo "kept stopped before listening:" >&2
      tail -20 "$KEPT_DATA/server.log" >&2
      return 1
    fi
    sleep 0.1
  done
  if [ -z "$KEPT_URL" ]; then
    echo "kept did not start within 60 s" >&2
    tail -20 "$KEPT_DATA/server.log" >&2
    return 1
  fi
  export KEPT_URL
  echo "kept is listening on $KEPT_URL (data in $KEPT_DATA)" >&2
}
