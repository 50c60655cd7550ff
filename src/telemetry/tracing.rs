//! Logs and traces: a `tracing` subscriber writing JSON lines (with `trace_id`), and an
//! OpenTelemetry pipeline exporting spans over OTLP when it is enabled.
//!
//! Export is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! or the config's endpoint) is set and `OTEL_SDK_DISABLED` is not `true`. The standard
//! variables are honoured: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (resource),
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`), `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG` (read by the SDK), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (read by the exporter).
//!
//! Spans always get OpenTelemetry ids (so logs carry `trace_id` and an incoming
//! `traceparent` is continued) even when nothing is exported.
//!
//! Export goes through [`CountingBatchProcessor`]: a bounded queue drained by one thread,
//! so a request never waits for the collector; spans that do not fit in the queue, or whose
//! export fails, are dropped and counted (`minidb_otel_spans_dropped_total`).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Layer as _, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::access::{RequestFields, RequestFieldsLayer};
use super::lifecycle::LIFECYCLE_TARGET;
use super::{LogFormat, TelemetryConfig, TelemetryError};
use crate::redact::{redact_url, redact_urls};

/// Filter directives added when `RUST_LOG` is not set: the exporter's own transport stays
/// quiet (and out of the traces it exports).
const QUIET_DEPENDENCIES: &str = "h2=warn,hyper=warn,hyper_util=warn,tonic=warn,tower=warn,reqwest=warn,opentelemetry=warn,opentelemetry_sdk=warn,opentelemetry_otlp=warn";

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// gRPC (tonic), usually port 4317.
    Grpc,
    /// HTTP with protobuf bodies (blocking reqwest client), usually port 4318.
    HttpProtobuf,
}

impl OtlpProtocol {
    /// Parses `grpc` or `http/protobuf`.
    pub fn parse(s: &str) -> Result<OtlpProtocol, TelemetryError> {
        match s.trim() {
            "grpc" => Ok(OtlpProtocol::Grpc),
            "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
            other => Err(TelemetryError::Config(format!(
                "OTLP protocol {other:?} is not supported (use grpc or http/protobuf)"
            ))),
        }
    }
}

/// What the OTLP export will do, resolved from the environment and the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The endpoint given to the exporter; `None` lets the exporter read the env itself.
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// The endpoint as configured (environment or config), for the log line; it may carry
    /// credentials, so it is only ever logged through `redact_url`.
    pub configured: String,
}

fn env_nonempty(get: &dyn Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Decides whether and how to export, from `get` (the environment) and the config.
///
/// `None` when export is off: no endpoint anywhere, or `OTEL_SDK_DISABLED=true`. The
/// protocol is `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, `OTEL_EXPORTER_OTLP_PROTOCOL`, the
/// config, else guessed from the port (`4317` → grpc) and otherwise `http/protobuf` (the
/// OpenTelemetry default). An endpoint from the environment is left to the exporter (which
/// adds `/v1/traces` to the generic one for HTTP); one from the config is used as given,
/// with `/v1/traces` added for HTTP when it has no path.
pub fn resolve_otlp(
    cfg: &TelemetryConfig,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<OtlpSettings>, TelemetryError> {
    if env_nonempty(get, "OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let env_endpoint = env_nonempty(get, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .or_else(|| env_nonempty(get, "OTEL_EXPORTER_OTLP_ENDPOINT"));
    let cfg_endpoint = cfg
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let shown = match (&env_endpoint, cfg_endpoint) {
        (Some(e), _) => e.clone(),
        (None, Some(c)) => c.to_string(),
        (None, None) => return Ok(None),
    };
    let protocol = match env_nonempty(get, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| env_nonempty(get, "OTEL_EXPORTER_OTLP_PROTOCOL"))
        .or_else(|| cfg.otlp_protocol.clone())
    {
        Some(p) => OtlpProtocol::parse(&p)?,
        None if port_of(&shown) == Some(4317) => OtlpProtocol::Grpc,
        None => OtlpProtocol::HttpProtobuf,
    };
    let endpoint = match (env_endpoint, cfg_endpoint) {
        (Some(_), _) => None,
        (None, Some(c)) if protocol == OtlpProtocol::HttpProtobuf => Some(with_traces_path(c)),
        (None, Some(c)) => Some(c.to_string()),
        (None, None) => None,
    };
    Ok(Some(OtlpSettings {
        endpoint,
        protocol,
        configured: shown,
    }))
}

fn port_of(endpoint: &str) -> Option<u16> {
    endpoint.parse::<http::Uri>().ok()?.port_u16()
}

fn with_traces_path(endpoint: &str) -> String {
    match endpoint.parse::<http::Uri>() {
        Ok(u) if u.path() == "/" || u.path().is_empty() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        _ => endpoint.to_string(),
    }
}

/// The resource: the SDK's detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`),
/// with the config's service name only when the environment names none.
fn resource(cfg: &TelemetryConfig, get: &dyn Fn(&str) -> Option<String>) -> Resource {
    let env_names_service = env_nonempty(get, "OTEL_SERVICE_NAME").is_some()
        || env_nonempty(get, "OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
            a.split(',')
                .any(|kv| kv.trim().starts_with("service.name="))
        });
    let b = Resource::builder()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    if env_names_service {
        b.build()
    } else {
        b.with_service_name(cfg.service_name.clone()).build()
    }
}

/// Keeps the tracer provider (and the gRPC runtime) alive; flushes and stops them on drop.
pub struct TracingGuard {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
    exporting: bool,
}

impl fmt::Debug for TracingGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TracingGuard")
            .field("exporting", &self.exporting)
            .finish()
    }
}

