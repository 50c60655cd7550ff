//! The change feed over HTTP: `GET /api/{col}/_changes` and `GET /api/_changes`, as one
//! JSON page, a long poll (`feed=longpoll`), or a stream of server-sent events (`feed=sse`).
//!
//! Waiting costs no thread: a write's commit bumps a `watch` channel and waiters re-read.
//! A stream is produced a page at a time into a 2-event channel, so a slow consumer holds
//! the producer back (its connection is the flow control) instead of growing a buffer.
//! Waiters do not take `server.max_in_flight` permits (they would starve short requests);
//! they are capped by their own count, the same number.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::error::ApiError;
use super::memory;
use super::routes::blocking;
use super::startup::Phase;
use super::AppState;
use crate::store::{ChangesPage, StoreError, MAX_CHANGES};

/// Rows per page of an event stream.
const STREAM_PAGE: usize = 100;
/// A comment line this often keeps an idle stream's proxies (and the check for a gone
/// client) alive.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// The `X-MiniDB-Oldest-Seq` header of a 410: the lowest `since` the feed can serve.
const OLDEST_SEQ: &str = "x-minidb-oldest-seq";

/// Query of the feed routes.
#[derive(Debug, Default, Deserialize)]
pub struct ChangesQuery {
    since: Option<String>,
    limit: Option<String>,
    include_docs: Option<String>,
    feed: Option<String>,
    timeout: Option<String>,
}

/// How the feed is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feed {
    Normal,
    LongPoll,
    Sse,
}

/// A parsed, validated feed request.
#[derive(Debug, Clone)]
struct Ask {
    col: Option<String>,
    since: u64,
    limit: usize,
    include_docs: bool,
    feed: Feed,
    timeout: Duration,
}

fn bad(msg: String) -> ApiError {
    ApiError::bad_request(msg)
}

fn parse(
    st: &AppState,
    col: Option<String>,
    q: Result<Query<ChangesQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Ask, ApiError> {
    let Query(q) = q.map_err(|e| bad(format!("bad query string: {}", e.body_text())))?;
    let num = |name: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| bad(format!("{name} must be a whole number, got {v:?}")))
    };
    let feed = match q.feed.as_deref() {
        None | Some("normal") => Feed::Normal,
        Some("longpoll") => Feed::LongPoll,
        Some("sse") | Some("eventsource") => Feed::Sse,
        Some(other) => {
            return Err(bad(format!(
                "feed must be normal, longpoll or sse, got {other:?}"
            )))
        }
    };
    // An event stream resumes from the last event id its client saw.
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let since = match (feed, last_event, q.since.as_deref()) {
        (Feed::Sse, Some(id), _) => num("Last-Event-ID", id)?,
        (_, _, None) => 0,
        (_, _, Some("now")) => st.store()?.engine().visible_sequence(),
        (_, _, Some(s)) => num("since", s)?,
    };
    let limit = match q.limit.as_deref() {
        None => MAX_CHANGES,
        Some(s) => match num("limit", s)? {
            n @ 1.. if n as usize <= MAX_CHANGES => n as usize,
            _ => {
                return Err(bad(format!(
                    "limit must be from 1 to {MAX_CHANGES}, got {s:?}"
                )))
            }
        },
    };
    let include_docs = match q.include_docs.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(format!(
                "include_docs must be true or false, got {other:?}"
            )))
        }
    };
    let max_wait = st.config.changes.max_longpoll_ms;
    let timeout = match q.timeout.as_deref() {
        None => max_wait,
        Some(s) => num("timeout", s)?.min(max_wait),
    };
    Ok(Ask {
        col,
        since,
        limit,
        include_docs,
        feed,
        timeout: Duration::from_millis(timeout),
    })
}

/// `GET /api/{col}/_changes`.
pub async fn collection_changes(
    State(st): State<Arc<AppState>>,
    Path(col): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ask = parse(&st, Some(col), q, &headers)?;
    serve(st, ask).await
}

/// `GET /api/_changes`: every collection's changes in one sequence.
pub async fn all_changes(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let ask = parse(&st, None, q, &headers)?;
    serve(st, ask).await
}

