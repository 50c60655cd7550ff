//! `POST /api/{col}/_search`: bare arrays, pages and counts, streamed from the engine.
//!
//! A response is never built whole: documents come from a [`SearchCursor`] one at a time,
//! on a blocking thread, a chunk (at most [`CHUNK_BYTES`] of small documents, or one large
//! document as its own frame, zero-copy) per poll of the response body, so the server holds
//! about one chunk per search whatever the result's size. Every response is also bounded:
//!
//! * bare (`POST /api/{col}/_search`, MiniDBGo's form): a JSON array of at most
//!   [`BARE_SEARCH_CAP`] documents and `server.max_response_bytes` bytes. When it stops
//!   early it says so in `X-MiniDB-Truncated` (`documents=1000` or `bytes=N`), with the
//!   cursor for the rest in `X-MiniDB-Cursor` (to pass as `?cursor=`). Headers come before
//!   the body, so the stop point is found first by a pass that counts without keeping
//!   documents (a small result is kept and sent at once), then the documents stream from
//!   the same snapshot;
//! * paged (`?limit=N&cursor=C`): `{"documents": [...], "cursor": C}`, at most `limit`
//!   documents and `max_response_bytes` bytes; the cursor comes last, so one pass streams.
//!
//! At least one document is always sent, even one larger than the byte cap, so paging
//! always progresses (documents are at most `max_body_bytes` when written over HTTP).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;

use super::error::ApiError;
use super::memory::{self, Reservation, SEARCH_FACTOR, SEARCH_FLOOR};
use super::routes::{blocking, body_bytes, parse_json};
use super::AppState;
use crate::store::{decode_cursor, encode_cursor, Filter, Hit, SearchCursor, StoreError};

/// Documents without a match examined at most per paged `_search` call.
pub const SCAN_BUDGET: usize = 100_000;
/// Most documents of a `_search` without paging parameters (MiniDBGo's cap).
pub const BARE_SEARCH_CAP: usize = 1000;
/// Page size of a paged `_search` without `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `limit` of a paged `_search`.
pub const MAX_PAGE: usize = 1000;
/// Small documents are copied into chunks of about this size.
pub const CHUNK_BYTES: usize = 64 << 10;
/// A bare result this small is kept from the counting pass and sent at once.
const KEEP_BYTES: usize = 256 << 10;

/// `X-MiniDB-Truncated`: why a bare `_search` stopped early.
pub const TRUNCATED: HeaderName = HeaderName::from_static("x-minidb-truncated");
/// `X-MiniDB-Cursor`: the cursor that continues a truncated bare `_search`.
pub const CURSOR: HeaderName = HeaderName::from_static("x-minidb-cursor");

/// Query of `_search`.
#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    limit: Option<String>,
    cursor: Option<String>,
    count: Option<String>,
}

fn parse_filter(body: Result<Bytes, BytesRejection>) -> Result<Filter, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Filter::all());
    }
    Ok(Filter::parse(&parse_json("filter", &bytes)?)?)
}

/// `POST /api/{col}/_search`: a bare array (capped), a page, or a count.
pub async fn search(
    State(st): State<Arc<AppState>>,
    Path(col): Path<String>,
    Query(q): Query<SearchQuery>,
    body_held: Option<Extension<memory::BodyReservation>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // The filter is parsed below; its body's share of the budget becomes the search's.
    let body_held = body_held.and_then(|Extension(b)| b.take());
    let count = match q.count.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "count must be true or false, got {c:?}"
            )))
        }
    };
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit must be an integer from 1 to {MAX_PAGE}, got {s:?}"
                )))
            }
        },
    };
    let filter = parse_filter(body)?;
    let store = st.store()?.clone();
    if count {
        return count_matches(&st, body_held, store, col, filter).await;
    }
    let max_bytes = st.config.server.max_response_bytes;
    let filter = Arc::new(filter);
    let held = st
        .memory
        .reserve_read(body_held, &col, SEARCH_FACTOR, SEARCH_FLOOR, "this search")
        .await?;
    if q.limit.is_none() && q.cursor.is_none() {
        return bare(st, store, col, filter, held).await;
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c)?),
    };
    let covered = st
        .memory
        .hint(&col)
        .unwrap_or(st.config.server.max_body_bytes);
    let c = col.clone();
    let producer = blocking(move || {
        let snap = store.snapshot();
        let cursor = store.search_cursor(&snap, &c, filter, after.as_deref(), Some(SCAN_BUDGET))?;
        Ok(Producer::new(cursor, Form::Paged { limit }, max_bytes))
    })
    .await?;
    Ok(streamed(
        producer,
        Response::builder(),
        Budget {
            st,
            col,
            held: Some(held),
            covered,
        },
    ))
}

