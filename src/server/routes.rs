//! The document routes (MiniDBGo-compatible) and their handlers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::store::{
    decode_cursor, document::id_of, encode_cursor, json, Filter, StoreError, StoredDoc, Update,
};

/// Documents without a match examined at most per paged `_search` call.
pub const SCAN_BUDGET: usize = 100_000;
/// Cap of a `_search` without paging parameters (MiniDBGo's).
pub const BARE_SEARCH_CAP: usize = 1000;
/// Page size of a paged `_search` without `limit`.
pub const DEFAULT_PAGE: usize = 100;
/// Largest `limit` of a paged `_search`.
pub const MAX_PAGE: usize = 1000;

type St = State<Arc<AppState>>;

/// Runs blocking store work off the async workers.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    // The request span follows the work onto the blocking pool, so store and engine spans
    // nest under it.
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(f)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format_args!("worker task failed: {e}"))),
    }
}

/// The body bytes, or the body-limit (413) / read error as JSON.
fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        let status = rej.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the limit (server.max_body_bytes)".to_string()
        } else {
            rej.body_text()
        };
        ApiError::new(status, msg)
    })
}

/// Parses a JSON body; empty and malformed bodies get 400.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body_bytes(body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    parse_json("request body", &bytes)
}

/// Every JSON a client sends goes through here (see `store::json`).
fn parse_json(what: &'static str, bytes: &[u8]) -> Result<Value, ApiError> {
    json::parse(bytes).map_err(|source| StoreError::InvalidJson { what, source }.into())
}

/// The `If-Match` precondition: `None` without the header or with `*`, else the version it
/// names. A tag this server never issued matches no document: it becomes a version no
/// document has, so the store still answers 400 (bad name) and 404 (missing document) first,
/// as RFC 9110 section 13.2.1 requires, and 412 otherwise.
fn if_match(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::IF_MATCH)?;
    let s = v.to_str().unwrap_or("").trim();
    if s == "*" {
        return None;
    }
    let tag = s.trim_start_matches("W/").trim_matches('"');
    Some(tag.parse::<u64>().unwrap_or(UNMATCHABLE_VERSION))
}

/// The version an unusable `If-Match` tag stands for; versions count up from 1 per write.
const UNMATCHABLE_VERSION: u64 = u64::MAX;

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

fn raw_json(status: StatusCode, bytes: impl Into<Body>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes.into(),
    )
        .into_response()
}

fn with_etag(mut resp: Response, version: u64) -> Response {
    resp.headers_mut().insert(header::ETAG, etag(version));
    resp
}

/// MiniDBGo's write answer, `{"status": …, "key": "{col}:{id}"}`, with the new ETag.
fn keyed_answer(status: StatusCode, word: &str, col: &str, id: &str, version: u64) -> Response {
    let body = json!({"status": word, "key": format!("{col}:{id}")});
    with_etag((status, Json(body)).into_response(), version)
}

/// `POST /api/{col}`: insert one document.
pub async fn insert_one(
    State(st): St,
    Path(col): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let doc = json_body(body)?;
    let store = st.store()?.clone();
    let c = col.clone();
    let (id, version) = blocking(move || {
        let version = store.insert(&c, &doc)?;
        Ok((id_of(&doc)?.to_owned(), version))
    })
    .await?;
    Ok(keyed_answer(
        StatusCode::CREATED,
        "created",
        &col,
        &id,
        version,
    ))
}

