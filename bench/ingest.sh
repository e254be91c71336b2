#!/usr/bin/env bash
# Event ingestion with durable acknowledgement: starts `kept serve --demo` (release build) on a
# fresh database, first SQLite and then PostgreSQL, and prints
#   - events per second through `POST /v1/batch`, batches of 100 realistic ~1 KB track events
#     (wrk with a Lua script; every batch answered 200 only after its commit), and
#   - the p50/p99 latency of single `POST /v1/track` calls at a fixed 1,000 requests/s (oha).
# Client and server share the machine. The visitors are 10,000 recurring people (user id and
# anonymous id) whose consent (a yes to personalisation, a no to advertising) rides on every
# event; a warm-up pass sees each of them once, so the measured runs are the steady state of
# known visitors: identity from the cache, consent unchanged, events and forwarding decisions
# written for every event.
#
# Usage: bench/ingest.sh [DURATION] [CONNECTIONS]        (defaults: 20s 32)
# Environment: KEPT_BIN to use a kept binary already built; BACKENDS="sqlite postgres";
#   PG_URL (default postgres://postgres@127.0.0.1:5432) for a scratch database `kept_bench_ingest`.
set -euo pipefail

DURATION="${1:-20s}"
CONNECTIONS="${2:-32}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
BATCH=100
USERS=10000
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk is missing; installing it from the Debian packages" >&2
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi
if ! command -v oha >/dev/null 2>&1; then
    echo "oha is missing; installing it with cargo (a few minutes, once)" >&2
    cargo install --locked oha
fi
if [ -z "${KEPT_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p kept-cli)
    KEPT_BIN="$ROOT/target/release/kept"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# One track event of about 1 KB, as analytics.js sends it. %ID% and %N% are filled in.
EVENT='{"type":"track","messageId":"%ID%","anonymousId":"anon-%N%","userId":"user-%N%","event":"Product Viewed","timestamp":"2026-11-29T10:00:00.000Z","properties":{"product_id":"LK-%N%","sku":"LK-%N%-BLU-M","name":"Linen shirt, blue","category":"Shirts","brand":"Larkspur","variant":"Blue / M","price":59.0,"currency":"EUR","quantity":1,"position":3,"url":"https://shop.example/p/linen-shirt","image_url":"https://cdn.shop.example/i/linen-shirt.jpg"},"context":{"library":{"name":"analytics.js","version":"5.2.0"},"page":{"path":"/p/linen-shirt","referrer":"https://search.example/","title":"Linen shirt - Larkspur Goods","url":"https://shop.example/p/linen-shirt"},"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36","locale":"de-DE","timezone":"Europe/Berlin","ip":"203.0.113.7","location":{"country":"DE"},"consent":{"categoryPreferences":{"personalize.content.profiled":true,"marketing.advertising.third_party.targeted":false}}}}'

cat >"$WORK/batch.lua.in" <<'LUA'
-- Each request: a batch of @BATCH@ events for @BATCH@ consecutive visitors, unique message ids
-- (prefixed by the script's argument, so that every run's ids are new).
local event = [[@EVENT@]]
local threads = 0
setup = function(thread)
    thread:set("tid", threads)
    threads = threads + 1
end
local prefix = "w"
init = function(args)
    prefix = args[1] or "w"
end
-- The event cut once at its placeholders (odd entries literal text, even ones "ID" or "N"), so
-- that a request is one table.concat, not 200 gsub calls: the load generator shares the two
-- cores with the server and should take as little of them as it can.
local segments = {}
do
    local pos = 1
    while true do
        local s, e, key = event:find("%%(%u+)%%", pos)
        if not s then
            segments[#segments + 1] = event:sub(pos)
            break
        end
        segments[#segments + 1] = event:sub(pos, s - 1)
        segments[#segments + 1] = key
        pos = e + 1
    end
end
local n = 0
local bad = 0
local out = {}
request = function()
    n = n + 1
    local first = ((n * @BATCH@) + (tid or 0) * 7919) % @USERS@
    local k = 1
    out[k] = '{"batch":['
    for i = 1, @BATCH@ do
        local user = tostring((first + i) % @USERS@)
        local id = prefix .. "-" .. (tid or 0) .. "-" .. n .. "-" .. i
        if i > 1 then
            k = k + 1
            out[k] = ","
        end
        for j = 1, #segments do
            local seg = segments[j]
            if j % 2 == 0 then
                seg = (seg == "ID") and id or user
            end
            k = k + 1
            out[k] = seg
        end
    end
    k = k + 1
    out[k] = "]}"
    local body = table.concat(out, "", 1, k)
    return wrk.format("POST", "/v1/batch", {
        ["Authorization"] = "Basic @AUTH@",
        ["Content-Type"] = "application/json",
    }, body)
end
response = function(status, headers, body)
    if status ~= 200 then
        bad = bad + 1
        if bad <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
    end
end
done = function(summary, latency, requests)
    io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        summary.errors.status + summary.errors.connect + summary.errors.read
            + summary.errors.write + summary.errors.timeout))
end
LUA

start_server() {
    local url="$1"
    rm -rf "$WORK/run" && mkdir -p "$WORK/run"
    (cd "$WORK/run" && exec env KEPT_LOG_FILTER=warn,kept_server::server=info "$KEPT_BIN" serve --demo \
        --bind 127.0.0.1:0 --database-url "$url" --log-format json >"$WORK/run/server.log" 2>&1) &
    SERVER_PID=$!
    ADDR=""
    for _ in $(seq 1 1800); do
        ADDR="$(grep -o '"addr":"127.0.0.1:[0-9]*"' "$WORK/run/server.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
        [ -n "$ADDR" ] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$WORK/run/server.log" >&2
            echo "the server did not start" >&2
            exit 1
        fi
        sleep 0.1
    done
    [ -n "$ADDR" ] || { echo "the server did not report its address" >&2; exit 1; }
    KEY="$(grep -o '"server": *"[^"]*"' "$WORK/run/kept-data/demo-keys.json" | cut -d'"' -f4)"
    AUTH="$(printf '%s:' "$KEY" | base64 -w0)"
    EVENT="$EVENT" AUTH="$AUTH" BATCH="$BATCH" USERS="$USERS" python3 - "$WORK/batch.lua.in" "$WORK/run/batch.lua" <<'PY'
import os, sys
text = open(sys.argv[1]).read()
for name in ("EVENT", "AUTH", "BATCH", "USERS"):
    text = text.replace("@" + name + "@", os.environ[name])
open(sys.argv[2], "w").write(text)
PY
}

run_wrk() {
    local duration="$1" prefix="$2"
    wrk -t1 -c"$CONNECTIONS" -d"$duration" -s "$WORK/run/batch.lua" "http://$ADDR" -- "$prefix"
}

field() { echo "$1" | tr ' ' '\n' | grep "^$2=" | cut -d= -f2; }

declare -A EVENTS_PER_S P99_MS
for backend in $BACKENDS; do
    case "$backend" in
        sqlite) URL="$WORK/run-db/kept.db"; rm -rf "$WORK/run-db"; mkdir -p "$WORK/run-db" ;;
        postgres)
            psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS kept_bench_ingest" >/dev/null
            psql "$PG_URL/postgres" -qc "CREATE DATABASE kept_bench_ingest" >/dev/null
            URL="$PG_URL/kept_bench_ingest" ;;
        *) echo "unknown backend $backend" >&2; exit 1 ;;
    esac
    start_server "$URL"
    echo
    echo "== $backend: kept serve --demo on $ADDR; wrk -t1 -c$CONNECTIONS, batches of $BATCH ~1 KB events"
    # Warm-up: every visitor seen once (identities resolved, consent recorded).
    WARM="$(wrk -t1 -c4 -d12s -s "$WORK/run/batch.lua" "http://$ADDR" -- warm | grep '^RESULT')"
    OUT="$(run_wrk "$DURATION" "m")"
    echo "$OUT" | grep -v '^RESULT'
    LINE="$(echo "$OUT" | grep '^RESULT')"
    REQUESTS="$(field "$LINE" requests)"
    EVENTS_PER_S[$backend]="$(awk -v r="$REQUESTS" -v d="$(field "$LINE" duration_us)" -v b="$BATCH" 'BEGIN { printf "%.0f", r / (d / 1e6) * b }')"
    printf 'batch latency: p50 %.1f ms, p99 %.1f ms; errors %s\n' \
        "$(awk -v x="$(field "$LINE" p50_us)" 'BEGIN{print x/1000}')" \
        "$(awk -v x="$(field "$LINE" p99_us)" 'BEGIN{print x/1000}')" "$(field "$LINE" errors)"

    # Single calls at a fixed rate: one known visitor's event, no message id (the server makes
    # one), so every call is a new event.
    SINGLE="$(echo "$EVENT" | sed 's/"messageId":"%ID%",//; s/%N%/42/g')"
    oha --no-tui --output-format json -z "$DURATION" -q 1000 -c 32 -m POST \
        -H "Authorization: Basic $AUTH" -T application/json -d "$SINGLE" \
        "http://$ADDR/v1/track" >"$WORK/run/oha.json"
    P99_MS[$backend]="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%.2f" % (d["latencyPercentiles"]["p99"]*1000))' "$WORK/run/oha.json")"
    python3 - "$WORK/run/oha.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s, p = d["summary"], d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print("single /v1/track at 1,000 req/s: %.0f req/s done, p50 %.2f ms, p99 %.2f ms, statuses %s"
      % (s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, codes))