/// Counts matches (a scan when there is a filter), inside the memory budget like a search.
pub async fn count_matches(
    st: &Arc<AppState>,
    body_held: Option<Reservation>,
    store: Arc<crate::store::Store>,
    col: String,
    filter: Filter,
) -> Result<Response, ApiError> {
    let _held = if filter.is_all() {
        body_held // the exact counters: no document is read
    } else {
        Some(
            st.memory
                .reserve_read(body_held, &col, SEARCH_FACTOR, SEARCH_FLOOR, "this count")
                .await?,
        )
    };
    let n = blocking(move || store.count(&col, &filter)).await?;
    Ok(Json(json!({"count": n})).into_response())
}

/// Why a bare search stopped before the end.
enum Stop {
    Documents,
    Bytes(u64),
}

/// The bare form: count to the stop point, then stream (or send the kept result).
async fn bare(
    st: Arc<AppState>,
    store: Arc<crate::store::Store>,
    col: String,
    filter: Arc<Filter>,
    mut held: Reservation,
) -> Result<Response, ApiError> {
    let max_bytes = st.config.server.max_response_bytes;
    let c = col.clone();
    let (plan, second) = blocking(move || {
        let snap = store.snapshot();
        let mut cursor = store.search_cursor(&snap, &c, filter.clone(), None, None)?;
        let plan = plan_bare(&mut cursor, max_bytes)?;
        // The second pass reads the same snapshot, so it finds the same documents.
        let second = match &plan.kept {
            Some(_) => None,
            None => Some(store.search_cursor(&snap, &c, filter, None, None)?),
        };
        Ok((plan, second))
    })
    .await?;
    if plan.docs > 0 {
        st.memory.observe(&col, plan.max_len);
    }
    // Now the real sizes are known: hold what this response needs (less, or more).
    let need = match &plan.kept {
        Some(docs) => docs.iter().map(|d| d.len() as u64).sum::<u64>() + SEARCH_FLOOR,
        None => SEARCH_FACTOR * plan.max_len + SEARCH_FLOOR,
    };
    if !st.memory.try_resize(&mut held, need) {
        return Err(memory::over_budget("this search"));
    }
    let mut resp = Response::builder();
    if let (Some(stop), Some(last)) = (&plan.stop, &plan.last_id) {
        let why = match stop {
            Stop::Documents => format!("documents={BARE_SEARCH_CAP}"),
            Stop::Bytes(cap) => format!("bytes={cap}"),
        };
        resp = resp
            .header(TRUNCATED, why)
            .header(CURSOR, encode_cursor(last));
    }
    match (plan.kept, second) {
        (Some(docs), _) => {
            let mut out = Vec::with_capacity(docs.iter().map(Bytes::len).sum::<usize>() + 2);
            out.push(b'[');
            for (i, d) in docs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(d);
            }
            out.push(b']');
            Ok(json_response(
                resp,
                Body::new(memory::Held::new(Body::from(out), held)),
            ))
        }
        (None, Some(cursor)) => {
            let covered = plan.max_len;
            Ok(streamed(
                Producer::new(cursor, Form::Bare { docs: plan.docs }, u64::MAX),
                resp,
                Budget {
                    st,
                    col,
                    held: Some(held),
                    covered,
                },
            ))
        }
        (None, None) => Err(ApiError::internal("bare search lost its second pass")),
    }
}

/// Where a bare search stops, from a pass that keeps only a small result.
struct BarePlan {
    docs: usize,
    /// The largest document.
    max_len: u64,
    last_id: Option<String>,
    stop: Option<Stop>,
    /// The documents, when they fit in [`KEEP_BYTES`].
    kept: Option<Vec<Bytes>>,
}

