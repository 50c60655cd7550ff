//! The shell over a running server: MiniDB's REST API with reqwest's blocking client.
//!
//! Requests run on a worker thread so that Ctrl-C can abandon one in flight: the shell
//! stops waiting at once, and the abandoned request ends by itself (its answer or its
//! timeout) on a worker nobody listens to any more. Every answer is read under a byte
//! cap; 503 (busy) is retried a few times after its `Retry-After`.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::blocking::Client;
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{Backend, Change, Changes, Compaction, Page};
use crate::shell::cancel::Cancel;
use crate::shell::command::{Query, UpdateArg};
use crate::shell::error::{cut, Result, ShellError};
use crate::store::import::{self, ImportError, Outcome, Summary};
use crate::store::CollectionInfo;

/// Largest answer read, in bytes (a page of documents; the server's documents are at most
/// its body limit, 10 MiB by default).
const MAX_RESPONSE_BYTES: u64 = 256 << 20;
/// Connecting gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Collection names for completion: a slow server must not freeze the prompt.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts of a request the server answers 503 (busy).
const BUSY_ATTEMPTS: u32 = 6;
/// How often a wait looks at the Ctrl-C flag.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// How to reach the server.
#[derive(Debug, Clone)]
pub(crate) struct HttpOptions {
    pub url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

/// One request, rebuilt for each attempt.
struct Req {
    method: Method,
    url: Url,
    body: Option<Bytes>,
    if_match: Option<u64>,
    timeout: Option<Duration>,
}

/// An answer, read whole (under the cap).
struct Reply {
    status: u16,
    etag: Option<u64>,
    retry_after: Option<Duration>,
    /// `X-MiniDB-Oldest-Seq` of a 410 from the change feed.
    oldest_seq: Option<u64>,
    body: Vec<u8>,
}

type Job = (u64, reqwest::blocking::Request);

/// The thread that sends requests, and the channels to it.
struct Worker {
    jobs: Sender<Job>,
    replies: Receiver<(u64, std::result::Result<Reply, reqwest::Error>)>,
}

impl Worker {
    fn spawn(client: Client) -> Result<Worker> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (reply_tx, replies) = mpsc::channel();
        std::thread::Builder::new()
            .name("minidb-shell-http".into())
            .spawn(move || {
                for (seq, req) in job_rx {
                    let reply = client.execute(req).and_then(read_reply);
                    if reply_tx.send((seq, reply)).is_err() {
                        return; // abandoned by Ctrl-C
                    }
                }
            })
            .map_err(|e| ShellError::io("cannot start the HTTP worker thread", e))?;
        Ok(Worker { jobs, replies })
    }
}

fn read_reply(resp: reqwest::blocking::Response) -> reqwest::Result<Reply> {
    let status = resp.status().as_u16();
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header(reqwest::header::ETAG)
        .and_then(|t| t.trim_start_matches("W/").trim_matches('"').parse().ok());
    let retry_after = header(reqwest::header::RETRY_AFTER)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let oldest_seq = header(reqwest::header::HeaderName::from_static(
        "x-minidb-oldest-seq",
    ))
    .and_then(|s| s.trim().parse().ok());
    let mut body = Vec::new();
    // A read error past the cap surfaces as a short body; the cap check below names it.
    let _ = resp.take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut body);
    Ok(Reply {
        status,
        etag,
        retry_after,
        oldest_seq,
        body,
    })
}

pub(crate) struct Http {
    base: Url,
    shown: String,
    client: Client,
    api_key: Option<String>,
    timeout: Duration,
    cancel: Cancel,
    worker: Option<Worker>,
    seq: u64,
}

