//! The HTTP service: axum routes, limits, timeouts, CORS, probes, graceful shutdown.
//!
//! Every store call runs in `spawn_blocking`; errors become JSON in `error.rs`.

pub mod auth;
pub mod backup;
pub(crate) mod backup_route;
pub(crate) mod changes;
pub mod error;
pub(crate) mod head;
pub mod limits;
pub mod memory;
pub(crate) mod origin;
pub mod probes;
pub(crate) mod reload;
pub mod routes;
pub mod search;
pub mod startup;
pub(crate) mod sweeper;
pub mod tls;
pub(crate) mod ttl;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::store::Store;
use crate::telemetry::Telemetry;
use error::ApiError;

/// State shared by all handlers.
pub struct AppState {
    /// The document store, set once the engine is open (see [`AppState::store`]).
    store: OnceLock<Arc<Store>>,
    /// The phase (opening, serving, shutting down) and the WAL replay's progress.
    pub startup: Arc<startup::Startup>,
    /// The effective configuration.
    pub config: Config,
    /// When the server started.
    pub started: Instant,
    /// True while an API-triggered compaction runs.
    pub compacting: AtomicBool,
    /// True while `GET /api/_backup` streams.
    pub backing_up: AtomicBool,
    /// The sequence number of the latest committed write, for change-feed waiters.
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Permits for change-feed readers (long polls and streams wait without an in-flight
    /// permit).
    pub feed_waiters: Arc<Semaphore>,
    /// Permits for requests in flight.
    pub in_flight: Arc<Semaphore>,
    /// What requests hold in memory (bodies, documents read, search buffers).
    pub memory: memory::RequestMemory,
    /// CPU percent sampling for `/api/stats`.
    pub cpu: probes::CpuSampler,
    /// Metrics, traces and the memory governor, when started.
    pub telemetry: Option<Telemetry>,
    /// API keys; `None` when auth is off.
    pub auth: Option<Arc<auth::Auth>>,
    /// The TLS certificate in force; `None`: plain HTTP.
    pub tls: Option<Arc<tls::Tls>>,
}

impl AppState {
    /// State for an open `store` under `config`, serving at once.
    pub fn new(store: Arc<Store>, config: Config, telemetry: Option<Telemetry>) -> Arc<Self> {
        let state = Self::starting(config, telemetry);
        let _ = state.open(store);
        state
    }

    /// State for a server whose engine is still opening: every route but the probes
    /// answers 503 until [`AppState::open`].
    pub fn starting(config: Config, telemetry: Option<Telemetry>) -> Arc<Self> {
        Self::starting_with(config, telemetry, None, None)
    }

    /// [`AppState::starting`] with API keys (`None`: auth off) and TLS (`None`: plain HTTP).
    pub fn starting_with(
        config: Config,
        telemetry: Option<Telemetry>,
        auth: Option<Arc<auth::Auth>>,
        tls: Option<Arc<tls::Tls>>,
    ) -> Arc<Self> {
        let permits = config.server.max_in_flight;
        let limit = telemetry.as_ref().map_or(512 << 20, |t| t.memory_limit());
        let memory = memory::RequestMemory::new(limit, config.server.max_body_bytes);
        Arc::new(AppState {
            store: OnceLock::new(),
            startup: Arc::default(),
            config,
            started: Instant::now(),
            compacting: AtomicBool::new(false),
            backing_up: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            feed_waiters: Arc::new(Semaphore::new(permits)),
            in_flight: Arc::new(Semaphore::new(permits)),
            memory,
            cpu: probes::CpuSampler::default(),
            telemetry,
            auth,
            tls,
        })
    }