impl TracingGuard {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// The tracer provider.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports the queued spans now.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Otel(e.to_string()))
    }

    /// Flushes and stops the export (later spans are dropped).
    pub fn shutdown(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            if !matches!(e, OTelSdkError::AlreadyShutdown) {
                tracing::warn!(error = %redact_urls(&e.to_string()), "trace export shutdown failed");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Builds the tracer provider and, when `install` is true, installs the global subscriber
/// (logs + OpenTelemetry layer), the global tracer provider and the W3C propagator.
pub fn init(
    cfg: &TelemetryConfig,
    dropped: Arc<AtomicU64>,
    install: bool,
) -> Result<TracingGuard, TelemetryError> {
    let get = |k: &str| std::env::var(k).ok();
    let otlp = resolve_otlp(cfg, &get)?;
    let mut builder = SdkTracerProvider::builder().with_resource(resource(cfg, &get));
    let mut runtime = None;
    if let Some(settings) = &otlp {
        let (exporter, rt) = build_exporter(settings)?;
        runtime = rt;
        builder = builder.with_span_processor(CountingBatchProcessor::new(
            exporter,
            BatchSettings::default(),
            dropped,
        )?);
    }
    let provider = builder.build();
    let guard = TracingGuard {
        provider,
        runtime,
        exporting: otlp.is_some(),
    };
    if install {
        install_subscriber(cfg, &guard.provider)?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(guard.provider.clone());
        if let Some(s) = &otlp {
            tracing::info!(
                protocol = ?s.protocol,
                endpoint = %redact_url(&s.configured),
                "exporting traces over OTLP"
            );
        }
    }
    Ok(guard)
}

/// Builds the span exporter; gRPC also gets a one-thread tokio runtime of its own to drive
/// its connections, so export works whatever runtime (or none) the caller runs on.
fn build_exporter(
    s: &OtlpSettings,
) -> Result<
    (
        opentelemetry_otlp::SpanExporter,
        Option<tokio::runtime::Runtime>,
    ),
    TelemetryError,
> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let err = |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Otel(e.to_string());
    match s.protocol {
        OtlpProtocol::Grpc => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("minidb-otlp")
                .enable_all()
                .build()
                .map_err(TelemetryError::Io)?;
            let exporter = {
                let _enter = rt.enter();
                let mut b = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(Protocol::Grpc);
                if let Some(e) = &s.endpoint {
                    b = b.with_endpoint(e.clone());
                }
                b.build().map_err(err)?
            };
            Ok((exporter, Some(rt)))
        }
        OtlpProtocol::HttpProtobuf => {
            let mut b = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(e) = &s.endpoint {
                b = b.with_endpoint(e.clone());
            }
            Ok((b.build().map_err(err)?, None))
        }
    }
}

