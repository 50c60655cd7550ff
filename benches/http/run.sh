#!/usr/bin/env bash
# `make bench-http`: MiniDB's REST API under wrk on loopback, beside an empty axum handler
# measured in the same run. Not part of CI. Needs wrk (Debian package `wrk`) and python3.
#
# Settings (environment): DURATION (10s), CONNS (50), THREADS (2, wrk's), DOCS (100000,
# the preloaded collection for GET by id and _search), EXTRA_ENV (e.g.
# "MINIDB_STORAGE__SYNC=none", passed to the server). The server runs with its defaults
# otherwise: storage.sync = "always" (an fdatasync per acknowledged write, group commit).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/benches/http
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
DOCS=${DOCS:-100000}
EXTRA_ENV=${EXTRA_ENV:-}
CARGO=${CARGO:-cargo}
export BENCH_LUA_DIR=$HERE/lua BENCH_DOCS=$DOCS

command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }

echo "== building (release)" >&2
(cd "$ROOT" && $CARGO build --release --quiet)
(cd "$HERE/baseline" && CARGO_TARGET_DIR=$ROOT/target/bench-http $CARGO build --release --quiet)
MINIDB=$ROOT/target/release/minidb
BASELINE=$ROOT/target/bench-http/release/minidb-http-baseline

WORK=$(mktemp -d /tmp/minidb-bench-http.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# start NAME CMD...: runs CMD in $WORK with its output in $WORK/NAME.log, waits for its
# "listening on ADDR" line and sets ADDR and PID.
start() {
    local name=$1
    shift
    (cd "$WORK" && exec "$@" >"$WORK/$name.log" 2>&1) &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 1 200); do
        # MiniDB logs JSON ({"message":"listening on ADDR","addr":"ADDR",...}); the baseline
        # prints a plain "listening on ADDR".
        ADDR=$(sed -n -e 's/.*"message":"listening on [^"]*".*"addr":"\([^"]*\)".*/\1/p' \
            -e 's/.*"addr":"\([^"]*\)".*"message":"listening on .*/\1/p' \
            -e 's/^listening on //p' "$WORK/$name.log" | head -1)
        [ -n "$ADDR" ] && return 0
        sleep 0.05
    done
    echo "$name did not start:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"
# run LABEL URL SCRIPT: one wrk run, its RESULT line appended to $RESULTS.
run() {
    local label=$1 url=$2 script=$3
    echo "== $label: wrk -t$THREADS -c$CONNS -d$DURATION $url" >&2
    local out
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --timeout 30s -s "$HERE/lua/$script" "$url")
    local line
    line=$(grep '^RESULT ' <<<"$out" | tail -1)
    [ -n "$line" ] || { echo "$out" >&2; exit 1; }
    printf '%s\t%s\n' "$label" "${line#RESULT }" >>"$RESULTS"
}

# 1. The empty handler.
start baseline "$BASELINE" 127.0.0.1:0
run "baseline: empty axum handler (GET)" "http://$ADDR/" get.lua
kill "$PID"; wait "$PID" 2>/dev/null || true

# 2. MiniDB with its defaults (a clean cwd, so config/minidb.toml is not read).
# shellcheck disable=SC2086
start minidb env $EXTRA_ENV "$MINIDB" serve --listen 127.0.0.1:0 --data-dir "$WORK/data"
MINIDB_PID=$PID
BASE=http://$ADDR

echo "== preloading $DOCS documents into 'pre' (_insertMany, batches of 1000)" >&2
python3 - "$BASE" "$DOCS" <<'PY'
import json, sys, time, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
t = time.time()
for start in range(0, n, 1000):
    docs = [{"_id": f"doc-{i:06d}", "name": f"user {i}", "age": i % 90, "group": i % 1000,
             "city": ["Paris", "Berlin", "Lisbon", "Oslo"][i % 4], "tags": ["a", "b"]}
            for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(base + "/api/pre/_insertMany", data=json.dumps(docs).encode(),
                                 headers={"Content-Type": "application/json"})
    while True:
        try:
            with urllib.request.urlopen(req) as r:
                assert r.status == 200, r.status
            break
        except urllib.error.HTTPError as e:
            if e.code != 503:
                raise
            time.sleep(int(e.headers.get("Retry-After", "1")))
dt = time.time() - t
print(f"preload: {n} docs in {dt:.1f}s = {n / dt:,.0f} docs/s", file=sys.stderr)
with urllib.request.urlopen(base + "/api/pre/_count") as r:
    assert json.load(r)["count"] == n
PY

run "GET /api/health" "$BASE/api/health" get.lua
run "insertOne (unique ids)" "$BASE/api/bench_one" insert_one.lua
run "insertMany, 2 docs" "$BASE/api/bench_many/_insertMany" insert_many.lua
BENCH_COL_PATH=/api/pre/ run "GET by id ($DOCS docs)" "$BASE/api/pre/doc-000000" get_by_id.lua
BENCH_FILTER='{"city": "Oslo"}' run "_search, first page (limit=100)" "$BASE/api/pre/_search?limit=100" search.lua
BENCH_FILTER='{"group": -1}' run "_search matching nothing ($DOCS docs)" "$BASE/api/pre/_search" search.lua

HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$MINIDB_PID/status")
kill "$MINIDB_PID"; wait "$MINIDB_PID" 2>/dev/null || true

python3 - "$RESULTS" "$HWM" "$DURATION" "$CONNS" "$THREADS" "$EXTRA_ENV" <<'PY'
import sys
path, hwm_kb, duration, conns, threads, extra = sys.argv[1:7]
rows = []
for line in open(path):
    label, reqs, dur_us, p50, p99, non2xx, sockerr = line.rstrip("\n").split("\t")[0:1] + line.split("\t")[1].split()
    rows.append((label, int(reqs) / (int(dur_us) / 1e6), int(p50) / 1000, int(p99) / 1000, int(non2xx), int(sockerr)))
base = rows[0][1]
print(f"\nwrk -t{threads} -c{conns} -d{duration}, loopback, client and server on the same cores"
      + (f"; server env: {extra}" if extra else "; server defaults (storage.sync = always)"))
print("\n| scenario | req/s | p50 ms | p99 ms | vs baseline | non-2xx | socket errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for label, rps, p50, p99, non2xx, sockerr in rows:
    print(f"| {label} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {rps / base:.2f} | {non2xx} | {sockerr} |")
print(f"\nminidb peak RSS (VmHWM) over the run: {int(hwm_kb) / 1024:.0f} MiB")
PY
