//! The Prometheus registry: every name of `docs/METRICS.md`, and nothing else.
//!
//! Request metrics, rejections and background-event histograms are updated as things
//! happen. Engine counters, memory figures, disk space and collection sizes are read at
//! scrape time by [`ScrapeCollector`], from `Engine::stats()` and the cached jemalloc
//! statistics, so they cost nothing between scrapes.
//!
//! A scrape is blocking work (the engine lists the WAL directory, `statvfs` on the data
//! directory, the collection statistics are read from the store, the process collector
//! reads `/proc`), so [`Metrics::scrape`] runs it on a blocking thread, one gather at a
//! time: a scrape that arrives while one is running waits for the next and shares it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;

use parking_lot::RwLock;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::memory::{MemoryGovernor, MemoryStatsCell};
use super::TelemetryError;
use crate::engine::{Engine, EventListener};

/// The rejection reasons of `minidb_http_rejections_total`.
pub const REJECTION_REASONS: [&str; 6] = [
    "busy",
    "memory",
    "concurrency",
    "too_large",
    "timeout",
    "disk_full",
];

/// The reasons of `minidb_auth_failures_total`.
pub const AUTH_FAILURE_REASONS: [&str; 3] = ["missing", "invalid", "forbidden"];
/// The files of `minidb_reload_errors_total`.
pub const RELOADED_FILES: [&str; 2] = ["keys", "tls"];
/// The reasons of `minidb_tls_handshake_failures_total`.
pub const HANDSHAKE_FAILURES: [&str; 2] = ["timeout", "error"];

