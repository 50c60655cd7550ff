//! Every route and error case of the REST API, over real HTTP against the real binary.
#![cfg(feature = "server")]

mod api;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{expect_error, json, Server, SlowRequest};
use serde_json::{json, Value};

fn server() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    (tmp, s)
}

#[test]
fn document_crud_etags_and_conditional_writes() {
    let (_tmp, s) = server();
    let r = s.post(
        "/api/users",
        &json!({"_id": "u1", "name": "Ann", "age": 30}),
    );
    assert_eq!(r.status(), 201);
    let etag1 = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(json(r), json!({"status": "created", "key": "users:u1"}));
    let msg = expect_error(s.post("/api/users", &json!({"_id": "u1"})), 409);
    assert!(msg.contains("u1"), "{msg}");

    let r = s.get("/api/users/u1");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag1);
    assert_eq!(json(r), json!({"_id": "u1", "name": "Ann", "age": 30}));
    let r = s
        .client
        .get(s.url("/api/users/u1"))
        .header("if-none-match", &etag1)
        .send()
        .unwrap();
    assert_eq!(r.status(), 304);
    expect_error(s.get("/api/users/nope"), 404);

    // PUT: upsert, _id from the URL, mismatching body _id refused.
    let r = s.put("/api/users/u2", &json!({"name": "Bob"}));
    assert_eq!(r.status(), 200);
    assert_eq!(json(r), json!({"status": "ok", "key": "users:u2"}));
    assert_eq!(
        json(s.get("/api/users/u2")),
        json!({"_id": "u2", "name": "Bob"})
    );
    expect_error(s.put("/api/users/u2", &json!({"_id": "other"})), 400);
    let r = s.put("/api/users/u2", &json!({"_id": "u2", "name": "Bob2"}));
    assert_eq!(r.status(), 200);

    // PATCH: $set/$unset/$inc, returns the new document, new ETag.
    let r = s.patch(
        "/api/users/u1",
        &json!({"$inc": {"age": 1}, "$set": {"a.b": true}, "$unset": {"name": ""}}),
    );
    assert_eq!(r.status(), 200);
    let etag2 = r.headers()["etag"].to_str().unwrap().to_string();
    assert_ne!(etag1, etag2);
    assert_eq!(json(r), json!({"_id": "u1", "age": 31, "a": {"b": true}}));
    expect_error(
        s.patch("/api/users/missing", &json!({"$set": {"x": 1}})),
        404,
    );
    let m = expect_error(s.patch("/api/users/u1", &json!({"$push": {"x": 1}})), 400);
    assert!(m.contains("$push"), "{m}");
    expect_error(s.patch("/api/users/u1", &json!({"$inc": {"a.b": 1}})), 400);
    expect_error(
        s.patch("/api/users/u1", &json!({"$set": {"_id": "x"}})),
        400,
    );

    // If-Match: stale ETag → 412 on PATCH, PUT and DELETE; current ETag works.
    let with = |m: reqwest::Method, path: &str, tag: &str, body: Option<Value>| {
        let mut rb = s.client.request(m, s.url(path)).header("if-match", tag);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        rb.send().unwrap()
    };
    let stale = etag1.as_str();
    expect_error(
        with(
            reqwest::Method::PATCH,
            "/api/users/u1",
            stale,
            Some(json!({"$set": {"x": 1}})),
        ),
        412,
    );
    expect_error(
        with(
            reqwest::Method::PUT,
            "/api/users/u1",
            stale,
            Some(json!({"x": 1})),
        ),
        412,
    );
    expect_error(
        with(reqwest::Method::DELETE, "/api/users/u1", stale, None),
        412,
    );
    expect_error(
        with(
            reqwest::Method::PUT,
            "/api/users/new",
            "\"5\"",
            Some(json!({})),
        ),
        412,
    );
    let r = with(
        reqwest::Method::PATCH,
        "/api/users/u1",
        &etag2,
        Some(json!({"$set": {"x": 1}})),
    );
    assert_eq!(r.status(), 200);
    let etag3 = r.headers()["etag"].to_str().unwrap().to_string();
    let r = with(reqwest::Method::DELETE, "/api/users/u1", &etag3, None);
    assert_eq!(r.status(), 200);
    assert_eq!(json(r), json!({"status": "deleted", "key": "users:u1"}));
    expect_error(s.delete("/api/users/u1"), 404);
    expect_error(s.get("/api/users/u1"), 404);

    // A tag this server never issued matches nothing, but only once the request is
    // otherwise valid (RFC 9110 13.2.1): 400 for a bad id, 404 for a missing document.
    let long = format!("/api/users/{}", "x".repeat(600));
    expect_error(with(reqwest::Method::DELETE, &long, "\"x\"", None), 400);
    expect_error(
        with(reqwest::Method::DELETE, "/api/users/u1", "", None),
        404,
    );
    expect_error(
        with(
            reqwest::Method::PATCH,
            "/api/users/u1",
            "\"x\"",
            Some(json!({"$set": {"x": 1}})),
        ),
        404,
    );
    let r = with(reqwest::Method::PUT, "/api/users/u1", "\"x\"", None);
    expect_error(r, 400);
    assert_eq!(s.put("/api/users/u1", &json!({})).status(), 200);
    expect_error(
        with(
            reqwest::Method::PUT,
            "/api/users/u1",
            "junk",
            Some(json!({})),
        ),
        412,
    );
    expect_error(
        with(reqwest::Method::DELETE, "/api/users/u1", "\"x\"", None),
        412,
    );
    assert_eq!(s.delete("/api/users/u1").status(), 200);

    // Ids with URL-special characters round-trip.
    let r = s.put("/api/users/a%2Fb%20c", &json!({"v": 1}));
    assert_eq!(r.status(), 200);
    assert_eq!(json(s.get("/api/users/a%2Fb%20c"))["_id"], "a/b c");
}

