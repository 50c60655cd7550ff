//! HTTP errors: `{"error": "...", "status": N}`, and the ONE place where store and engine
//! errors become statuses ([`status_of`]), and refused credentials too ([`auth_status_of`]).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::AuthError;
use crate::engine;
use crate::server::backup::BackupError;
use crate::store::StoreError;

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The message in the `error` field.
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Why the request was refused, for metrics.
    pub rejection: Option<&'static str>,
    /// The request's trace id, in the body of errors whose details only the log has.
    pub trace_id: Option<String>,
    /// One more header the client needs: the `WWW-Authenticate` challenge of a 401, the
    /// change feed's oldest usable sequence on a 410 (boxed: errors travel in `Result`s).
    pub header: Option<Box<(axum::http::HeaderName, HeaderValue)>>,
}

/// Response extension naming why a request was refused (`busy`, `memory`, `concurrency`,
/// `too_large`, `timeout`), for the rejection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection(pub &'static str);

/// The rejection reason of a store error, if it is a refusal rather than a failure.
pub fn rejection_of(err: &StoreError) -> Option<&'static str> {
    match err {
        StoreError::Engine(engine::Error::Busy { reason, .. }) => Some(match reason {
            engine::BusyReason::Memory => "memory",
            _ => "busy",
        }),
        StoreError::Engine(engine::Error::NoSpace { .. }) => Some("disk_full"),
        _ => None,
    }
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
            rejection: None,
            trace_id: None,
            header: None,
        }
    }

    /// A fault inside the server: logs `detail` (with the request's span and trace id) and
    /// answers 500 with a short message and the trace id, never the detail itself (it may
    /// name files of the data directory).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::hidden(StatusCode::INTERNAL_SERVER_ERROR, "internal error", &detail)
    }

    /// `status` with a fixed public `message` and the trace id; `detail` goes to the log
    /// with the same trace id (as a field: the log level may hide the request span).
    fn hidden(status: StatusCode, message: &str, detail: &dyn std::fmt::Display) -> Self {
        let trace_id = current_trace_id();
        let id = trace_id.as_deref().unwrap_or("");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %detail, trace_id = id, status = status.as_u16(), "request refused");
        } else {
            tracing::error!(error = %detail, trace_id = id, status = status.as_u16(), "internal error");
        }
        ApiError {
            trace_id,
            ..Self::new(status, message)
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Marks the error as a refusal for `reason` (see [`Rejection`]).
    pub fn rejected(mut self, reason: &'static str) -> Self {
        self.rejection = Some(reason);
        self
    }

    /// Adds a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// Seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

/// Maps a store (or engine) error to its status and `Retry-After`; the only such mapping.
pub fn status_of(err: &StoreError) -> (StatusCode, Option<u64>) {
    use StoreError as S;
    match err {
        S::InvalidCollection { .. }
        | S::InvalidJson { .. }
        | S::InvalidId(_)
        | S::InvalidDocument(_)
        | S::InvalidFilter(_)
        | S::InvalidUpdate(_)
        | S::InvalidCursor
        | S::InvalidTtl(_)
        | S::InvalidDumpLine { .. }
        | S::TooMany { .. } => (StatusCode::BAD_REQUEST, None),
        S::AtIndex { source, .. } => status_of(source),
        S::NotFound { .. } => (StatusCode::NOT_FOUND, None),
        S::ChangesGone { .. } => (StatusCode::GONE, None),
        S::Conflict { .. } => (StatusCode::CONFLICT, None),
        S::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, None),
        S::InvalidKey(_) | S::CorruptValue(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        S::Io { source, .. } => (io_status(source), None),
        S::Engine(e) => match e {
            engine::Error::Busy { retry_after, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(retry_after_secs(*retry_after)),
            ),
            engine::Error::Poisoned { .. } | engine::Error::Closed => {
                (StatusCode::SERVICE_UNAVAILABLE, None)
            }
            engine::Error::Locked { .. } => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
            engine::Error::NoSpace { retry_after, .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                Some(retry_after_secs(*retry_after)),
            ),
            engine::Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, None),
            engine::Error::Corruption { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
            engine::Error::Io { source, .. } | engine::Error::Fsync { source, .. } => {
                (io_status(source), None)
            }
        },
    }
}

/// Maps a refused credential to its status: 401 (with the Bearer challenge) when there is
/// no valid key, 403 when the key does not cover the route.
pub fn auth_status_of(err: &AuthError) -> (StatusCode, Option<&'static str>) {
    match err {
        AuthError::Missing | AuthError::Invalid => {
            (StatusCode::UNAUTHORIZED, Some(BEARER_CHALLENGE))
        }
        AuthError::Forbidden(_) => (StatusCode::FORBIDDEN, None),
    }
}

/// The challenge of 401 answers.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"minidb\"";

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let (status, challenge) = auth_status_of(&err);
        ApiError {
            header: challenge
                .map(|c| Box::new((header::WWW_AUTHENTICATE, HeaderValue::from_static(c)))),
            ..ApiError::new(status, err.to_string())
        }
    }
}

