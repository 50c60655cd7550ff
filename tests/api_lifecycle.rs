//! The service's lifecycle over real HTTP and the real binary: restart, SIGTERM drain,
//! kill -9 durability, dump/restore, offline commands, configuration errors.
#![cfg(feature = "server")]

mod api;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{command, expect_error, json, wait_until, Server, SlowRequest};
use serde_json::{json, Value};

/// `minidb_http_requests_in_flight` from `/metrics`.
fn in_flight(s: &Server) -> f64 {
    let text = s.get("/metrics").text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("minidb_http_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no minidb_http_requests_in_flight in /metrics"))
}

#[test]
fn restart_keeps_data_and_sigterm_drains() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut s = Server::start(&dir, &[]);
    let docs: Vec<Value> = (0..300)
        .map(|i| json!({"_id": format!("k{i:03}"), "i": i}))
        .collect();
    assert_eq!(
        s.post("/api/keep/_insertMany", &Value::Array(docs))
            .status(),
        200
    );
    s.put("/api/keep/single", &json!({"v": "x"}));

    // An in-flight request (half its body sent) when SIGTERM arrives still completes.
    let before = in_flight(&s);
    let slow = SlowRequest::begin(
        &s.addr,
        "POST",
        "/api/keep",
        br#"{"_id": "inflight", "v": 1}"#,
    );
    wait_until("the slow request to be in flight", || {
        in_flight(&s) > before
    });
    s.term();
    wait_until("readiness to turn 503 (draining)", || {
        s.client
            .get(s.url("/api/ready"))
            .send()
            .map_or(true, |r| r.status() == 503)
    });
    // Not accepting new connections any more (or refusing them), but the old one drains.
    let (status, body) = slow.finish();
    assert_eq!(status, 201, "{body}");
    let exit = s.wait(40);
    assert!(exit.success(), "exit {exit:?}");
    assert!(s
        .output
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("shut down cleanly")));
    drop(s);

    let s = Server::start(&dir, &[]);
    assert_eq!(json(s.get("/api/keep/_count")), json!({"count": 302}));
    assert_eq!(json(s.get("/api/keep/k123"))["i"], 123);
    assert_eq!(json(s.get("/api/keep/inflight"))["v"], 1);
    assert_eq!(json(s.get("/api/_collections"))[0]["docCount"], 302);
    s.stop();
}

