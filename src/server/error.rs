//! HTTP errors: `{"error": "...", "status": N}`, and the ONE place where store and engine
//! errors become statuses ([`status_of`]).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine;
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
        | S::InvalidDumpLine { .. }
        | S::TooMany { .. } => (StatusCode::BAD_REQUEST, None),
        S::AtIndex { source, .. } => status_of(source),
        S::NotFound { .. } => (StatusCode::NOT_FOUND, None),
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
            engine::Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, None),
            engine::Error::Corruption { .. } => (StatusCode::INTERNAL_SERVER_ERROR, None),
            engine::Error::Io { source, .. } | engine::Error::Fsync { source, .. } => {
                (io_status(source), None)
            }
        },
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
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %err, "internal error");
        }
        ApiError {
            status,
            message: err.to_string(),
            retry_after,
            rejection: rejection_of(&err),
        }
    }
}

impl From<engine::Error> for ApiError {
    fn from(err: engine::Error) -> Self {
        StoreError::Engine(err).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "status": self.status.as_u16()});
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(reason) = self.rejection {
            resp.extensions_mut().insert(Rejection(reason));
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
}
