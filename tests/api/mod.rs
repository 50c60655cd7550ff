//! Shared helpers for the HTTP integration tests: run the real `minidb` binary on
//! `127.0.0.1:0` and talk to it over real HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::Value;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_minidb")
}

/// A `minidb` command with a clean environment (no MINIDB_*/legacy variables) and an
/// empty working directory, so only the given flags and variables apply.
pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("MINIDB_") || ["FLUSH_SIZE", "MAX_MEM_MB", "DB_PATH"].contains(&k.as_str())
        {
            cmd.env_remove(k);
        }
    }
    cmd.env("MINIDB_TELEMETRY__LOG_LEVEL", "warn");
    cmd
}

/// A running server.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub addr: String,
    pub dir: PathBuf,
    pub client: Client,
    pub output: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts a server on `dir` with extra environment variables, and waits until it is
    /// ready (the engine open).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let s = Self::start_listening(dir, env);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match s.client.get(s.url("/api/ready")).send() {
                Ok(r) if r.status() == 200 => return s,
                _ if Instant::now() > deadline => panic!("server not ready within 120 s"),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// Starts a server and returns as soon as it listens (the engine may still open).
    pub fn start_listening(dir: &Path, env: &[(&str, &str)]) -> Server {
        let cwd = dir.parent().unwrap_or(dir);
        let mut cmd = command(cwd);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn minidb");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        // Every stdout line is kept (in order) for tests that look at the logs.
        let mut before = Vec::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let addr = listening_addr(&line);
                    before.push(line);
                    if let Some(a) = addr {
                        break a;
                    }
                }
                _ => {
                    let status = child.wait();
                    panic!("server exited before listening: {status:?}");
                }
            }
        };
        let output = Arc::new(Mutex::new(before));
        let out = output.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                out.lock().unwrap().push(line);
            }
        });
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Server {
            child,
            base: format!("http://{addr}"),
            addr,
            dir: dir.to_path_buf(),
            client,
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().expect("GET")
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .expect("POST")
    }

    pub fn post_raw(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("POST")
    }

    pub fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .expect("PUT")
    }

    pub fn patch(&self, path: &str, body: &Value) -> Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .expect("PATCH")
    }

    pub fn delete(&self, path: &str) -> Response {
        self.client.delete(self.url(path)).send().expect("DELETE")
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Waits for exit (at most `secs`), killing the process on timeout.
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit within {secs}s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait: must exit 0.
    pub fn stop(mut self) {
        self.term();
        let status = self.wait(40);
        assert!(status.success(), "exit status {status:?}");
    }

    /// kill -9.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address of a "listening on ADDR" line: plain text, or a JSON log line whose
/// message starts with "listening on" (the address in an `addr`/`address` field or in
/// the message).
pub fn listening_addr(line: &str) -> Option<String> {
    if let Some(a) = line.strip_prefix("listening on ") {
        return Some(a.trim().to_string());
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let msg = v.get("message").and_then(Value::as_str)?;
    let rest = msg.strip_prefix("listening on")?;
    let field = ["addr", "address", "listen"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str));
    match field {
        Some(a) => Some(a.to_string()),
        None => Some(rest.trim().to_string()).filter(|a| !a.is_empty()),
    }
}

/// Sends `SIG<name>` to `pid` with kill(1).
pub fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{name} {pid} failed");
}

/// Parses a response body as JSON.
pub fn json(resp: Response) -> Value {
    let text = resp.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts status and the JSON error shape; returns the message.
pub fn expect_error(resp: Response, status: u16) -> String {
    assert_eq!(resp.status().as_u16(), status, "status");
    let v = json(resp);
    assert_eq!(v["status"], status, "{v}");
    v["error"].as_str().expect("error string").to_string()
}

/// A raw HTTP/1.1 request whose body is sent in two parts, for slow in-flight requests.
pub struct SlowRequest {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl SlowRequest {
    /// Sends the head and the first half of `body`.
    pub fn begin(addr: &str, method: &str, path: &str, body: &[u8]) -> SlowRequest {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(40)))
            .expect("timeout");
        let half = body.len() / 2;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .expect("write head");
        stream.write_all(&body[..half]).expect("write body");
        stream.flush().expect("flush");
        SlowRequest {
            stream,
            rest: body[half..].to_vec(),
        }
    }

    /// Sends the rest and reads the response: (status, body).
    pub fn finish(mut self) -> (u16, String) {
        let _ = self.stream.write_all(&self.rest);
        self.read_response()
    }

    /// Reads the response without sending more.
    pub fn read_response(&mut self) -> (u16, String) {
        let mut buf = Vec::new();
        let _ = self.stream.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_string();
        (status, body)
    }
}

/// One HTTP/1.1 response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, asserting the error shape `{"error": …, "status": N}`.
    pub fn json_error(&self) -> Value {
        let v: Value =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"));
        assert_eq!(v["status"], self.status, "{v}");
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }
}

/// Writes `request` on a new connection (then half-closes it), and reads every response
/// until the server closes the connection. Responses must have a Content-Length.
pub fn raw_exchange(addr: &str, request: &[u8]) -> Vec<RawResponse> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let request = request.to_vec();
    // Write from another thread: the server may answer before it has read everything.
    let w = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    let _ = w.join();
    parse_responses(&buf)
}

/// Splits raw bytes into Content-Length framed responses.
pub fn parse_responses(mut buf: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            panic!(
                "truncated response head: {:?}",
                String::from_utf8_lossy(buf)
            );
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no content-length in {head:?}"));
        let body_start = end + 4;
        assert!(
            buf.len() >= body_start + len,
            "truncated body after {head:?}"
        );
        let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).to_string();
        out.push(RawResponse {
            status,
            headers,
            body,
        });
        buf = &buf[body_start + len..];
    }
    out
}

/// Polls `cond` every 10 ms until it holds; panics naming `what` after 60 s.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