#[test]
fn kill_9_during_concurrent_writes_keeps_every_acknowledged_document() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), s.base.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("w{w}-{i}");
                    let r = if i % 5 == 0 {
                        let batch: Vec<Value> = (0..10)
                            .map(|j| json!({"_id": format!("{id}-{j}")}))
                            .collect();
                        c.post(format!("{base}/api/crash/_insertMany"))
                            .json(&batch)
                            .send()
                    } else {
                        c.post(format!("{base}/api/crash"))
                            .json(&json!({"_id": id}))
                            .send()
                    };
                    if let Ok(r) = r {
                        if r.status().is_success() {
                            let mut a = acked.lock().unwrap();
                            if i % 5 == 0 {
                                a.extend((0..10).map(|j| format!("{id}-{j}")));
                            } else {
                                a.push(id);
                            }
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Kill while writes are going on: once a few hundred have been acknowledged.
    wait_until("200 acknowledged writes", || {
        acked.lock().unwrap().len() >= 200
    });
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes acknowledged: {}",
        acked.len()
    );

    let s = Server::start(&dir, &[]);
    let mut missing = Vec::new();
    for id in &acked {
        if s.get(&format!("/api/crash/{id}")).status() != 200 {
            missing.push(id.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged docs lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Counts stayed exact through the crash.
    let count = json(s.get("/api/crash/_count"))["count"].as_u64().unwrap();
    let scanned = json(s.post_raw(
        "/api/crash/_search?count=true",
        "{\"_id\": {\"$exists\": true}}",
    ))["count"]
        .as_u64()
        .unwrap();
    assert_eq!(count, scanned);
    assert!(count >= acked.len() as u64);
    s.stop();
}

#[test]
fn dump_restore_offline_commands_and_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    for (col, n) in [("alpha", 50), ("beta", 1200), ("gamma.x", 3)] {
        let docs: Vec<Value> = (0..n)
            .map(|i| json!({"_id": format!("{col}-{i}"), "n": i, "s": "é\n\"q\"", "o": {"a": [1, {"b": null}]}}))
            .collect();
        for chunk in docs.chunks(1000) {
            assert_eq!(
                s.post(
                    &format!("/api/{col}/_insertMany"),
                    &Value::Array(chunk.to_vec())
                )
                .status(),
                200
            );
        }
    }
    let before = json(s.get("/api/_collections"));

    // Offline commands refuse a directory held by the running server.
    let out = command(tmp.path())
        .args(["compact", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("running minidb server"), "{err}");

    // healthcheck against the live server, then against nothing.
    let ok = command(tmp.path())
        .args(["healthcheck", "--url", &s.url("/api/health")])
        .status()
        .unwrap();
    assert!(ok.success());
    s.stop();
    let down = command(tmp.path())
        .args(["healthcheck", "--url", "http://127.0.0.1:9/api/health"])
        .status()
        .unwrap();
    assert!(!down.success());

    let dump = tmp.path().join("dump.jsonl");
    let st = command(tmp.path())
        .args(["dump", "--data-dir"])
        .arg(&dir)
        .arg("--out")
        .arg(&dump)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(text.lines().count(), 1253);
    for st in [
        command(tmp.path())
            .args(["verify", "--data-dir"])
            .arg(&dir)
            .status()
            .unwrap(),
        command(tmp.path())
            .args(["compact", "--data-dir"])
            .arg(&dir)
            .status()
            .unwrap(),
        command(tmp.path())
            .args(["verify", "--data-dir"])
            .arg(&dir)
            .status()
            .unwrap(),
    ] {
        assert!(st.success());
    }

    // A bad dump is refused with its line number, and nothing is written.
    let bad = tmp.path().join("bad.jsonl");
    let mut lines: Vec<&str> = text.lines().take(5).collect();
    lines.push("{\"collection\": \"x\", \"doc\": {\"no_id\": 1}}");
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let dir2 = tmp.path().join("restored");
    let out = command(tmp.path())
        .arg("restore")
        .arg(&bad)
        .arg("--data-dir")
        .arg(&dir2)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 6"), "{err}");

    let st = command(tmp.path())
        .arg("restore")
        .arg(&dump)
        .arg("--data-dir")
        .arg(&dir2)
        .status()
        .unwrap();
    assert!(st.success());
    let dump2 = tmp.path().join("dump2.jsonl");
    let st = command(tmp.path())
        .args(["dump", "--data-dir"])
        .arg(&dir2)
        .arg("--out")
        .arg(&dump2)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(&dump2).unwrap(),
        text,
        "restore reproduced every document"
    );

    let s = Server::start(&dir2, &[]);
    assert_eq!(json(s.get("/api/_collections")), before);
    assert_eq!(json(s.get("/api/beta/beta-7"))["s"], "é\n\"q\"");
    s.stop();
}

#[test]
fn config_command_and_invalid_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = command(tmp.path())
        .args(["config", "--data-dir", "/srv/minidb"])
        .env("MINIDB_SERVER__MAX_IN_FLIGHT", "7")
        .env("FLUSH_SIZE", "1234")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data_dir = \"/srv/minidb\""), "{text}");
    assert!(text.contains("max_in_flight = 7"), "{text}");
    assert!(text.contains("flush_size = 1234"), "{text}");
    assert!(text.contains("listen = \"127.0.0.1:6866\""), "{text}");

    let file = tmp.path().join("bad.toml");
    std::fs::write(&file, "[storage]\nsync = \"sometimes\"\n").unwrap();
    let out = command(tmp.path())
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.sync"), "{err}");
    let out = command(tmp.path())
        .arg("config")
        .env("MINIDB_SERVER__LISTEN", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
    let _ = expect_error; // shared helper used by the other test binary
}

/// Issue 8, item 7: a 500 carried the engine's message, with the absolute path of the
/// damaged file. Now the body is `{"error":"internal error","status":500,"trace_id":…}` and
/// the log line (with the same trace id) has the details.
#[test]
fn internal_errors_carry_a_trace_id_and_no_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    let pad = "p".repeat(20_000);
    assert_eq!(
        s.post("/api/dmg", &json!({"_id": "d", "pad": pad}))
            .status(),
        201
    );
    // A compaction flushes the memtable to a table.
    let tables = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir.join("sst"))
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "sst"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        s.client
            .post(s.url("/api/_compact"))
            .send()
            .unwrap()
            .status(),
        202
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let flushed = || json(s.get("/api/metrics"))["flushes"].as_u64() > Some(0);
    while tables().is_empty() || !flushed() {
        assert!(std::time::Instant::now() < deadline, "no table written");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.stop();
    let tables = tables();
    assert_eq!(tables.len(), 1, "{tables:?}");
    // Damage the first data block (its checksum no longer matches).
    let mut bytes = std::fs::read(&tables[0]).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&tables[0], bytes).unwrap();

    let s = Server::start(&dir, &[]);
    let r = s.get("/api/dmg/d");
    assert_eq!(r.status(), 500);
    let body = json(r);
    assert_eq!(body["error"], "internal error", "{body}");
    assert_eq!(body["status"], 500);
    let trace_id = body["trace_id"].as_str().expect("trace_id").to_string();
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()));
    let text = body.to_string();
    assert!(!text.contains('/'), "a path leaked: {text}");
    assert!(!text.contains(tmp.path().to_str().unwrap()));
    // The log has the details, under the same trace id.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let logged = s
            .output
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&trace_id) && l.contains("corruption") && l.contains("sst"));
        if logged {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with the trace id and the cause: {:?}",
            s.output.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.stop();
}