/// Request latency buckets, in seconds.
const HTTP_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// WAL fsync buckets, in seconds (the alerts use 0.5 s and 1 s).
const FSYNC_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Flush and compaction buckets, in seconds.
const BACKGROUND_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A closure giving documents per collection, called at scrape time.
pub type CollectionDocsSource = Box<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// The registry and the metrics updated as things happen.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_in_flight: IntGauge,
    http_rejections: IntCounterVec,
    auth_failures: IntCounterVec,
    reload_errors: IntCounterVec,
    reload_failing: IntGaugeVec,
    handshake_failures: IntCounterVec,
    wal_fsync: Histogram,
    flush_duration: Histogram,
    compaction_duration: Histogram,
    documents_expired: IntCounter,
    sweep_duration: Histogram,
    expiry_backlog: IntGauge,
    changes_pruned: IntCounter,
    scrape: Arc<ScrapeCollector>,
    gate: ScrapeGate,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> Result<C, TelemetryError> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// A registry with every metric registered; `dropped_spans` is the exporter's counter.
    pub fn new(
        governor: Option<Arc<MemoryGovernor>>,
        dropped_spans: Arc<AtomicU64>,
        data_dir: Option<PathBuf>,
    ) -> Result<Metrics, TelemetryError> {
        let r = Registry::new();
        let http_requests = reg(
            &r,
            IntCounterVec::new(
                Opts::new("minidb_http_requests_total", "HTTP requests answered."),
                &["route", "method", "status_class"],
            )?,
        )?;
        let http_duration = reg(
            &r,
            HistogramVec::new(
                HistogramOpts::new(
                    "minidb_http_request_duration_seconds",
                    "HTTP request latency in seconds.",
                )
                .buckets(HTTP_BUCKETS.to_vec()),
                &["route", "method"],
            )?,
        )?;
        let http_in_flight = reg(
            &r,
            IntGauge::new(
                "minidb_http_requests_in_flight",
                "HTTP requests being served.",
            )?,
        )?;
        let http_rejections = reg(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "minidb_http_rejections_total",
                    "HTTP requests refused by a limit.",
                ),
                &["reason"],
            )?,
        )?;
        for reason in REJECTION_REASONS {
            http_rejections.with_label_values(&[reason]);
        }
        let auth_failures = labelled(
            &r,
            "minidb_auth_failures_total",
            "Requests refused for their API key.",
            "reason",
            &AUTH_FAILURE_REASONS,
        )?;
        let reload_errors = labelled(
            &r,
            "minidb_reload_errors_total",
            "New versions of a watched file (keys, TLS pair) refused; the old one stays in use.",
            "file",
            &RELOADED_FILES,
        )?;
        let reload_failing = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "minidb_reload_failing",
                    "1 while the file on disk is a version that was refused (the old one is in use).",
                ),
                &["file"],
            )?,
        )?;
        for f in RELOADED_FILES {
            reload_failing.with_label_values(&[f]);
        }
        let handshake_failures = labelled(
            &r,
            "minidb_tls_handshake_failures_total",
            "TLS handshakes that failed or did not finish in time.",
            "reason",
            &HANDSHAKE_FAILURES,
        )?;
        let wal_fsync = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "minidb_wal_fsync_duration_seconds",
                    "WAL fsync latency in seconds.",
                )
                .buckets(FSYNC_BUCKETS.to_vec()),
            )?,
        )?;
        let flush_duration = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "minidb_flush_duration_seconds",
                    "Memtable flush duration in seconds.",
                )
                .buckets(BACKGROUND_BUCKETS.to_vec()),
            )?,
        )?;
        let compaction_duration = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "minidb_compaction_duration_seconds",
                    "Compaction duration in seconds.",
                )
                .buckets(BACKGROUND_BUCKETS.to_vec()),
            )?,
        )?;
        let documents_expired = reg(
            &r,
            IntCounter::new(
                "minidb_documents_expired_total",
                "Expired documents deleted by the sweeper.",
            )?,
        )?;
        let sweep_duration = reg(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "minidb_expiry_sweep_duration_seconds",
                    "Duration of one expiry sweeper pass in seconds.",
                )
                .buckets(BACKGROUND_BUCKETS.to_vec()),
            )?,
        )?;
        let expiry_backlog = reg(
            &r,
            IntGauge::new(
                "minidb_expiry_backlog_documents",
                "Documents expired but not yet deleted by the sweeper (counted up to 100000).",
            )?,
        )?;
        let changes_pruned = reg(
            &r,
            IntCounter::new(
                "minidb_changes_pruned_total",
                "Deletions removed from the change feed after their retention.",
            )?,
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("minidb_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(build_info))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let scrape = Arc::new(ScrapeCollector::new(governor, dropped_spans, data_dir));
        r.register(Box::new(ScrapeHandle(scrape.clone())))?;

        Ok(Metrics {
            registry: r,
            http_requests,
            http_duration,
            http_in_flight,
            http_rejections,
            auth_failures,
            reload_errors,
            reload_failing,
            handshake_failures,
            wal_fsync,
            flush_duration,
            compaction_duration,
            documents_expired,
            sweep_duration,
            expiry_backlog,
            changes_pruned,
            scrape,
            gate: ScrapeGate::default(),
        })
    }

    /// One expiry sweeper pass: documents it deleted, how long it took, what is still due.
    pub fn record_sweep(&self, expired: u64, took: Duration, backlog: u64) {
        self.documents_expired.inc_by(expired);
        self.sweep_duration.observe(took.as_secs_f64());
        self.expiry_backlog
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
    }

    /// Deletions pruned from the change feed.
    pub fn record_pruned(&self, n: u64) {
        self.changes_pruned.inc_by(n);
    }

    /// The underlying registry (to register more collectors).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request, by route template (never a raw path).
    pub fn record_request(&self, route: &str, method: &str, status: u16, duration: Duration) {
        self.http_requests
            .with_label_values(&[route, method, status_class(status)])
            .inc();
        self.http_duration
            .with_label_values(&[route, method])
            .observe(duration.as_secs_f64());
    }

    /// Creates the series of a route with zero values, so that they show before traffic.
    pub fn prime_route(&self, route: &str, method: &str) {
        self.http_duration.with_label_values(&[route, method]);
    }

    /// Counts one request refused by a limit; `reason` is one of [`REJECTION_REASONS`]
    /// (anything else is counted as `busy`, to keep the label bounded).
    pub fn record_rejection(&self, reason: &str) {
        let reason = if REJECTION_REASONS.contains(&reason) {
            reason
        } else {
            "busy"
        };
        self.http_rejections.with_label_values(&[reason]).inc();
    }

    /// Counts one request refused for its key; `reason` is one of [`AUTH_FAILURE_REASONS`].
    pub fn record_auth_failure(&self, reason: &str) {
        bounded_inc(&self.auth_failures, &AUTH_FAILURE_REASONS, reason);
    }

    /// Counts one refused version of a watched file (`keys` or `tls`).
    pub fn record_reload_error(&self, file: &str) {
        bounded_inc(&self.reload_errors, &RELOADED_FILES, file);
    }

    /// Whether the watched `file` on disk is a refused version now.
    pub fn set_reload_failing(&self, file: &str, failing: bool) {
        if RELOADED_FILES.contains(&file) {
            self.reload_failing
                .with_label_values(&[file])
                .set(i64::from(failing));
        }
    }

    /// Counts one failed TLS handshake (`timeout` or `error`).
    pub fn record_handshake_failure(&self, reason: &str) {
        bounded_inc(&self.handshake_failures, &HANDSHAKE_FAILURES, reason);
    }

    /// A guard counting one in-flight request until it is dropped.
    pub fn in_flight(&self) -> InFlightGuard {
        self.http_in_flight.inc();
        InFlightGuard(self.http_in_flight.clone())
    }

    /// Reads engine statistics at scrape time from now on.
    pub fn attach_engine(&self, engine: Arc<Engine>) {
        *self.scrape.engine.write() = Some(engine);
    }

    /// Sets the documents per collection (replacing the previous set).
    pub fn set_collection_docs(&self, docs: Vec<(String, u64)>) {
        *self.scrape.collection_docs.write() = docs;
    }

    /// Asks `source` for the documents per collection at every scrape (it wins over
    /// [`Metrics::set_collection_docs`]). It may block (it runs on the scrape's blocking
    /// thread), but it delays the scrape.
    pub fn set_collection_docs_source(&self, source: CollectionDocsSource) {
        *self.scrape.collection_source.write() = Some(source);
    }

    /// Sets the directory whose file system is reported as disk available/capacity.
    pub fn set_data_dir(&self, dir: PathBuf) {
        *self.scrape.data_dir.write() = Some(dir);
    }

    /// The Prometheus text exposition, gathered on a blocking thread (see the module
    /// documentation): at most one gather runs at a time, and a scrape that arrives while
    /// one is running gets the next one's result. Cancelling the caller does not cancel the
    /// gather, so the limit holds even for scrapes that time out.
    pub async fn scrape(self: &Arc<Self>) -> Result<Arc<str>, TelemetryError> {
        let ticket = self.gate.arrivals.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.gate.last.clone().lock_owned().await;
        if let Some((covers, text)) = &*last {
            if *covers >= ticket {
                return Ok(text.clone());
            }
        }
        let metrics = self.clone();
        let gather = tokio::spawn(async move {
            // Every scrape that arrived up to now is served by this gather.
            let covers = metrics.gate.arrivals.load(Ordering::SeqCst);
            let m = metrics.clone();
            let text: Arc<str> = tokio::task::spawn_blocking(move || m.render())
                .await
                .map_err(|e| TelemetryError::Task(e.to_string()))?
                .into();
            *last = Some((covers, text.clone()));
            Ok(text)
        });
        gather
            .await
            .map_err(|e| TelemetryError::Task(e.to_string()))?
    }

    /// Scrapes counted by [`Metrics::scrape`] so far (served by a gather or shared).
    #[cfg(test)]
    fn scrape_arrivals(&self) -> u64 {
        self.gate.arrivals.load(Ordering::SeqCst)
    }

    /// The Prometheus text exposition of every metric. Blocking (file system reads): the
    /// server calls it through [`Metrics::scrape`].
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        match TextEncoder::new().encode_to_string(&families) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "encoding metrics failed");
                String::new()
            }
        }
    }
}

