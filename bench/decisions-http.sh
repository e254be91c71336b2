#!/usr/bin/env bash
# Decisions over HTTP, batched: starts `kept serve --demo` (release build) on a loopback port,
# loads `POST /v1/decisions` with batches of 1,000 decisions using wrk for DURATION, and prints
# decisions per second (requests per second × 1,000) with the p50 and p99 latency of a batch.
# Client and server share the machine, as the target says.
#
# Usage: bench/decisions-http.sh [DURATION] [CONNECTIONS] [THREADS]   (defaults: 10s 4 1)
# Environment: KEPT_BIN to use a kept binary already built; BATCH to change the batch size.
set -euo pipefail

DURATION="${1:-10s}"
CONNECTIONS="${2:-4}"
THREADS="${3:-1}"
BATCH="${BATCH:-1000}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! command -v wrk >/dev/null 2>&1; then
    echo "wrk is missing; installing it from the Debian packages" >&2
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi

if [ -z "${KEPT_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p kept-cli)
    KEPT_BIN="$ROOT/target/release/kept"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Allowed decisions are sampled into the decision log at the default rate; every denied one is
# logged too (or counted as dropped when the log cannot keep up), as in production.
(cd "$WORK" && exec "$KEPT_BIN" serve --demo --bind 127.0.0.1:0 --log-filter warn,kept_server=info \
    --log-format json >"$WORK/server.log" 2>&1) &
SERVER_PID=$!

ADDR=""
for _ in $(seq 1 600); do
    ADDR="$(grep -o '"addr":"127.0.0.1:[0-9]*"' "$WORK/server.log" 2>/dev/null | head -1 | cut -d'"' -f4 || true)"
    [ -n "$ADDR" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/server.log" >&2
        echo "the server did not start" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ADDR" ]; then
    echo "the server did not report its address" >&2
    exit 1
fi
KEY="$(grep -o '"decide": *"[^"]*"' "$WORK/kept-data/demo-keys.json" | cut -d'"' -f4)"
BUILT="$(grep '"index built"' "$WORK/server.log" | head -1 || true)"
built_field() { echo "$BUILT" | grep -o "\"$1\":\"\?[0-9.]*" | grep -o '[0-9.]*$' || true; }
echo "index built in $(built_field ms) ms: $(built_field subjects) subjects," \
    "$(built_field index_bytes_per_subject) bytes per subject in the index," \
    "$(built_field directory_bytes_per_subject) in the user id directory"

# Four campaigns' worth of bodies, each a batch of $BATCH decisions over random demo customers
# (user ids u000001…u005000; about one in ten is unknown, as in the demo population).
make_body() {
    local purpose="$1" channel="$2" seed="$3"
    awk -v n="$BATCH" -v purpose="$purpose" -v channel="$channel" -v seed="$seed" 'BEGIN {
        srand(seed);
        printf "{\"requests\":[";
        for (i = 0; i < n; i++) {
            if (i > 0) printf ",";
            id = int(rand() * 5000) + 1;
            printf "{\"subject\":{\"user_id\":\"u%06d\"},\"purpose\":\"%s\"", id, purpose;
            if (channel != "") printf ",\"channel\":\"%s\"", channel;
            printf "}";
        }
        printf "]}";
    }'
}
make_body marketing.communications sms 1 >"$WORK/body1.json"
make_body marketing.communications email 2 >"$WORK/body2.json"
make_body personalize.content.profiled "" 3 >"$WORK/body3.json"
make_body essential.service.notifications.sms sms 4 >"$WORK/body4.json"

# Check one batch before loading: every decision answered.
ANSWERED="$(curl -sS -X POST "http://$ADDR/v1/decisions" -H "Authorization: Bearer $KEY" \
    -H 'Content-Type: application/json' --data-binary @"$WORK/body1.json" | grep -o '"reason"' | wc -l)"
if [ "$ANSWERED" != "$BATCH" ]; then
    echo "a batch of $BATCH got $ANSWERED decisions" >&2
    exit 1
fi

cat >"$WORK/decisions.lua" <<LUA
local bodies = {}
for i = 1, 4 do
    local f = assert(io.open("$WORK/body" .. i .. ".json", "rb"))
    bodies[i] = f:read("*a")
    f:close()
end
local requests = {}
for i = 1, 4 do
    requests[i] = wrk.format("POST", "/v1/decisions", {
        ["Authorization"] = "Bearer $KEY",
        ["Content-Type"] = "application/json",
    }, bodies[i])
end
local n = 0
request = function()
    n = n + 1
    return requests[(n % 4) + 1]
end
local bad = 0
response = function(status, headers, body)
    if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
    io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\n",
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        summary.errors.status + summary.errors.connect + summary.errors.read
            + summary.errors.write + summary.errors.timeout))
end
LUA

echo "kept serve --demo on $ADDR; wrk -t$THREADS -c$CONNECTIONS -d$DURATION, batches of $BATCH"
# A short warm-up, then the measured run.
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$WORK/decisions.lua" "http://$ADDR" >/dev/null
OUT="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/decisions.lua" "http://$ADDR")"
echo "$OUT" | grep -v '^RESULT'
LINE="$(echo "$OUT" | grep '^RESULT')"
field() { echo "$LINE" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2; }
REQUESTS="$(field requests)"
DURATION_US="$(field duration_us)"
ERRORS="$(field errors)"
awk -v r="$REQUESTS" -v d="$DURATION_US" -v b="$BATCH" -v p50="$(field p50_us)" \
    -v p99="$(field p99_us)" -v e="$ERRORS" 'BEGIN {
    rps = r / (d / 1e6);
    printf "\nbatches/s:      %.0f\n", rps;
    printf "decisions/s:    %.0f   (target >= 1,000,000 on 2 cores, client and server together)\n", rps * b;
    printf "batch latency:  p50 %.2f ms, p99 %.2f ms\n", p50 / 1000, p99 / 1000;
    printf "errors:         %d\n", e;
}'
DROPPED="$(curl -s "http://$ADDR/metrics" | grep '^kept_decision_log_dropped_total' | awk '{print $2}' || true)"
WRITTEN="$(curl -s "http://$ADDR/metrics" | grep '^kept_decision_log_written_total' | awk '{print $2}' || true)"
echo "decision log:   ${WRITTEN:-0} written, ${DROPPED:-0} dropped (queue full)"
