//! `GET /api/_backup`: a consistent backup of the running server as a tar stream.
//!
//! One backup at a time (a second gets 409): each pins a checkpoint's tables on the data
//! volume until it ends. The response streams through a bounded channel, so a slow client
//! slows the archive down; one that stops reading for [`backup::STALL_TIMEOUT`] is cut off.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::backup;
use super::error::ApiError;
use super::AppState;

/// The response header naming the sequence number the backup holds all writes up to.
pub(crate) const SEQUENCE_HEADER: &str = "x-minidb-backup-sequence";

/// Clears [`AppState::backing_up`] when the response body is dropped (sent, or abandoned).
struct Running(Arc<AppState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.backing_up.store(false, Ordering::SeqCst);
    }
}

/// The archive's chunks as a response body.
struct BackupBody {
    chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    _running: Running,
}

impl axum::body::HttpBody for BackupBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        self.get_mut()
            .chunks
            .poll_recv(cx)
            .map(|c| c.map(|r| r.map(hyper::body::Frame::data)))
    }
}

/// `GET /api/_backup`.
pub async fn backup(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let engine = st.store()?.engine().clone();
    if st.backing_up.swap(true, Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "a backup is already running; retry when it has finished",
        )
        .with_retry_after(10));
    }
    let running = Running(st.clone());
    let rt = tokio::runtime::Handle::current();
    let stream = match tokio::task::spawn_blocking(move || backup::start(engine, rt)).await {
        Ok(r) => r?,
        Err(e) => return Err(ApiError::internal(format_args!("backup task failed: {e}"))),
    };
    tracing::info!(
        sequence = stream.meta.sequence,
        tables = stream.meta.tables,
        "backup started"
    );
    let body = Body::new(BackupBody {
        chunks: stream.chunks,
        _running: running,
    });
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(SEQUENCE_HEADER, HeaderValue::from(stream.meta.sequence));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"minidb-{}.tar\"",
        stream.meta.sequence
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