fn plan_bare(cursor: &mut SearchCursor, max_bytes: u64) -> Result<BarePlan, StoreError> {
    let mut plan = BarePlan {
        docs: 0,
        max_len: 0,
        last_id: None,
        stop: None,
        kept: Some(Vec::new()),
    };
    let mut bytes = 2u64; // the brackets
    let mut kept_bytes = 0usize;
    loop {
        let (id, json) = match cursor.next_hit()? {
            Hit::Doc { id, json } => (id, json),
            Hit::BudgetSpent { .. } | Hit::End => return Ok(plan),
        };
        if plan.docs == BARE_SEARCH_CAP {
            plan.stop = Some(Stop::Documents);
            return Ok(plan);
        }
        let add = json.len() as u64 + u64::from(plan.docs > 0);
        if plan.docs > 0 && bytes + add > max_bytes {
            plan.stop = Some(Stop::Bytes(max_bytes));
            return Ok(plan);
        }
        plan.docs += 1;
        plan.max_len = plan.max_len.max(json.len() as u64);
        bytes += add;
        plan.last_id = Some(id);
        kept_bytes += json.len();
        match &mut plan.kept {
            Some(kept) if kept_bytes <= KEEP_BYTES => kept.push(json),
            _ => plan.kept = None,
        }
    }
}

fn json_response(resp: axum::http::response::Builder, body: Body) -> Response {
    resp.status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(body)
        .unwrap_or_else(|e| ApiError::internal(format_args!("response: {e}")).into_response())
}

fn streamed(producer: Producer, resp: axum::http::response::Builder, budget: Budget) -> Response {
    json_response(
        resp,
        Body::new(SearchBody {
            producer: Some(producer),
            task: None,
            growing: None,
            frames: std::collections::VecDeque::new(),
            budget,
        }),
    )
}

/// A streaming search's share of the request-memory budget.
struct Budget {
    st: Arc<AppState>,
    col: String,
    held: Option<Reservation>,
    /// The largest document `held` was sized for.
    covered: u64,
}

/// How long a streaming search waits for budget for a document larger than planned.
const GROW_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Which response a [`Producer`] writes.
enum Form {
    /// `[...]` of exactly `docs` documents (the count the first pass found).
    Bare { docs: usize },
    /// `{"documents": [...], "cursor": ...}` of at most `limit` documents.
    Paged { limit: usize },
}

/// Writes a search response from a cursor, a chunk at a time (on a blocking thread).
struct Producer {
    cursor: SearchCursor,
    form: Form,
    max_bytes: u64,
    sent_docs: usize,
    sent_bytes: u64,
    /// The largest document read so far.
    max_len: u64,
    last_id: Option<String>,
    /// What the paged form's closing cursor is, once the documents ended.
    next: Next,
    started: bool,
    finished: bool,
}

/// How a paged response continues.
enum Next {
    /// The page is full: whether more follow is still to be found out.
    Unknown,
    /// The collection ended: `null`.
    Nothing,
    /// After the last document sent (the next one did not fit).
    AfterLast,
    /// After this `_id` (the scan budget was spent there).
    After(String),
}

/// Bytes kept free under the byte cap for the paged form's closing cursor.
const TAIL_BYTES: u64 = 1024;

impl Producer {
    fn new(cursor: SearchCursor, form: Form, max_bytes: u64) -> Self {
        Producer {
            cursor,
            form,
            max_bytes,
            sent_docs: 0,
            sent_bytes: 0,
            max_len: 0,
            last_id: None,
            next: Next::Unknown,
            started: false,
            finished: false,
        }
    }