/// A counter with one label whose values are `known`, each series created at zero.
fn labelled(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
    known: &[&str],
) -> Result<IntCounterVec, TelemetryError> {
    let c = reg(r, IntCounterVec::new(Opts::new(name, help), &[label])?)?;
    for v in known {
        c.with_label_values(&[v]);
    }
    Ok(c)
}

/// Increments `value`'s series if it is one of `known` (labels stay bounded).
fn bounded_inc(c: &IntCounterVec, known: &[&str], value: &str) {
    if known.contains(&value) {
        c.with_label_values(&[value]).inc();
    }
}

/// The single-flight state of [`Metrics::scrape`]: arrivals are numbered, and the last
/// gather's text is kept with the highest arrival number it serves.
#[derive(Default)]
struct ScrapeGate {
    arrivals: AtomicU64,
    last: Arc<AsyncMutex<Option<LastScrape>>>,
}

/// The highest arrival number a gather serves, and its text.
type LastScrape = (u64, Arc<str>);

/// `2xx`, `3xx`, `4xx` or `5xx` (1xx counts as `2xx`, anything above 5xx as `5xx`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        0..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Decrements the in-flight gauge when dropped (also when the request is cancelled).
#[derive(Debug)]
pub struct InFlightGuard(IntGauge);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Feeds the engine's background events into the duration histograms.
#[derive(Debug, Clone)]
pub struct EngineEvents {
    wal_fsync: Histogram,
    flush_duration: Histogram,
    compaction_duration: Histogram,
}

