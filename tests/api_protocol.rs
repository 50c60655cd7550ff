//! The HTTP/1.1 protocol edge over raw TCP against the real binary: requests the HTTP
//! parser refuses, pipelining and framing, slow and stalled clients.
#![cfg(feature = "server")]

mod api;

use api::{raw_exchange, Server};

fn server(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&tmp.path().join("data"), env);
    (tmp, s)
}

/// The single answer to `request`, which must be the JSON error with `status`, and the
/// connection closed after it.
fn refused(s: &Server, request: &[u8], status: u16) -> String {
    let answers = raw_exchange(&s.addr, request);
    assert_eq!(answers.len(), 1, "{answers:?}");
    let a = &answers[0];
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.header("content-type"), Some("application/json"), "{a:?}");
    assert_eq!(a.header("connection"), Some("close"), "{a:?}");
    a.json_error()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Issue 8, item 6: hyper answered these itself, with an empty body.
#[test]
fn requests_the_parser_refuses_get_the_json_error_shape() {
    let (_tmp, s) = server(&[]);
    let mut many = b"GET /api/health HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let m = refused(&s, &many, 431);
    assert!(m.contains("65536"), "{m}");
    let mut hundred_and_one = b"GET /api/health HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..100 {
        hundred_and_one.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    hundred_and_one.extend_from_slice(b"\r\n");
    let m = refused(&s, &hundred_and_one, 431);
    assert!(m.contains("100 header fields"), "{m}");

    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    let m = refused(&s, long.as_bytes(), 414);
    assert!(m.contains("8192"), "{m}");

    let m = refused(
        &s,
        b"POST /api/c HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        400,
    );
    assert!(m.contains("Content-Length"), "{m}");
    refused(
        &s,
        b"POST /api/c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
    refused(&s, b"GET /api/\0x HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    refused(
        &s,
        b"GET /api/health HTTP/1.1\r\nBad Header: x\r\n\r\n",
        400,
    );
    refused(&s, b"NOT A REQUEST\r\n\r\n", 400);
    refused(
        &s,
        b"POST /api/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        400,
    );
    // The server is fine, and nothing was written.
    assert_eq!(s.get("/api/health").status(), 200);
    assert_eq!(api::json(s.get("/api/_collections")), serde_json::json!([]));
}

/// Pipelined requests keep working through the guard: bodies of known length and chunked
/// bodies are followed to the next request, and a refused request after good ones is
/// answered after them, in order.
#[test]
fn pipelined_requests_bodies_and_a_late_refusal_are_answered_in_order() {
    let (_tmp, s) = server(&[]);
    let body = r#"{"_id":"a","v":1}"#;
    let mut req = format!(
        "POST /api/p HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(
        b"POST /api/p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\n{\"_id\r\n8\r\n\":\"b\",\"v\r\n3\r\n\":2\r\n1\r\n}\r\n0\r\nTrailer: x\r\n\r\n",
    );
    req.extend_from_slice(b"GET /api/p/b HTTP/1.1\r\nHost: x\r\n\r\n");
    req.extend_from_slice(b"GET /api/p/a HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n");
    req.extend_from_slice(b"GET /api/p/a HTTP/1.1\r\nHost: x\r\n\r\n");
    let answers = raw_exchange(&s.addr, &req);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [201, 201, 200, 400], "{answers:?}");
    assert_eq!(answers[2].body, r#"{"_id":"b","v":2}"#);
    answers[3].json_error();
    assert_eq!(answers[3].header("connection"), Some("close"));
    assert_eq!(
        api::json(s.get("/api/p/_count")),
        serde_json::json!({"count": 2})
    );
}

/// The number in `minidb_http_requests_in_flight` (requests anywhere in the server,
/// including those still reading their bodies).
fn in_flight(s: &Server) -> u64 {
    let text = s.get("/metrics").text().expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix("minidb_http_requests_in_flight "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .expect("in-flight gauge")
}

/// Issue 8, item 2: 100 connections that sent `Content-Length: 10` and then nothing held
/// every in-flight permit for 30 s, so every `GET` got 503. Bodies are now read before a
/// request takes a permit, and within `server.body_timeout_secs`.
#[test]
fn stalled_uploads_cannot_starve_other_requests() {
    use std::io::Write;
    let (_tmp, s) = server(&[("MINIDB_SERVER__BODY_TIMEOUT_SECS", "3")]);
    assert_eq!(
        s.put("/api/t/a", &serde_json::json!({"v": 1})).status(),
        200
    );
    let stalled: Vec<std::net::TcpStream> = (0..100)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(&s.addr).expect("connect");
            c.write_all(
                b"POST /api/t HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n",
            )
            .expect("write head");
            c
        })
        .collect();
    // Wait until the server holds all of them (plus the metrics request itself).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while in_flight(&s) < 101 {
        assert!(
            std::time::Instant::now() < deadline,
            "uploads never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for _ in 0..20 {
        let r = s.get("/api/t/a");
        assert_eq!(r.status(), 200, "{:?}", r.text());
    }
    assert_eq!(s.get("/api/ready").status(), 200);
    // They were still stalled while the GETs were served.
    assert!(
        in_flight(&s) >= 101,
        "the uploads ended before the GETs ran"
    );
    // Each stalled upload gets 408 JSON once the body timeout passes, and nothing is stored.
    for mut c in stalled {
        c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut c, &mut buf);
        let answers = api::parse_responses(&buf);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].status, 408, "{answers:?}");
        let m = answers[0].json_error()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(m.contains("body_timeout_secs"), "{m}");
    }
    assert_eq!(
        api::json(s.get("/api/t/_count")),
        serde_json::json!({"count": 1})
    );
    s.stop();
}
