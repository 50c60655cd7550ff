//! The document routes (MiniDBGo-compatible) and their handlers.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::memory;
use super::AppState;
use crate::store::{document::id_of, json, Filter, StoreError, StoredDoc, Update};

type St = State<Arc<AppState>>;

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, ApiError>
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
pub(crate) fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
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
pub(crate) fn parse_json(what: &'static str, bytes: &[u8]) -> Result<Value, ApiError> {
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
    let len = body.as_ref().map_or(0, |b| b.len() as u64);
    let doc = json_body(body)?;
    let store = st.store()?.clone();
    let c = col.clone();
    let (id, version) = blocking(move || {
        let version = store.insert(&c, &doc)?;
        Ok((id_of(&doc)?.to_owned(), version))
    })
    .await?;
    st.memory.observe(&col, len);
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
    let len = body.as_ref().map_or(0, |b| b.len() as u64);
    let doc = json_body(body)?;
    let store = st.store()?.clone();
    let (c, i) = (col.clone(), id.clone());
    let (version, _) = blocking(move || store.put(&c, &i, doc, want)).await?;
    st.memory.observe(&col, len);
    Ok(keyed_answer(StatusCode::OK, "ok", &col, &id, version))
}

/// `GET /api/{col}/{id}`: the document, with its ETag. It is read inside the request-memory
/// budget (see `memory`): reserved by the collection's size hint, checked against its real
/// size, and held until the response is sent.
pub async fn get_doc(
    State(st): St,
    Path((col, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let mut held = st
        .memory
        .reserve_read(None, &col, memory::GET_FACTOR, 0, "reading this document")
        .await?;
    let c = col.clone();
    let StoredDoc { version, json } = blocking(move || store.get(&c, &id)).await?;
    st.memory.observe(&col, json.len() as u64);
    if !st
        .memory
        .try_resize(&mut held, memory::GET_FACTOR * json.len() as u64)
    {
        return Err(memory::over_budget("reading this document"));
    }
    let tag = etag(version);
    if headers.get(header::IF_NONE_MATCH) == Some(&tag) {
        return Ok(with_etag(StatusCode::NOT_MODIFIED.into_response(), version));
    }
    // The read's transient copy is gone: the document alone is held while it is sent.
    let _ = st.memory.try_resize(&mut held, json.len() as u64);
    let body = Body::new(memory::Held::new(Body::from(json), held));
    Ok(with_etag(raw_json(StatusCode::OK, body), version))
}

/// `PATCH /api/{col}/{id}`: `$set`/`$unset`/`$inc`, atomically; returns the new document.
/// The document is read, parsed, changed and encoded: [`memory::PATCH_FACTOR`] times its
/// size is reserved (by the size hint, then the real size).
pub async fn patch_doc(
    State(st): St,
    Path((col, id)): Path<(String, String)>,
    headers: HeaderMap,
    body_held: Option<Extension<memory::BodyReservation>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body_held = body_held.map(|Extension(b)| b);
    let want = if_match(&headers);
    let update = Update::parse(&json_body(body)?)?;
    let store = st.store()?.clone();
    let mut held = st
        .memory
        .reserve_read(
            body_held.and_then(|b| b.take()),
            &col,
            memory::PATCH_FACTOR,
            0,
            "updating this document",
        )
        .await?;
    let c = col.clone();
    let doc = blocking(move || store.patch(&c, &id, &update, want)).await?;
    st.memory.observe(&col, doc.json.len() as u64);
    // The write is done; only the answer is held now.
    let _ = st.memory.try_resize(&mut held, doc.json.len() as u64);
    let body = Body::new(memory::Held::new(Body::from(doc.json), held));
    Ok(with_etag(raw_json(StatusCode::OK, body), doc.version))
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
    let len = body.as_ref().map_or(0, |b| b.len() as u64);
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
    let c = col.clone();
    let n = blocking(move || store.insert_many(&c, &docs)).await?;
    if n > 0 {
        // The average document: reads correct the hint for larger ones.
        st.memory.observe(&col, len / n as u64);
    }
    Ok(Json(json!({"status": "ok", "insertedCount": n})).into_response())
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
    super::search::count_matches(&st, None, store, col, filter).await
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
