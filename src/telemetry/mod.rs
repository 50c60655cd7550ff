//! Telemetry: Prometheus metrics, JSON logs, OTLP traces, and the jemalloc memory budget.
//!
//! # Usage (the server)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use minidb::engine::{Engine, Options};
//! use minidb::telemetry::{Telemetry, TelemetryConfig};
//!
//! // 1. First thing in main: logs, traces, metrics, the memory sampler.
//! let telemetry = Telemetry::init(TelemetryConfig {
//!     memory_limit_bytes: None, // config `memory.limit_bytes`
//!     ..TelemetryConfig::default()
//! })?;
//! // 2. Engine options: sizes inside the budget, the budget hook, the event listener.
//! let mut opts = Options::default();
//! telemetry.memory_plan().apply(&mut opts);
//! opts.memory_budget = Some(telemetry.memory_budget());
//! opts.listener = Some(telemetry.engine_listener());
//! let engine = Arc::new(Engine::open("./data", opts)?);
//! telemetry.attach_engine(engine.clone());
//! // 3. Routes: `/metrics`, and one layer for request spans and metrics.
//! let app: axum::Router = axum::Router::new()
//!     // .route("/api/{col}/{id}", get(...)) ...
//!     .merge(telemetry.metrics_router())
//!     .layer(telemetry.http_layer());
//! // 4. Where the server refuses a request: `telemetry.metrics().record_rejection("busy")`.
//! // 5. On shutdown: `telemetry.shutdown()` flushes the spans.
//! # let _ = app; Ok(()) }
//! ```

pub mod access;
pub mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod tracing;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::engine::{Engine, EventListener, MemoryBudget};
use access::{AccessBody, AccessRecord};
use memory::{MemoryGovernor, MemoryPlan, MemorySampler, MemoryStatsCell};
use metrics::Metrics;

pub use self::tracing::extract_context;

/// Telemetry errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A metric could not be defined or registered.
    #[error("metrics: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// A setting is invalid.
    #[error("telemetry config: {0}")]
    Config(String),
    /// The OpenTelemetry pipeline could not be built.
    #[error("opentelemetry: {0}")]
    Otel(String),
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInitialized(String),
    /// A thread or runtime could not be started.
    #[error("telemetry i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A blocking task (the metrics gather) failed or was cancelled.
    #[error("telemetry task: {0}")]
    Task(String),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, with `trace_id`. The default.
    #[default]
    Json,
    /// Human-readable text.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<LogFormat, TelemetryError> {
        match s {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            o => Err(TelemetryError::Config(format!(
                "log format {o:?}: use json or text"
            ))),
        }
    }
}

/// Telemetry settings; the server maps its `Config` into this.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// The process memory limit in bytes (`memory.limit_bytes`); `None`: from the cgroup.
    pub memory_limit_bytes: Option<u64>,
    /// Where the cgroup file system is mounted. Default `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// How often jemalloc is read. Default 100 ms.
    pub sample_interval: Duration,
    /// Log level or filter when `RUST_LOG` is not set. Default `info`.
    pub log_level: String,
    /// Log format. Default JSON.
    pub log_format: LogFormat,
    /// Install the global subscriber, tracer provider and propagator. Default true; tests
    /// that build several `Telemetry` values turn it off.
    pub install_subscriber: bool,
    /// OTLP endpoint when `OTEL_EXPORTER_OTLP_ENDPOINT` is not set; `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol (`grpc`, `http/protobuf`) when `OTEL_EXPORTER_OTLP_PROTOCOL` is not set.
    pub otlp_protocol: Option<String>,
    /// `service.name` when `OTEL_SERVICE_NAME` is not set. Default `minidb`.
    pub service_name: String,
    /// Data directory for the disk space gauges (default: the attached engine's).
    pub data_dir: Option<PathBuf>,
    /// One access log line per request (target `minidb::access`, level info). Default true.
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            memory_limit_bytes: None,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            sample_interval: memory::DEFAULT_SAMPLE_INTERVAL,
            log_level: "info".into(),
            log_format: LogFormat::Json,
            install_subscriber: true,
            otlp_endpoint: None,
            otlp_protocol: None,
            service_name: "minidb".into(),
            data_dir: None,
            access_log: true,
        }
    }
}

struct Inner {
    metrics: Arc<Metrics>,
    governor: Arc<MemoryGovernor>,
    limit_source: memory::LimitSource,
    plan: MemoryPlan,
    access_log: bool,
    dropped_spans: Arc<AtomicU64>,
    tracing: Mutex<Option<self::tracing::TracingGuard>>,
    _sampler: MemorySampler,
}

