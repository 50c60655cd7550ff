//! API keys against the real binary: every route of the router with every kind of key,
//! the 401/403 shapes, `minidb_auth_failures_total` by reason, keys never in the logs, the
//! keys file reloaded (and a bad version refused), `minidb keys create`.

mod api;

use std::path::Path;
use std::time::{Duration, Instant};

use api::{wait_until as wait_for, Server};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A key made by `minidb keys create`: (key, line for the keys file).
fn create_key(args: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = api::command(dir.path())
        .args(["keys", "create"])
        .args(args)
        .output()
        .expect("run keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "key, then the file line: {stdout:?}");
    (lines[0].to_string(), lines[1].to_string())
}

#[test]
fn keys_create_prints_the_key_once_and_the_line_with_its_hash() {
    let (key, line) = create_key(&["--role", "write", "--collections", "a,b", "--name", "ci"]);
    assert!(key.starts_with("mdb_") && key.len() == 47, "{key}");
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    assert_eq!(
        line,
        format!("sha256:{hash} role=write collections=a,b name=ci")
    );
    assert!(!line.contains(&key));
    let (other, _) = create_key(&["--role", "read"]);
    assert_ne!(key, other);
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in [
        &["--role", "root"][..],
        &["--role", "read", "--collections", "_x"],
        &["--role", "read", "--name", "a b"],
        &[],
    ] {
        let out = api::command(dir.path())
            .args(["keys", "create"])
            .args(bad)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(out.stdout.is_empty(), "{bad:?} printed a key");
        assert!(!out.stderr.is_empty(), "{bad:?}: no message");
    }
}

/// The kinds of credentials every route is tried with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    None,
    Bad,
    Read,
    Write,
    Admin,
    /// A write key limited to collection `lim`.
    Limited,
}

const WHO: [Who; 6] = [
    Who::None,
    Who::Bad,
    Who::Read,
    Who::Write,
    Who::Admin,
    Who::Limited,
];

impl Who {
    fn tag(self) -> &'static str {
        match self {
            Who::None => "none",
            Who::Bad => "bad",
            Who::Read => "read",
            Who::Write => "write",
            Who::Admin => "admin",
            Who::Limited => "limited",
        }
    }
}

/// What a route needs (mirrors README's roles table; the test is the check of the code).
#[derive(Debug, Clone, Copy)]
enum Need {
    Open,
    AnyKey,
    /// A role, without collection limit.
    Global(u8),
    /// A role, on the request's collection.
    Collection(u8),
}

const READ: u8 = 1;
const WRITE: u8 = 2;
const ADMIN: u8 = 3;

/// The expected status of `who` on a route needing `need` in collection `col`.
fn expected(need: Need, who: Who, col: &str, ok: u16) -> u16 {
    let rank = match who {
        Who::None | Who::Bad => 0,
        Who::Read => READ,
        Who::Write | Who::Limited => WRITE,
        Who::Admin => ADMIN,
    };
    let unauth = match who {
        Who::None | Who::Bad => 401,
        _ => 0,
    };
    match need {
        Need::Open => ok,
        _ if unauth != 0 => unauth,
        Need::AnyKey => ok,
        Need::Global(r) if rank < r || who == Who::Limited => 403,
        Need::Collection(r) if rank < r || (who == Who::Limited && col != "lim") => 403,
        _ => ok,
    }
}

struct Keys {
    read: String,
    write: String,
    admin: String,
    limited: String,
    file: String,
}

fn make_keys() -> Keys {
    let (read, l1) = create_key(&["--role", "read", "--name", "reader"]);
    let (write, l2) = create_key(&["--role", "write", "--name", "writer"]);
    let (admin, l3) = create_key(&["--role", "admin", "--name", "root"]);
    let (limited, l4) = create_key(&["--role", "write", "--collections", "lim", "--name", "lim"]);
    let file = format!("# test keys\n{l1}\n{l2}\n\n{l3} # the admin\n{l4}\n");
    Keys {
        read,
        write,
        admin,
        limited,
        file,
    }
}

const BAD_KEY: &str = "mdb_this-key-is-not-in-the-file-AAAAAAAAAAAAAAAAAAA";

