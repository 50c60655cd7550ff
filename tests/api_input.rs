//! Hostile and edge-case input over real HTTP against the real binary: attacker-sized
//! nesting, JSON that serde_json would silently change, reserved ids.
#![cfg(feature = "server")]

mod api;

use api::{expect_error, json, Server};
use serde_json::json;

fn server() -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&tmp.path().join("data"), &[]);
    (tmp, s)
}

/// Issue 8, item 1: a 15,000-segment dot path built a 15,000-deep object whose drop
/// overflowed the stack and killed the server.
#[test]
fn attacker_sized_dot_paths_get_400_and_the_server_stays_up() {
    let (_tmp, s) = server();
    assert_eq!(s.put("/api/t/x", &json!({"a": 1})).status(), 200);
    let long = vec!["p"; 15_000].join(".");
    for op in ["$set", "$inc", "$unset"] {
        let m = expect_error(s.patch("/api/t/x", &json!({op: {long.clone(): 1}})), 400);
        assert!(m.contains("64"), "{op}: {m}");
        assert!(
            m.len() < 500,
            "the message quotes the whole path: {} bytes",
            m.len()
        );
    }
    // One segment over the document depth limit is refused too, at parse time.
    let just_over = vec!["p"; 65].join(".");
    expect_error(s.patch("/api/t/x", &json!({"$set": {just_over: 1}})), 400);
    // A path and a value that together nest deeper than 64 levels.
    let mut value = json!(1);
    for _ in 0..60 {
        value = json!({ "v": value });
    }
    let five = ["q"; 5].join(".");
    let m = expect_error(s.patch("/api/t/x", &json!({"$set": {five: value}})), 400);
    assert!(m.contains("deeper than 64"), "{m}");
    // The longest allowed path still works.
    let longest = vec!["p"; 64].join(".");
    assert_eq!(
        s.patch("/api/t/x", &json!({"$set": {longest.clone(): 1}}))
            .status(),
        200
    );
    // Filters: the same limit on field paths.
    let m = expect_error(s.post("/api/t/_search", &json!({long.clone(): 1})), 400);
    assert!(m.contains("64"), "{m}");
    let hundred = vec!["p"; 100].join(".");
    let q = format!("/api/t/_count?filter=%7B%22{hundred}%22%3A1%7D");
    expect_error(s.get(&q), 400);
    // `$and` nested beyond the JSON depth limit, as raw text (never built by the server).
    let nested = format!("{}{{}}{}", "{\"$and\":[".repeat(5000), "]}".repeat(5000));
    expect_error(s.post_raw("/api/t/_search", nested), 400);
    // The server is still up, and the document is as the last good PATCH left it.
    assert_eq!(json(s.get("/api/health")), json!({"status": "ok"}));
    let doc = json(s.get("/api/t/x"));
    assert_eq!(doc["a"], 1);
    let mut at = &doc;
    for _ in 0..63 {
        at = &at["p"];
    }
    assert_eq!(at["p"], 1);
    s.stop();
}

