//! Start-up over the real binary: the server listens before the engine opens, reports the
//! WAL replay on `/api/ready`, and exits when the data cannot be opened.
#![cfg(feature = "server")]

mod api;

use std::time::{Duration, Instant};

use api::{expect_error, json, Server};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;

/// Settings that keep everything in the WAL: no flush by count or size, no fsync.
const UNFLUSHED: [(&str, &str); 5] = [
    ("MINIDB_STORAGE__SYNC", "none"),
    ("MINIDB_STORAGE__FLUSH_SIZE", "100000000"),
    ("MINIDB_STORAGE__MEMTABLE_MB", "64"),
    ("MINIDB_MEMORY__LIMIT_MB", "2048"),
    ("MINIDB_TELEMETRY__LOG_LEVEL", "info"),
];

fn line_index(s: &Server, needle: &str) -> Option<usize> {
    s.output
        .lock()
        .unwrap()
        .iter()
        .position(|l| l.contains(needle))
}

/// Issue 8, item 8: the listener was bound only after the WAL replay, so a recovering
/// server refused connections (a dead pod, not a recovering one).
#[test]
fn the_server_listens_while_the_wal_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &UNFLUSHED);
    let pad = "w".repeat(1000);
    let batches = 45;
    for b in 0..batches {
        let docs: Vec<Value> = (0..1000)
            .map(|i| json!({"_id": format!("b{b:03}-{i:04}"), "pad": pad}))
            .collect();
        let r = s.post("/api/wal/_insertMany", &Value::Array(docs));
        assert_eq!(r.status(), 200, "{:?}", r.text());
    }
    let wal = json(s.get("/api/metrics"))["wal_disk_bytes"]
        .as_u64()
        .unwrap();
    assert!(wal >= 40 * MIB, "only {wal} bytes of WAL");
    assert_eq!(json(s.get("/api/metrics"))["flushes"], 0);
    s.kill9();

    let s = Server::start_listening(&dir, &UNFLUSHED);
    // The port accepts at once; liveness is 200 throughout.
    assert_eq!(json(s.get("/api/health")), json!({"status": "ok"}));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut saw_replay = false;
    loop {
        let r = s.get("/api/ready");
        if r.status() == 200 {
            break;
        }
        let v = json(r);
        assert_eq!(v["status"], 503, "{v}");
        assert!(v["error"].is_string(), "{v}");
        match v["phase"].as_str() {
            Some("opening") => {}
            Some("replaying_wal") => {
                let done = v["progress"]["replayed_bytes"].as_u64().unwrap();
                let total = v["progress"]["total_bytes"].as_u64().unwrap();
                assert!(done <= total && total >= 40 * MIB, "{v}");
                saw_replay = true;
                // Other routes refuse with Retry-After until the engine is open.
                let r = s.get("/api/wal/b000-0000");
                if r.status() == 503 {
                    assert_eq!(r.headers()["retry-after"], "1");
                    assert!(expect_error(r, 503).contains("starting"));
                }
            }
            other => panic!("unexpected phase {other:?}: {v}"),
        }
        assert_eq!(s.get("/api/health").status(), 200);
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The listener came first, then the replay's log lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    while line_index(&s, "WAL replay finished").is_none() {
        assert!(Instant::now() < deadline, "no 'WAL replay finished' line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let listening = line_index(&s, "listening on").unwrap();
    let started = line_index(&s, "replaying WAL").expect("a 'replaying WAL' line");
    let finished = line_index(&s, "WAL replay finished").unwrap();
    assert!(
        listening < started && started < finished,
        "listening at line {listening}, replay from {started} to {finished}"
    );
    eprintln!("replay observed on /api/ready: {saw_replay}");
    // Every document is there.
    assert_eq!(
        json(s.get("/api/wal/_count")),
        json!({"count": batches * 1000})
    );
    for b in (0..batches).step_by(7) {
        assert_eq!(s.get(&format!("/api/wal/b{b:03}-0999")).status(), 200);
    }
    s.stop();
}

/// A data directory that cannot be opened ends the process (exit 1, the error logged), so
/// Kubernetes restarts it, instead of leaving it listening and unready forever.
#[test]
fn a_failed_open_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    assert_eq!(s.post("/api/x", &json!({"_id": "a"})).status(), 201);
    s.stop();
    std::fs::write(dir.join("MANIFEST"), b"garbage, not a manifest").unwrap();
    let mut s = Server::start_listening(&dir, &[]);
    let status = s.wait(60);
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(line_index(&s, "cannot open the engine").is_some());
}
