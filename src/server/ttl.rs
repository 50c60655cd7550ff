//! Lifetimes over HTTP: `?ttl=SECONDS` on writes, the expiry headers, and a collection's
//! default lifetime (`/api/{col}/_ttl`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::routes::{blocking, body_bytes, parse_json};
use super::AppState;
use crate::store::expiry::now_ms;
use crate::store::{StoreError, Ttl, MAX_TTL_SECS};

/// When the document expires, in milliseconds since the Unix epoch.
pub(crate) const EXPIRES_AT: &str = "x-minidb-expires-at";
/// Seconds until the document expires, rounded up.
pub(crate) const EXPIRES_IN: &str = "x-minidb-expires-in";

/// The `ttl` query parameter of the write routes.
#[derive(Debug, Default, Deserialize)]
pub struct TtlQuery {
    ttl: Option<String>,
}

impl TtlQuery {
    /// The write's lifetime: the collection's default without `?ttl`.
    pub(crate) fn ttl(&self) -> Result<Ttl, ApiError> {
        match self.ttl.as_deref() {
            None => Ok(Ttl::Default),
            Some(s) => match s.parse::<u64>() {
                Ok(secs) => Ok(Ttl::from_secs(secs)?),
                Err(_) => Err(StoreError::InvalidTtl(format!(
                    "ttl must be a whole number of seconds from 0 (permanent) to \
                     {MAX_TTL_SECS}, got {s:?}"
                ))
                .into()),
            },
        }
    }

    /// True when the request gave `?ttl`.
    pub(crate) fn given(&self) -> bool {
        self.ttl.is_some()
    }
}

/// Adds the expiry headers to `resp` for a document expiring at `expires_ms` (0: never).
pub(crate) fn with_expiry(mut resp: Response, expires_ms: u64) -> Response {
    if expires_ms > 0 {
        let left_ms = expires_ms.saturating_sub(now_ms());
        let h = resp.headers_mut();
        h.insert(EXPIRES_AT, HeaderValue::from(expires_ms));
        h.insert(EXPIRES_IN, HeaderValue::from(left_ms.div_ceil(1000)));
    }
    resp
}

/// `GET /api/{col}/_ttl`: `{"collection", "seconds"}` (`null`: no default lifetime).
pub async fn get_ttl(
    State(st): State<Arc<AppState>>,
    Path(col): Path<String>,
) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let c = col.clone();
    let secs = blocking(move || store.collection_ttl(&c)).await?;
    Ok(Json(json!({"collection": col, "seconds": secs})).into_response())
}

/// `PUT /api/{col}/_ttl {"seconds": N}`: the default lifetime of later writes.
pub async fn put_ttl(
    State(st): State<Arc<AppState>>,
    Path(col): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body)?;
    let v = parse_json("request body", &bytes)?;
    let secs = match v.get("seconds") {
        Some(Value::Number(n)) if v.as_object().is_some_and(|o| o.len() == 1) => n.as_u64(),
        _ => None,
    }
    .filter(|s| (1..=MAX_TTL_SECS).contains(s))
    .ok_or_else(|| {
        ApiError::from(StoreError::InvalidTtl(format!(
            "body must be {{\"seconds\": N}} with N a whole number from 1 to {MAX_TTL_SECS}"
        )))
    })?;
    let store = st.store()?.clone();
    let c = col.clone();
    blocking(move || store.set_collection_ttl(&c, Some(secs))).await?;
    Ok(Json(json!({"collection": col, "seconds": secs})).into_response())
}

/// `DELETE /api/{col}/_ttl`: later writes are permanent unless they say otherwise.
pub async fn delete_ttl(
    State(st): State<Arc<AppState>>,
    Path(col): Path<String>,
) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let c = col.clone();
    blocking(move || store.set_collection_ttl(&c, None)).await?;
    Ok((
        StatusCode::OK,
        Json(json!({"collection": col, "seconds": null})),
    )
        .into_response())
}

/// Parses `?ttl` (as [`Query`] would, with the error in the JSON shape).
pub(crate) fn ttl_of(
    q: Result<Query<TtlQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<TtlQuery, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}