fn install_subscriber(
    cfg: &TelemetryConfig,
    provider: &SdkTracerProvider,
) -> Result<(), TelemetryError> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => format!("{},{QUIET_DEPENDENCIES}", cfg.log_level),
    };
    let mut filter = EnvFilter::try_new(&directives)
        .map_err(|e| TelemetryError::Config(format!("log level: {e}")))?;
    // Lifecycle lines (the address tools wait for) pass at every level, unless the filter
    // names their target itself.
    if !directives.contains(LIFECYCLE_TARGET) {
        let lifecycle = format!("{LIFECYCLE_TARGET}=info")
            .parse()
            .map_err(|e| TelemetryError::Config(format!("log level: {e}")))?;
        filter = filter.add_directive(lifecycle);
    }
    // The log level filters the logs only: spans at info and above (requests, store,
    // engine) always get OpenTelemetry ids, so a request has a trace id (logged, and in 500
    // bodies) even when the log level hides its span.
    let spans: tracing_subscriber::filter::Targets =
        format!("info,{QUIET_DEPENDENCIES}")
            .parse()
            .map_err(|e| TelemetryError::Config(format!("span filter: {e}")))?;
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("minidb"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(spans);
    let json = (cfg.log_format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(std::io::stdout)
    });
    let text = (cfg.log_format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stdout));
    tracing_subscriber::registry()
        .with(RequestFieldsLayer)
        .with(otel)
        .with(tracing_subscriber::Layer::and_then(json, text).with_filter(filter))
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInitialized(e.to_string()))
}

/// Reads W3C `traceparent`/`tracestate` from request headers (an empty context if absent
/// or invalid); give it to `tracing_opentelemetry::OpenTelemetrySpanExt::set_parent`.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (`message`
/// included), `span` (innermost span name), `trace_id`/`span_id` when there is a span
/// context, and inside a request `route`, `method` and (once known) `status` of the request
/// span. No other span fields are logged (so never request bodies).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        obj.insert("timestamp".into(), ts.into());
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        let mut visitor = JsonVisitor(&mut obj);
        event.record(&mut visitor);
        if let Some(scope) = ctx.event_scope() {
            let fields = scope
                .into_iter()
                .find_map(|s| s.extensions().get::<RequestFields>().cloned());
            if let Some(f) = fields {
                // The event's own fields win (an error event may name the status itself).
                let mut add = |k: &str, v: Option<serde_json::Value>| {
                    if let Some(v) = v {
                        obj.entry(k.to_string()).or_insert(v);
                    }
                };
                add("route", f.route.map(Into::into));
                add("method", f.method.map(Into::into));
                add("status", f.status.map(Into::into));
            }
        }
        if let Some(span) = ctx.parent_span() {
            obj.insert("span".into(), span.name().into());
            let id = span.id();
            let cx = tracing::dispatcher::get_default(|d| {
                tracing_opentelemetry::get_otel_context(&id, d)
            });
            if let Some(cx) = cx {
                let sc = cx.span().span_context().clone();
                if sc.is_valid() {
                    obj.insert("trace_id".into(), sc.trace_id().to_string().into());
                    obj.insert("span_id".into(), sc.span_id().to_string().into());
                }
            }
        }
        let line = serde_json::to_string(&obj).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_i64(&mut self, f: &tracing::field::Field, v: i64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_bool(&mut self, f: &tracing::field::Field, v: bool) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().into(), v.into());
    }
    fn record_error(&mut self, f: &tracing::field::Field, v: &(dyn std::error::Error + 'static)) {
        self.0.insert(f.name().into(), v.to_string().into());
    }
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().into(), format!("{v:?}").into());
    }
}

