#!/usr/bin/env python3
"""Live API checks against the real `minidb` binary (`make check-api`).

1. Start `minidb serve` on 127.0.0.1 (a free port) with a temporary data directory; wait for
   GET /api/health.
2. schemathesis against the live server's GET /api/openapi.json: bounded examples and time,
   the checks of tests/ops/schemathesis.toml (no 5xx, statuses/content types/bodies as the
   spec says, invalid input refused, valid input accepted). The server must still be healthy.
3. A few requests so that route-labelled series exist, then a scrape of GET /metrics:
   `promtool check metrics` must be clean and `tests/ops/check_dashboard.py --scrape` must
   find every metric name used by the dashboard and the alert rules.
4. SIGTERM: the server must drain and exit 0.
5. Every line it wrote on stdout and stderr is one JSON object (JSON logs, the default).

Usage: python3 tests/ops/check_api.py [--bin target/debug/minidb] [--max-examples N]
       [--max-time SECONDS] [--seed N] [--keep DIR]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from opslib import ROOT, tool  # noqa: E402

# Names used by the dashboard/alerts that a short, healthy run cannot produce. Each entry
# says why; keep this empty unless a name is impossible to produce here.
ALLOW_MISSING: dict[str, str] = {}


def log(msg: str) -> None:
    print(f"check_api: {msg}", flush=True)


def request(base: str, method: str, path: str, body=None, headers=None, timeout=30.0):
    """(status, headers, body bytes) of one request; never raises on HTTP errors."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(base + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (our own server)
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def listening_addr(line: str) -> str | None:
    """The address of the server's `listening on ADDR` line: a JSON log line
    (`{"message": "listening on ADDR", "addr": "ADDR", ...}`, read `addr`) or a plain one."""
    try:
        obj = json.loads(line)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        msg = obj.get("message")
        if isinstance(msg, str) and msg.startswith("listening on ") and isinstance(obj.get("addr"), str):
            return obj["addr"]
        return None
    at = line.find("listening on ")
    if at < 0:
        return None
    rest = line[at + len("listening on "):].split()
    return rest[0] if rest else None


class Server:
    def __init__(self, binary: Path, data_dir: Path, workdir: Path):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MINIDB_", "OTEL_"))
               and k not in ("FLUSH_SIZE", "MAX_MEM_MB", "DB_PATH")}
        env["MINIDB_TELEMETRY__LOG_LEVEL"] = "warn"
        self.stderr_path = workdir / "server.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)],
            cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._stderr, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        self.lines = lines
        self.stdout_lines: list[str] = []

        def pump():
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)
        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        self.addr = None
        while self.addr is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.kill()
                raise SystemExit(f"check_api: FAIL: the server did not print its address:\n{self.tail()}")
            self.stdout_lines.append(line)
            self.addr = listening_addr(line)
        self.base = f"http://{self.addr}"

    def non_json_lines(self) -> list[str]:
        """After exit: the stdout and stderr lines that are not one JSON object each."""
        while True:
            try:
                line = self.lines.get(timeout=10)
            except queue.Empty:
                break
            if line is None:
                break
            self.stdout_lines.append(line)
        self._stderr.flush()
        err = self.stderr_path.read_text(errors="replace").splitlines()
        bad = []
        for where, text in [("stdout", ln) for ln in self.stdout_lines] + [("stderr", ln) for ln in err]:
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            if not ok:
                bad.append(f"{where}: {text.rstrip()[:200]}")
        return bad

    def wait_healthy(self, timeout: float = 30) -> None:
        # The server listens before its engine is open: wait for readiness as well.
        deadline = time.monotonic() + timeout
        while True:
            try:
                status, _, body = request(self.base, "GET", "/api/health", timeout=5)
                ready, _, _ = request(self.base, "GET", "/api/ready", timeout=5)
                if status == 200 and json.loads(body) == {"status": "ok"} and ready == 200:
                    return
            except (OSError, http.client.HTTPException, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"check_api: FAIL: /api/health never answered 200:\n{self.tail()}")
            time.sleep(0.1)

    def tail(self, n: int = 40) -> str:
        self._stderr.flush()
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_schemathesis(base: str, args, workdir: Path) -> list[str]:
    # The interpreter that runs this script is the one .ci/run's `python3 -m pip` installed
    # schemathesis into, whether or not its scripts directory is on PATH.
    try:
        import schemathesis.cli  # noqa: F401
    except ImportError:
        return [f"schemathesis is not installed for {sys.executable} (pip install schemathesis)"]
    st = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; "
          "sys.argv[0] = 'schemathesis'; sys.exit(schemathesis())"]
    cmd = [*st, "--no-color", "--config-file", str(ROOT / "tests/ops/schemathesis.toml"), "run",
           f"{base}/api/openapi.json",
           "--max-examples", str(args.max_examples), "--max-time", str(args.max_time),
           "--seed", str(args.seed), "--workers", "1", "--request-timeout", "30",
           "--phases", "examples,coverage,fuzzing",
           "--suppress-health-check", "too_slow,filter_too_much,data_too_large",
           "--output-truncate", "true",
           "--report", "junit", "--report-dir", str(workdir / "schemathesis-report")]
    # One worker: hypothesis calls ast.parse to describe strategies, and on CPython before
    # 3.11.8/3.12.1 concurrent ast.parse calls can fail with "AST constructor recursion depth
    # mismatch" (a SystemError of the tool, gh-106905), which would fail the run at random.
    log("$ schemathesis " + " ".join(cmd[len(st):]))
    start = time.monotonic()
    # The wall-clock guard is generous: --max-time bounds the run itself.
    res = subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, timeout=args.max_time + 300)
    log(f"schemathesis finished in {time.monotonic() - start:.0f}s with exit code {res.returncode}")
    return [] if res.returncode == 0 else [f"schemathesis found failures (exit {res.returncode}); see above"]