impl Metrics {
    /// The engine event listener writing into this registry.
    pub fn engine_events(&self) -> EngineEvents {
        EngineEvents {
            wal_fsync: self.wal_fsync.clone(),
            flush_duration: self.flush_duration.clone(),
            compaction_duration: self.compaction_duration.clone(),
        }
    }
}

impl EventListener for EngineEvents {
    fn on_wal_sync(&self, duration: Duration) {
        self.wal_fsync.observe(duration.as_secs_f64());
    }

    fn on_flush(&self, duration: Duration, bytes: u64) {
        self.flush_duration.observe(duration.as_secs_f64());
        tracing::debug!(
            duration_ms = duration.as_millis() as u64,
            bytes,
            "memtable flushed"
        );
    }

    fn on_compaction(&self, duration: Duration, bytes: u64) {
        self.compaction_duration.observe(duration.as_secs_f64());
        tracing::debug!(
            duration_ms = duration.as_millis() as u64,
            bytes,
            "compaction finished"
        );
    }
}

/// Builds metric families from values read at scrape time.
#[derive(Default)]
struct Families {
    out: Vec<MetricFamily>,
    descs: Vec<Desc>,
}

impl Families {
    fn push<C: Collector>(&mut self, c: Result<C, prometheus::Error>) -> Option<C> {
        match c {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "bad metric definition");
                None
            }
        }
    }

    fn finish<C: Collector>(&mut self, c: &C) {
        self.descs.extend(c.desc().into_iter().cloned());
        self.out.extend(c.collect());
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) {
        if let Some(c) = self.push(IntCounter::new(name, help)) {
            c.inc_by(v);
            self.finish(&c);
        }
    }

    fn gauge(&mut self, name: &str, help: &str, v: u64) {
        if let Some(g) = self.push(IntGauge::new(name, help)) {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            self.finish(&g);
        }
    }

    fn counter_vec(&mut self, name: &str, help: &str, label: &str, vals: &[(&str, u64)]) {
        if let Some(c) = self.push(IntCounterVec::new(Opts::new(name, help), &[label])) {
            for (l, v) in vals {
                c.with_label_values(&[*l]).inc_by(*v);
            }
            self.finish(&c);
        }
    }

    fn gauge_vec(&mut self, name: &str, help: &str, label: &str, vals: &[(String, u64)]) {
        if let Some(g) = self.push(IntGaugeVec::new(Opts::new(name, help), &[label])) {
            for (l, v) in vals {
                g.with_label_values(&[l.as_str()])
                    .set(i64::try_from(*v).unwrap_or(i64::MAX));
            }
            self.finish(&g);
        }
    }
}