/// `PUT /api/{col}/{id}`: upsert.
pub async fn put_doc(
    State(st): St,
    Path((col, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let want = if_match(&headers);
    let doc = json_body(body)?;
    let store = st.store()?.clone();
    let (c, i) = (col.clone(), id.clone());
    let (version, _) = blocking(move || store.put(&c, &i, doc, want)).await?;
    Ok(keyed_answer(StatusCode::OK, "ok", &col, &id, version))
}

/// `GET /api/{col}/{id}`: the document, with its ETag.
pub async fn get_doc(
    State(st): St,
    Path((col, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let StoredDoc { version, json } = blocking(move || store.get(&col, &id)).await?;
    let tag = etag(version);
    if headers.get(header::IF_NONE_MATCH) == Some(&tag) {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), version));
    }
    Ok(with_etag(raw_json(StatusCode::OK, json), version))
}

/// `PATCH /api/{col}/{id}`: `$set`/`$unset`/`$inc`, atomically; returns the new document.
pub async fn patch_doc(
    State(st): St,
    Path((col, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let want = if_match(&headers);
    let update = Update::parse(&json_body(body)?)?;
    let store = st.store()?.clone();
    let doc = blocking(move || store.patch(&col, &id, &update, want)).await?;
    Ok(with_etag(raw_json(StatusCode::OK, doc.json), doc.version))
}

/// `DELETE /api/{col}/{id}`.
pub async fn delete_doc(
    State(st): St,
    Path((col, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let want = if_match(&headers);
    let store = st.store()?.clone();
    let (c, i) = (col.clone(), id.clone());
    blocking(move || store.delete(&c, &i, want)).await?;
    Ok(Json(json!({"status": "deleted", "key": format!("{col}:{id}")})).into_response())
}

/// `POST /api/{col}/_insertMany`: an array of at most 1,000 documents, atomically.
pub async fn insert_many(
    State(st): St,
    Path(col): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let docs = match json_body(body)? {
        Value::Array(docs) => docs,
        other => {
            return Err(ApiError::bad_request(format!(
                "body must be a JSON array of documents, got {}",
                crate::store::document::type_name(&other)
            )))
        }
    };
    let store = st.store()?.clone();
    let n = blocking(move || store.insert_many(&col, &docs)).await?;
    Ok(Json(json!({"status": "ok", "insertedCount": n})).into_response())
}

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

fn join_docs(out: &mut Vec<u8>, docs: &[Bytes]) {
    out.push(b'[');
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(d);
    }
    out.push(b']');
}

/// `POST /api/{col}/_search`: a bare array (capped), a page, or a count.
pub async fn search(
    State(st): St,
    Path(col): Path<String>,
    Query(q): Query<SearchQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
        let n = blocking(move || store.count(&col, &filter)).await?;
        return Ok(Json(json!({"count": n})).into_response());
    }
    if q.limit.is_none() && q.cursor.is_none() {
        let page =
            blocking(move || store.search(&col, &filter, None, BARE_SEARCH_CAP, None)).await?;
        let mut out = Vec::new();
        join_docs(&mut out, &page.docs);
        return Ok(raw_json(StatusCode::OK, out));
    }
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(decode_cursor(c)?),
    };
    let page =
        blocking(move || store.search(&col, &filter, after.as_deref(), limit, Some(SCAN_BUDGET)))
            .await?;
    let mut out = Vec::from(&b"{\"documents\":"[..]);
    join_docs(&mut out, &page.docs);
    out.extend_from_slice(b",\"cursor\":");
    match page.next_after {
        Some(id) => out.extend_from_slice(
            serde_json::to_string(&encode_cursor(&id))
                .unwrap_or_else(|_| "null".into())
                .as_bytes(),
        ),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(raw_json(StatusCode::OK, out))
}

/// Query of `_count`.
#[derive(Debug, Deserialize)]
pub struct CountQuery {
    filter: Option<String>,
}

/// `GET /api/{col}/_count[?filter=JSON]`.
pub async fn count(
    State(st): St,
    Path(col): Path<String>,
    Query(q): Query<CountQuery>,
) -> Result<Response, ApiError> {
    let filter = match q.filter.as_deref() {
        None | Some("") => Filter::all(),
        Some(f) => Filter::parse(&parse_json("filter parameter", f.as_bytes())?)?,
    };
    let store = st.store()?.clone();
    let n = blocking(move || store.count(&col, &filter)).await?;
    Ok(Json(json!({"count": n})).into_response())
}

/// `GET /api/_collections`: names, exact counts and byte sizes, sorted.
pub async fn collections(State(st): St) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let list = blocking(move || store.collections()).await?;
    Ok(Json(list).into_response())
}

/// `POST /api/_compact`: starts a full compaction unless one is running; 202 either way.
pub async fn compact(State(st): St) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    if st.compacting.swap(true, Ordering::SeqCst) {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"status": "compaction already running"})),
        )
            .into_response());
    }
    let state = st.clone();
    tokio::task::spawn_blocking(move || {
        tracing::info!(trigger = "api", "compaction started");
        if let Err(e) = store.engine().compact() {
            tracing::error!(error = %e, "compaction failed");
        }
        state.compacting.store(false, Ordering::SeqCst);
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"status": "compaction started"})),
    )
        .into_response())
}
