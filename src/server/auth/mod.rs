//! API keys with roles: who may call which route.
//!
//! Off unless `auth.keys_file` is set. Then every route but the probes (and `/metrics`,
//! unless `auth.protect_metrics`) needs `Authorization: Bearer <key>`: a missing or unknown
//! key gets 401 with `WWW-Authenticate: Bearer realm="minidb"`, a key whose role or
//! collections do not cover the route gets 403 (see [`policy`]). Refusals are counted in
//! `minidb_auth_failures_total{reason}`. The key itself is never logged: denials name the
//! key's `name=` from the file.
//!
//! The check runs after routing (it needs the route template) and before the body is read
//! and a request permit taken, so anonymous clients cannot spend the request budgets.

pub mod keys;
pub mod policy;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::reload::{self, Watched};
use super::AppState;
use crate::config::AuthConfig;
use crate::telemetry::metrics::Metrics;
use keys::KeySet;
#[cfg(test)]
use keys::Role;
use policy::Need;

/// Why a request was refused; the label of `minidb_auth_failures_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this route needs an API key: send Authorization: Bearer <key>")]
    Missing,
    /// A header that is not a known key.
    #[error("the API key is not valid")]
    Invalid,
    /// A known key whose role or collections do not cover the route.
    #[error("{0}")]
    Forbidden(String),
}

impl AuthError {
    /// The metric label: `missing`, `invalid` or `forbidden`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Invalid => "invalid",
            AuthError::Forbidden(_) => "forbidden",
        }
    }
}

/// Setting up auth failed (the keys file at start-up).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// The file could not be read.
    #[error("auth.keys_file: {0}")]
    Read(String),
    /// The file is not a valid keys file.
    #[error("auth.keys_file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: keys::KeyFileError,
    },
}

