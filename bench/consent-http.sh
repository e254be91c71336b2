#!/usr/bin/env bash
# Consent reads and durable consent writes over HTTP, each beside `/healthz` of the same binary
# in the same run, beside the same read served from the store, and beside Fides (TARGETS.md:
# 221 reads/s and 103 writes/s at 16 connections). Load: wrk, 2 threads, 16 connections.
#
#   preferences      GET  /v1/subjects/{id}/preferences, random demo subjects (from the index)
#   preferences/store the same read with `--consent-reads store` (every read from the database)
#   consents         GET  /v1/subjects/{id}/consents (the subject's ledger records)
#   profile          GET  /v1/subjects/{id}/profile?purpose=essential.service.operations (read
#                    from the store, with one durable use recorded per read)
#   consent write    POST /v1/consents, one durable ledger record per request
#   with info logs   /healthz and preferences again under `--log-filter info` (the default)
#
# It prints requests per second, p50 and p99, the share of /healthz, the factor over Fides, and
# the server's resident memory after start and after the run.
#
# Usage: bench/consent-http.sh [DURATION]   (default 10s; each figure is measured for that long)
# Environment: KEPT_BIN, the kept binary to measure (default target/release/kept, built with
# `cargo build --release -p kept-cli`). Needs wrk, curl and python3; installs nothing.
set -euo pipefail

DURATION="${1:-10s}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KEPT_BIN="${KEPT_BIN:-$ROOT/target/release/kept}"
FIDES_READS=221
FIDES_WRITES=103

for tool in wrk curl python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$tool is missing: apt-get install $tool" >&2
        exit 2
    fi
done
if [ ! -x "$KEPT_BIN" ]; then
    echo "no kept binary at $KEPT_BIN: cargo build --release -p kept-cli, or set KEPT_BIN" >&2
    exit 2
fi
KEPT_BIN="$(cd "$(dirname "$KEPT_BIN")" && pwd)/$(basename "$KEPT_BIN")"

WORK="$(mktemp -d)"
SERVER_PID=""
stop() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/preferences.lua" <<'LUA'
local key = os.getenv("KEY")
math.randomseed(os.time())
request = function()
  local id = math.random(0, 4999)
  return wrk.format("GET", "/v1/subjects/" .. id .. "/preferences", {["Authorization"] = "Bearer " .. key})
end
LUA
cat >"$WORK/consents.lua" <<'LUA'
local key = os.getenv("KEY")
math.randomseed(os.time())
request = function()
  local id = math.random(0, 4999)
  return wrk.format("GET", "/v1/subjects/" .. id .. "/consents", {["Authorization"] = "Bearer " .. key})
end
LUA
cat >"$WORK/profile.lua" <<'LUA'
local key = os.getenv("DECIDE_KEY")
math.randomseed(os.time())
request = function()
  local id = math.random(0, 4999)
  return wrk.format("GET", "/v1/subjects/" .. id .. "/profile?purpose=essential.service.operations", {["Authorization"] = "Bearer " .. key})
