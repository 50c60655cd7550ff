//! Operations over the real binary: `/api/stats` fields, logs (JSON lines, redaction, the
//! access log).
#![cfg(feature = "server")]

mod api;

use api::*;
use serde_json::Value;

fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&tmp.path().join("data"), env);
    (tmp, s)
}

/// MiniDBGo's web dashboard plots these; a missing or non-numeric one shows as NaN.
#[test]
fn stats_carries_minidbgo_fields_as_finite_numbers() {
    let (_tmp, s) = start(&[]);
    // The second call computes the CPU figures from a delta, the first from totals.
    for round in 0..2 {
        let st = json(s.get("/api/stats"));
        let num = |k: &str| -> f64 {
            let v = &st[k];
            assert!(v.is_number(), "round {round}: {k} is {v} in {st}");
            let f = v.as_f64().unwrap_or(f64::NAN);
            assert!(f.is_finite() && f >= 0.0, "round {round}: {k} = {f}");
            f
        };
        let int = |k: &str| -> u64 {
            let v = &st[k];
            v.as_u64()
                .unwrap_or_else(|| panic!("round {round}: {k} is {v}, not an integer: {st}"))
        };
        let cpu = num("system_cpu_percent");
        assert!(cpu <= 100.0, "system_cpu_percent {cpu}");
        assert!(int("go_num_goroutine") >= 1, "this request runs in a task");
        let _ = int("go_num_gc");
        let (inuse, alloc, also_alloc, sys) = (
            num("go_heap_inuse_mb"),
            num("go_heap_alloc_mb"),
            num("go_alloc_mb"),
            num("go_sys_mb"),
        );
        // jemalloc: allocated <= active <= resident, and a running server allocates.
        assert!(alloc > 0.0, "{st}");
        assert_eq!(alloc, also_alloc);
        assert!(alloc <= inuse && inuse <= sys, "{st}");
        num("process_cpu_percent");
        num("process_rss_mb");
    }
    let _: Value = json(s.get("/api/health"));
    s.stop();
}

/// A server run with its stdout and stderr captured line by line.
struct Logged {
    child: std::process::Child,
    base: String,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pumps: Vec<std::thread::JoinHandle<()>>,
    _tmp: tempfile::TempDir,
}

fn pump(
    r: impl std::io::Read + Send + 'static,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = lines.clone();
    let h = std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            l.lock().expect("lines").push(line);
        }
    });
    (lines, h)
}