    /// Serves `store` from now on, with its expiry sweeper when a runtime is there to run
    /// it; gives it back if shutdown began first (the caller then shuts its engine down).
    pub fn open(self: &Arc<Self>, store: Arc<Store>) -> Result<(), Arc<Store>> {
        let tx = self.changes.clone();
        store.set_on_commit(Box::new(move |seq| {
            tx.send_replace(seq);
        }));
        let mut slot = Some(store);
        let served = self.startup.serve_with(|| {
            if let Some(s) = slot.take() {
                let _ = self.store.set(s);
            }
        });
        match (served, slot) {
            (false, Some(s)) => Err(s),
            _ => {
                if let (Ok(_), Ok(store)) = (tokio::runtime::Handle::try_current(), self.store()) {
                    sweeper::spawn(self.clone(), store.clone());
                }
                Ok(())
            }
        }
    }

    /// The store, or 503 + `Retry-After` while the engine is still opening.
    pub fn store(&self) -> Result<&Arc<Store>, ApiError> {
        self.store
            .get()
            .ok_or_else(|| starting_error(&self.startup))
    }
}

/// The 503 for requests that need the engine before it is open.
fn starting_error(s: &startup::Startup) -> ApiError {
    let what = match s.progress() {
        Some((done, total)) => {
            format!("replaying the write-ahead log ({done} of {total} bytes)")
        }
        None => "opening the data directory".to_string(),
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("starting: {what}; retry later"),
    )
    .with_retry_after(1)
}

/// The full router with every layer.
pub fn router(state: Arc<AppState>) -> Router {
    let cfg = &state.config.server;
    let mut api = Router::new()
        .route("/api/health", get(probes::health))
        .route("/api/ready", get(probes::ready))
        .route("/api/stats", get(probes::stats))
        .route("/api/metrics", get(probes::metrics_json))
        .route("/api/openapi.json", get(probes::openapi))
        .route("/api/_collections", get(routes::collections))
        .route("/api/_compact", post(routes::compact))
        .route("/api/_backup", get(backup_route::backup))
        .route("/api/_changes", get(changes::all_changes))
        .route("/api/{col}/_changes", get(changes::collection_changes))
        .route(
            "/api/{col}/_ttl",
            get(ttl::get_ttl).put(ttl::put_ttl).delete(ttl::delete_ttl),
        )
        .route("/api/{col}", post(routes::insert_one))
        .route("/api/{col}/_insertMany", post(routes::insert_many))
        .route("/api/{col}/_search", post(search::search))
        .route("/api/{col}/_count", get(routes::count))
        .route(
            "/api/{col}/{id}",
            get(routes::get_doc)
                .put(routes::put_doc)
                .patch(routes::patch_doc)
                .delete(routes::delete_doc),
        );
    if let Some(t) = &state.telemetry {
        // `GET /metrics`: the Prometheus exposition.
        api = api.merge(t.metrics_router());
    }
    let api = api
        .fallback(limits::not_found)
        .method_not_allowed_fallback(limits::method_not_allowed)
        .with_state(state.clone());

    let cors = cors_layer(&cfg.cors_origins);
    let app = api
        .layer(DefaultBodyLimit::max(
            usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX),
        ))
        .layer(middleware::from_fn_with_state(state.clone(), limits::admit))
        // Before the body is read and a permit taken: anonymous clients spend no budget.
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(cfg.request_timeout_secs),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            origin::refuse_cross_site_writes,
        ))
        .layer(cors)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limits::json_errors,
        ))
        .layer(middleware::from_fn(head::answer_refused));
    // Request spans and metrics, outermost so refused requests are counted too.
    match &state.telemetry {
        Some(t) => app.layer(t.http_layer()),
        None => app,
    }
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            axum::http::header::IF_MATCH,
            axum::http::header::IF_NONE_MATCH,
        ])
        .expose_headers([
            axum::http::header::ETAG,
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderName::from_static(ttl::EXPIRES_AT),
            axum::http::HeaderName::from_static(ttl::EXPIRES_IN),
        ])
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = config
        .listen_addr()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` resolves, then: readiness 503, stop accepting, drain in-flight
/// requests for at most `server.shutdown_drain_secs`, and shut the engine down.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::engine::Error> {
    let app = router(state.clone());
    let cfg = state.config.server.clone();
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.header_timeout_secs))
        .max_headers(head::MAX_HEADERS)
        .keep_alive(true);
    let idle = Duration::from_secs(cfg.idle_timeout_secs);
    warn_if_open(&listener, &state);
    let metrics = state.telemetry.as_ref().map(|t| t.metrics().clone());
    if let Some(a) = &state.auth {
        a.spawn_reloader(metrics.clone());
    }
    if let Some(t) = &state.tls {
        t.spawn_reloader(metrics.clone());
    }
    // Every connection holds a permit from accept to close: at the limit, further clients
    // wait in the listen backlog.
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    tokio::pin!(shutdown);
    loop {
        let next = async {
            let permit = connections.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        tokio::select! {
            (permit, accepted) = next => {
                let Ok(permit) = permit else { break };
                let (stream, _peer) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = Conn {
                    http: http.clone(),
                    app: app.clone(),
                    idle,
                    watcher: graceful.watcher(),
                };
                match &state.tls {
                    None => {
                        tokio::spawn(async move {
                            conn.serve(stream).await;
                            drop(permit);
                        });
                    }
                    Some(tls) => {
                        let (acceptor, limit) = (tls.acceptor(), tls.handshake_timeout);
                        let metrics = metrics.clone();
                        // The handshake holds the connection's permit and is bounded in time.
                        tokio::spawn(async move {
                            match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => conn.serve(stream).await,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    if let Some(m) = &metrics {
                                        m.record_handshake_failure("error");
                                    }
                                }
                                Err(_) => {
                                    tracing::debug!("TLS handshake timed out");
                                    if let Some(m) = &metrics {
                                        m.record_handshake_failure("timeout");
                                    }
                                }
                            }
                            drop(permit);
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    state.startup.shut_down();
    // Wakes change-feed waiters, which end their long polls and streams when they see it.
    state.changes.send_modify(|_| {});
    drop(listener);
    tracing::info!("shutdown: draining in-flight requests");
    let drain = Duration::from_secs(cfg.shutdown_drain_secs);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            secs = cfg.shutdown_drain_secs,
            "drain timed out; closing anyway"
        );
    }
    // Once shutdown began the store can no longer be installed, so this is the last word.
    let Some(store) = state.store.get().cloned() else {
        return Ok(()); // the engine never opened; its opener stops with the process
    };
    match tokio::task::spawn_blocking(move || store.engine().shutdown()).await {
        Ok(r) => r,
        Err(e) => Err(crate::engine::Error::InvalidArgument(format!(
            "engine shutdown task failed: {e}"
        ))),
    }
}

/// What serving one connection needs.
struct Conn {
    http: hyper::server::conn::http1::Builder,
    app: Router,
    idle: Duration,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Conn {
    /// Serves HTTP/1.1 on `stream` (plain TCP, or TLS after its handshake) until it closes
    /// or the graceful shutdown ends it.
    async fn serve<S>(self, stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // Request heads are checked before hyper parses them (see `head`).
        let io = head::HeadGuard::new(limits::IdleTimeout::new(stream, self.idle));
        let svc = head::ConnService::new(TowerToHyperService::new(self.app), io.refusal());
        let conn = self
            .watcher
            .watch(self.http.serve_connection(TokioIo::new(io), svc));
        let _ = conn.await;
    }
}

/// Warns when the server listens beyond loopback without API keys.
fn warn_if_open(listener: &TcpListener, state: &AppState) {
    if state.auth.is_some() {
        return;
    }
    if let Ok(addr) = listener.local_addr() {
        if !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "auth is off (no auth.keys_file) and the server listens on a non-loopback \
                 address: anyone who can reach it can read and write every collection"
            );
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received");
}