/// Reads the engine, jemalloc, disk and collection figures at scrape time.
pub struct ScrapeCollector {
    engine: RwLock<Option<Arc<Engine>>>,
    governor: Option<Arc<MemoryGovernor>>,
    memory: Option<Arc<MemoryStatsCell>>,
    dropped_spans: Arc<AtomicU64>,
    data_dir: RwLock<Option<PathBuf>>,
    collection_docs: RwLock<Vec<(String, u64)>>,
    collection_source: RwLock<Option<CollectionDocsSource>>,
    descs: Vec<Desc>,
}

impl ScrapeCollector {
    fn new(
        governor: Option<Arc<MemoryGovernor>>,
        dropped_spans: Arc<AtomicU64>,
        data_dir: Option<PathBuf>,
    ) -> ScrapeCollector {
        let memory = governor.as_ref().map(|g| g.stats_cell());
        let mut c = ScrapeCollector {
            engine: RwLock::new(None),
            governor,
            memory,
            dropped_spans,
            data_dir: RwLock::new(data_dir),
            collection_docs: RwLock::new(Vec::new()),
            collection_source: RwLock::new(None),
            descs: Vec::new(),
        };
        // The descriptors: every family, built once from zero values.
        let mut f = Families::default();
        c.build(
            &mut f,
            Some(&crate::engine::Stats::default()),
            Some((0, 0)),
            true,
        );
        c.descs = f.descs;
        c
    }