impl Logged {
    /// `minidb serve` on a free port with `env` (log level info unless `env` says
    /// otherwise), without OTEL_* variables; waits for its address.
    fn start(env: &[(&str, &str)]) -> Logged {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cmd = command(tmp.path());
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        cmd.env("MINIDB_TELEMETRY__LOG_LEVEL", "info")
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn minidb");
        let (stdout, h1) = pump(child.stdout.take().expect("stdout"));
        let (stderr, h2) = pump(child.stderr.take().expect("stderr"));
        let find = || {
            stdout
                .lock()
                .expect("lines")
                .iter()
                .find_map(|l| listening_addr(l))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let addr = loop {
            if let Some(a) = find() {
                break a;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "exited {status:?} before listening: {:?} {:?}",
                    stdout.lock().expect("lines"),
                    stderr.lock().expect("lines")
                );
            }
            assert!(std::time::Instant::now() < deadline, "no listening line");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let logged = Logged {
            child,
            base: format!("http://{addr}"),
            stdout,
            stderr,
            pumps: vec![h1, h2],
            _tmp: tmp,
        };
        // The listener is bound before the engine opens; requests get 503 until ready.
        let probe = client();
        wait_until("the server to be ready", || {
            probe
                .get(logged.url("/api/ready"))
                .send()
                .is_ok_and(|r| r.status() == 200)
        });
        logged
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn stdout_has(&self, needle: &str) -> bool {
        self.stdout
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(needle))
    }

    /// SIGTERM; the server must exit 0. Returns (stdout, stderr) lines.
    fn stop(mut self) -> (Vec<String>, Vec<String>) {
        signal(self.child.id(), "TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("no exit after SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        for h in self.pumps.drain(..) {
            h.join().expect("pump");
        }
        let out = self.stdout.lock().expect("lines").clone();
        let err = self.stderr.lock().expect("lines").clone();
        assert!(status.success(), "exit {status:?}: {out:?} {err:?}");
        (out, err)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn objects(lines: &[String], stream: &str) -> Vec<serde_json::Map<String, Value>> {
    lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            _ => panic!("{stream} line is not a JSON object: {l:?}"),
        })
        .collect()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Some traffic over routes, errors and the fallback.
fn traffic(s: &Logged) {
    let c = client();
    let st = |r: reqwest::blocking::Response| r.status().as_u16();
    assert_eq!(
        st(c.post(s.url("/api/logs"))
            .json(&serde_json::json!({"_id": "a", "n": 1}))
            .send()
            .expect("post")),
        201
    );
    assert_eq!(st(c.get(s.url("/api/logs/a")).send().expect("get")), 200);
    assert_eq!(
        st(c.get(s.url("/api/logs/missing")).send().expect("get")),
        404
    );
    assert_eq!(st(c.get(s.url("/no/such/route")).send().expect("get")), 404);
    assert_eq!(
        st(c.post(s.url("/api/logs"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .expect("post")),
        400
    );
    assert_eq!(
        st(c.delete(s.url("/api/_collections")).send().expect("delete")),
        405
    );
    assert_eq!(st(c.get(s.url("/metrics")).send().expect("metrics")), 200);
}

#[test]
fn json_mode_every_stdout_and_stderr_line_is_one_json_object() {
    let s = Logged::start(&[]);
    traffic(&s);
    let (out, err) = s.stop();
    let out = objects(&out, "stdout");
    objects(&err, "stderr");
    let listening: Vec<_> = out
        .iter()
        .filter(|o| {
            o["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("listening on "))
        })
        .collect();
    assert_eq!(listening.len(), 1, "{out:?}");
    let addr = listening[0]["addr"].as_str().expect("addr field");
    assert_eq!(listening[0]["message"], format!("listening on {addr}"));
    assert_eq!(listening[0]["target"], "minidb::lifecycle");
    assert!(
        out.iter().any(|o| o["message"] == "shut down cleanly"),
        "{out:?}"
    );
}

#[test]
fn the_listening_line_is_written_at_every_log_level() {
    // The harness and tools wait for this line; `error` would otherwise silence it.
    let s = Logged::start(&[("MINIDB_TELEMETRY__LOG_LEVEL", "error")]);
    let (out, err) = s.stop();
    let out = objects(&out, "stdout");
    objects(&err, "stderr");
    let msgs: Vec<&str> = out.iter().filter_map(|o| o["message"].as_str()).collect();
    assert!(
        msgs.iter().any(|m| m.starts_with("listening on ")),
        "{msgs:?}"
    );
    assert!(msgs.contains(&"shut down cleanly"), "{msgs:?}");
    assert!(
        out.iter().all(|o| o["target"] == "minidb::lifecycle"),
        "only lifecycle lines pass at level error: {out:?}"
    );
}

/// `minidb serve` with `env`, expected to fail; returns (exit code, stdout, stderr).
fn failing_serve(env: &[(&str, &str)], listen: &str) -> (Option<i32>, String, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(tmp.path());
    cmd.args(["serve", "--listen", listen, "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run minidb");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fatal_errors_are_json_lines_in_json_mode() {
    // A configuration error: before any log subscriber exists.
    let (code, out, err) = failing_serve(&[("MINIDB_SERVER__MAX_IN_FLIGHT", "0")], "127.0.0.1:0");
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    let lines: Vec<String> = err.lines().map(str::to_string).collect();
    let objs = objects(&lines, "stderr");
    assert_eq!(objs.len(), 1, "{err}");
    assert_eq!(objs[0]["level"], "ERROR");
    let msg = objs[0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("server.max_in_flight"), "{msg}");

    // The same in text mode: one plain line.
    let (code, _, err) = failing_serve(
        &[
            ("MINIDB_SERVER__MAX_IN_FLIGHT", "0"),
            ("MINIDB_TELEMETRY__LOG_FORMAT", "text"),
        ],
        "127.0.0.1:0",
    );
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("minidb: ") && err.contains("server.max_in_flight"),
        "{err}"
    );

    // After the subscriber started: the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (code, out, err) = failing_serve(&[], &addr);
    assert_eq!(code, Some(1));
    let out_lines: Vec<String> = out.lines().map(str::to_string).collect();
    let err_lines: Vec<String> = err.lines().map(str::to_string).collect();
    let all: Vec<_> = objects(&out_lines, "stdout")
        .into_iter()
        .chain(objects(&err_lines, "stderr"))
        .collect();
    assert!(
        all.iter().any(|o| o["level"] == "ERROR"
            && o["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot listen"))),
        "{all:?}"
    );
}

#[test]
fn secrets_in_the_otlp_endpoint_and_headers_never_reach_the_logs() {
    // Port 9 (discard) refuses: every export fails and its error is logged.
    let s = Logged::start(&[(
        "MINIDB_TELEMETRY__OTLP_ENDPOINT",
        "http://user:secret@127.0.0.1:9/?token=tok3n",
    )]);
    let c = client();
    let r = c
        .get(s.url("/api/sec/x"))
        .header("authorization", "Bearer hdr-s3cr3t")
        .header("x-api-key", "key-s3cr3t")
        .send()
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    wait_until("the failed span export to be logged", || {
        s.stdout_has("span export failed")
    });
    let (out, err) = s.stop();
    let all = out.iter().chain(&err);
    for line in all {
        for secret in ["secret", "tok3n", "hdr-s3cr3t", "key-s3cr3t"] {
            assert!(!line.contains(secret), "{secret} logged: {line}");
        }
    }
    let objs = objects(&out, "stdout");
    let export = objs
        .iter()
        .find(|o| o["message"] == "exporting traces over OTLP")
        .unwrap_or_else(|| panic!("no export line in {out:?}"));
    assert_eq!(export["endpoint"], "http://***@127.0.0.1:9/?token=***");
}

fn access_lines(out: &[String]) -> Vec<serde_json::Map<String, Value>> {
    objects(out, "stdout")
        .into_iter()
        .filter(|o| o["target"] == "minidb::access")
        // `Logged::start` polls readiness; those lines are the harness's, not the test's.
        .filter(|o| o["path"] != "/api/ready")
        .collect()
}

#[test]
fn access_log_names_method_route_path_status_duration_bytes_and_trace_id() {
    let s = Logged::start(&[]);
    let c = client();
    let put = c
        .put(s.url("/api/acc/doc1"))
        .json(&serde_json::json!({"v": 1}))
        .send()
        .expect("put");
    assert_eq!(put.status().as_u16(), 200);
    let got = c.get(s.url("/api/acc/doc1")).send().expect("get");
    assert_eq!(got.status().as_u16(), 200);
    let body_len = got.bytes().expect("body").len() as u64;
    assert_eq!(
        c.get(s.url("/no/such/route"))
            .send()
            .expect("get")
            .status()
            .as_u16(),
        404
    );
    let long = format!("/api/acc/{}", "x".repeat(1000));
    // An id that long is refused (400); the line still names the route and a cut path.
    assert_eq!(
        c.get(s.url(&long)).send().expect("get").status().as_u16(),
        400
    );
    let (out, _) = s.stop();
    let lines = access_lines(&out);
    assert_eq!(lines.len(), 4, "one line per request: {lines:?}");

    let get = lines
        .iter()
        .find(|o| o["method"] == "GET" && o["status"] == 200)
        .unwrap_or_else(|| panic!("no GET 200 in {lines:?}"));
    assert_eq!(get["route"], "/api/{col}/{id}");
    assert_eq!(get["path"], "/api/acc/doc1");
    assert_eq!(get["bytes"].as_u64(), Some(body_len));
    assert!(
        get["duration_ms"]
            .as_f64()
            .is_some_and(|d| d.is_finite() && d >= 0.0),
        "{get:?}"
    );
    let trace = get["trace_id"].as_str().unwrap_or_default();
    assert!(
        trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()),
        "{get:?}"
    );
    assert!(lines
        .iter()
        .any(|o| o["method"] == "PUT" && o["status"] == 200));

    let unmatched = lines
        .iter()
        .find(|o| o["path"] == "/no/such/route")
        .unwrap_or_else(|| panic!("no unmatched line in {lines:?}"));
    assert_eq!(unmatched["route"], "unmatched");
    assert_eq!(unmatched["status"], 404);

    let cut = lines
        .iter()
        .find(|o| {
            o["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/acc/xxx"))
        })
        .unwrap_or_else(|| panic!("no long-path line in {lines:?}"));
    let p = cut["path"].as_str().unwrap_or_default();
    assert!(p.ends_with('…') && p.len() <= 256 + '…'.len_utf8(), "{p}");
    assert_eq!(cut["route"], "/api/{col}/{id}");
}

#[test]
fn access_log_can_be_turned_off() {
    let s = Logged::start(&[("MINIDB_TELEMETRY__ACCESS_LOG", "false")]);
    traffic(&s);
    let (out, _) = s.stop();
    assert_eq!(
        access_lines(&out),
        Vec::<serde_json::Map<String, Value>>::new()
    );
    // Other info lines are still written: the level is not what silenced it.
    let objs = objects(&out, "stdout");
    assert!(
        objs.iter().any(|o| o["message"] == "minidb serving"),
        "{out:?}"
    );
}