/// Issue 8, item 14: serde_json rounds 10^30 to `1e30` and keeps the last of two equal
/// keys; both are refused with 400 naming the number or the key, and nothing is stored.
#[test]
fn huge_integers_and_duplicate_keys_are_refused() {
    let (_tmp, s) = server();
    let big = "1000000000000000000000000000000";
    let m = expect_error(
        s.post_raw("/api/j", format!(r#"{{"_id":"n","v":{big}}}"#)),
        400,
    );
    assert!(m.contains(big) && m.contains("string"), "{m}");
    let m = expect_error(s.post_raw("/api/j", r#"{"_id":"a","_id":"b"}"#), 400);
    assert!(m.contains("duplicate key") && m.contains("\"_id\""), "{m}");
    let m = expect_error(
        s.post_raw("/api/j", r#"{"_id":"d","o":{"k":[{"z":1,"z":2}]}}"#),
        400,
    );
    assert!(m.contains("\"z\""), "{m}");
    let m = expect_error(
        s.post_raw(
            "/api/j/_insertMany",
            r#"[{"_id":"m1"},{"_id":"m2","n":-9223372036854775809}]"#,
        ),
        400,
    );
    assert!(m.contains("-9223372036854775809"), "{m}");
    let put = s
        .client
        .put(s.url("/api/j/p"))
        .header("content-type", "application/json")
        .body(r#"{"v":1,"v":2}"#)
        .send()
        .expect("PUT");
    expect_error(put, 400);
    assert_eq!(s.put("/api/j/p", &json!({"v": 1})).status(), 200);
    let patch = s
        .client
        .patch(s.url("/api/j/p"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"$inc":{{"v":{big}}}}}"#))
        .send()
        .expect("PATCH");
    expect_error(patch, 400);
    expect_error(s.post_raw("/api/j/_search", r#"{"v":1,"v":2}"#), 400);
    expect_error(
        s.get("/api/j/_count?filter=%7B%22v%22%3A1%2C%22v%22%3A2%7D"),
        400,
    );
    // Within range, and as floats or strings, numbers are kept exactly as sent.
    let r = s.post_raw(
        "/api/j",
        r#"{"_id":"ok","max":18446744073709551615,"min":-9223372036854775808,"f":1e30,"s":"1000000000000000000000000000000"}"#,
    );
    assert_eq!(r.status(), 201);
    let doc = s.get("/api/j/ok").text().expect("body");
    assert!(doc.contains("18446744073709551615"), "{doc}");
    assert!(doc.contains("-9223372036854775808"), "{doc}");
    assert_eq!(
        json(s.get("/api/j/p")),
        json!({"_id": "p", "v": 1}),
        "refused writes changed nothing"
    );
    assert_eq!(json(s.get("/api/j/_count")), json!({"count": 2}));
    s.stop();
}

/// Issue 8, item 4: `POST /api/ids {"_id":"_count"}` answered 201, and the document could
/// then never be read (`GET /api/ids/_count` is the count route). Ids starting with `_` are
/// reserved, as CouchDB's are: 400 at every route that creates or replaces a document.
#[test]
fn ids_starting_with_an_underscore_are_reserved() {
    let (tmp, s) = server();
    const RULE: &str = "ids starting with '_' are reserved for routes";
    let m = expect_error(s.post("/api/ids", &json!({"_id": "_count"})), 400);
    assert!(m.contains(RULE), "{m}");
    let m = expect_error(s.put("/api/ids/_x", &json!({"v": 1})), 400);
    assert!(m.contains(RULE), "{m}");
    let m = expect_error(
        s.post(
            "/api/ids/_insertMany",
            &json!([{"_id": "fine"}, {"_id": "_search"}]),
        ),
        400,
    );
    assert!(m.contains("index 1") && m.contains(RULE), "{m}");
    // Nothing was stored, and the route words still answer as routes.
    assert_eq!(json(s.get("/api/ids/_count")), json!({"count": 0}));
    expect_error(s.get("/api/ids/fine"), 404);
    // An underscore elsewhere is fine.
    assert_eq!(s.post("/api/ids", &json!({"_id": "a_b"})).status(), 201);
    assert_eq!(json(s.get("/api/ids/a_b")), json!({"_id": "a_b"}));
    s.stop();

    // Restore refuses such a line, naming it, and writes nothing.
    let dump = tmp.path().join("reserved.jsonl");
    std::fs::write(
        &dump,
        "{\"collection\":\"ids\",\"doc\":{\"_id\":\"ok\"}}\n{\"collection\":\"ids\",\"doc\":{\"_id\":\"_count\"}}\n",
    )
    .expect("write dump");
    let out = api::command(tmp.path())
        .arg("restore")
        .arg(&dump)
        .arg("--data-dir")
        .arg(tmp.path().join("restored"))
        .output()
        .expect("restore");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains(RULE), "{err}");
}

/// Issue 8, item 5: `POST /api/bad` with `Content-Type: text/plain` (no CORS preflight) and
/// `Origin: http://evil.example` was stored (201): any web page could write.
#[test]
fn cross_site_writes_are_refused() {
    let (_tmp, s) = server();
    let evil = |m: reqwest::Method, path: &str, body: &str| {
        s.client
            .request(m, s.url(path))
            .header("content-type", "text/plain")
            .header("origin", "http://evil.example")
            .body(body.to_string())
            .send()
            .expect("request")
    };
    let m = expect_error(
        evil(reqwest::Method::POST, "/api/bad", r#"{"_id":"x"}"#),
        403,
    );
    assert!(m.contains("http://evil.example"), "{m}");
    expect_error(evil(reqwest::Method::POST, "/api/_compact", ""), 403);
    expect_error(evil(reqwest::Method::PUT, "/api/bad/y", "{}"), 403);
    expect_error(evil(reqwest::Method::DELETE, "/api/bad/y", ""), 403);
    let r = s
        .client
        .post(s.url("/api/bad"))
        .header("sec-fetch-site", "cross-site")
        .body(r#"{"_id":"z"}"#)
        .send()
        .expect("POST");
    expect_error(r, 403);
    // Nothing was stored; reads from any origin still work.
    let r = s
        .client
        .get(s.url("/api/bad/_count"))
        .header("origin", "http://evil.example")
        .send()
        .expect("GET");
    assert_eq!(json(r), json!({"count": 0}));
    assert_eq!(json(s.get("/api/_collections")), json!([]));
    // No Origin (curl, servers), the allowed origin, and the server's own origin write.
    assert_eq!(s.post("/api/bad", &json!({"_id": "curl"})).status(), 201);
    let r = s
        .client
        .post(s.url("/api/bad"))
        .header("origin", "http://localhost:3000")
        .header("sec-fetch-site", "same-site")
        .json(&json!({"_id": "dashboard"}))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 201);
    let r = s
        .client
        .post(s.url("/api/bad"))
        .header("origin", s.base.clone())
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"_id": "same-origin"}))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 201);
    assert_eq!(json(s.get("/api/bad/_count")), json!({"count": 3}));
    s.stop();
}

#[path = "api/hostile.rs"]
mod hostile;

/// Issue 8, item 1 over HTTP: arbitrary and adversarial bodies to every write, search and
/// update route get a 2xx or a 4xx JSON error, never a 5xx, a dropped connection or a
/// crash.
#[test]
fn hostile_bodies_over_http_get_2xx_or_a_4xx_json_error() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let (_tmp, s) = server();
    assert_eq!(s.put("/api/h/seed", &json!({"a": 1})).status(), 200);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let result = runner.run(&hostile::json_text(), |text| {
        for (method, path) in [
            (reqwest::Method::POST, "/api/h"),
            (reqwest::Method::PUT, "/api/h/p"),
            (reqwest::Method::PATCH, "/api/h/seed"),
            (reqwest::Method::POST, "/api/h/_insertMany"),
            (reqwest::Method::POST, "/api/h/_search"),
            (reqwest::Method::POST, "/api/h/_search?limit=3"),
            (reqwest::Method::POST, "/api/h/_search?count=true"),
        ] {
            let r = s
                .client
                .request(method.clone(), s.url(path))
                .header("content-type", "application/json")
                .body(text.clone())
                .send()
                .map_err(|e| TestCaseError::fail(format!("{method} {path}: {e}")))?;
            let status = r.status().as_u16();
            let body = r.text().unwrap_or_default();
            if !(200..300).contains(&status) {
                let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                    TestCaseError::fail(format!("{method} {path}: {status} not JSON ({e}): {body}"))
                })?;
                if !(400..500).contains(&status) || v["status"] != status {
                    return Err(TestCaseError::fail(format!(
                        "{method} {path}: {status} {body}"
                    )));
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(json(s.get("/api/h/seed"))["_id"], "seed");
    s.stop();
}