    /// The end of the body: `]`, or the paged form's `],"cursor":…}`.
    fn closing(&mut self) -> Result<Vec<u8>, StoreError> {
        if let Form::Bare { .. } = self.form {
            return Ok(b"]".to_vec());
        }
        if let Next::Unknown = self.next {
            // A full page: one more match means there is a next page.
            self.next = match self.cursor.next_hit()? {
                Hit::Doc { .. } => Next::AfterLast,
                Hit::BudgetSpent { last_examined } => Next::After(last_examined),
                Hit::End => Next::Nothing,
            };
        }
        let cursor = match (&self.next, &self.last_id) {
            (Next::After(id), _) | (Next::AfterLast, Some(id)) => {
                serde_json::Value::String(encode_cursor(id)).to_string()
            }
            _ => "null".to_string(),
        };
        Ok(format!("],\"cursor\":{cursor}}}").into_bytes())
    }

    /// The next frames of the body (small documents copied into one chunk, large ones as
    /// their own frame), or `None` at the end.
    fn next_frames(&mut self) -> Result<Option<Vec<Bytes>>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        let mut frames = Vec::new();
        let mut chunk: Vec<u8> = Vec::with_capacity(CHUNK_BYTES);
        if !self.started {
            self.started = true;
            chunk.extend_from_slice(match self.form {
                Form::Bare { .. } => b"[",
                Form::Paged { .. } => b"{\"documents\":[",
            });
        }
        while chunk.len() < CHUNK_BYTES && frames.is_empty() {
            match self.next_doc()? {
                Some(json) => {
                    if self.sent_docs > 1 {
                        chunk.push(b',');
                    }
                    if json.len() < CHUNK_BYTES / 4 {
                        chunk.extend_from_slice(&json);
                    } else {
                        if !chunk.is_empty() {
                            frames.push(Bytes::from(std::mem::take(&mut chunk)));
                        }
                        frames.push(json);
                    }
                }
                None => {
                    chunk.extend_from_slice(&self.closing()?);
                    self.finished = true;
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            frames.push(Bytes::from(chunk));
        }
        Ok(Some(frames))
    }

    /// The next document to send, or `None` when the response is complete.
    fn next_doc(&mut self) -> Result<Option<Bytes>, StoreError> {
        let room = match self.form {
            Form::Bare { docs } if self.sent_docs == docs => return Ok(None),
            Form::Bare { .. } => u64::MAX,
            Form::Paged { limit } if self.sent_docs == limit => return Ok(None),
            Form::Paged { .. } => self.max_bytes.saturating_sub(TAIL_BYTES),
        };
        match self.cursor.next_hit()? {
            Hit::Doc { id, json } => {
                self.max_len = self.max_len.max(json.len() as u64);
                let add = json.len() as u64 + 1;
                if self.sent_docs > 0 && self.sent_bytes + add > room {
                    // The document does not fit: the page ends before it.
                    self.next = Next::AfterLast;
                    return Ok(None);
                }
                self.sent_docs += 1;
                self.sent_bytes += add;
                self.last_id = Some(id);
                Ok(Some(json))
            }
            Hit::BudgetSpent { last_examined } => {
                self.next = Next::After(last_examined);
                Ok(None)
            }
            Hit::End => {
                self.next = Next::Nothing;
                Ok(None)
            }
        }
    }
}

/// A search response body: frames from a [`Producer`] run on the blocking pool, one chunk
/// ahead at most, inside its share of the request-memory budget.
struct SearchBody {
    producer: Option<Producer>,
    task: Option<JoinHandle<ChunkResult>>,
    /// Waiting for more budget (a document larger than planned came).
    growing: Option<Pin<Box<dyn std::future::Future<Output = Option<Reservation>> + Send>>>,
    frames: std::collections::VecDeque<Bytes>,
    budget: Budget,
}

type ChunkResult = (Producer, Result<Option<Vec<Bytes>>, StoreError>);

fn cut_short(why: &str) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
    // The status is sent: all that is left is to end the response unfinished.
    Poll::Ready(Some(Err(std::io::Error::other(why.to_string()))))
}