impl Http {
    /// A client for `opts.url`; checks that the server answers `/api/health`.
    pub(crate) fn connect(opts: &HttpOptions, cancel: Cancel) -> Result<Self> {
        let base = Url::parse(&opts.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                ShellError::Usage(format!(
                    "--url {:?} is not an http:// or https:// URL",
                    cut(&opts.url, 80)
                ))
            })?;
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(opts.timeout)
            .user_agent(concat!("minidb-shell/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ShellError::Unreachable {
                url: opts.url.clone(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let mut http = Http {
            shown: base.as_str().trim_end_matches('/').to_owned(),
            base,
            client,
            api_key: opts.api_key.clone(),
            timeout: opts.timeout,
            cancel,
            worker: None,
            seq: 0,
        };
        let url = http.url(&["api", "health"]);
        http.call(Req::get(url)).map(drop)?;
        Ok(http)
    }

    /// `base` + `/`-joined segments, each percent-encoded (an `_id` may hold `/`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends `req`, retrying 503; a status of 400 and more becomes [`ShellError::Server`].
    fn call(&mut self, req: Req) -> Result<Reply> {
        let reply = self.call_raw(&req)?;
        if reply.status >= 400 {
            return Err(server_error(&reply));
        }
        Ok(reply)
    }

    /// Sends `req`, retrying 503; any status comes back.
    fn call_raw(&mut self, req: &Req) -> Result<Reply> {
        let mut attempt = 1;
        loop {
            let reply = self.send(req)?;
            if reply.status != 503 || attempt >= BUSY_ATTEMPTS {
                return Ok(reply);
            }
            attempt += 1;
            let wait = reply
                .retry_after
                .unwrap_or(Duration::from_millis(200))
                .clamp(Duration::from_millis(50), Duration::from_secs(2));
            self.pause(wait)?;
        }
    }

    /// Waits `d`, or less if Ctrl-C comes.
    fn pause(&self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.cancel.check()?;
            std::thread::sleep(CANCEL_POLL.min(until - Instant::now()));
        }
        Ok(())
    }

    /// One attempt on the worker, given up at Ctrl-C.
    fn send(&mut self, req: &Req) -> Result<Reply> {
        self.cancel.check()?;
        let mut b = self.client.request(req.method.clone(), req.url.clone());
        if let Some(key) = &self.api_key {
            b = b.bearer_auth(key);
        }
        if let Some(body) = &req.body {
            b = b
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        if let Some(v) = req.if_match {
            b = b.header(reqwest::header::IF_MATCH, format!("\"{v}\""));
        }
        if let Some(t) = req.timeout {
            b = b.timeout(t);
        }
        let request = b.build().map_err(|e| self.unreachable(&e))?;
        if self.worker.is_none() {
            self.worker = Some(Worker::spawn(self.client.clone())?);
        }
        self.seq += 1;
        let seq = self.seq;
        let worker = self.worker.as_ref().ok_or(ShellError::Cancelled)?;
        if worker.jobs.send((seq, request)).is_err() {
            self.worker = None;
            return Err(ShellError::BadResponse(
                "the HTTP worker thread stopped".into(),
            ));
        }
        loop {
            let worker = self.worker.as_ref().ok_or(ShellError::Cancelled)?;
            match worker.replies.recv_timeout(CANCEL_POLL) {
                Ok((s, reply)) if s == seq => {
                    let reply = reply.map_err(|e| self.unreachable(&e))?;
                    if reply.body.len() as u64 > MAX_RESPONSE_BYTES {
                        return Err(ShellError::BadResponse(format!(
                            "the answer to {} {} is larger than {} MiB",
                            req.method,
                            req.url.path(),
                            MAX_RESPONSE_BYTES >> 20
                        )));
                    }
                    return Ok(reply);
                }
                Ok(_) => {} // a reply to an abandoned request
                Err(RecvTimeoutError::Timeout) => {
                    if self.cancel.is_set() {
                        // The request finishes (or times out) on the old worker.
                        self.worker = None;
                        return Err(ShellError::Cancelled);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.worker = None;
                    return Err(ShellError::BadResponse(
                        "the HTTP worker thread stopped".into(),
                    ));
                }
            }
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> ShellError {
        let reason = if e.is_timeout() {
            format!(
                "no answer within {} s (--timeout-secs)",
                self.timeout.as_secs()
            )
        } else {
            let mut root: &dyn std::error::Error = e;
            while let Some(next) = root.source() {
                root = next;
            }
            let hint = if e.is_connect() {
                " (is `minidb serve` running there? or use --data-dir DIR)"
            } else {
                ""
            };
            format!("{root}{hint}")
        };
        ShellError::Unreachable {
            url: self.shown.clone(),
            reason,
        }
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, reply: &Reply, what: &str) -> Result<T> {
        serde_json::from_slice(&reply.body)
            .map_err(|e| ShellError::BadResponse(format!("{what} is not the expected JSON: {e}")))
    }

    /// The document and its version, if it exists and matches `query`.
    fn matching(&mut self, col: &str, id: &str, query: &Query) -> Result<Option<u64>> {
        let reply = self.call_raw(&Req::get(self.url(&["api", col, id])))?;
        match reply.status {
            404 => return Ok(None),
            s if s >= 400 => return Err(server_error(&reply)),
            _ => {}
        }
        let doc: Value = self.json(&reply, "the document")?;
        if !query.filter.matches(&doc) {
            return Ok(None);
        }
        reply
            .etag
            .map(Some)
            .ok_or_else(|| ShellError::BadResponse("a document without an ETag".into()))
    }
}

impl Req {
    fn get(url: Url) -> Req {
        Req {
            method: Method::GET,
            url,
            body: None,
            if_match: None,
            timeout: None,
        }
    }

    fn with(method: Method, url: Url, body: Bytes) -> Req {
        Req {
            method,
            url,
            body: Some(body),
            if_match: None,
            timeout: None,
        }
    }
}

/// The JSON error shape `{"error": "...", "status": N}` as one line, with a hint for the
/// statuses auth answers with.
fn server_error(reply: &Reply) -> ShellError {
    let message = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&reply.body).trim().to_owned());
    let hint = match reply.status {
        401 => " (give an API key with --api-key or MINIDB_API_KEY)",
        403 => " (the API key's role does not allow this)",
        _ => "",
    };
    ShellError::Server {
        status: reply.status,
        message: format!("{}{hint}", cut(message.lines().next().unwrap_or(""), 300)),
    }
}

fn body(v: &impl serde::Serialize) -> Result<Bytes> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ShellError::Usage(format!("cannot encode the request: {e}")))
}

#[derive(Deserialize)]
struct SearchReply<'a> {
    #[serde(borrow)]
    documents: Vec<&'a RawValue>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct CountReply {
    count: u64,
}