    fn build(
        &self,
        f: &mut Families,
        stats: Option<&crate::engine::Stats>,
        limits: Option<(usize, usize)>,
        all: bool,
    ) {
        if let Some(s) = stats {
            f.counter(
                "minidb_engine_writes_total",
                "Put operations applied.",
                s.puts,
            );
            f.counter("minidb_engine_reads_total", "Get operations.", s.gets);
            f.counter(
                "minidb_engine_deletes_total",
                "Delete operations applied.",
                s.deletes,
            );
            f.counter(
                "minidb_engine_written_bytes_total",
                "Key and value bytes written to the WAL.",
                s.written_bytes,
            );
            f.counter("minidb_wal_syncs_total", "WAL fsyncs.", s.wal_syncs);
            f.counter(
                "minidb_flushes_total",
                "Memtables flushed to SSTables.",
                s.flushes,
            );
            f.counter(
                "minidb_flush_errors_total",
                "Failed flush attempts (retried).",
                s.flush_errors,
            );
            f.counter(
                "minidb_compactions_total",
                "Compactions finished.",
                s.compacts,
            );
            f.counter(
                "minidb_compaction_written_bytes_total",
                "Bytes written by compaction.",
                s.compaction_bytes_written,
            );
            f.gauge(
                "minidb_memtable_bytes",
                "Active memtable bytes.",
                s.memtable_bytes,
            );
            f.gauge(
                "minidb_immutable_memtables",
                "Frozen memtables waiting for flush.",
                s.immutable_count,
            );
            let levels: Vec<(String, u64)> = (0..7)
                .map(|i| (i.to_string(), s.levels.get(i).map_or(0, |l| l.files)))
                .collect();
            f.gauge_vec(
                "minidb_level_files",
                "SSTables per level.",
                "level",
                &levels,
            );
            let bytes: Vec<(String, u64)> = (0..7)
                .map(|i| (i.to_string(), s.levels.get(i).map_or(0, |l| l.bytes)))
                .collect();
            f.gauge_vec(
                "minidb_level_bytes",
                "SSTable bytes per level.",
                "level",
                &bytes,
            );
            f.counter(
                "minidb_block_cache_hits_total",
                "Block cache hits.",
                s.block_cache_hits,
            );
            f.counter(
                "minidb_block_cache_misses_total",
                "Block cache misses.",
                s.block_cache_misses,
            );
            f.counter(
                "minidb_bloom_filter_skips_total",
                "Table reads skipped by a bloom filter.",
                s.bloom_filter_skips,
            );
            f.counter_vec(
                "minidb_write_busy_total",
                "Writes refused with Busy.",
                "reason",
                &[
                    ("flush_queue", s.busy_flush_queue),
                    ("level0", s.busy_level0),
                    ("memory", s.busy_memory),
                ],
            );
            f.gauge(
                "minidb_engine_poisoned",
                "1 when a failed fsync has stopped writes.",
                u64::from(s.poisoned),
            );
            f.counter(
                "minidb_corruption_errors_total",
                "Checksum or format errors seen.",
                s.corruption_errors,
            );
            f.gauge(
                "minidb_wal_disk_bytes",
                "WAL bytes on disk.",
                s.wal_disk_bytes,
            );
            f.gauge(
                "minidb_sst_disk_bytes",
                "SSTable bytes on disk.",
                s.sst_disk_bytes,
            );
        }
        if let Some((immutable, level0)) = limits {
            f.gauge(
                "minidb_immutable_memtables_limit",
                "The flush queue's limit (max_immutable_memtables).",
                immutable as u64,
            );
            f.gauge(
                "minidb_level0_files_limit",
                "L0 file count at which writes are refused.",
                level0 as u64,
            );
        }
        let dir = self.data_dir.read().clone();
        if let Some((avail, cap)) = dir.as_deref().and_then(disk_space) {
            f.gauge(
                "minidb_disk_available_bytes",
                "Free bytes on the data directory's file system.",
                avail,
            );
            f.gauge(
                "minidb_disk_capacity_bytes",
                "Size of the data directory's file system.",
                cap,
            );
        } else if all {
            f.gauge(
                "minidb_disk_available_bytes",
                "Free bytes on the data directory's file system.",
                0,
            );
            f.gauge(
                "minidb_disk_capacity_bytes",
                "Size of the data directory's file system.",
                0,
            );
        }
        let docs = match &*self.collection_source.read() {
            Some(src) => src(),
            None => self.collection_docs.read().clone(),
        };
        if all || !docs.is_empty() {
            f.gauge_vec(
                "minidb_collection_documents",
                "Documents per collection.",
                "collection",
                &docs,
            );
        }
        if let Some(m) = &self.memory {
            let m = m.load();
            f.gauge(
                "minidb_memory_allocated_bytes",
                "jemalloc stats.allocated.",
                m.allocated,
            );
            f.gauge(
                "minidb_memory_active_bytes",
                "jemalloc stats.active.",
                m.active,
            );
            f.gauge(
                "minidb_memory_resident_bytes",
                "jemalloc stats.resident.",
                m.resident,
            );
            f.gauge(
                "minidb_memory_metadata_bytes",
                "jemalloc stats.metadata.",
                m.metadata,
            );
            f.gauge(
                "minidb_memory_retained_bytes",
                "jemalloc stats.retained.",
                m.retained,
            );
        }
        if let Some(g) = &self.governor {
            f.gauge(
                "minidb_memory_limit_bytes",
                "The process memory limit.",
                g.limit(),
            );
            f.gauge(
                "minidb_memory_over_budget",
                "1 while writes are refused for memory.",
                u64::from(g.is_over()),
            );
        }
        f.counter(
            "minidb_otel_spans_dropped_total",
            "Spans dropped by the OTLP exporter.",
            self.dropped_spans.load(Ordering::Relaxed),
        );
    }
}

/// Free and total bytes of the file system holding `dir`.
pub fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let frsize = st.f_frsize;
    Some((
        st.f_bavail.saturating_mul(frsize),
        st.f_blocks.saturating_mul(frsize),
    ))
}