/// 507 for a full disk, else 500.
fn io_status(e: &std::io::Error) -> StatusCode {
    if e.kind() == std::io::ErrorKind::StorageFull {
        StatusCode::INSUFFICIENT_STORAGE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let (status, retry_after) = status_of(&err);
        let rejection = rejection_of(&err);
        let error = match public_message(&err, status) {
            None => ApiError::new(status, err.to_string()),
            Some(message) => ApiError::hidden(status, message, &err),
        };
        ApiError {
            retry_after,
            rejection,
            ..error
        }
    }
}

/// The message shown instead of `err` when its text is for the log only: server faults
/// (500, 507) and refusals whose reason names files (a poisoned or locked engine). Client
/// errors and `Busy` keep their own message, which names no file.
fn public_message(err: &StoreError, status: StatusCode) -> Option<&'static str> {
    match err {
        StoreError::AtIndex { source, .. } => public_message(source, status),
        StoreError::Engine(engine::Error::Busy { .. }) => None,
        StoreError::Engine(engine::Error::Poisoned { .. }) => Some(
            "engine poisoned after a failed write or fsync; writes are refused until a restart",
        ),
        StoreError::Engine(engine::Error::Closed) => Some("engine is shut down"),
        StoreError::Engine(engine::Error::Locked { .. }) => Some("data directory is locked"),
        _ if status == StatusCode::INSUFFICIENT_STORAGE => {
            Some("insufficient storage: the data volume is full")
        }
        _ if status.is_server_error() => Some("internal error"),
        _ => None,
    }
}

/// The trace id of the current span (the request's), when it has one.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

impl From<engine::Error> for ApiError {
    fn from(err: engine::Error) -> Self {
        StoreError::Engine(err).into()
    }
}

impl From<BackupError> for ApiError {
    fn from(err: BackupError) -> Self {
        match err {
            BackupError::Engine(e) => e.into(),
            BackupError::Io { context, source } => StoreError::Io { context, source }.into(),
            // Restore-side errors; a backup never returns them.
            e @ (BackupError::BadArchive(_) | BackupError::TargetNotEmpty(_)) => {
                ApiError::internal(e)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "status": self.status.as_u16()});
        if let Some(id) = self.trace_id {
            body["trace_id"] = json!(id);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(reason) = self.rejection {
            resp.extensions_mut().insert(Rejection(reason));
        }
        if let Some(h) = self.header {
            let (name, value) = *h;
            resp.headers_mut().insert(name, value);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn mapping() {
        let busy = StoreError::Engine(engine::Error::Busy {
            retry_after: Duration::from_millis(100),
            reason: engine::BusyReason::FlushQueue,
        });
        assert_eq!(status_of(&busy), (StatusCode::SERVICE_UNAVAILABLE, Some(1)));
        let poisoned = StoreError::Engine(engine::Error::Poisoned { reason: "x".into() });
        assert_eq!(status_of(&poisoned).0, StatusCode::SERVICE_UNAVAILABLE);
        let corrupt = StoreError::Engine(engine::Error::Corruption {
            file: PathBuf::from("f"),
            offset: 0,
            reason: "crc".into(),
        });
        assert_eq!(status_of(&corrupt).0, StatusCode::INTERNAL_SERVER_ERROR);
        let full = StoreError::Engine(engine::Error::Io {
            context: "write".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
        assert_eq!(status_of(&full).0, StatusCode::INSUFFICIENT_STORAGE);
        let at = StoreError::AtIndex {
            index: 3,
            source: Box::new(StoreError::InvalidId("x".into())),
        };
        assert_eq!(status_of(&at).0, StatusCode::BAD_REQUEST);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn server_faults_hide_their_details() {
        let corrupt = StoreError::Engine(engine::Error::Corruption {
            file: PathBuf::from("/srv/data/sst/000007.sst"),
            offset: 12,
            reason: "crc".into(),
        });
        let e = ApiError::from(corrupt);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.message, "internal error");
        let full = StoreError::Engine(engine::Error::Io {
            context: "write /srv/data/wal/000001.wal".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
        let e = ApiError::from(full);
        assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(!e.message.contains('/'), "{}", e.message);
        let poisoned = StoreError::Engine(engine::Error::Poisoned {
            reason: "fsync failed: /srv/data/wal/000001.wal".into(),
        });
        assert!(!ApiError::from(poisoned).message.contains('/'));
        let at = StoreError::AtIndex {
            index: 1,
            source: Box::new(StoreError::CorruptValue("/srv".into())),
        };
        assert_eq!(ApiError::from(at).message, "internal error");
        // Client errors and Busy keep their message.
        let bad = ApiError::from(StoreError::InvalidId("too long".into()));
        assert!(bad.message.contains("too long"));
        let busy = ApiError::from(StoreError::Engine(engine::Error::Busy {
            retry_after: Duration::from_millis(100),
            reason: engine::BusyReason::Memory,
        }));
        assert!(busy.message.contains("busy"));
        assert_eq!(busy.rejection, Some("memory"));
    }
}