/// Queue and batch sizes of [`CountingBatchProcessor`].
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Spans waiting for export at most; more are dropped and counted. Default 2048.
    pub max_queue: usize,
    /// Spans per export call at most. Default 512.
    pub max_batch: usize,
    /// Export at least this often when spans are waiting. Default 1 s.
    pub delay: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings {
            max_queue: 2048,
            max_batch: 512,
            delay: Duration::from_secs(1),
        }
    }
}

enum Msg {
    Span(Box<SpanData>),
    Resource(Resource),
    Flush(SyncSender<OTelSdkResult>),
    Shutdown(SyncSender<OTelSdkResult>),
}

/// A batch span processor that counts what it drops: spans refused by the full queue
/// (`on_end` never waits) and spans of failed exports. The SDK's `BatchSpanProcessor`
/// drops silently (its counter is private in opentelemetry_sdk 0.33).
pub struct CountingBatchProcessor {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    warned: Arc<AtomicBool>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for CountingBatchProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingBatchProcessor")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

impl CountingBatchProcessor {
    /// Starts the export thread.
    pub fn new<E: SpanExporter + 'static>(
        exporter: E,
        settings: BatchSettings,
        dropped: Arc<AtomicU64>,
    ) -> Result<CountingBatchProcessor, TelemetryError> {
        let (tx, rx) = mpsc::sync_channel(settings.max_queue.max(1));
        let warned = Arc::new(AtomicBool::new(false));
        let (d, w) = (dropped.clone(), warned.clone());
        let handle = std::thread::Builder::new()
            .name("minidb-otlp-batch".into())
            .spawn(move || export_loop(exporter, rx, settings, &d, &w))
            .map_err(TelemetryError::Io)?;
        Ok(CountingBatchProcessor {
            tx,
            dropped,
            warned,
            handle: Mutex::new(Some(handle)),
        })
    }

    fn call(
        &self,
        make: impl FnOnce(SyncSender<OTelSdkResult>) -> Msg,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (rtx, rrx) = mpsc::sync_channel(1);
        self.tx
            .send(make(rtx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        match rrx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(OTelSdkError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(OTelSdkError::AlreadyShutdown),
        }
    }
}

fn export_loop<E: SpanExporter>(
    mut exporter: E,
    rx: Receiver<Msg>,
    s: BatchSettings,
    dropped: &AtomicU64,
    warned: &AtomicBool,
) {
    let _suppress = opentelemetry::Context::enter_telemetry_suppressed_scope();
    let mut batch: Vec<SpanData> = Vec::with_capacity(s.max_batch);
    let mut deadline = Instant::now() + s.delay;
    let export = |exporter: &E, batch: &mut Vec<SpanData>| -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        let spans = std::mem::replace(batch, Vec::with_capacity(s.max_batch));
        let r = futures_executor::block_on(exporter.export(spans));
        match &r {
            Ok(()) => warned.store(false, Ordering::Relaxed),
            Err(e) => {
                dropped.fetch_add(n, Ordering::Relaxed);
                if !warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %redact_urls(&e.to_string()),
                        spans = n,
                        "span export failed; dropping spans until it recovers"
                    );
                }
            }
        }
        r
    };
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(span)) => {
                batch.push(*span);
                if batch.len() >= s.max_batch {
                    let _ = export(&exporter, &mut batch);
                    deadline = Instant::now() + s.delay;
                }
            }
            Ok(Msg::Resource(r)) => exporter.set_resource(&r),
            Ok(Msg::Flush(reply)) => {
                let mut r = Ok(());
                while let Ok(Msg::Span(span)) = rx.try_recv() {
                    batch.push(*span);
                    if batch.len() >= s.max_batch {
                        r = r.and(export(&exporter, &mut batch));
                    }
                }
                r = r.and(export(&exporter, &mut batch));
                let _ = reply.send(r.and(exporter.force_flush()));
            }
            Ok(Msg::Shutdown(reply)) => {
                let r = export(&exporter, &mut batch);
                let _ = reply.send(r.and(exporter.shutdown()));
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = export(&exporter, &mut batch);
                deadline = Instant::now() + s.delay;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = export(&exporter, &mut batch);
                let _ = exporter.shutdown();
                return;
            }
        }
    }
}