def make_traffic(base: str) -> list[str]:
    """Requests over every route template and status class, so labelled series exist."""
    errors = []

    def expect(method, path, want, body=None, headers=None):
        status, _, out = request(base, method, path, body, headers)
        if status != want:
            errors.append(f"{method} {path}: {status}, expected {want}: {out[:200]!r}")

    expect("POST", "/api/ci_users", 201, {"_id": "u1", "name": "Ada", "age": 36})
    expect("POST", "/api/ci_users", 409, {"_id": "u1"})
    expect("POST", "/api/ci_users/_insertMany", 200, [{"_id": f"m{i}", "n": i} for i in range(50)])
    expect("GET", "/api/ci_users/u1", 200)
    expect("PUT", "/api/ci_users/u2", 200, {"name": "Bob"})
    expect("PATCH", "/api/ci_users/u2", 200, {"$inc": {"visits": 1}})
    expect("DELETE", "/api/ci_users/u2", 200)
    expect("GET", "/api/ci_users/u2", 404)
    expect("POST", "/api/ci_users/_search", 200, {"n": {"$gte": 10}})
    expect("POST", "/api/ci_users/_search?limit=5", 200, {})
    expect("GET", "/api/ci_users/_count", 200)
    expect("POST", "/api/ci_users/_search", 400, {"n": {"$bogus": 1}})
    expect("POST", "/api/ci_users", 400, b"{not json")
    expect("POST", "/api/ci_users", 413, b"[" + b" " * (11 << 20) + b"]")
    expect("DELETE", "/api/_collections", 405)
    expect("GET", "/api/_collections", 200)
    expect("GET", "/api/stats", 200)
    expect("GET", "/api/metrics", 200)
    expect("GET", "/api/ready", 200)
    expect("GET", "/nope", 404)
    expect("POST", "/api/_compact", 202)
    return errors


def check_metrics(base: str, workdir: Path, allow_missing: dict[str, str]) -> list[str]:
    errors = []
    status, headers, body = request(base, "GET", "/metrics")
    if status != 200:
        return [f"GET /metrics: {status}"]
    scrape = workdir / "metrics.txt"
    scrape.write_bytes(body)
    log(f"scraped /metrics: {len(body.splitlines())} lines ({headers.get('Content-Type')})")
    res = subprocess.run([tool("promtool"), "check", "metrics"], input=body, capture_output=True)
    out = (res.stdout + res.stderr).decode(errors="replace").strip()
    if res.returncode != 0 or out:
        errors.append(f"promtool check metrics (exit {res.returncode}):\n{out}")
    else:
        log("promtool check metrics: clean")
    cmd = [sys.executable, str(ROOT / "tests/ops/check_dashboard.py"), "--scrape", str(scrape)]
    for name, why in allow_missing.items():
        log(f"allowing {name} to be absent: {why}")
        cmd += ["--allow-missing", name]
    if subprocess.run(cmd).returncode != 0:
        errors.append("check_dashboard.py --scrape failed; see above")
    return errors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ap.add_argument("--bin", type=Path, default=target / "debug/minidb", help="the minidb binary")
    ap.add_argument("--max-examples", type=int, default=40, help="schemathesis examples per operation")
    ap.add_argument("--max-time", type=int, default=90, help="schemathesis time limit in seconds")
    ap.add_argument("--seed", type=int, default=6866, help="schemathesis seed (reproducible CI runs)")
    ap.add_argument("--skip-schemathesis", action="store_true", help="only the metrics and shutdown checks")
    ap.add_argument("--keep", type=Path, help="keep the data dir, scrape and reports here")
    args = ap.parse_args(argv)
    if not args.bin.is_file():
        print(f"check_api: FAIL: no binary at {args.bin} (run `cargo test "
              "--no-run` or pass --bin)", file=sys.stderr)
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="minidb-check-api-"))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        workdir = args.keep
    errors: list[str] = []
    server = Server(args.bin, workdir / "data", workdir)
    try:
        server.wait_healthy()
        log(f"server {args.bin} up at {server.base} (data in {workdir / 'data'})")
        if not args.skip_schemathesis:
            errors += run_schemathesis(server.base, args, workdir)
            if server.proc.poll() is not None:
                errors.append(f"the server died during schemathesis (exit {server.proc.returncode})")
                raise SystemExit
            server.wait_healthy(10)
        errors += make_traffic(server.base)
        errors += check_metrics(server.base, workdir, ALLOW_MISSING)

        server.proc.send_signal(signal.SIGTERM)
        try:
            rc = server.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            errors.append("the server did not exit within 60 s of SIGTERM")
            rc = None
        if rc is not None:
            if rc != 0:
                errors.append(f"the server exited {rc} after SIGTERM, expected 0")
            else:
                log("SIGTERM: the server drained and exited 0")
            bad = server.non_json_lines()
            if bad:
                errors.append("log lines that are not one JSON object:\n  " + "\n  ".join(bad[:20]))
            else:
                log(f"logs: all {len(server.stdout_lines)} stdout lines and stderr are JSON objects")
    except SystemExit as e:
        if e.code:
            errors.append(str(e.code))
    finally:
        server.kill()
        if errors:
            print("--- server stderr (tail) ---\n" + server.tail(), file=sys.stderr)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for e in errors:
        print(f"FAIL: {e}", file=sys.stderr)
    log("FAILED" if errors else "OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