/// The keys in force and the settings of `[auth]`.
pub struct Auth {
    keys: Arc<ArcSwap<KeySet>>,
    protect_metrics: bool,
    file: PathBuf,
    reload_interval: Duration,
    fingerprint: u64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys.load().len())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the keys file of `cfg`; `None` when auth is off (no `keys_file`). Blocking (it
    /// reads the file).
    pub fn load(cfg: &AuthConfig) -> Result<Option<Arc<Auth>>, AuthSetupError> {
        let Some(file) = cfg.keys_file.clone() else {
            return Ok(None);
        };
        let (contents, fingerprint) =
            reload::read_all(std::slice::from_ref(&file), keys::MAX_FILE_BYTES);
        let contents = contents.map_err(AuthSetupError::Read)?;
        let set = KeySet::parse(&contents[0]).map_err(|source| AuthSetupError::Parse {
            path: file.clone(),
            source,
        })?;
        if set.is_empty() {
            tracing::warn!(file = %file.display(), "the keys file has no keys: every request that needs a key gets 401");
        }
        Ok(Some(Arc::new(Auth {
            keys: Arc::new(ArcSwap::from_pointee(set)),
            protect_metrics: cfg.protect_metrics,
            file,
            reload_interval: Duration::from_millis(cfg.reload_interval_ms),
            fingerprint,
        })))
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Re-reads the keys file whenever it changes (see `reload`).
    pub fn spawn_reloader(&self, metrics: Option<Arc<Metrics>>) -> tokio::task::JoinHandle<()> {
        let keys = self.keys.clone();
        let apply: reload::Apply = Arc::new(move |contents: &[Vec<u8>]| {
            let set = KeySet::parse(&contents[0]).map_err(|e| e.to_string())?;
            let n = set.len();
            keys.store(Arc::new(set));
            Ok(format!("{n} API keys"))
        });
        reload::spawn(
            Watched::Keys,
            vec![self.file.clone()],
            keys::MAX_FILE_BYTES,
            self.reload_interval,
            self.fingerprint,
            apply,
            metrics,
        )
    }

    /// Checks `presented` (the `Authorization` header, if any) against `need`; `collection`
    /// is the request's collection, for [`Need::Collection`].
    pub fn check(
        &self,
        need: Need,
        presented: Option<&[u8]>,
        collection: Option<&str>,
    ) -> Result<(), AuthError> {
        let (role, global) = match need {
            Need::Open => return Ok(()),
            Need::AnyKey => {
                let token = bearer(presented.ok_or(AuthError::Missing)?)?;
                return match self.keys.load().find(token) {
                    Some(_) => Ok(()),
                    None => Err(AuthError::Invalid),
                };
            }
            Need::Global(r) => (r, true),
            Need::Collection(r) => (r, false),
        };
        let token = bearer(presented.ok_or(AuthError::Missing)?)?;
        let keys = self.keys.load();
        let key = keys.find(token).ok_or(AuthError::Invalid)?;
        if key.role < role {
            return Err(deny(
                key,
                format!(
                    "this API key has role {}; this route needs {role}",
                    key.role
                ),
            ));
        }
        if global && key.collections.is_some() {
            return Err(deny(
                key,
                "this API key is limited to some collections; this route concerns all of them"
                    .into(),
            ));
        }
        if !global {
            match collection {
                Some(c) if key.allows(c) => {}
                _ => {
                    return Err(deny(
                        key,
                        "this API key is not allowed on this collection".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// A 403, logged with the key's name (never the key).
fn deny(key: &keys::ApiKey, why: String) -> AuthError {
    tracing::info!(key_name = key.label(), role = %key.role, reason = %why, "request forbidden");
    AuthError::Forbidden(why)
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
fn bearer(value: &[u8]) -> Result<&str, AuthError> {
    let s = std::str::from_utf8(value).map_err(|_| AuthError::Invalid)?;
    let (scheme, token) = s.trim().split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

/// The middleware: refuses a request whose key does not cover its route.
pub async fn require(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(auth) = st.auth.clone() else {
        return next.run(req).await;
    };
    let template = req.extensions().get::<MatchedPath>().cloned();
    let need = policy::need(
        req.method(),
        template.as_ref().map(MatchedPath::as_str),
        auth.protect_metrics,
    );
    if need == Need::Open {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // The collection as the handlers see it (percent-decoded by the same extractor).
    let collection = match need {
        Need::Collection(_) => {
            use axum::extract::FromRequestParts;
            Path::<HashMap<String, String>>::from_request_parts(&mut parts, &())
                .await
                .ok()
                .and_then(|Path(mut m)| m.remove("col"))
        }
        _ => None,
    };
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match auth.check(need, presented, collection.as_deref()) {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(e) => {
            if let Some(t) = &st.telemetry {
                t.metrics().record_auth_failure(e.reason());
            }
            ApiError::from(e).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(lines: &str) -> Auth {
        Auth {
            keys: Arc::new(ArcSwap::from_pointee(
                KeySet::parse(lines.as_bytes()).expect("parse"),
            )),
            protect_metrics: false,
            file: PathBuf::new(),
            reload_interval: Duration::from_secs(1),
            fingerprint: 0,
        }
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(b"Bearer abc"), Ok("abc"));
        assert_eq!(bearer(b"bearer  abc "), Ok("abc"));
        assert_eq!(bearer(b"Basic abc"), Err(AuthError::Invalid));
        assert_eq!(bearer(b"Bearer"), Err(AuthError::Invalid));
        assert_eq!(bearer(b"Bearer "), Err(AuthError::Invalid));
        assert_eq!(bearer(&[0xff]), Err(AuthError::Invalid));
    }

    #[test]
    fn roles_and_collection_limits() {
        let r = keys::create(Role::Read, None, None).expect("key");
        let w = keys::create(Role::Write, Some(&["a".into()]), Some("lim")).expect("key");
        let a = auth_with(&format!("{}\n{}\n", r.line, w.line));
        let h = |k: &str| format!("Bearer {k}").into_bytes();
        let (rh, wh) = (h(&r.key), h(&w.key));
        let check = |need, hdr: Option<&[u8]>, col| a.check(need, hdr, col).map_err(|e| e.reason());
        assert_eq!(check(Need::Open, None, None), Ok(()));
        assert_eq!(check(Need::Global(Role::Read), None, None), Err("missing"));
        assert_eq!(
            check(Need::Global(Role::Read), Some(b"Bearer nope"), None),
            Err("invalid")
        );
        assert_eq!(check(Need::Global(Role::Read), Some(&rh), None), Ok(()));
        assert_eq!(
            check(Need::Collection(Role::Write), Some(&rh), Some("a")),
            Err("forbidden")
        );
        assert_eq!(
            check(Need::Collection(Role::Write), Some(&wh), Some("a")),
            Ok(())
        );
        assert_eq!(
            check(Need::Collection(Role::Read), Some(&wh), Some("b")),
            Err("forbidden")
        );
        assert_eq!(
            check(Need::Global(Role::Read), Some(&wh), None),
            Err("forbidden")
        );
        assert_eq!(
            check(Need::Collection(Role::Read), Some(&wh), None),
            Err("forbidden")
        );
    }
}