impl Keys {
    fn of(&self, who: Who) -> Option<&str> {
        match who {
            Who::None => None,
            Who::Bad => Some(BAD_KEY),
            Who::Read => Some(&self.read),
            Who::Write => Some(&self.write),
            Who::Admin => Some(&self.admin),
            Who::Limited => Some(&self.limited),
        }
    }
}

fn send(
    s: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> reqwest::blocking::Response {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut rb = s.client.request(m, s.url(path));
    if let Some(b) = body {
        rb = rb.json(b);
    }
    if let Some(k) = key {
        rb = rb.bearer_auth(k);
    }
    rb.send().expect("request")
}

/// Counter `name{label="value"}` from `/metrics` (sent with `key`).
fn counter(s: &Server, key: Option<&str>, series: &str) -> u64 {
    let text = send(s, "GET", "/metrics", None, key)
        .text()
        .expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

fn start(dir: &Path, keys_file: &Path, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("MINIDB_AUTH__KEYS_FILE", keys_file.to_str().expect("path")),
        ("MINIDB_AUTH__RELOAD_INTERVAL_MS", "100"),
    ];
    env.extend_from_slice(extra);
    Server::start(dir, &env)
}

#[test]
fn every_route_with_every_kind_of_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = make_keys();
    let file = tmp.path().join("keys");
    std::fs::write(&file, &keys.file).expect("write keys");
    // Debug logs and the access log: neither may show a key.
    let s = start(
        &tmp.path().join("data"),
        &file,
        &[("MINIDB_TELEMETRY__LOG_LEVEL", "debug")],
    );
    let admin = Some(keys.admin.as_str());
    for col in ["lim", "other"] {
        for who in WHO {
            for prefix in ["doc", "del", "put"] {
                let id = format!("{prefix}-{}", who.tag());
                let r = send(
                    &s,
                    "PUT",
                    &format!("/api/{col}/{id}"),
                    Some(&json!({})),
                    admin,
                );
                assert_eq!(r.status(), 200);
            }
        }
    }
    // (method, path with {col} and {who}, body, need, success status)
    let routes: Vec<(&str, &str, Option<Value>, Need, u16)> = vec![
        ("GET", "/api/health", None, Need::Open, 200),
        ("GET", "/api/ready", None, Need::Open, 200),
        ("GET", "/metrics", None, Need::Open, 200),
        ("GET", "/api/stats", None, Need::Global(READ), 200),
        ("GET", "/api/metrics", None, Need::Global(READ), 200),
        ("GET", "/api/openapi.json", None, Need::Global(READ), 200),
        ("GET", "/api/_collections", None, Need::Global(READ), 200),
        ("POST", "/api/_compact", None, Need::Global(ADMIN), 202),
        ("GET", "/api/_backup", None, Need::Global(ADMIN), 200),
        ("GET", "/api/_changes", None, Need::Global(READ), 200),
        (
            "GET",
            "/api/{col}/_changes",
            None,
            Need::Collection(READ),
            200,
        ),
        ("GET", "/api/{col}/_ttl", None, Need::Collection(READ), 200),
        (
            "PUT",
            "/api/{col}/_ttl",
            Some(json!({"seconds": 3600})),
            Need::Collection(ADMIN),
            200,
        ),
        (
            "DELETE",
            "/api/{col}/_ttl",
            None,
            Need::Collection(ADMIN),
            200,
        ),
        (
            "PUT",
            "/api/{col}/ttl-{who}?ttl=60",
            Some(json!({"v": 1})),
            Need::Collection(WRITE),
            200,
        ),
        (
            "DELETE",
            "/api/_collections",
            None,
            Need::Global(WRITE),
            405,
        ),
        ("GET", "/no/such/route", None, Need::AnyKey, 404),
        (
            "POST",
            "/api/{col}",
            Some(json!({"_id": "new-{who}"})),
            Need::Collection(WRITE),
            201,
        ),
        (
            "POST",
            "/api/{col}/_insertMany",
            Some(json!([{"_id": "many-{who}"}])),
            Need::Collection(WRITE),
            200,
        ),
        (
            "POST",
            "/api/{col}/_search",
            Some(json!({})),
            Need::Collection(READ),
            200,
        ),
        (
            "GET",
            "/api/{col}/_count",
            None,
            Need::Collection(READ),
            200,
        ),
        (
            "GET",
            "/api/{col}/doc-{who}",
            None,
            Need::Collection(READ),
            200,
        ),
        (
            "PUT",
            "/api/{col}/put-{who}",
            Some(json!({"v": 1})),
            Need::Collection(WRITE),
            200,
        ),
        (
            "PATCH",
            "/api/{col}/doc-{who}",
            Some(json!({"$set": {"x": 1}})),
            Need::Collection(WRITE),
            200,
        ),
        (
            "DELETE",
            "/api/{col}/del-{who}",
            None,
            Need::Collection(WRITE),
            200,
        ),
    ];
    let (mut missing, mut invalid, mut forbidden) = (0u64, 0u64, 0u64);
    let mut failures = Vec::new();
    for (method, template, body, need, ok) in &routes {
        let cols: &[&str] = if template.contains("{col}") {
            &["lim", "other"]
        } else {
            &["-"]
        };
        for col in cols {
            for who in WHO {
                let path = template.replace("{col}", col).replace("{who}", who.tag());
                let body = body.as_ref().map(|b| {
                    serde_json::from_str::<Value>(&b.to_string().replace("{who}", who.tag()))
                        .expect("body")
                });
                let want = expected(*need, who, col, *ok);
                let r = send(&s, method, &path, body.as_ref(), keys.of(who));
                let status = r.status().as_u16();
                let challenge = r
                    .headers()
                    .get("www-authenticate")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                let text = r.text().expect("body");
                if status != want {
                    failures.push(format!(
                        "{method} {path} as {who:?}: {status}, want {want}: {text}"
                    ));
                    continue;
                }
                match want {
                    401 => {
                        if who == Who::None {
                            missing += 1;
                        } else {
                            invalid += 1;
                        }
                        assert_eq!(
                            challenge.as_deref(),
                            Some("Bearer realm=\"minidb\""),
                            "{path}"
                        );
                    }
                    403 => forbidden += 1,
                    _ => {}
                }
                if want == 401 || want == 403 {
                    let v: Value = serde_json::from_str(&text).expect("JSON error");
                    assert_eq!(v["status"], json!(want), "{text}");
                    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(missing > 0 && invalid > 0 && forbidden > 0);
    // Each refusal counted once, by reason (/metrics itself is open here).
    let reason = |r: &str| {
        counter(
            &s,
            None,
            &format!("minidb_auth_failures_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(reason("missing"), missing);
    assert_eq!(reason("invalid"), invalid);
    assert_eq!(reason("forbidden"), forbidden);

    // A header that is not Bearer is invalid; its value is not logged either.
    let r = s
        .client
        .get(s.url("/api/stats"))
        .header("authorization", format!("Basic {}", keys.read))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 401);

    let out = s.output.lock().expect("output").join("\n");
    for k in [&keys.read, &keys.write, &keys.admin, &keys.limited] {
        let secret = &k["mdb_".len()..];
        assert!(!out.contains(secret), "a key is in the logs");
    }
    assert!(
        !out.contains(&BAD_KEY["mdb_".len()..]),
        "the bad key is in the logs"
    );
    assert!(!out.to_ascii_lowercase().contains("bearer mdb_"));
    assert!(
        out.contains("\"key_name\":\"reader\""),
        "denials name the key"
    );
    assert!(out.contains("minidb::access"), "the access log was on");
    s.stop();
}

#[test]
fn protected_metrics_need_an_unlimited_read_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = make_keys();
    let file = tmp.path().join("keys");
    std::fs::write(&file, &keys.file).expect("write keys");
    let s = start(
        &tmp.path().join("data"),
        &file,
        &[("MINIDB_AUTH__PROTECT_METRICS", "true")],
    );
    assert_eq!(send(&s, "GET", "/metrics", None, None).status(), 401);
    assert_eq!(
        send(&s, "GET", "/metrics", None, Some(&keys.limited)).status(),
        403
    );
    assert_eq!(
        send(&s, "GET", "/metrics", None, Some(&keys.read)).status(),
        200
    );
    assert_eq!(send(&s, "GET", "/api/health", None, None).status(), 200);
    assert_eq!(
        counter(
            &s,
            Some(&keys.read),
            "minidb_auth_failures_total{reason=\"missing\"}"
        ),
        1
    );
    s.stop();
}

#[test]
fn the_keys_file_is_reloaded_and_a_bad_version_keeps_the_old_keys() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = make_keys();
    let file = tmp.path().join("keys");
    std::fs::write(&file, &keys.file).expect("write keys");
    let s = start(&tmp.path().join("data"), &file, &[]);
    let status = |k: &str| {
        send(&s, "GET", "/api/stats", None, Some(k))
            .status()
            .as_u16()
    };
    let (new, line) = create_key(&["--role", "read", "--name", "new"]);
    assert_eq!(status(&new), 401);

    std::fs::write(&file, format!("{}{line}\n", keys.file)).expect("write keys");
    wait_for("the new key to work", || status(&new) == 200);
    assert_eq!(status(&keys.read), 200);

    // A broken version: refused, counted, and the keys in force stay.
    let errors = || counter(&s, None, "minidb_reload_errors_total{file=\"keys\"}");
    assert_eq!(errors(), 0);
    std::fs::write(&file, format!("{line}\nsha256:nothex role=read\n")).expect("write keys");
    wait_for("the reload error", || errors() == 1);
    let failing = || counter(&s, None, "minidb_reload_failing{file=\"keys\"}");
    assert_eq!(failing(), 1);
    assert_eq!(status(&new), 200);
    assert_eq!(status(&keys.read), 200);

    // Removing a key revokes it.
    std::fs::write(&file, &keys.file).expect("write keys");
    wait_for("the removed key to stop working", || status(&new) == 401);
    assert_eq!(status(&keys.read), 200);
    assert_eq!(errors(), 1);
    assert_eq!(failing(), 0);
    let out = s.output.lock().expect("output").join("\n");
    assert!(out.contains("reload refused"), "the bad version is logged");
    assert!(out.contains("line 2"), "the log names the bad line");
    s.stop();
}

#[test]
fn a_bad_keys_file_at_start_up_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("keys");
    std::fs::write(&file, "sha256:abc role=read\n").expect("write");
    let out = api::command(tmp.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("MINIDB_AUTH__KEYS_FILE", &file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.keys_file") && err.contains("line 1: the hash"),
        "{err}"
    );
    let out = api::command(tmp.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("MINIDB_AUTH__KEYS_FILE", tmp.path().join("missing"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.keys_file") && err.contains("cannot open"),
        "{err}"
    );
}

#[test]
fn auth_off_on_a_non_loopback_address_warns() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut child = api::command(tmp.path())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("auth is off") => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let line = found.expect("no warning about auth being off");
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
}

#[test]
fn minidb_backup_sends_its_api_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let keys = make_keys();
    let file = tmp.path().join("keys");
    std::fs::write(&file, &keys.file).expect("write keys");
    let s = start(&tmp.path().join("data"), &file, &[]);
    let run = |key: Option<&str>, out: &str| {
        let mut cmd = api::command(tmp.path());
        cmd.args(["backup", "--url", &s.base, "--out", out]);
        if let Some(k) = key {
            cmd.env("MINIDB_API_KEY", k);
        }
        let o = cmd.output().expect("run minidb backup");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (ok, err) = run(None, "none.tar");
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
    let (ok, err) = run(Some(&keys.write), "write.tar");
    assert!(!ok);
    assert!(err.contains("403"), "{err}");
    assert!(!err.contains(&keys.write), "the key in the message: {err}");
    let (ok, err) = run(Some(&keys.admin), "admin.tar");
    assert!(ok, "{err}");
    assert!(tmp.path().join("admin.tar").exists());
    assert!(!tmp.path().join("none.tar").exists() && !tmp.path().join("write.tar").exists());
    s.stop();
}