#[derive(Deserialize)]
struct InsertManyReply {
    #[serde(rename = "insertedCount")]
    inserted_count: usize,
}

#[derive(Deserialize)]
struct CollectionReply {
    name: String,
    #[serde(rename = "docCount")]
    doc_count: u64,
    #[serde(rename = "byteSize", default)]
    byte_size: u64,
}

#[derive(Deserialize)]
struct TtlReply {
    seconds: Option<u64>,
}

#[derive(Deserialize)]
struct ChangeReply {
    seq: u64,
    collection: String,
    id: String,
    deleted: bool,
}

#[derive(Deserialize)]
struct ChangesReply {
    results: Vec<ChangeReply>,
    last_seq: u64,
    pending: bool,
}

#[derive(Deserialize)]
struct StatusReply {
    status: String,
}

impl Backend for Http {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn insert_one(&mut self, col: &str, doc: &Value) -> Result<()> {
        let url = self.url(&["api", col]);
        self.call(Req::with(Method::POST, url, body(doc)?))
            .map(drop)
    }

    fn insert_many(&mut self, col: &str, docs: &[Value]) -> Result<usize> {
        let url = self.url(&["api", col, "_insertMany"]);
        let reply = self.call(Req::with(Method::POST, url, body(&docs)?))?;
        Ok(self
            .json::<InsertManyReply>(&reply, "the insertMany answer")?
            .inserted_count)
    }

    fn get(&mut self, col: &str, id: &str) -> Result<Option<Bytes>> {
        let reply = self.call_raw(&Req::get(self.url(&["api", col, id])))?;
        match reply.status {
            404 => Ok(None),
            s if s >= 400 => Err(server_error(&reply)),
            _ => Ok(Some(Bytes::from(reply.body))),
        }
    }

