#!/usr/bin/env python3
"""`make bench-sessions`: a session-store workload on MiniDB beside Redis.

Writes sessions with a lifetime (`?ttl=`, Redis `SET ... EX`) at a fixed rate and reads
live ones at a fixed rate, for ten lifetimes. Every 5 s it prints the live documents, the
disk size and the server's RSS, which must plateau rather than grow (disk within 2x the live
data once the first lifetime has passed), and at the end the achieved rates and latencies of
both servers. During the MiniDB run a change-feed reader (`feed=sse`) measures the latency
from sending a write to receiving its event.

Redis runs with `appendonly yes` and `appendfsync always` (every write fsynced, like
MiniDB's default). Without `redis-server` on PATH the Redis half is skipped with a message.

Environment: BENCH_WRITES (per s, 1000), BENCH_READS (per s, 1000), BENCH_TTL (s, 10),
BENCH_LIFETIMES (10), BENCH_DOC_BYTES (1000), MINIDB (binary, target/release/minidb).
"""
from __future__ import annotations

import bisect
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRITES = int(os.environ.get("BENCH_WRITES", "1000"))
READS = int(os.environ.get("BENCH_READS", "1000"))
TTL = int(os.environ.get("BENCH_TTL", "10"))
LIFETIMES = int(os.environ.get("BENCH_LIFETIMES", "10"))
DOC_BYTES = int(os.environ.get("BENCH_DOC_BYTES", "1000"))
THREADS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def du_mib(path: Path) -> float:
    """Bytes of the files under `path`, without MiniDB's fixed 16 MiB disk-full RESERVE."""
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and p.name != "RESERVE":
                total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total / (1 << 20)


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