/// The telemetry facade: cheap to clone, shared by the server, store and engine.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("limit", &self.inner.governor.limit())
            .field("limit_source", &self.inner.limit_source)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts logs and traces, the metrics registry and the jemalloc sampler.
    pub fn init(cfg: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        let dropped_spans = Arc::new(AtomicU64::new(0));
        let guard = self::tracing::init(&cfg, dropped_spans.clone(), cfg.install_subscriber)?;
        let (limit, limit_source) =
            memory::resolve_limit_with_source(cfg.memory_limit_bytes, &cfg.cgroup_root);
        let governor = Arc::new(MemoryGovernor::new(
            limit,
            Arc::new(MemoryStatsCell::default()),
        ));
        let sampler = MemorySampler::start_with(cfg.sample_interval, Some(governor.clone()))?;
        let metrics = Arc::new(Metrics::new(
            Some(governor.clone()),
            dropped_spans.clone(),
            cfg.data_dir.clone(),
        )?);
        let plan = memory::plan(limit);
        ::tracing::info!(
            limit,
            source = ?limit_source,
            memtable_bytes = plan.memtable_bytes,
            block_cache_bytes = plan.block_cache_bytes,
            tracing_export = guard.exporting(),
            "telemetry started"
        );
        Ok(Telemetry {
            inner: Arc::new(Inner {
                metrics,
                governor,
                limit_source,
                plan,
                access_log: cfg.access_log,
                dropped_spans,
                tracing: Mutex::new(Some(guard)),
                _sampler: sampler,
            }),
        })
    }

    /// The engine's memory budget hook (hysteresis between 80% and 90% of the limit).
    pub fn memory_budget(&self) -> Arc<dyn MemoryBudget> {
        self.inner.governor.clone()
    }

    /// The governor itself (limit, watermarks, usage).
    pub fn memory_governor(&self) -> Arc<MemoryGovernor> {
        self.inner.governor.clone()
    }

    /// The memory limit in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.inner.governor.limit()
    }

    /// The latest jemalloc statistics (cached; never reads jemalloc).
    pub fn memory_stats(&self) -> memory::MemoryStats {
        self.inner.governor.stats_cell().load()
    }

    /// Memtable and block cache sizes inside the limit.
    pub fn memory_plan(&self) -> MemoryPlan {
        self.inner.plan
    }

    /// The engine's event listener (WAL fsync, flush and compaction histograms).
    pub fn engine_listener(&self) -> Arc<dyn EventListener> {
        Arc::new(self.inner.metrics.engine_events())
    }

    /// The metrics registry and its helpers.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Reads this engine's statistics at every scrape.
    pub fn attach_engine(&self, engine: Arc<Engine>) {
        self.inner.metrics.attach_engine(engine);
    }

    /// Spans dropped by the OTLP export so far.
    pub fn spans_dropped(&self) -> u64 {
        self.inner
            .dropped_spans
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Exports queued spans now.
    pub fn flush_traces(&self) -> Result<(), TelemetryError> {
        match &*lock(&self.inner.tracing) {
            Some(g) => g.flush(),
            None => Ok(()),
        }
    }

    /// Flushes and stops the trace export; later spans are not exported.
    pub fn shutdown(&self) {
        if let Some(mut g) = lock(&self.inner.tracing).take() {
            g.shutdown();
        }
    }

    /// A router serving `GET /metrics` (Prometheus text format); merge it into the app.
    pub fn metrics_router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        let metrics = self.inner.metrics.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.scrape().await {
                        Ok(text) => (
                            [(
                                header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            text.to_string(),
                        )
                            .into_response(),
                        Err(e) => {
                            ::tracing::error!(error = %e, "metrics scrape failed");
                            let body = serde_json::json!({"error": "metrics scrape failed", "status": 500});
                            (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
                        }
                    }
                }
            }),
        )
    }

    /// The request layer: one span, metrics by route template, in-flight count, W3C
    /// `traceparent`, and the access log. Add it with `Router::layer` (after the routes).
    pub fn http_layer(&self) -> HttpLayer {
        HttpLayer {
            metrics: self.inner.metrics.clone(),
            access_log: self.inner.access_log,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A tower layer adding [`HttpService`] around each route.
#[derive(Clone)]
pub struct HttpLayer {
    metrics: Arc<Metrics>,
    access_log: bool,
}

impl HttpLayer {
    /// A layer recording into `metrics`, with the access log on (for tests and custom
    /// setups).
    pub fn new(metrics: Arc<Metrics>) -> HttpLayer {
        HttpLayer {
            metrics,
            access_log: true,
        }
    }
}

impl<S> tower::Layer<S> for HttpLayer {
    type Service = HttpService<S>;
    fn layer(&self, inner: S) -> HttpService<S> {
        HttpService {
            inner,
            metrics: self.metrics.clone(),
            access_log: self.access_log,
        }
    }
}

/// The request span, metrics and access log around one service; see
/// [`Telemetry::http_layer`].
#[derive(Clone)]
pub struct HttpService<S> {
    inner: S,
    metrics: Arc<Metrics>,
    access_log: bool,
}

/// The route label for unmatched requests (404s): raw paths never become labels.
pub const UNMATCHED_ROUTE: &str = "unmatched";

impl<S, B, RB> tower::Service<Request<B>> for HttpService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<AccessBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
        let method = req.method().as_str().to_owned();
        let path = self
            .access_log
            .then(|| access::truncate_path(req.uri().path(), access::MAX_LOGGED_PATH));
        let span = ::tracing::info_span!(
            access::REQUEST_SPAN,
            otel.name = %format!("HTTP {method} {route}"),
            otel.kind = "server",
            otel.status_code = ::tracing::field::Empty,
            http.route = %route,
            http.request.method = %method,
            http.response.status_code = ::tracing::field::Empty,
        );
        let parent = extract_context(req.headers());
        if opentelemetry::trace::TraceContextExt::span(&parent)
            .span_context()
            .is_valid()
        {
            let _ = span.set_parent(parent);
        }
        let metrics = self.metrics.clone();
        let guard = metrics.in_flight();
        let start = Instant::now();
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        Box::pin(async move {
            let result = ::tracing::Instrument::instrument(fut, span.clone()).await;
            let status = match &result {
                Ok(resp) => resp.status(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            span.record("http.response.status_code", i64::from(status.as_u16()));
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
            metrics.record_request(&route, &method, status.as_u16(), start.elapsed());
            drop(guard);
            result.map(|resp| {
                let record = path.map(|path| AccessRecord {
                    span,
                    method,
                    route,
                    path,
                    status: status.as_u16(),
                    start,
                });
                resp.map(|body| AccessBody::new(body, record))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tracing_subscriber::layer::SubscriberExt;

    /// Log lines written into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn objects(&self) -> Vec<serde_json::Value> {
            String::from_utf8_lossy(&lock(&self.0))
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    /// An ERROR inside a handler names the request's route and method (from the span) and
    /// its status; the access line follows with the same route.
    #[test]
    fn error_lines_inside_a_request_carry_route_method_and_status() {
        use axum::routing::get;
        use tower::ServiceExt;
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::registry()
            .with(access::RequestFieldsLayer)
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(self::tracing::JsonLines)
                    .with_writer(move || w.clone()),
            );
        let metrics = Arc::new(Metrics::new(None, Arc::default(), None).expect("metrics"));
        let app: axum::Router = axum::Router::new()
            .route(
                "/api/{col}/{id}",
                get(|| async {
                    ::tracing::error!(status = 500u16, "internal error");
                    ::tracing::warn!("no status of its own");
                    StatusCode::INTERNAL_SERVER_ERROR
                }),
            )
            .layer(HttpLayer::new(metrics));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        ::tracing::subscriber::with_default(subscriber, || {
            let req = Request::get("/api/users/42")
                .body(axum::body::Body::empty())
                .expect("request");
            let resp = rt.block_on(app.oneshot(req)).expect("infallible");
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        });
        let lines = out.objects();
        let error = lines
            .iter()
            .find(|o| o["message"] == "internal error")
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert_eq!(error["level"], "ERROR");
        assert_eq!(error["route"], "/api/{col}/{id}");
        assert_eq!(error["method"], "GET");
        assert_eq!(error["status"], 500);
        let warn = lines
            .iter()
            .find(|o| o["message"] == "no status of its own")
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert_eq!(warn["route"], "/api/{col}/{id}");
        assert_eq!(warn["method"], "GET");
        let access = lines
            .iter()
            .find(|o| o["target"] == access::ACCESS_TARGET)
            .unwrap_or_else(|| panic!("{lines:?}"));
        assert_eq!(access["status"], 500);
        assert_eq!(access["path"], "/api/users/42");
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("json".parse::<LogFormat>().ok(), Some(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>().ok(), Some(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