/// Registers the shared [`ScrapeCollector`] (a registry takes ownership of a box).
struct ScrapeHandle(Arc<ScrapeCollector>);

impl Collector for ScrapeHandle {
    fn desc(&self) -> Vec<&Desc> {
        self.0.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let c = &self.0;
        let engine = c.engine.read().clone();
        let stats = engine.as_ref().map(|e| e.stats());
        let limits = engine.as_ref().map(|e| {
            let o = e.options();
            (o.max_immutable_memtables, o.level0_stop_writes)
        });
        if engine.is_some() && c.data_dir.read().is_none() {
            *c.data_dir.write() = engine.as_ref().map(|e| e.dir().to_path_buf());
        }
        let mut f = Families::default();
        c.build(&mut f, stats.as_ref(), limits, false);
        f.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Options;

    /// `(name, type)` of every metric in the tables of `docs/METRICS.md`.
    fn documented() -> Vec<(String, String)> {
        let md = include_str!("../../docs/METRICS.md");
        let mut out = Vec::new();
        for line in md.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (names, kind) = (cells[1], cells[2]);
            let kind = ["counter", "gauge", "histogram"]
                .into_iter()
                .find(|k| kind.starts_with(k))
                .unwrap_or(if kind.contains("process") { "any" } else { "?" });
            for name in names.split(',') {
                out.push((name.trim().trim_matches('`').to_string(), kind.to_string()));
            }
        }
        out
    }