impl SpanProcessor for CountingBatchProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!("span queue full; dropping spans");
                }
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.call(Msg::Flush, Duration::from_secs(30))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let r = self.call(Msg::Shutdown, timeout);
        let handle = match self.handle.lock() {
            Ok(mut h) => h.take(),
            Err(p) => p.into_inner().take(),
        };
        if r.is_ok() {
            if let Some(h) = handle {
                let _ = h.join();
            }
        }
        r
    }

    fn set_resource(&mut self, resource: &Resource) {
        let _ = self.tx.send(Msg::Resource(resource.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn export_is_off_without_endpoint_or_when_disabled() {
        let cfg = TelemetryConfig::default();
        assert_eq!(resolve_otlp(&cfg, &env(&[])).ok(), Some(None));
        let on = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert_eq!(resolve_otlp(&cfg, &on).ok(), Some(None));
    }

    #[test]
    fn protocol_and_endpoint_resolution() {
        let cfg = TelemetryConfig::default();
        let r = resolve_otlp(
            &cfg,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")]),
        );
        assert_eq!(
            r.ok().flatten(),
            Some(OtlpSettings {
                endpoint: None,
                protocol: OtlpProtocol::Grpc,
                configured: "http://c:4317".into(),
            })
        );
        let r = resolve_otlp(
            &cfg,
            &env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]),
        );
        assert_eq!(
            r.ok().flatten().map(|s| s.protocol),
            Some(OtlpProtocol::HttpProtobuf)
        );
        let cfg = TelemetryConfig {
            otlp_endpoint: Some("http://c:4318".into()),
            ..TelemetryConfig::default()
        };
        let r = resolve_otlp(&cfg, &env(&[]));
        assert_eq!(
            r.ok().flatten(),
            Some(OtlpSettings {
                endpoint: Some("http://c:4318/v1/traces".into()),
                protocol: OtlpProtocol::HttpProtobuf,
                configured: "http://c:4318".into(),
            })
        );
        let bad = resolve_otlp(&cfg, &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]));
        assert!(bad.is_err());
    }

    #[test]
    fn extracts_traceparent() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let cx = extract_context(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let none = extract_context(&http::HeaderMap::new());
        assert!(!none.span().span_context().is_valid());
    }

    #[derive(Debug)]
    struct Failing(Arc<AtomicU64>);

    impl SpanExporter for Failing {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            Err(OTelSdkError::InternalFailure("collector down".into()))
        }
    }

    #[test]
    fn drops_are_counted_and_never_block() {
        use opentelemetry::trace::{Tracer, TracerProvider as _};
        let dropped = Arc::new(AtomicU64::new(0));
        let attempted = Arc::new(AtomicU64::new(0));
        let settings = BatchSettings {
            max_queue: 8,
            max_batch: 4,
            delay: Duration::from_millis(10),
        };
        let p = CountingBatchProcessor::new(Failing(attempted.clone()), settings, dropped.clone())
            .expect("processor");
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        let tracer = provider.tracer("test");
        let start = Instant::now();
        for _ in 0..200 {
            tracer.in_span("s", |_| {});
        }
        // 200 spans against an exporter taking 50 ms per call: on_end never waited.
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        let _ = provider.shutdown();
        let (d, a) = (
            dropped.load(Ordering::Relaxed),
            attempted.load(Ordering::Relaxed),
        );
        assert_eq!(
            d, 200,
            "every span is dropped: failed export ({a}) or full queue"
        );
        assert!(a > 0 && a < 200, "{a}");
    }
}
