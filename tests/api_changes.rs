//! Document expiry and the change feed over real HTTP and the real binary.
#![cfg(feature = "server")]

mod api;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::{command, expect_error, json, wait_until, Server};
use serde_json::{json, Value};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn header_u64(r: &reqwest::blocking::Response, name: &str) -> Option<u64> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The feed after `since` as `(seq, collection, id, deleted)` rows, and `last_seq`.
fn feed(s: &Server, path: &str) -> (Vec<(u64, String, String, bool)>, u64) {
    let r = s.get(path);
    assert_eq!(r.status(), 200, "{path}");
    let v = json(r);
    let rows = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["collection"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
                e["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    (rows, v["last_seq"].as_u64().unwrap())
}

fn count(s: &Server, col: &str) -> u64 {
    json(s.get(&format!("/api/{col}/_count")))["count"]
        .as_u64()
        .unwrap()
}

#[test]
fn an_expired_document_is_gone_from_every_route_from_its_expiry_on() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let r = s.put("/api/sess/a?ttl=2", &json!({"user": "ann"}));
    assert_eq!(r.status(), 200);
    let expires = header_u64(&r, "x-minidb-expires-at").expect("expiry header on the write");
    assert_eq!(
        s.put("/api/sess/keep", &json!({"user": "bob"})).status(),
        200
    );
    let r = s.get("/api/sess/a");
    assert_eq!(header_u64(&r, "x-minidb-expires-at"), Some(expires));
    assert!(s
        .get("/api/sess/keep")
        .headers()
        .get("x-minidb-expires-at")
        .is_none());

    // Until the expiry every read sees it; from the expiry on none does.
    loop {
        let before = now_ms();
        let r = s.get("/api/sess/a");
        let after = now_ms();
        match r.status().as_u16() {
            200 => assert!(
                before < expires,
                "served {} ms after its expiry",
                before - expires
            ),
            404 => {
                assert!(
                    after >= expires,
                    "gone {} ms before its expiry",
                    expires - after
                );
                break;
            }
            other => panic!("GET answered {other}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Whether or not the sweeper has run yet: search, count, dump and the feed agree.
    let found = json(s.post("/api/sess/_search", &json!({})));
    assert_eq!(found, json!([{"_id": "keep", "user": "bob"}]));
    assert_eq!(count(&s, "sess"), 1);
    let counted = s.get(&format!("/api/sess/_count?filter={}", r#"{"user":"ann"}"#));
    assert_eq!(json(counted)["count"], 0);
    let (rows, _) = feed(&s, "/api/sess/_changes");
    let a: Vec<_> = rows.iter().filter(|r| r.2 == "a").collect();
    assert_eq!(a.len(), 1, "{rows:?}");
    assert!(a[0].3, "the expired document is reported deleted: {rows:?}");
    expect_error(s.patch("/api/sess/a", &json!({"$set": {"x": 1}})), 404);
    expect_error(s.delete("/api/sess/a"), 404);
    // Its _id is free again.
    assert_eq!(
        s.post("/api/sess", &json!({"_id": "a", "user": "cy"}))
            .status(),
        201
    );
    // The sweeper deletes it for real: the collection's counters follow.
    wait_until("the sweeper to fix the counts", || {
        json(s.get("/api/_collections"))[0]["docCount"] == 2
    });
    s.stop();

    let out = command(tmp.path())
        .args(["dump", "--out", "d.jsonl", "--data-dir"])
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = std::fs::read_to_string(tmp.path().join("d.jsonl")).unwrap();
    assert_eq!(dump.lines().count(), 2, "{dump}");
}

#[test]
fn collection_lifetimes_ttl_parameters_and_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    assert_eq!(
        json(s.get("/api/c/_ttl")),
        json!({"collection": "c", "seconds": null})
    );
    let r = s
        .client
        .put(s.url("/api/c/_ttl"))
        .json(&json!({"seconds": 3600}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(s.get("/api/c/_ttl"))["seconds"], 3600);

    // The default applies to every write route; ?ttl=0 makes a document permanent.
    let t0 = now_ms();
    let r = s.post("/api/c", &json!({"_id": "p"}));
    let exp = header_u64(&r, "x-minidb-expires-at").unwrap();
    assert!(exp >= t0 + 3_600_000 && exp <= now_ms() + 3_600_000);
    assert!(s
        .put("/api/c/q?ttl=0", &json!({}))
        .headers()
        .get("x-minidb-expires-at")
        .is_none());
    let r = s.post(
        "/api/c/_insertMany?ttl=60",
        &json!([{"_id": "m1"}, {"_id": "m2"}]),
    );
    assert_eq!(r.status(), 200);
    let m1 = header_u64(&s.get("/api/c/m1"), "x-minidb-expires-in").unwrap();
    assert!((59..=60).contains(&m1), "{m1}");
    // PATCH with only ?ttl extends a document without changing it.
    let before = json(s.get("/api/c/m2"));
    let r = s.client.patch(s.url("/api/c/m2?ttl=7200")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(header_u64(&r, "x-minidb-expires-in").unwrap() > 7000);
    assert_eq!(json(s.get("/api/c/m2")), before);
    // Removing the default: later writes are permanent.
    assert_eq!(s.delete("/api/c/_ttl").status(), 200);
    assert!(s
        .put("/api/c/r", &json!({}))
        .headers()
        .get("x-minidb-expires-at")
        .is_none());

    for bad in ["-1", "abc", "1.5", "1e3", "315360001", ""] {
        let msg = expect_error(s.put(&format!("/api/c/x?ttl={bad}"), &json!({})), 400);
        assert!(msg.contains("ttl"), "{bad}: {msg}");
    }
    expect_error(s.post("/api/c?ttl=x", &json!({"_id": "y"})), 400);
    expect_error(
        s.post("/api/c/_insertMany?ttl=x", &json!([{"_id": "z"}])),
        400,
    );
    expect_error(s.get("/api/c/x"), 404);
    for body in [
        json!({}),
        json!({"seconds": 0}),
        json!({"seconds": -5}),
        json!({"seconds": "1"}),
        json!({"seconds": 1, "x": 2}),
    ] {
        let r = s
            .client
            .put(s.url("/api/c/_ttl"))
            .json(&body)
            .send()
            .unwrap();
        expect_error(r, 400);
    }
    // A PATCH without a body and without ?ttl is still an error.
    expect_error(s.client.patch(s.url("/api/c/q")).send().unwrap(), 400);
    s.stop();
}

#[test]
fn lifetimes_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    let r = s.put("/api/r/short?ttl=3", &json!({}));
    let exp = header_u64(&r, "x-minidb-expires-at").unwrap();
    assert_eq!(s.put("/api/r/long?ttl=3600", &json!({})).status(), 200);
    assert_eq!(s.put("/api/r/forever", &json!({})).status(), 200);
    s.kill9();
    let s = Server::start(&dir, &[]);
    assert_eq!(
        header_u64(&s.get("/api/r/long"), "x-minidb-expires-in").map(|x| x > 3500),
        Some(true)
    );
    wait_until("the short-lived document to expire", || now_ms() > exp);
    expect_error(s.get("/api/r/short"), 404);
    assert_eq!(s.get("/api/r/long").status(), 200);
    assert_eq!(s.get("/api/r/forever").status(), 200);
    wait_until("the sweeper to delete it", || {
        json(s.get("/api/_collections"))[0]["docCount"] == 2
    });
    s.stop();
}

#[test]
fn the_feed_has_one_entry_per_document_and_resumes_from_every_since() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    for i in 0..20 {
        assert_eq!(
            s.put(&format!("/api/f/d{i}"), &json!({"i": i})).status(),
            200
        );
    }
    assert_eq!(
        s.post(
            "/api/f/_insertMany",
            &json!([{"_id": "b1"}, {"_id": "b2"}, {"_id": "b3"}])
        )
        .status(),
        200
    );
    assert_eq!(s.put("/api/g/other", &json!({})).status(), 200);
    for i in 0..5 {
        assert_eq!(
            s.put(&format!("/api/f/d{i}"), &json!({"i": -i})).status(),
            200
        );
    }
    for i in 5..8 {
        assert_eq!(s.delete(&format!("/api/f/d{i}")).status(), 200);
    }
    let (all, last) = feed(&s, "/api/f/_changes");
    // One entry per document (23), at its latest change, in sequence order.
    assert_eq!(all.len(), 23, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].0 <= w[1].0));
    let mut ids: Vec<_> = all.iter().map(|r| r.2.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 23);
    assert_eq!(all.iter().filter(|r| r.3).count(), 3);
    assert!(
        all[all.len() - 3..].iter().all(|r| r.3),
        "the deletions are the latest"
    );
    // Resuming from any seq gives exactly the entries after it.
    for (seq, ..) in &all {
        let (rows, l) = feed(&s, &format!("/api/f/_changes?since={seq}"));
        let want: Vec<_> = all.iter().filter(|r| r.0 > *seq).cloned().collect();
        assert_eq!(rows, want, "since={seq}");
        assert_eq!(l, last);
    }
    // Paging by limit never splits a batch: the three of _insertMany share a seq.
    let mut since = 0;
    let mut paged = Vec::new();
    loop {
        let (rows, l) = feed(&s, &format!("/api/f/_changes?since={since}&limit=2"));
        if rows.is_empty() {
            break;
        }
        paged.extend(rows);
        since = l;
    }
    assert_eq!(paged, all);
    // Across collections.
    let (global, _) = feed(&s, "/api/_changes");
    assert_eq!(global.len(), 24);
    assert!(global.iter().any(|r| r.1 == "g"));
    // include_docs.
    let v = json(s.get("/api/f/_changes?include_docs=true&limit=1"));
    assert!(v["results"][0]["doc"]["_id"].is_string(), "{v}");
    for bad in [
        "since=x",
        "limit=0",
        "limit=1001",
        "feed=poll",
        "include_docs=yes",
        "timeout=-1",
    ] {
        expect_error(s.get(&format!("/api/f/_changes?{bad}")), 400);
    }
    s.stop();
}

#[test]
fn a_long_poll_wakes_up_on_a_write_and_times_out_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    assert_eq!(s.put("/api/lp/a", &json!({})).status(), 200);
    let (_, last) = feed(&s, "/api/lp/_changes");
    // Nothing after `last`: the poll answers empty when its timeout passes.
    let (rows, l) = feed(
        &s,
        &format!("/api/lp/_changes?feed=longpoll&since={last}&timeout=50"),
    );
    assert!(rows.is_empty());
    assert!(l >= last);
    let url = s.url(&format!(
        "/api/lp/_changes?feed=longpoll&since={last}&timeout=20000"
    ));
    let waiter = std::thread::spawn(move || {
        reqwest::blocking::Client::new()
            .get(url)
            .send()
            .unwrap()
            .json::<Value>()
            .unwrap()
    });
    // Whether the poll starts before or after this write, it answers with it.
    assert_eq!(s.put("/api/lp/b", &json!({})).status(), 200);
    let v = waiter.join().unwrap();
    assert_eq!(v["results"][0]["id"], "b", "{v}");
    s.stop();
}

/// Reads server-sent events until `n` change events arrived: their (id line, data).
fn sse_events(
    addr: &str,
    path: &str,
    last_id: Option<&str>,
    n: usize,
) -> Vec<(Option<u64>, Value)> {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let extra = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(conn, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut lines = BufReader::new(conn).lines();
    let status = lines.next().unwrap().unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut out = Vec::new();
    let mut id = None;
    for line in lines {
        let line = line.unwrap();
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((id.take(), serde_json::from_str(d).unwrap()));
            if out.len() == n {
                break;
            }
        }
    }
    out
}

#[test]
fn an_event_stream_delivers_changes_and_resumes_from_last_event_id() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    for i in 0..3 {
        assert_eq!(
            s.put(&format!("/api/ev/e{i}"), &json!({"i": i})).status(),
            200
        );
    }
    let first = sse_events(&s.addr, "/api/ev/_changes?feed=sse", None, 3);
    assert_eq!(
        first.iter().map(|e| e.1["id"].clone()).collect::<Vec<_>>(),
        ["e0", "e1", "e2"]
    );
    let last = first[2].0.expect("an id on each single write's event");
    // Events after the stream's start arrive too.
    let addr = s.addr.clone();
    let reader = std::thread::spawn(move || {
        sse_events(
            &addr,
            "/api/ev/_changes?feed=sse",
            Some(&last.to_string()),
            2,
        )
    });
    assert_eq!(s.put("/api/ev/e3", &json!({})).status(), 200);
    assert_eq!(s.delete("/api/ev/e0").status(), 200);
    let resumed = reader.join().unwrap();
    assert_eq!(resumed[0].1["id"], "e3");
    assert_eq!(resumed[1].1["id"], "e0");
    assert_eq!(resumed[1].1["deleted"], true);
    s.stop();
}

#[test]
fn a_since_older_than_the_retained_deletions_gets_410_with_the_oldest_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        &[
            ("MINIDB_CHANGES__RETENTION_SECS", "1"),
            ("MINIDB_EXPIRY__SWEEP_INTERVAL_MS", "50"),
        ],
    );
    assert_eq!(s.put("/api/old/a", &json!({})).status(), 200);
    let (rows, _) = feed(&s, "/api/old/_changes");
    let early = rows[0].0;
    assert_eq!(s.delete("/api/old/a").status(), 200);
    assert_eq!(s.put("/api/old/b", &json!({})).status(), 200);
    wait_until("the deletion to be pruned", || {
        s.get(&format!("/api/old/_changes?since={early}")).status() == 410
    });
    let r = s.get(&format!("/api/old/_changes?since={early}"));
    let oldest = header_u64(&r, "x-minidb-oldest-seq").unwrap();
    let msg = expect_error(r, 410);
    assert!(msg.contains(&oldest.to_string()), "{msg}");
    assert!(oldest > early);
    // From the oldest usable sequence, or from 0, the feed is served.
    let (rows, _) = feed(&s, &format!("/api/old/_changes?since={oldest}"));
    assert!(rows.iter().all(|r| r.0 > oldest));
    let (rows, _) = feed(&s, "/api/old/_changes");
    assert_eq!(rows.len(), 1, "only b: the deletion of a is gone {rows:?}");
    // An event stream from there gets the 410 too.
    expect_error(
        s.get(&format!("/api/old/_changes?feed=sse&since={early}")),
        410,
    );
    s.stop();
}

