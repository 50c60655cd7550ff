//! TLS against the real binary, with certificates generated here (rcgen) and a client that
//! trusts only the generated CA: HTTPS works (with API keys too), plain HTTP and TLS 1.1
//! are refused and counted, a client that never finishes its handshake is cut off, a new
//! certificate is served once the files change, and a bad new pair keeps the old one.

mod api;

use api::wait_until as wait_for;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use reqwest::blocking::Client;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "minidb test CA");
    let cert = p.self_signed(&key).expect("CA cert");
    Ca { cert, key }
}

/// A leaf for 127.0.0.1 signed by `ca`: (certificate PEM, key PEM, certificate DER).
fn leaf(ca: &Ca, key: &KeyPair, cn: &str) -> (String, String, Vec<u8>) {
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(key, &ca.cert, &ca.key).expect("leaf");
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Writes a version of the pair into `dir/<name>/` and points `dir/current` at it in one
/// rename, as Kubernetes updates a mounted Secret.
fn install(dir: &Path, name: &str, cert: &str, key: &str) {
    let v = dir.join(name);
    std::fs::create_dir_all(&v).expect("mkdir");
    std::fs::write(v.join("tls.crt"), cert).expect("write cert");
    std::fs::write(v.join("tls.key"), key).expect("write key");
    let tmp = dir.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&v, &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("current")).expect("rename");
}

fn client(ca: &Ca) -> Client {
    Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.cert.pem().as_bytes()).expect("CA pem"),
        )
        .tls_info(true)
        // A new connection per request: each sees the certificate in force now.
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

struct Tls {
    server: api::Server,
    client: Client,
    https: String,
}

impl Tls {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.https)
    }

    /// The DER of the certificate the server presents to a new connection.
    fn served_cert(&self) -> Vec<u8> {
        let r = self
            .client
            .get(self.url("/api/health"))
            .send()
            .expect("GET");
        assert_eq!(r.status(), 200);
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .expect("peer certificate")
            .to_vec()
    }

    fn counter(&self, series: &str) -> u64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .expect("GET /metrics")
            .text()
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} not in /metrics"))
    }
}