PY
    ACKED="$(python3 - "$WORK/run/oha.json" "$(field "$WARM" requests)" "$REQUESTS" "$BATCH" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
singles = d.get("statusCodeDistribution", {}).get("200", 0)
print((int(sys.argv[2]) + int(sys.argv[3])) * int(sys.argv[4]) + singles)
PY
)"
    stop_server
    # Every acknowledged event is in the database (a few more may have been committed for
    # requests the load tools stopped waiting for).
    case "$backend" in
        sqlite) STORED="$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from events").fetchone()[0])' "$URL")" ;;
        postgres) STORED="$(psql "$URL" -tAc 'select count(*) from events')" ;;
    esac
    echo "stored: $STORED events for $ACKED acknowledged"
    if [ "$STORED" -lt "$ACKED" ]; then
        echo "an acknowledged event is missing" >&2
        exit 1
    fi
done

echo
echo "== summary (client and server on this machine)"
for backend in $BACKENDS; do
    awk -v b="$backend" -v e="${EVENTS_PER_S[$backend]}" -v p="${P99_MS[$backend]}" 'BEGIN {
        printf "%-9s %9.0f events/s via /v1/batch (target >= 50,000 on SQLite)   single /v1/track p99 %s ms at 1,000 req/s\n", b, e, p;
    }'
done
echo "peer:     RudderStack published ~850 requests/s per core (~1,700/s on 2 cores; one event per request)"
if [ -n "${EVENTS_PER_S[sqlite]:-}" ]; then
    awk -v e="${EVENTS_PER_S[sqlite]}" 'BEGIN { printf "ratio:    SQLite %.0fx the peer per machine\n", e / 1700 }'
fi