async fn serve(st: Arc<AppState>, ask: Ask) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let permit = st.feed_waiters.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many change-feed readers (server.max_in_flight); retry later",
        )
        .with_retry_after(1)
        .rejected("concurrency")
    })?;
    let max_bytes = page_bytes(&st, ask.include_docs);
    // A stream without documents holds its reservation for as long as it lasts: sized for
    // its 100-row pages, not for a 1,000-row one.
    let reserve = match (ask.feed, ask.include_docs) {
        (Feed::Sse, false) => 64 << 10,
        _ => 2 * max_bytes,
    };
    let held = st
        .memory
        .reserve(reserve, "reading the change feed")
        .await?;
    if ask.feed == Feed::Sse {
        // Checked before the 200: a stale `since` is a 410, not an event.
        let floor = blocking(move || store.changes_floor()).await?;
        if ask.since > 0 && ask.since < floor {
            return Err(gone(floor));
        }
        return Ok(stream(st, ask, (permit, held)));
    }
    let mut rx = st.changes.subscribe();
    let mut page = read(&st, &ask, ask.since, ask.limit, max_bytes).await?;
    if ask.feed == Feed::LongPoll && page.results.is_empty() {
        let deadline = tokio::time::Instant::now() + ask.timeout;
        while page.results.is_empty() {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) if st.startup.phase() == Phase::Serving => {
                    page = read(&st, &ask, ask.since, ask.limit, max_bytes).await?
                }
                // Timed out, or the server is going away: answer with what there is.
                _ => break,
            }
        }
    }
    drop(permit);
    let mut out = Vec::with_capacity(64 + page.results.len() * 64);
    out.extend_from_slice(b"{\"results\":[");
    for (i, row) in page.results.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        row_json(&mut out, row);
    }
    out.extend_from_slice(
        format!(
            "],\"last_seq\":{},\"pending\":{}}}",
            page.last_seq, page.more
        )
        .as_bytes(),
    );
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        out,
    )
        .into_response())
}

/// Bytes of documents one page may carry.
fn page_bytes(st: &AppState, include_docs: bool) -> u64 {
    if include_docs {
        st.config.server.max_response_bytes.min(8 << 20)
    } else {
        256 << 10
    }
}

fn gone(oldest: u64) -> ApiError {
    let mut e = ApiError::from(StoreError::ChangesGone { oldest });
    e.header = Some(Box::new((
        axum::http::HeaderName::from_static(OLDEST_SEQ),
        HeaderValue::from(oldest),
    )));
    e
}

async fn read(
    st: &AppState,
    ask: &Ask,
    since: u64,
    limit: usize,
    max_bytes: u64,
) -> Result<ChangesPage, ApiError> {
    let store = st.store()?.clone();
    let (col, docs) = (ask.col.clone(), ask.include_docs);
    let span = tracing::Span::current();
    let read =
        move || span.in_scope(|| store.changes(col.as_deref(), since, limit, docs, max_bytes));
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(page)) => Ok(page),
        Ok(Err(StoreError::ChangesGone { oldest })) => Err(gone(oldest)),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(ApiError::internal(format_args!("worker task failed: {e}"))),
    }
}

fn row_json(out: &mut Vec<u8>, row: &crate::store::ChangeRow) {
    let s = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
    out.extend_from_slice(
        format!(
            "{{\"seq\":{},\"collection\":{},\"id\":{},\"deleted\":{}",
            row.seq,
            s(&row.collection),
            s(&row.id),
            row.deleted
        )
        .as_bytes(),
    );
    if let Some(doc) = &row.doc {
        out.extend_from_slice(b",\"doc\":");
        out.extend_from_slice(doc);
    }
    out.push(b'}');
}

/// The event stream: a producer task feeding a 2-event channel the body drains.
fn stream(
    st: Arc<AppState>,
    ask: Ask,
    held: (OwnedSemaphorePermit, memory::Reservation),
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    tokio::spawn(async move {
        let _held = held;
        let mut rx_changes = st.changes.subscribe();
        let max_bytes = page_bytes(&st, ask.include_docs);
        let mut since = ask.since;
        loop {
            let page = match read(&st, &ask, since, STREAM_PAGE, max_bytes).await {
                Ok(p) => p,
                Err(e) => {
                    let event = if e.status == StatusCode::GONE {
                        "gone"
                    } else {
                        "error"
                    };
                    let body = serde_json::json!({"error": e.message, "status": e.status.as_u16()});
                    let _ = tx
                        .send(Bytes::from(format!("event: {event}\ndata: {body}\n\n")))
                        .await;
                    return;
                }
            };
            let rows = &page.results;
            for (i, row) in rows.iter().enumerate() {
                let mut ev = Vec::with_capacity(96);
                // The id only on a batch's last row: a client resuming from it never
                // skips the rest of a batch it saw half of.
                if rows.get(i + 1).is_none_or(|next| next.seq != row.seq) {
                    ev.extend_from_slice(format!("id: {}\n", row.seq).as_bytes());
                }
                ev.extend_from_slice(b"event: change\ndata: ");
                row_json(&mut ev, row);
                ev.extend_from_slice(b"\n\n");
                if tx.send(Bytes::from(ev)).await.is_err() {
                    return;
                }
            }
            since = page.last_seq;
            if page.more {
                continue;
            }
            match tokio::time::timeout(HEARTBEAT, rx_changes.changed()).await {
                Ok(Ok(())) if st.startup.phase() == Phase::Serving => {}
                // The server is shutting down: end the stream so the drain can finish.
                Ok(_) => return,
                Err(_) => {
                    if tx
                        .send(Bytes::from_static(b": keepalive\n\n"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let mut resp = (StatusCode::OK, Body::new(EventBody { rx })).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl axum::body::HttpBody for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}