    #[test]
    fn renders_every_documented_name_with_its_type() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(dir.path(), Options::default()).expect("open"));
        engine.put(b"k", b"v").expect("put");
        let cell = Arc::new(MemoryStatsCell::default());
        cell.store(crate::telemetry::memory::read_stats());
        let governor = Arc::new(MemoryGovernor::new(64 << 20, cell));
        let m = Metrics::new(Some(governor), Arc::new(AtomicU64::new(3)), None).expect("metrics");
        m.attach_engine(engine);
        m.record_request("/api/{col}/{id}", "GET", 200, Duration::from_millis(3));
        m.set_collection_docs(vec![("users".into(), 7)]);
        let text = m.render();

        let names = documented();
        assert!(names.len() >= 46, "parsed only {} names", names.len());
        for (name, kind) in names {
            assert_ne!(kind, "?", "{name}: unknown type in METRICS.md");
            if kind == "any" {
                assert!(text.contains(&format!("\n{name}")), "{name} missing");
                continue;
            }
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} ({kind}) missing from:\n{text}"
            );
        }
        assert!(text.contains("minidb_collection_documents{collection=\"users\"} 7"));
        assert!(text.contains("minidb_otel_spans_dropped_total 3"));
        assert!(text.contains("minidb_engine_writes_total 1"));
        assert!(text.contains("minidb_memory_limit_bytes 67108864"));
        assert!(text.contains("minidb_write_busy_total{reason=\"memory\"} 0"));
        assert!(text.contains("minidb_http_rejections_total{reason=\"too_large\"} 0"));
        assert!(text.contains("minidb_level_files{level=\"6\"} 0"));
        assert!(text.contains(&format!(
            "minidb_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }

    #[test]
    fn no_undocumented_minidb_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = Arc::new(Engine::open(dir.path(), Options::default()).expect("open"));
        let governor = Arc::new(MemoryGovernor::new(1 << 30, Arc::default()));
        let m = Metrics::new(Some(governor), Arc::default(), None).expect("metrics");
        m.attach_engine(engine);
        m.record_request("/x", "GET", 500, Duration::from_millis(1));
        let documented: Vec<String> = documented().into_iter().map(|(n, _)| n).collect();
        for line in m
            .render()
            .lines()
            .filter(|l| l.starts_with("# TYPE minidb_"))
        {
            let name = line.split_whitespace().nth(2).unwrap_or_default();
            assert!(
                documented.iter().any(|d| d == name),
                "{name} is not in METRICS.md"
            );
        }
    }

    /// Polls `cond` until it holds, for at most 30 s.
    fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn one_gather_at_a_time_and_waiting_scrapes_share_the_next() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let m = Arc::new(Metrics::new(None, Arc::default(), None).expect("metrics"));
        let (tokens, rx) = std::sync::mpsc::channel::<()>();
        let rx = parking_lot::Mutex::new(rx);
        let gathers = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let (g, r, mo) = (gathers.clone(), running.clone(), most.clone());
        // Each gather counts itself, then waits for one token.
        m.set_collection_docs_source(Box::new(move || {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            mo.fetch_max(now, Ordering::SeqCst);
            let n = g.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = rx.lock().recv();
            r.fetch_sub(1, Ordering::SeqCst);
            vec![("c".into(), n)]
        }));
        let scrape = |m: &Arc<Metrics>| {
            let m = m.clone();
            rt.spawn(async move { m.scrape().await })
        };
        let first = scrape(&m);
        wait_for("the first gather", || gathers.load(Ordering::SeqCst) == 1);
        let second = scrape(&m);
        let third = scrape(&m);
        wait_for("three arrivals", || m.scrape_arrivals() == 3);
        tokens.send(()).expect("token");
        let first = rt.block_on(first).expect("join").expect("scrape");
        assert!(first.contains("minidb_collection_documents{collection=\"c\"} 1"));
        // One more gather serves both waiting scrapes; a spare token lets a (wrong) third
        // gather finish instead of hanging the test.
        tokens.send(()).expect("token");
        tokens.send(()).expect("token");
        let second = rt.block_on(second).expect("join").expect("scrape");
        let third = rt.block_on(third).expect("join").expect("scrape");
        assert!(second.contains("minidb_collection_documents{collection=\"c\"} 2"));
        assert!(
            Arc::ptr_eq(&second, &third),
            "the waiting scrapes share one gather"
        );
        assert_eq!(
            gathers.load(Ordering::SeqCst),
            2,
            "three scrapes, two gathers"
        );
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two gathers at once");
    }

    #[test]
    fn request_labels_and_rejections() {
        let m = Metrics::new(None, Arc::default(), None).expect("metrics");
        m.record_request("/api/{col}", "POST", 201, Duration::from_millis(1));
        m.record_request("/api/{col}", "POST", 503, Duration::from_millis(1));
        m.record_rejection("memory");
        m.record_rejection("something-else");
        {
            let _g = m.in_flight();
            assert!(m.render().contains("minidb_http_requests_in_flight 1"));
        }
        let t = m.render();
        assert!(t.contains("minidb_http_requests_in_flight 0"));
        assert!(t.contains(
            "minidb_http_requests_total{method=\"POST\",route=\"/api/{col}\",status_class=\"5xx\"} 1"
        ));
        assert!(t.contains("minidb_http_rejections_total{reason=\"memory\"} 1"));
        assert!(t.contains("minidb_http_rejections_total{reason=\"busy\"} 1"));
        m.record_auth_failure("forbidden");
        m.record_auth_failure("nonsense");
        m.record_reload_error("tls");
        m.record_handshake_failure("timeout");
        let t = m.render();
        assert!(t.contains("minidb_auth_failures_total{reason=\"forbidden\"} 1"));
        assert!(t.contains("minidb_auth_failures_total{reason=\"missing\"} 0"));
        assert!(!t.contains("nonsense"));
        assert!(t.contains("minidb_reload_errors_total{file=\"tls\"} 1"));
        assert!(t.contains("minidb_reload_errors_total{file=\"keys\"} 0"));
        m.set_reload_failing("keys", true);
        assert!(m
            .render()
            .contains("minidb_reload_failing{file=\"keys\"} 1"));
        assert!(t.contains("minidb_tls_handshake_failures_total{reason=\"timeout\"} 1"));
        let ev = m.engine_events();
        ev.on_wal_sync(Duration::from_millis(2));
        assert!(m
            .render()
            .contains("minidb_wal_fsync_duration_seconds_count 1"));
    }
}