    fn search(
        &mut self,
        col: &str,
        query: &Query,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let mut url = self.url(&["api", col, "_search"]);
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(c) = after {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let reply = self.call(Req::with(Method::POST, url, body(&query.json)?))?;
        let page: SearchReply<'_> = serde_json::from_slice(&reply.body).map_err(|e| {
            ShellError::BadResponse(format!("the search answer is not the expected JSON: {e}"))
        })?;
        Ok(Page {
            docs: page
                .documents
                .into_iter()
                .map(|d| Bytes::copy_from_slice(d.get().as_bytes()))
                .collect(),
            next: page.cursor,
        })
    }

    fn update_if_matches(
        &mut self,
        col: &str,
        id: &str,
        query: &Query,
        update: &UpdateArg,
    ) -> Result<Option<Bytes>> {
        let Some(version) = self.matching(col, id, query)? else {
            return Ok(None);
        };
        let mut req = Req::with(
            Method::PATCH,
            self.url(&["api", col, id]),
            body(&update.json)?,
        );
        req.if_match = Some(version);
        let reply = self.call_raw(&req)?;
        match reply.status {
            404 | 412 => Ok(None),
            s if s >= 400 => Err(server_error(&reply)),
            _ => Ok(Some(Bytes::from(reply.body))),
        }
    }

    fn delete_if_matches(&mut self, col: &str, id: &str, query: &Query) -> Result<bool> {
        let Some(version) = self.matching(col, id, query)? else {
            return Ok(false);
        };
        let mut req = Req::get(self.url(&["api", col, id]));
        req.method = Method::DELETE;
        req.if_match = Some(version);
        let reply = self.call_raw(&req)?;
        match reply.status {
            404 | 412 => Ok(false),
            s if s >= 400 => Err(server_error(&reply)),
            _ => Ok(true),
        }
    }

    fn count(&mut self, col: &str, query: &Query) -> Result<u64> {
        let mut url = self.url(&["api", col, "_search"]);
        url.query_pairs_mut().append_pair("count", "true");
        let reply = self.call(Req::with(Method::POST, url, body(&query.json)?))?;
        Ok(self.json::<CountReply>(&reply, "the count answer")?.count)
    }

    fn collections(&mut self) -> Result<Vec<CollectionInfo>> {
        let reply = self.call(Req::get(self.url(&["api", "_collections"])))?;
        let list: Vec<CollectionReply> = self.json(&reply, "the collection list")?;
        Ok(list
            .into_iter()
            .map(|c| CollectionInfo {
                name: c.name,
                doc_count: c.doc_count,
                byte_size: c.byte_size,
            })
            .collect())
    }

    fn collection_names(&mut self) -> Result<Vec<String>> {
        let mut req = Req::get(self.url(&["api", "_collections"]));
        req.timeout = Some(COMPLETION_TIMEOUT);
        let reply = self.call(req)?;
        let list: Vec<CollectionReply> = self.json(&reply, "the collection list")?;
        Ok(list.into_iter().map(|c| c.name).collect())
    }

    fn collection_ttl(&mut self, col: &str) -> Result<Option<u64>> {
        let reply = self.call(Req::get(self.url(&["api", col, "_ttl"])))?;
        Ok(self.json::<TtlReply>(&reply, "the ttl answer")?.seconds)
    }

    fn set_collection_ttl(&mut self, col: &str, secs: Option<u64>) -> Result<Option<u64>> {
        let url = self.url(&["api", col, "_ttl"]);
        let req = match secs {
            Some(s) => Req::with(Method::PUT, url, body(&serde_json::json!({"seconds": s}))?),
            None => {
                let mut req = Req::get(url);
                req.method = Method::DELETE;
                req
            }
        };
        let reply = self.call(req)?;
        Ok(self.json::<TtlReply>(&reply, "the ttl answer")?.seconds)
    }

    fn changes(&mut self, col: Option<&str>, since: u64, limit: usize) -> Result<Changes> {
        let mut url = match col {
            Some(c) => self.url(&["api", c, "_changes"]),
            None => self.url(&["api", "_changes"]),
        };
        url.query_pairs_mut()
            .append_pair("since", &since.to_string())
            .append_pair("limit", &limit.to_string());
        let reply = self.call_raw(&Req::get(url))?;
        match (reply.status, reply.oldest_seq) {
            (410, Some(oldest)) => return Err(ShellError::ChangesGone { since, oldest }),
            (s, _) if s >= 400 => return Err(server_error(&reply)),
            _ => {}
        }
        let page: ChangesReply = self.json(&reply, "the change feed")?;
        Ok(Changes {
            rows: page
                .results
                .into_iter()
                .map(|r| Change {
                    seq: r.seq,
                    collection: r.collection,
                    id: r.id,
                    deleted: r.deleted,
                })
                .collect(),
            last_seq: page.last_seq,
            more: page.pending,
        })
    }

    fn compact(&mut self) -> Result<Compaction> {
        let url = self.url(&["api", "_compact"]);
        let reply = self.call(Req::with(Method::POST, url, Bytes::new()))?;
        let status: StatusReply = self.json(&reply, "the compact answer")?;
        Ok(Compaction::Started(status.status))
    }

    fn stats(&mut self) -> Result<Value> {
        let reply = self.call(Req::get(self.url(&["api", "metrics"])))?;
        self.json(&reply, "the engine counters")
    }

    fn restore(&mut self, file: &Path, cancel: &Cancel) -> Result<Summary> {
        // The whole file first: damaged input is found before anything is sent.
        let mut summary = import::check_dump_until(file, &mut |_| {}, &|| cancel.is_set())?;
        let mut written = 0u64;
        let mut failed: Option<ShellError> = None;
        let read = import::for_each_dump_record(file, &mut |outcome| {
            let stop = ImportError::Stopped { committed: written };
            if cancel.is_set() {
                return Err(stop);
            }
            let Outcome::Import {
                collection,
                id,
                json,
            } = outcome
            else {
                return Ok(()); // counted by the check pass
            };
            let url = self.url(&["api", &collection, &id]);
            match self.call(Req::with(Method::PUT, url, Bytes::from(json))) {
                Ok(_) => {
                    written += 1;
                    Ok(())
                }
                Err(e) => {
                    failed = Some(e);
                    Err(stop)
                }
            }
        });
        match (failed, read) {
            (Some(ShellError::Cancelled), _) => {
                Err(ImportError::Stopped { committed: written }.into())
            }
            (Some(e), _) => Err(ShellError::Usage(format!(
                "restore stopped after {written} documents were written: {e}"
            ))),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => {
                summary.dry_run = false;
                summary.documents = written;
                Ok(summary)
            }
        }
    }

    fn close(&mut self) -> Result<()> {
        self.worker = None;
        Ok(())
    }
}