#[test]
fn after_kill_9_the_feed_and_the_documents_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    let base = s.base.clone();
    let writer = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut acked = 0;
        for i in 0..100_000u64 {
            let id = format!("k{}", i % 50);
            let r = if i % 7 == 3 {
                c.delete(format!("{base}/api/kf/{id}")).send()
            } else {
                c.put(format!("{base}/api/kf/{id}?ttl={}", i % 3 * 3600))
                    .json(&json!({"i": i}))
                    .send()
            };
            match r {
                Ok(_) => acked += 1,
                Err(_) => return acked,
            }
        }
        acked
    });
    wait_until("some writes", || count(&s, "kf") > 20);
    s.kill9();
    let acked = writer.join().unwrap();
    assert!(acked > 20);
    let s = Server::start(&dir, &[]);
    let (rows, _) = feed(&s, "/api/kf/_changes?include_docs=true");
    let live: Vec<_> = rows.iter().filter(|r| !r.3).map(|r| r.2.clone()).collect();
    for id in &live {
        assert_eq!(
            s.get(&format!("/api/kf/{id}")).status(),
            200,
            "feed says {id} lives"
        );
    }
    let docs = json(s.post("/api/kf/_search", &json!({})));
    let mut stored: Vec<_> = docs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_owned())
        .collect();
    stored.sort();
    let mut live_sorted = live.clone();
    live_sorted.sort();
    assert_eq!(
        stored, live_sorted,
        "every document once in the feed, and only those"
    );
    s.stop();
}

#[test]
fn sigterm_ends_open_event_streams_so_the_drain_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        &tmp.path().join("data"),
        &[("MINIDB_SERVER__SHUTDOWN_DRAIN_SECS", "5")],
    );
    assert_eq!(s.put("/api/t/a", &json!({})).status(), 200);
    let events = sse_events(&s.addr, "/api/t/_changes?feed=sse", None, 1);
    assert_eq!(events[0].1["id"], "a");
    // A stream that stays open.
    let mut stream = TcpStream::connect(&s.addr).unwrap();
    write!(
        stream,
        "GET /api/t/_changes?feed=sse&since=now HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut stream, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    s.term();
    let exit = s.wait(60);
    assert!(exit.success(), "{exit:?}");
    let out = s.output.lock().unwrap().clone();
    assert!(
        !out.iter().any(|l| l.contains("drain timed out")),
        "the open stream held the shutdown up: {out:?}"
    );
}