end
LUA
cat >"$WORK/write.lua" <<'LUA'
local key = os.getenv("KEY")
math.randomseed(os.time())
local n = 0
request = function()
  n = n + 1
  local id = math.random(0, 4999)
  local action = (n % 2 == 0) and "given" or "withdrawn"
  local body = '{"records":[{"subject":' .. id .. ',"purpose":"marketing.communications","channel":"email","topic":"newsletter","action":"' .. action .. '","notice":"newsletter","method":"web_form","source":"api"}]}'
  return wrk.format("POST", "/v1/consents", {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
LUA

PORT=""
# Starts the demo server in a fresh directory with the extra flags given; sets PORT and KEY.
start() {
    local dir="$WORK/run-$RANDOM"
    mkdir -p "$dir"
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    (cd "$dir" && exec "$KEPT_BIN" serve --demo --bind "127.0.0.1:$PORT" "$@" >"$dir/server.log" 2>&1) &
    SERVER_PID=$!
    for _ in $(seq 1 1200); do
        curl -fs "127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$dir/server.log" >&2
            echo "the server did not start" >&2
            exit 1
        fi
        sleep 0.1
    done
    KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["privacy"])' "$dir/kept-data/demo-keys.json")"
    DECIDE_KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decide"])' "$dir/kept-data/demo-keys.json")"
    export KEY DECIDE_KEY
}

rss() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$SERVER_PID/status"; }

# wrk's requests per second, p50 and p99 (in ms) for one load.
measure() {
    wrk -t2 -c16 -d"$DURATION" --latency "$@" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { r = $2 }
        / 50%/ { p50 = ms($2) }
        / 99%/ { p99 = ms($2) }
        /Non-2xx/ { bad = $NF }
        END { printf "%s %s %s %s\n", r, p50, p99, bad + 0 }'
}

declare -A FIG
run() {
    local name="$1"
    shift
    FIG[$name]="$(measure "$@")"
}

URL="http://127.0.0.1"
start --log-filter warn
RSS_START="$(rss)"
run healthz "$URL:$PORT/healthz"
run preferences -s "$WORK/preferences.lua" "$URL:$PORT"
run consents -s "$WORK/consents.lua" "$URL:$PORT"
run profile -s "$WORK/profile.lua" "$URL:$PORT"
run write -s "$WORK/write.lua" "$URL:$PORT"
RSS_END="$(rss)"
stop

start --log-filter warn --consent-reads store
run healthz_store "$URL:$PORT/healthz"
run preferences_store -s "$WORK/preferences.lua" "$URL:$PORT"
stop

start --log-filter info
run healthz_info "$URL:$PORT/healthz"
run preferences_info -s "$WORK/preferences.lua" "$URL:$PORT"
stop

python3 - "$FIDES_READS" "$FIDES_WRITES" "$RSS_START" "$RSS_END" \
    "${FIG[healthz]}" "${FIG[preferences]}" "${FIG[consents]}" "${FIG[profile]}" "${FIG[write]}" \
    "${FIG[healthz_store]}" "${FIG[preferences_store]}" \
    "${FIG[healthz_info]}" "${FIG[preferences_info]}" <<'PY'
import sys
fides_reads, fides_writes = float(sys.argv[1]), float(sys.argv[2])
rss_start, rss_end = sys.argv[3], sys.argv[4]
rows = [a.split() for a in sys.argv[5:]]
fig = lambda r: (float(r[0]), float(r[1]), float(r[2]), int(r[3]))
(h, pref, cons, prof, write, h_store, pref_store, h_info, pref_info) = map(fig, rows)
print(f"{'':28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'/healthz':>10}{'x Fides':>9}{'non-2xx':>9}")
def line(name, r, base, fides=None):
    x = f"{r[0] / fides:8.0f}x" if fides else f"{'':9}"
    print(f"{name:28}{r[0]:9.0f}{r[1]:9.2f}{r[2]:9.2f}{r[0] / base[0]:10.2f}{x}{r[3]:9d}")
print("server 1: --log-filter warn")
line("  /healthz", h, h)
line("  preferences (index)", pref, h, fides_reads)
line("  consents", cons, h, fides_reads)
line("  profile (+ a durable use)", prof, h, fides_reads)
line("  consent write (durable)", write, h, fides_writes)
print("server 2: --log-filter warn --consent-reads store")
line("  /healthz", h_store, h_store)
line("  preferences (store)", pref_store, h_store, fides_reads)
print(f"  index over store: {pref[0] / pref_store[0]:.1f}x the reads, as shares of each /healthz "
      f"{pref[0] / h[0]:.2f} against {pref_store[0] / h_store[0]:.2f}")
print("server 3: --log-filter info (the default)")
line("  /healthz", h_info, h)
line("  preferences (index)", pref_info, h)
print(f"memory (server 1): {rss_start} MiB RSS after start, {rss_end} MiB after the run")
PY