#[test]
fn bad_input_is_400_never_500() {
    let (_tmp, s) = server();
    let long_col = "c".repeat(65);
    for col in ["_sys", ".x", long_col.as_str(), "a%20b", "caf%C3%A9"] {
        let m = expect_error(s.post(&format!("/api/{col}"), &json!({"_id": "k"})), 400);
        assert!(m.contains("collection"), "{m}");
    }
    expect_error(s.post("/api/c", &json!({"v": 1})), 400);
    expect_error(s.post("/api/c", &json!({"_id": 5})), 400);
    expect_error(s.post("/api/c", &json!({"_id": ""})), 400);
    expect_error(s.post("/api/c", &json!({"_id": "x".repeat(513)})), 400);
    expect_error(s.post("/api/c", &json!([1, 2])), 400);
    expect_error(s.post_raw("/api/c", "{not json"), 400);
    expect_error(s.post_raw("/api/c", ""), 400);
    let mut deep = json!(1);
    for _ in 0..70 {
        deep = json!({ "a": deep });
    }
    deep["_id"] = json!("deep");
    let m = expect_error(s.post("/api/c", &deep), 400);
    assert!(m.contains("64"), "{m}");
    let arrays = format!(
        "{{\"_id\":\"d\",\"v\":{}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    );
    expect_error(s.post_raw("/api/c", arrays), 400);
    let very_deep = format!(
        "{{\"_id\":\"d\",\"v\":{}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    expect_error(s.post_raw("/api/c", very_deep), 400);
    expect_error(s.get(&format!("/api/c/{}", "x".repeat(513))), 400);
    // The server is still up and nothing was stored.
    assert_eq!(json(s.get("/api/health")), json!({"status": "ok"}));
    assert_eq!(json(s.get("/api/_collections")), json!([]));
}

#[test]
fn insert_many_is_atomic_and_limited() {
    let (_tmp, s) = server();
    let docs: Vec<Value> = (0..1000)
        .map(|i| json!({"_id": format!("d{i:04}"), "i": i}))
        .collect();
    let r = s.post("/api/items/_insertMany", &Value::Array(docs));
    assert_eq!(r.status(), 200);
    assert_eq!(json(r), json!({"status": "ok", "insertedCount": 1000}));
    assert_eq!(json(s.get("/api/items/_count")), json!({"count": 1000}));

    let too_many: Vec<Value> = (0..1001).map(|i| json!({"_id": format!("x{i}")})).collect();
    let m = expect_error(
        s.post("/api/items/_insertMany", &Value::Array(too_many)),
        400,
    );
    assert!(m.contains("1000"), "{m}");

    let bad = json!([{"_id": "n1"}, {"_id": "n2"}, {"no_id": 1}]);
    let m = expect_error(s.post("/api/items/_insertMany", &bad), 400);
    assert!(m.contains("index 2"), "{m}");
    let dup = json!([{"_id": "n1"}, {"_id": "n1"}]);
    let m = expect_error(s.post("/api/items/_insertMany", &dup), 400);
    assert!(m.contains("index 1"), "{m}");
    let existing = json!([{"_id": "n1"}, {"_id": "d0005"}]);
    let m = expect_error(s.post("/api/items/_insertMany", &existing), 409);
    assert!(m.contains("index 1"), "{m}");
    expect_error(s.post("/api/items/_insertMany", &json!({"_id": "x"})), 400);
    // Nothing of the refused batches was written.
    expect_error(s.get("/api/items/n1"), 404);
    assert_eq!(json(s.get("/api/items/_count")), json!({"count": 1000}));
    let r = s.post("/api/items/_insertMany", &json!([]));
    assert_eq!(json(r)["insertedCount"], 0);
}

#[test]
fn search_filters_paging_and_counts() {
    let (_tmp, s) = server();
    let docs: Vec<Value> = (0..1500)
        .map(|i| {
            json!({"_id": format!("p{i:05}"), "n": i, "tag": if i % 3 == 0 { "three" } else { "other" },
                   "nested": {"even": i % 2 == 0}})
        })
        .collect();
    for chunk in docs.chunks(1000) {
        assert_eq!(
            s.post("/api/people/_insertMany", &Value::Array(chunk.to_vec()))
                .status(),
            200
        );
    }
    s.post("/api/other", &json!({"_id": "p00001", "n": 1}));

    // Bare array, capped at 1000, in _id order; the cap and the rest's cursor are named.
    let r = s.post_raw("/api/people/_search", "");
    assert_eq!(r.headers()["x-minidb-truncated"], "documents=1000");
    let rest = r.headers()["x-minidb-cursor"].to_str().unwrap().to_string();
    let all = json(r);
    let arr = all.as_array().unwrap();
    assert_eq!(arr.len(), 1000);
    assert_eq!(arr[0]["_id"], "p00000");
    let page = json(s.post_raw(&format!("/api/people/_search?limit=1000&cursor={rest}"), ""));
    assert_eq!(page["documents"][0]["_id"], "p01000");
    assert_eq!(page["documents"].as_array().unwrap().len(), 500);
    assert!(page["cursor"].is_null());
    // A result that ends before the cap says nothing.
    let r = s.post("/api/people/_search", &json!({"tag": "three"}));
    assert!(r.headers().get("x-minidb-truncated").is_none());
    assert_eq!(json(r).as_array().unwrap().len(), 500);
    let r = json(s.post(
        "/api/people/_search",
        &json!({"n": {"$gte": 10, "$lt": 13}}),
    ));
    assert_eq!(
        r,
        json!([
            {"_id": "p00010", "n": 10, "tag": "other", "nested": {"even": true}},
            {"_id": "p00011", "n": 11, "tag": "other", "nested": {"even": false}},
            {"_id": "p00012", "n": 12, "tag": "three", "nested": {"even": true}},
        ])
    );
    let r = json(s.post(
        "/api/people/_search",
        &json!({"$or": [{"n": {"$in": [1, 2]}}, {"_id": "p01499"}], "nested.even": {"$ne": true}}),
    ));
    let ids: Vec<&str> = r
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p00001", "p01499"]);
    assert_eq!(
        json(s.post("/api/people/_search", &json!({"n": "1"}))),
        json!([])
    );
    assert_eq!(
        json(s.post("/api/people/_search", &json!({"zzz": {"$exists": true}}))),
        json!([])
    );
    let m = expect_error(
        s.post("/api/people/_search", &json!({"n": {"$regex": "x"}})),
        400,
    );
    assert!(m.contains("$regex"), "{m}");
    expect_error(s.post("/api/people/_search", &json!([1])), 400);
    expect_error(s.post_raw("/api/people/_search", "{"), 400);

    // Paging: every matching document exactly once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/people/_search?limit=400&cursor={c}"),
            None => "/api/people/_search?limit=400".to_string(),
        };
        let page = json(s.post(&q, &json!({"tag": "three"})));
        for d in page["documents"].as_array().unwrap() {
            seen.push(d["n"].as_u64().unwrap());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let want: Vec<u64> = (0..1500).filter(|i| i % 3 == 0).collect();
    assert_eq!(seen, want);
    let page = json(s.post_raw("/api/people/_search?limit=2", ""));
    assert_eq!(page["documents"].as_array().unwrap().len(), 2);
    assert!(page["cursor"].is_string());
    expect_error(s.post_raw("/api/people/_search?limit=0", ""), 400);
    expect_error(s.post_raw("/api/people/_search?limit=1001", ""), 400);
    expect_error(s.post_raw("/api/people/_search?limit=x", ""), 400);
    expect_error(s.post_raw("/api/people/_search?cursor=!!!", ""), 400);

    // Counts: exact stored counter, with a filter, and on _search.
    assert_eq!(json(s.get("/api/people/_count")), json!({"count": 1500}));
    assert_eq!(json(s.get("/api/nothing/_count")), json!({"count": 0}));
    let f = "%7B%22tag%22%3A%22three%22%7D"; // {"tag":"three"}
    assert_eq!(
        json(s.get(&format!("/api/people/_count?filter={f}"))),
        json!({"count": 500})
    );
    expect_error(s.get("/api/people/_count?filter=%7B"), 400);
    let r = json(s.post(
        "/api/people/_search?count=true",
        &json!({"nested.even": true}),
    ));
    assert_eq!(r, json!({"count": 750}));
    let r = s.post("/api/people/_search?count=yes", &json!({}));
    assert!(expect_error(r, 400).contains("count must be true or false"));
    expect_error(
        s.post("/api/people/_search?count=true&limit=0", &json!({})),
        400,
    );

    // Collections: sorted, exact, with byte sizes.
    let cols = json(s.get("/api/_collections"));
    let names: Vec<&str> = cols
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "people"]);
    assert_eq!(cols[1]["docCount"], 1500);
    assert!(cols[1]["byteSize"].as_u64().unwrap() > 1500 * 40);
    assert_eq!(
        cols[0]["byteSize"],
        json!(r#"{"_id":"p00001","n":1}"#.len())
    );
    s.delete("/api/other/p00001");
    assert_eq!(
        json(s.get("/api/_collections")).as_array().unwrap().len(),
        1
    );
}

#[test]
fn paging_under_concurrent_inserts_sees_each_document_once() {
    let (_tmp, s) = server();
    let base: Vec<Value> = (0..600)
        .map(|i| json!({"_id": format!("m{i:04}")}))
        .collect();
    assert_eq!(
        s.post("/api/pg/_insertMany", &Value::Array(base)).status(),
        200
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let stop = stop.clone();
            let url = s.url("/api/pg");
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Before, between and after the existing ids.
                    let id = format!("{}{w}{i:05}", ["a", "m0300x", "z"][i % 3]);
                    let _ = c.post(&url).json(&json!({"_id": id})).send();
                    i += 1;
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = json(s.post_raw(&format!("/api/pg/_search?limit=25&cursor={cursor}"), ""));
        for d in page["documents"].as_array().unwrap() {
            seen.push(d["_id"].as_str().unwrap().to_string());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        if seen.len() > 100_000 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a document came twice");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "not in _id order");
    for i in 0..600 {
        assert!(unique.contains(&format!("m{i:04}")), "m{i:04} missing");
    }
}

#[test]
fn concurrent_patches_and_writes_lose_nothing() {
    let (_tmp, s) = server();
    s.post("/api/ctr", &json!({"_id": "c", "n": 0}));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let base = s.base.clone();
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                for i in 0..25 {
                    let r = c
                        .patch(format!("{base}/api/ctr/c"))
                        .json(&json!({"$inc": {"n": 1}}))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let id = format!("t{t}-{i}");
                    let r = c
                        .post(format!("{base}/api/ctr"))
                        .json(&json!({"_id": id}))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 201);
                    if i % 2 == 0 {
                        let r = c.delete(format!("{base}/api/ctr/{id}")).send().unwrap();
                        assert_eq!(r.status(), 200);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(json(s.get("/api/ctr/c"))["n"], 200);
    // 1 counter doc + 8 threads × 12 kept docs.
    assert_eq!(json(s.get("/api/ctr/_count")), json!({"count": 97}));
    let scanned = json(s.post_raw("/api/ctr/_search", ""))
        .as_array()
        .unwrap()
        .len();
    assert_eq!(scanned, 97);
    assert_eq!(json(s.get("/api/_collections"))[0]["docCount"], 97);
}

#[test]
fn probes_stats_metrics_openapi_and_fallbacks() {
    let (_tmp, s) = server();
    assert_eq!(json(s.get("/api/health")), json!({"status": "ok"}));
    assert_eq!(s.get("/api/ready").status(), 200);
    let t = Instant::now();
    let st = json(s.get("/api/stats"));
    assert!(t.elapsed() < Duration::from_millis(500));
    for k in [
        "process_cpu_percent",
        "process_rss_mb",
        "memory_limit_bytes",
        "uptime_secs",
        "threads",
    ] {
        assert!(st.get(k).is_some(), "stats lacks {k}: {st}");
    }
    assert!(st["process_rss_bytes"].as_u64().unwrap() > 0);
    s.post("/api/m", &json!({"_id": "x"}));
    let m = json(s.get("/api/metrics"));
    assert!(m["puts"].as_u64().unwrap() >= 1, "{m}");
    assert!(m.get("level_0_files").is_some() || m.get("memtable_entries").is_some());
    // Prometheus exposition from the telemetry layer, with this request counted.
    let r = s.get("/metrics");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("# TYPE"), "{text}");
    assert!(
        text.contains("minidb_collection_documents{collection=\"m\"} 1"),
        "{text}"
    );
    let r = s.client.post(s.url("/api/_compact")).send().unwrap();
    assert_eq!(r.status(), 202);

    let m = expect_error(s.get("/nope"), 404);
    assert!(!m.is_empty());
    expect_error(s.get("/api/a/b/c"), 404);
    expect_error(s.delete("/api/_collections"), 405);
    expect_error(s.client.put(s.url("/api/health")).send().unwrap(), 405);
    expect_error(s.get("/api/coll"), 405);

    // CORS: MiniDBGo's client origin is allowed by default, others are not.
    let r = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("/api/users"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let r = s
        .client
        .get(s.url("/api/health"))
        .header("origin", "http://evil.example")
        .send()
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // OpenAPI: every documented path and method is a real route.
    let spec = json(s.get("/api/openapi.json"));
    let paths = spec["paths"].as_object().unwrap();
    assert!(paths.len() >= 12);
    for (path, ops) in paths {
        let concrete = path.replace("{col}", "oapi").replace("{id}", "doc1");
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = s
                .client
                .request(m, s.url(&concrete))
                .body("{}")
                .send()
                .unwrap();
            let code = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            assert!(
                code != 405 && !(code == 404 && body.contains("no such route")),
                "{method} {path} is documented but answered {code} {body}"
            );
        }
    }
}

#[test]
fn limits_body_size_concurrency_and_timeouts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        &[
            ("MINIDB_SERVER__MAX_BODY_BYTES", "4096"),
            ("MINIDB_SERVER__MAX_IN_FLIGHT", "2"),
            ("MINIDB_SERVER__REQUEST_TIMEOUT_SECS", "3"),
        ],
    );
    // 413 over the limit (by Content-Length and by chunked streaming), JSON shaped.
    let big = format!("{{\"_id\":\"big\",\"v\":\"{}\"}}", "x".repeat(5000));
    let m = expect_error(s.post_raw("/api/lim", big.clone()), 413);
    assert!(m.contains("limit"), "{m}");
    // Body::new over a reader streams it chunked, without a Content-Length.
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(big.into_bytes()));
    expect_error(s.post_raw("/api/lim", body), 413);
    assert_eq!(s.post("/api/lim", &json!({"_id": "small"})).status(), 201);

    // A request that stalls past request_timeout_secs gets 408 JSON.
    let mut stalled =
        SlowRequest::begin(&s.addr, "POST", "/api/lim", br#"{"_id": "never-finished"}"#);
    let t = Instant::now();
    let (status, body) = stalled.read_response();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("\"status\":408"), "{body}");
    assert!(t.elapsed() < Duration::from_secs(10));
    expect_error(s.get("/api/lim/never-finished"), 404);
}

