//! No cross-site writes: a browser sends a "simple" request (`POST` with `text/plain`, a
//! form) to any origin without a CORS preflight, so CORS alone cannot stop a web page from
//! writing. State-changing requests are refused with 403, before anything runs, when
//!
//! * they carry an `Origin` that is neither in `server.cors_origins` (`"*"` allows any)
//!   nor the server's own origin (same `Host`), or
//! * they carry no `Origin` but a browser marked them `Sec-Fetch-Site: cross-site`.
//!
//! Requests without either header (curl, other servers, MiniDBGo's scripts) are not
//! browsers' and pass. An allowed `Origin` passes even when cross-site: listing an origin
//! is the operator's explicit trust.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;

/// Refuses cross-site state-changing requests with 403 (see the module documentation).
pub async fn refuse_cross_site_writes(
    State(st): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if changes_state(req.method()) {
        if let Err(why) = check(&st.config.server.cors_origins, req.headers()) {
            return ApiError::new(StatusCode::FORBIDDEN, why).into_response();
        }
    }
    next.run(req).await
}

fn changes_state(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// `Ok` when the request may write; else the reason for the 403.
fn check(allowed: &[String], headers: &HeaderMap) -> Result<(), String> {
    match headers.get(header::ORIGIN) {
        Some(origin) => {
            let origin = origin.to_str().unwrap_or("");
            let listed = allowed.iter().any(|a| a == "*" || a == origin);
            if listed || same_origin(origin, headers) {
                Ok(())
            } else {
                Err(format!(
                    "cross-site write refused: origin {} is not in server.cors_origins",
                    crate::store::error::preview(origin)
                ))
            }
        }
        None => match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
            Some(b"cross-site") => {
                Err("cross-site write refused: the browser marked this request \
                 Sec-Fetch-Site: cross-site"
                    .into())
            }
            _ => Ok(()),
        },
    }
}

/// Whether `origin` is `http(s)://` + the request's `Host` (a page served by this server).
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|r| !host.is_empty() && r.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["http://localhost:3000".to_string()];
        let ok = |pairs: &[(&'static str, &'static str)]| check(&allowed, &headers(pairs));
        assert!(ok(&[]).is_ok(), "no browser headers: curl, servers");
        assert!(ok(&[("origin", "http://localhost:3000")]).is_ok());
        assert!(ok(&[
            ("origin", "http://localhost:3000"),
            ("sec-fetch-site", "cross-site")
        ])
        .is_ok());
        assert!(ok(&[("origin", "http://db:6866"), ("host", "db:6866")]).is_ok());
        assert!(ok(&[("origin", "https://DB:6866"), ("host", "db:6866")]).is_ok());
        assert!(ok(&[("sec-fetch-site", "same-origin")]).is_ok());
        assert!(ok(&[("sec-fetch-site", "none")]).is_ok());
        let e = ok(&[("origin", "http://evil.example")]).unwrap_err();
        assert!(
            e.contains("http://evil.example") && e.contains("cors_origins"),
            "{e}"
        );
        assert!(ok(&[("origin", "null")]).is_err());
        assert!(ok(&[("origin", "http://db:6866"), ("host", "db:6867")]).is_err());
        assert!(ok(&[("origin", "http://db:6866.evil"), ("host", "db:6866")]).is_err());
        assert!(ok(&[("origin", "http://x"), ("host", "")]).is_err());
        assert!(ok(&[("sec-fetch-site", "cross-site")]).is_err());
        let any = vec!["*".to_string()];
        assert!(check(&any, &headers(&[("origin", "http://evil.example")])).is_ok());
        assert!(check(&any, &headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(changes_state(&Method::DELETE) && !changes_state(&Method::GET));
        assert!(!changes_state(&Method::OPTIONS));
    }
}