class Recent:
    """Ids written in the last (TTL - 2) s, for reads of live sessions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: list[float] = []
        self.keys: list[str] = []

    def add(self, key: str) -> None:
        with self.lock:
            self.times.append(time.monotonic())
            self.keys.append(key)
            if len(self.keys) > 4 * WRITES * TTL:
                cut = bisect.bisect_left(self.times, time.monotonic() - TTL)
                del self.times[:cut]
                del self.keys[:cut]

    def pick(self) -> str | None:
        with self.lock:
            lo = bisect.bisect_left(self.times, time.monotonic() - (TTL - 2))
            if lo >= len(self.keys):
                return None
            return self.keys[random.randrange(lo, len(self.keys))]


def paced(rate: float, seconds: float, stop: threading.Event, op) -> None:
    """Calls op() `rate` times a second (across THREADS threads) for `seconds`."""
    per = rate / THREADS
    start = time.monotonic()
    n = 0
    while not stop.is_set():
        due = start + n / per
        now = time.monotonic()
        if due - start > seconds:
            return
        if due > now:
            time.sleep(due - now)
        op()
        n += 1


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lat: dict[str, list[float]] = {"write": [], "read": []}
        self.errors: dict[str, int] = {"write": 0, "read": 0, "read_miss": 0}

    def add(self, kind: str, dt: float) -> None:
        with self.lock:
            self.lat[kind].append(dt)

    def err(self, kind: str) -> None:
        with self.lock:
            self.errors[kind] += 1


def payload(i: int) -> str:
    pad = "x" * max(0, DOC_BYTES - 60)
    return json.dumps({"user": f"u{i % 100000}", "cart": i, "pad": pad})


def run_workload(name, write_op, read_op, sample, extra_report=None) -> dict:
    seconds = TTL * LIFETIMES
    stats = Stats()
    recent = Recent()
    stop = threading.Event()
    counter = iter(range(10**12))
    counter_lock = threading.Lock()

    def one_write(conn):
        with counter_lock:
            i = next(counter)
        key = f"s{i}"
        t0 = time.monotonic()
        ok = write_op(conn, key, payload(i), t0)
        stats.add("write", time.monotonic() - t0)
        if ok:
            recent.add(key)
        else:
            stats.err("write")

    def one_read(conn):
        key = recent.pick()
        if key is None:
            return
        t0 = time.monotonic()
        found = read_op(conn, key)
        stats.add("read", time.monotonic() - t0)
        if found is None:
            stats.err("read")
        elif not found:
            stats.err("read_miss")

    threads = []
    for kind, rate, fn in (("w", WRITES, one_write), ("r", READS, one_read)):
        for _ in range(THREADS):
            def body(fn=fn, rate=rate):
                conn = sample["connect"]()
                paced(rate, seconds, stop, lambda: fn(conn))
            threads.append(threading.Thread(target=body, daemon=True))
    t_start = time.monotonic()
    for t in threads:
        t.start()
    rows = []
    print(f"{name}: {WRITES} writes/s with a {TTL} s lifetime, {READS} reads/s of live sessions, {seconds} s")
    print(f"{'t (s)':>6} {'live':>8} {'live MiB':>9} {'disk MiB':>9} {'RSS MiB':>8}")
    while any(t.is_alive() for t in threads):
        time.sleep(5)
        live, live_mib = sample["live"]()
        row = (time.monotonic() - t_start, live, live_mib, sample["disk"](), sample["rss"]())
        rows.append(row)
        print(f"{row[0]:6.0f} {row[1]:8d} {row[2]:9.1f} {row[3]:9.1f} {row[4]:8.1f}", flush=True)
    elapsed = time.monotonic() - t_start
    res = {
        "name": name,
        "write_rate": len(stats.lat["write"]) / elapsed,
        "read_rate": len(stats.lat["read"]) / elapsed,
        "write_p50_ms": pct(stats.lat["write"], 0.5) * 1000,
        "write_p99_ms": pct(stats.lat["write"], 0.99) * 1000,
        "read_p50_ms": pct(stats.lat["read"], 0.5) * 1000,
        "read_p99_ms": pct(stats.lat["read"], 0.99) * 1000,
        "errors": dict(stats.errors),
        "rows": rows,
    }
    steady = [r for r in rows if r[0] > TTL * 2]
    if steady:
        res["disk_max"] = max(r[3] for r in steady)
        res["rss_max"] = max(r[4] for r in steady)
        res["rss_first"] = steady[0][4]
        res["disk_over_live"] = max(r[3] / max(r[2], 1e-9) for r in steady)
    if extra_report:
        res.update(extra_report())
    return res


# ------------------------------------------------------------------ MiniDB
def minidb_run(tmp: Path) -> dict:
    binary = os.environ.get("MINIDB", str(ROOT / "target/release/minidb"))
    port = free_port()
    data = tmp / "minidb-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIDB_")}
    env.update({"MINIDB_TELEMETRY__LOG_LEVEL": "warn", "MINIDB_TELEMETRY__ACCESS_LOG": "false",
                "MINIDB_STORAGE__MEMTABLE_MB": os.environ.get("BENCH_MEMTABLE_MB", "4")})
    proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/api/ready")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("minidb did not become ready")
        time.sleep(0.05)

    def connect():
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def write(conn, key, body, _t0):
        try:
            conn.request("PUT", f"/api/sess/{key}?ttl={TTL}", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            return r.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            return False

    def read(conn, key):
        try:
            conn.request("GET", f"/api/sess/{key}")
            r = conn.getresponse()
            r.read()
            return {200: True, 404: False}.get(r.status)
        except (OSError, http.client.HTTPException):
            conn.close()
            return None

    def live():
        c = connect()
        c.request("GET", "/api/_collections")
        cols = json.loads(c.getresponse().read())
        c.close()
        s = next((x for x in cols if x["name"] == "sess"), {"docCount": 0, "byteSize": 0})
        return s["docCount"], s["byteSize"] / (1 << 20)

    # The change feed's write-to-event latency, from the same writes.
    sent: dict[str, float] = {}
    sse_lat: list[float] = []
    stop_sse = threading.Event()

    def sse_reader():
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /api/sess/_changes?feed=sse&since=now HTTP/1.1\r\nHost: x\r\n\r\n")
        f = s.makefile("rb")
        while not stop_sse.is_set():
            line = f.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                now = time.monotonic()
                ev = json.loads(line[6:])
                t0 = sent.pop(ev.get("id"), None)
                if t0 is not None and not ev.get("deleted"):
                    sse_lat.append(now - t0)

    def write_timed(conn, key, body, t0):
        sent[key] = t0
        return write(conn, key, body, t0)

    reader = threading.Thread(target=sse_reader, daemon=True)
    reader.start()
    try:
        res = run_workload("MiniDB", write_timed, read,
                           {"connect": connect, "live": live, "disk": lambda: du_mib(data), "rss": lambda: rss_mib(proc.pid)},
                           lambda: {"sse_p50_ms": pct(sse_lat, 0.5) * 1000, "sse_p99_ms": pct(sse_lat, 0.99) * 1000,
                                    "sse_events": len(sse_lat)})
    finally:
        stop_sse.set()
        proc.terminate()
        proc.wait(60)
    return res


# ------------------------------------------------------------------ Redis
class Resp:
    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")

    def cmd(self, *args: str | bytes):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else a.encode()
            out.append(f"${len(b)}\r\n".encode() + b + b"\r\n")
        self.s.sendall(b"".join(out))
        line = self.f.readline()
        kind, rest = line[:1], line[1:].strip()
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b":":
            return int(rest)
        if kind == b"-":
            raise RuntimeError(rest.decode())
        return rest.decode()


def redis_run(tmp: Path) -> dict | None:
    server = shutil.which("redis-server")
    if not server:
        print("redis-server is not installed (apt-get install redis-server): the Redis half is skipped")
        return None
    port = free_port()
    d = tmp / "redis-data"
    d.mkdir()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                             "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            if Resp(port).cmd("PING") == "PONG":
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("redis did not start")
        time.sleep(0.05)

    def write(conn, key, body, _t0):
        try:
            return conn.cmd("SET", key, body, "EX", str(TTL)) == "OK"
        except (OSError, RuntimeError):
            return False

    def read(conn, key):
        try:
            return conn.cmd("GET", key) is not None
        except (OSError, RuntimeError):
            return None

    def live():
        c = Resp(port)
        n = c.cmd("DBSIZE")
        return n, n * DOC_BYTES / (1 << 20)

    try:
        return run_workload("Redis (appendfsync always)", write, read,
                            {"connect": lambda: Resp(port), "live": live, "disk": lambda: du_mib(d),
                             "rss": lambda: rss_mib(proc.pid)})
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="minidb-bench-sessions-"))
    try:
        m = minidb_run(tmp)
        r = redis_run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| | MiniDB | Redis (appendfsync always) | MiniDB / Redis |")
    print("|---|---:|---:|---:|")
    keys = [("write_rate", "writes/s achieved"), ("read_rate", "reads/s achieved"),
            ("write_p50_ms", "write p50 (ms)"), ("write_p99_ms", "write p99 (ms)"),
            ("read_p50_ms", "read p50 (ms)"), ("read_p99_ms", "read p99 (ms)"),
            ("disk_max", "disk after the first 2 lifetimes, max (MiB)"),
            ("rss_max", "RSS after the first 2 lifetimes, max (MiB)")]
    for k, label in keys:
        mv = m.get(k, float("nan"))
        rv = r.get(k, float("nan")) if r else float("nan")
        ratio = mv / rv if r and rv else float("nan")
        print(f"| {label} | {mv:,.1f} | {rv:,.1f} | {ratio:.2f} |")
    print(f"\nMiniDB errors: {m['errors']}; Redis errors: {r['errors'] if r else 'skipped'}")
    print(f"MiniDB disk / live data, max after 2 lifetimes: {m.get('disk_over_live', float('nan')):.2f} "
          f"(plateau target: within 2x)")
    print(f"MiniDB RSS from {m.get('rss_first', float('nan')):.1f} to max {m.get('rss_max', float('nan')):.1f} MiB after 2 lifetimes")
    print(f"change feed (feed=sse), write sent -> event received: p50 {m['sse_p50_ms']:.2f} ms, "
          f"p99 {m['sse_p99_ms']:.2f} ms over {m['sse_events']} events at {m['write_rate']:.0f} writes/s")
    bad = m["errors"]["write"] + m["errors"]["read"] + m["errors"]["read_miss"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
