//! Request limits and the JSON shape of every error: concurrency, fallbacks, idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::error::{ApiError, Rejection};
use super::memory;
use super::AppState;

/// Paths that bypass the in-flight limit (probes must answer under load, and while the
/// engine opens).
const UNLIMITED: [&str; 3] = ["/api/health", "/api/ready", "/metrics"];

/// 404 JSON for unknown routes.
pub async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "no such route").into_response()
}

/// 405 JSON for a known route with the wrong method.
pub async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
    .into_response()
}

/// Admits a request: reads its body first (under the body memory budget and the body
/// timeout), then takes an in-flight permit for as long as it is served. So a request holds
/// a `max_in_flight` permit only while the server works on it: clients that stall their
/// uploads wait in the body read (until `server.body_timeout_secs`, then 408) and cannot make
/// other requests fail. Refusals answer at once: 503 + `Retry-After` (`memory`,
/// `concurrency`), 413, 408.
pub async fn admit(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if UNLIMITED.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    if let Err(starting) = st.store() {
        // While the engine opens, only the probes answer.
        let cfg = &st.config.server;
        let _ = tokio::time::timeout(
            Duration::from_secs(cfg.body_timeout_secs),
            drain_body(req.into_body(), cfg.max_body_bytes),
        )
        .await;
        return starting.into_response();
    }
    let (mut req, body_permit) = match read_body(&st, req).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    // Held here until the response is produced, unless the handler takes it over.
    let body_permit = memory::BodyReservation::new(body_permit);
    req.extensions_mut().insert(body_permit.clone());
    let Ok(permit) = st.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight (server.max_in_flight); retry later",
        )
        .with_retry_after(1)
        .rejected("concurrency")
        .into_response();
    };
    let resp = next.run(req).await;
    drop(permit);
    drop(body_permit);
    resp
}

/// Reads the whole body into memory (bounded by `server.max_body_bytes`, in time by
/// `server.body_timeout_secs`), holding a body-budget permit for its declared size; the
/// permit lives until the response is produced (the handler parses the body).
async fn read_body(
    st: &AppState,
    req: Request,
) -> Result<(Request, Option<memory::Reservation>), Response> {
    let cfg = &st.config.server;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // HTTP/1.1: without Content-Length or Transfer-Encoding there is no body.
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if !declared.map_or(chunked, |n| n > 0) {
        return Ok((req, None));
    }
    let timeout = Duration::from_secs(cfg.body_timeout_secs);
    if let Some(n) = declared.filter(|&n| n > cfg.max_body_bytes) {
        // Read what was sent (up to twice the limit) before answering, so that the client
        // gets the 413 rather than a broken pipe; a larger body is cut off at once.
        if n <= cfg.max_body_bytes.saturating_mul(2) {
            let _ = tokio::time::timeout(timeout, drain_body(req.into_body(), n)).await;
        }
        return Err(too_large());
    }
    // Chunked bodies are counted at the body limit; one larger than the whole budget runs
    // alone.
    let bytes = declared.unwrap_or(cfg.max_body_bytes);
    let reserved = st
        .memory
        .reserve(
            bytes.saturating_mul(memory::BODY_FACTOR),
            "this request body",
        )
        .await;
    let permit = match reserved {
        Ok(p) => p,
        Err(refused) => {
            // Read the body (discarding it) before answering: a reply sent while the client
            // is still writing makes hyper close the connection, and the client sees a
            // broken pipe instead of the 503.
            let _ = tokio::time::timeout(timeout, drain_body(req.into_body(), cfg.max_body_bytes))
                .await;
            return Err(refused.into_response());
        }
    };
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, collect_body(body, cfg.max_body_bytes, declared)).await {
        Ok(Ok(bytes)) => Ok((
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            Some(permit),
        )),
        Ok(Err(BodyError::TooLarge)) => Err(too_large()),
        Ok(Err(BodyError::Read(e))) => Err(ApiError::bad_request(format!(
            "request body could not be read: {e}"
        ))
        .into_response()),
        Err(_) => {
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {} s (server.body_timeout_secs)",
                    cfg.body_timeout_secs
                ),
            )
            .into_response();
            // The rest of the body may still come; this connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(resp)
        }
    }
}

fn too_large() -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body is larger than the limit (server.max_body_bytes)",
    )
    .into_response()
}

/// Reads and drops a request body, at most `max` bytes of it (larger: the connection is
/// closed after the reply, as it would be for a 413).
async fn drain_body(mut body: axum::body::Body, max: u64) {
    use axum::body::HttpBody;
    let mut seen = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { return };
        if let Some(data) = frame.data_ref() {
            seen += data.len() as u64;
            if seen > max {
                return;
            }
        }
    }
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Collects a body of at most `max` bytes (capacity reserved from the declared length).
async fn collect_body(
    mut body: axum::body::Body,
    max: u64,
    declared: Option<u64>,
) -> Result<axum::body::Bytes, BodyError> {
    use axum::body::HttpBody;
    let cap = usize::try_from(declared.unwrap_or(0).min(max)).unwrap_or(0);
    let mut out = bytes::BytesMut::with_capacity(cap);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(BodyError::Read)?;
        if let Some(data) = frame.data_ref() {
            if (out.len() + data.len()) as u64 > max {
                return Err(BodyError::TooLarge);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

/// Rewrites any non-JSON error response (from axum extractors, the timeout layer, ...) as
/// `{"error": "...", "status": N}`, keeping its headers, and counts refusals.
pub async fn json_errors(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let reason = match resp.extensions().get::<Rejection>() {
        Some(r) => Some(r.0),
        None if status == StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
        None if status == StatusCode::REQUEST_TIMEOUT => Some("timeout"),
        None => None,
    };
    if let (Some(reason), Some(t)) = (reason, &st.telemetry) {
        t.metrics().record_rejection(reason);
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let msg = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    } else {
        text
    };
    let error = if status == StatusCode::INTERNAL_SERVER_ERROR {
        // Whatever produced it, its text is for the log only.
        ApiError::internal(msg)
    } else {
        ApiError::new(status, msg)
    };
    let mut new = error.into_response();
    for (k, v) in &parts.headers {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            new.headers_mut().append(k.clone(), v.clone());
        }
    }
    new
}

/// A connection that fails with `TimedOut` after `timeout` without any read or write
/// progress: the idle timeout of keep-alive connections (and of stalled clients).
pub struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl<T> IdleTimeout<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        IdleTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn progress(&mut self) {
        self.sleep.as_mut().reset(Instant::now() + self.timeout);
    }

    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

use std::future::Future as _;

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progress();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