fn start(tmp: &Path, ca: &Ca, extra: &[(&str, &str)]) -> Tls {
    let current = tmp.join("tls").join("current");
    let cert = current.join("tls.crt");
    let key = current.join("tls.key");
    let mut env: Vec<(&str, &str)> = vec![
        ("MINIDB_TLS__CERT_FILE", cert.to_str().expect("path")),
        ("MINIDB_TLS__KEY_FILE", key.to_str().expect("path")),
        ("MINIDB_TLS__RELOAD_INTERVAL_MS", "100"),
        ("MINIDB_TLS__HANDSHAKE_TIMEOUT_SECS", "1"),
    ];
    env.extend_from_slice(extra);
    let server = api::Server::start_listening(&tmp.join("data"), &env);
    let https = format!("https://{}", server.addr);
    let t = Tls {
        server,
        client: client(ca),
        https,
    };
    wait_for("ready over HTTPS", || {
        t.client
            .get(t.url("/api/ready"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    t
}

/// What the server sends back on a raw connection after `bytes`, until it closes.
fn raw_exchange(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
    out
}

/// A TLS 1.1 ClientHello (legacy version 3.2, no supported_versions extension).
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
                  // ECDHE-ECDSA-AES128-GCM-SHA256 (which the server has), and two TLS 1.0/1.1 suites
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x2b, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x02];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn https_with_the_generated_ca_and_refusals_of_plain_http_and_tls_1_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (cert, key, der) = leaf(&ca, &KeyPair::generate().expect("key"), "one");
    install(&tmp.path().join("tls"), "v1", &cert, &key);
    let t = start(tmp.path(), &ca, &[]);
    assert_eq!(t.served_cert(), der);
    let r = t
        .client
        .post(t.url("/api/users"))
        .json(&serde_json::json!({"_id": "ada"}))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 201);
    let r = t.client.get(t.url("/api/users/ada")).send().expect("GET");
    assert_eq!(r.status(), 200);

    // Plain HTTP on the TLS port: no HTTP answer, the connection is closed.
    let out = raw_exchange(
        &t.server.addr,
        b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(!out.starts_with(b"HTTP/"), "plain HTTP was answered");
    // TLS 1.1: a fatal alert (rustls says handshake_failure or protocol_version), never a
    // ServerHello.
    let out = raw_exchange(&t.server.addr, &tls11_client_hello());
    assert_eq!(out.len(), 7, "one alert record: {out:02x?}");
    assert_eq!(out[0], 0x15, "an alert record, not a handshake: {out:02x?}");
    assert_eq!(out[5], 2, "fatal: {out:02x?}");
    assert!(
        matches!(out[6], 40 | 70),
        "handshake_failure or protocol_version: {out:02x?}"
    );
    wait_for("both failures counted", || {
        t.counter("minidb_tls_handshake_failures_total{reason=\"error\"}") == 2
    });

    // A client that connects and never sends its hello is cut off after the handshake
    // timeout (1 s here), and counted.
    let out = raw_exchange(&t.server.addr, b"");
    assert!(out.is_empty());
    wait_for("the timeout counted", || {
        t.counter("minidb_tls_handshake_failures_total{reason=\"timeout\"}") == 1
    });
    t.server.stop();
}

#[test]
fn a_renewed_certificate_is_served_and_a_bad_pair_keeps_the_old_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("tls");
    let ca = ca();
    let key1 = KeyPair::generate().expect("key");
    let (cert1, pem1, der1) = leaf(&ca, &key1, "one");
    install(&dir, "v1", &cert1, &pem1);
    let t = start(tmp.path(), &ca, &[]);
    assert_eq!(t.served_cert(), der1);
    let errors = || t.counter("minidb_reload_errors_total{file=\"tls\"}");
    assert_eq!(errors(), 0);

    let (cert2, pem2, der2) = leaf(&ca, &KeyPair::generate().expect("key"), "two");
    install(&dir, "v2", &cert2, &pem2);
    wait_for("the renewed certificate", || t.served_cert() == der2);

    // A certificate whose key is another one: refused, counted, the old pair still served.
    let (cert3, _, _) = leaf(&ca, &KeyPair::generate().expect("key"), "three");
    install(&dir, "v3", &cert3, &pem1);
    wait_for("the refused pair counted", || errors() == 1);
    assert_eq!(t.counter("minidb_reload_failing{file=\"tls\"}"), 1);
    assert_eq!(t.served_cert(), der2);
    // Not PEM at all: refused too.
    install(&dir, "v4", "not a certificate", &pem2);
    wait_for("the second refusal counted", || errors() == 2);
    assert_eq!(t.served_cert(), der2);

    let (cert5, pem5, der5) = leaf(&ca, &KeyPair::generate().expect("key"), "five");
    install(&dir, "v5", &cert5, &pem5);
    wait_for("the next good pair", || t.served_cert() == der5);
    assert_eq!(t.counter("minidb_reload_failing{file=\"tls\"}"), 0);
    let out = t.server.output.lock().expect("output").join("\n");
    assert!(
        out.contains("cannot be used together"),
        "the mismatch is logged"
    );
    t.server.stop();
}

#[test]
fn api_keys_over_tls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = ca();
    let (cert, key, _) = leaf(&ca, &KeyPair::generate().expect("key"), "one");
    install(&tmp.path().join("tls"), "v1", &cert, &key);
    let out = api::command(tmp.path())
        .args(["keys", "create", "--role", "read"])
        .output()
        .expect("keys create");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines();
    let (k, line) = (lines.next().expect("key"), lines.next().expect("line"));
    let keys: PathBuf = tmp.path().join("keys");
    std::fs::write(&keys, format!("{line}\n")).expect("write");
    let t = start(
        tmp.path(),
        &ca,
        &[("MINIDB_AUTH__KEYS_FILE", keys.to_str().expect("path"))],
    );
    let get = |key: Option<&str>| {
        let mut rb = t.client.get(t.url("/api/_collections"));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        rb.send().expect("GET").status().as_u16()
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some(k)), 200);
    t.server.stop();
}