impl axum::body::HttpBody for SearchBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.frames.pop_front() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(f))));
            }
            if let Some(grow) = this.growing.as_mut() {
                let grown = std::task::ready!(grow.as_mut().poll(cx));
                this.growing = None;
                match grown {
                    Some(r) => this.budget.held = Some(r),
                    None => {
                        tracing::warn!("search cut short: no memory budget for its documents");
                        return cut_short("no memory budget");
                    }
                }
            }
            if let Some(task) = this.task.as_mut() {
                let joined = std::task::ready!(Pin::new(task).poll(cx));
                this.task = None;
                match joined {
                    Ok((producer, Ok(Some(frames)))) => {
                        let max_len = producer.max_len;
                        this.producer = Some(producer);
                        this.frames.extend(frames);
                        if max_len > this.budget.covered {
                            // Hold enough for documents of this size before reading more.
                            this.budget.covered = max_len;
                            this.budget.st.memory.observe(&this.budget.col, max_len);
                            if let Some(mut held) = this.budget.held.take() {
                                let st = this.budget.st.clone();
                                this.growing = Some(Box::pin(async move {
                                    let want = SEARCH_FACTOR * max_len + SEARCH_FLOOR;
                                    let grown = tokio::time::timeout(
                                        GROW_WAIT,
                                        held.grow_to(&st.memory, want),
                                    )
                                    .await;
                                    grown.ok().map(|()| held)
                                }));
                            }
                        }
                        continue;
                    }
                    Ok((_, Ok(None))) => return Poll::Ready(None),
                    Ok((_, Err(e))) => {
                        let _ = ApiError::from(e);
                        return cut_short("search failed");
                    }
                    Err(e) => {
                        let _ = ApiError::internal(format_args!("search task failed: {e}"));
                        return cut_short("search failed");
                    }
                }
            }
            let Some(mut producer) = this.producer.take() else {
                return Poll::Ready(None);
            };
            let span = tracing::Span::current();
            this.task = Some(tokio::task::spawn_blocking(move || {
                let r = span.in_scope(|| producer.next_frames());
                (producer, r)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Options};
    use crate::store::Store;
    use proptest::prelude::*;

    fn store_with(sizes: &[usize]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let engine = Engine::open(dir.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
        let store = Store::new(Arc::new(engine));
        for (i, n) in sizes.iter().enumerate() {
            let doc = json!({"_id": format!("k{i:04}"), "p": "y".repeat(*n)});
            store.insert("c", &doc).unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, store)
    }

    fn run(store: &Store, form: Form, after: Option<&str>, max_bytes: u64) -> Vec<u8> {
        let snap = store.snapshot();
        let cursor = store
            .search_cursor(
                &snap,
                "c",
                Arc::new(Filter::all()),
                after,
                Some(SCAN_BUDGET),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let mut p = Producer::new(cursor, form, max_bytes);
        let mut out = Vec::new();
        while let Some(frames) = p.next_frames().unwrap_or_else(|e| panic!("{e}")) {
            for f in frames {
                assert!(!f.is_empty(), "empty frame");
                out.extend_from_slice(&f);
            }
        }
        out
    }

    fn ids(docs: &serde_json::Value) -> Vec<String> {
        docs.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["_id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn streamed_bodies_are_complete_json(
            sizes in prop::collection::vec(prop_oneof![0usize..100, 10_000usize..40_000], 0..40),
            limit in 1usize..12,
            max_bytes in 2_000u64..200_000,
        ) {
            let (_d, store) = store_with(&sizes);
            let all: Vec<String> = (0..sizes.len()).map(|i| format!("k{i:04}")).collect();
            let bare: serde_json::Value = serde_json::from_slice(
                &run(&store, Form::Bare { docs: sizes.len().min(7) }, None, u64::MAX),
            ).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(ids(&bare), all[..sizes.len().min(7)].to_vec());
            // Paging through with the byte cap sees every document once, in order.
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            for _ in 0..=sizes.len() {
                let body = run(&store, Form::Paged { limit }, after.as_deref(), max_bytes);
                let page: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let got = ids(&page["documents"]);
                prop_assert!(got.len() <= limit);
                prop_assert!(got.len() <= 1 || body.len() as u64 <= max_bytes, "{} > {}", body.len(), max_bytes);
                seen.extend(got);
                match page["cursor"].as_str() {
                    Some(c) => after = Some(decode_cursor(c).map_err(|e| TestCaseError::fail(e.to_string()))?),
                    None => break,
                }
            }
            prop_assert_eq!(seen, all);
        }
    }
}