#[test]
fn the_in_flight_limit_counts_requests_being_served() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        &[("MINIDB_SERVER__MAX_IN_FLIGHT", "1")],
    );
    assert_eq!(s.post("/api/lim", &json!({"_id": "small"})).status(), 201);
    // A request being served holds the only permit; another gets 503 + Retry-After at
    // once. (A request waiting for its body holds none: tests/api_protocol.rs.) Slow to
    // serve: a filter with a 100,000-value `$in` over 5,000 documents (seconds each).
    let docs: Vec<Value> = (0..5000)
        .map(|i| json!({"_id": format!("d{i:04}"), "n": i}))
        .collect();
    for chunk in docs.chunks(1000) {
        let r = s.post("/api/lim/_insertMany", &Value::Array(chunk.to_vec()));
        assert_eq!(r.status(), 200);
    }
    let values: Vec<String> = (0..100_000).map(|i| format!("v{i}")).collect();
    let slow_filter = serde_json::to_vec(&json!({"n": {"$in": values}})).unwrap();
    let spawn_search = || {
        let (url, body) = (s.url("/api/lim/_search?count=true"), slow_filter.clone());
        std::thread::spawn(move || {
            let r = reqwest::blocking::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .unwrap();
            (r.status().as_u16(), r.text().unwrap_or_default())
        })
    };
    let mut search = spawn_search();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let r = s.get("/api/lim/small");
        if r.status() == 503 {
            break r;
        }
        assert_eq!(r.status(), 200);
        if search.is_finished() {
            let (status, body) = search.join().unwrap();
            // The search can lose the race for the only permit to one of these GETs (its
            // body is read before it asks for one): then it was refused, so try again.
            assert!(
                status == 503 && body.contains("max_in_flight"),
                "the search ended before a GET was refused: {status} {body}"
            );
            search = spawn_search();
        }
        assert!(
            Instant::now() < deadline,
            "the search never held the permit"
        );
    };
    let searches = [search];
    assert_eq!(refused.headers()["retry-after"], "1");
    let m = expect_error(refused, 503);
    assert!(m.contains("max_in_flight"), "{m}");
    assert_eq!(
        s.get("/api/health").status(),
        200,
        "probes bypass the limit"
    );
    for search in searches {
        let (status, body) = search.join().unwrap();
        assert_eq!((status, body.as_str()), (200, r#"{"count":0}"#));
    }
    assert_eq!(s.get("/api/lim/small").status(), 200);
    s.stop();
}

/// Reads until the server closes the connection; returns what it sent. Panics if it is
/// still open after `limit` (the timeouts under test are 1 s).
fn read_until_closed(stream: &mut std::net::TcpStream, limit: Duration) -> String {
    use std::io::Read;
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return String::from_utf8_lossy(&got).into_owned()
            }
            Err(e) => panic!(
                "connection still open ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

#[test]
fn slow_headers_and_idle_keepalive_connections_are_closed() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start(
        &tmp.path().join("data"),
        &[
            ("MINIDB_SERVER__HEADER_TIMEOUT_SECS", "1"),
            ("MINIDB_SERVER__IDLE_TIMEOUT_SECS", "1"),
        ],
    );
    // Headers that never finish: the server gives up on the connection.
    let mut slow = std::net::TcpStream::connect(&s.addr).expect("connect");
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: minidb\r\n")
        .expect("write");
    let answer = read_until_closed(&mut slow, Duration::from_secs(20));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer to unfinished headers: {answer:?}"
    );
    // A keep-alive connection that goes quiet after one answer is closed too.
    let mut idle = std::net::TcpStream::connect(&s.addr).expect("connect");
    idle.write_all(b"GET /api/health HTTP/1.1\r\nHost: minidb\r\n\r\n")
        .expect("write");
    let answer = read_until_closed(&mut idle, Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains(r#"{"status":"ok"}"#), "{answer:?}");
    // The server still serves new connections.
    assert_eq!(s.get("/api/health").status(), 200);
}

/// Issue 8, item 3: responses are bounded in bytes and streamed. With a small
/// `server.max_response_bytes`, a bare `_search` stops early and says so, a paged one
/// returns fewer documents and its cursor; following the cursors yields every document
/// once, and results larger than what the server keeps in memory stream intact.
#[test]
fn search_responses_are_bounded_in_bytes_and_streamed() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        &[("MINIDB_SERVER__MAX_RESPONSE_BYTES", "400000")],
    );
    let pad = "x".repeat(1000);
    for b in 0..3 {
        let docs: Vec<Value> = (0..1000)
            .map(|i| json!({"_id": format!("s{:05}", b * 1000 + i), "pad": pad}))
            .collect();
        assert_eq!(
            s.post("/api/st/_insertMany", &Value::Array(docs)).status(),
            200
        );
    }
    // Bare: ~1 KiB documents, so about 390 fit in 400,000 bytes.
    let r = s.post_raw("/api/st/_search", "{}");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-minidb-truncated"], "bytes=400000");
    let mut cursor = r.headers()["x-minidb-cursor"].to_str().unwrap().to_string();
    let body = r.bytes().unwrap();
    assert!(body.len() <= 400_000, "{} bytes", body.len());
    let first: Vec<Value> = serde_json::from_slice(&body).expect("a complete JSON array");
    assert!(first.len() > 300 && first.len() < 400, "{}", first.len());
    let mut seen: Vec<String> = first
        .iter()
        .map(|d| d["_id"].as_str().unwrap().to_string())
        .collect();
    // Paged: each page stays under the cap too, and the cursors cover the rest.
    loop {
        let r = s.post_raw(&format!("/api/st/_search?limit=1000&cursor={cursor}"), "{}");
        let body = r.bytes().unwrap();
        assert!(body.len() <= 400_000, "{} bytes", body.len());
        let page: Value = serde_json::from_slice(&body).expect("a complete page");
        let docs = page["documents"].as_array().unwrap();
        assert!(!docs.is_empty());
        seen.extend(docs.iter().map(|d| d["_id"].as_str().unwrap().to_string()));
        match page["cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let want: Vec<String> = (0..3000).map(|i| format!("s{i:05}")).collect();
    assert_eq!(seen, want);
    s.stop();
}
