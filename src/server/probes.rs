//! Probes and process figures: health, readiness, `/api/stats`, `/api/metrics`, OpenAPI.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::startup::Phase;
use super::AppState;
use crate::telemetry::memory;

/// The hand-kept OpenAPI description (tested against the routes).
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Clock ticks per second of `/proc/self/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// `GET /api/health`: liveness; touches nothing.
pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `GET /api/ready`: 200 when requests can be served. 503 with a `phase` while the engine
/// opens (`opening`, then `replaying_wal` with `progress`), while shutting down
/// (`shutting_down`), and when the engine is poisoned (`poisoned`). Transient pressure
/// (memory, the flush queue) does not make it 503: those requests get 503 + `Retry-After`.
pub async fn ready(State(st): State<Arc<AppState>>) -> Response {
    let not_ready = |phase: &str, message: String, extra: Option<Value>| {
        let mut body = json!({"error": message, "status": 503, "phase": phase});
        if let Some(p) = extra {
            body["progress"] = p;
        }
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    };
    match st.startup.phase() {
        Phase::Opening => {
            return match st.startup.progress() {
                Some((done, total)) => not_ready(
                    "replaying_wal",
                    format!("replaying the write-ahead log: {done} of {total} bytes"),
                    Some(json!({"replayed_bytes": done, "total_bytes": total})),
                ),
                None => not_ready("opening", "opening the data directory".into(), None),
            }
        }
        Phase::ShuttingDown => return not_ready("shutting_down", "shutting down".into(), None),
        Phase::Serving => {}
    }
    if st.store().is_ok_and(|s| s.engine().is_poisoned()) {
        return not_ready(
            "poisoned",
            "engine poisoned after a failed write or fsync; writes refused until a restart".into(),
            None,
        );
    }
    Json(json!({"status": "ready"})).into_response()
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

/// `GET /api/metrics`: the engine's counters under MiniDBGo's names (JSON).
pub async fn metrics_json(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let store = st.store()?.clone();
    let named = super::routes::blocking(move || Ok(store.engine().stats().named())).await?;
    let map: Map<String, Value> = named.into_iter().map(|(k, v)| (k, json!(v))).collect();
    Ok(Json(Value::Object(map)).into_response())
}

/// `GET /api/stats`: RSS, CPU percent (since the previous call), memory limit, uptime,
/// threads, and MiniDBGo's `system_cpu_percent` and `go_*` fields (README, "/api/stats").
/// Reads three small `/proc` files on a blocking thread; never sleeps.
pub async fn stats(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    // Go's goroutines are its tasks: the nearest figure is the runtime's live tasks.
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let body = tokio::task::spawn_blocking(move || stats_body(&st, tasks as u64))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "stats task failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "stats task failed")
        })?;
    Ok(Json(body).into_response())
}

/// The body of `/api/stats` (blocking: reads `/proc`).
fn stats_body(st: &AppState, tasks: u64) -> Value {
    let status = read_proc_status();
    let cpu = st.cpu.percent(st.started);
    let system_cpu = st.cpu.system_percent();
    let mem = match &st.telemetry {
        Some(t) => t.memory_stats(),
        None => memory::read_stats(),
    };
    let (limit, source) = match &st.telemetry {
        Some(t) => (Some(t.memory_limit()), "governor"),
        None => memory_limit(st.config.memory.limit()),
    };
    let rss = status.rss_bytes.unwrap_or(0);
    let mb = |b: u64| (b as f64 / (1 << 20) as f64 * 10.0).round() / 10.0;
    json!({
        "process_cpu_percent": cpu,
        "process_rss_bytes": rss,
        "process_rss_mb": mb(rss),
        "process_rss_limit_mb": limit.map(mb),
        "memory_limit_bytes": limit,
        "memory_limit_source": source,
        "uptime_secs": st.started.elapsed().as_secs_f64().floor(),
        "threads": status.threads,
        "in_flight": st.config.server.max_in_flight.saturating_sub(st.in_flight.available_permits()),
        "ready": st.startup.phase() == Phase::Serving,
        // MiniDBGo's fields (its web dashboard plots them), mapped to what MiniDB has.
        "system_cpu_percent": system_cpu,
        "go_num_goroutine": tasks,
        "go_heap_inuse_mb": mb(mem.active),
        "go_heap_alloc_mb": mb(mem.allocated),
        "go_alloc_mb": mb(mem.allocated),
        "go_sys_mb": mb(mem.resident),
        "go_num_gc": memory::purge_count(),
    })
}

/// CPU time sampling between calls.
#[derive(Debug, Default)]
pub struct CpuSampler {
    last: Mutex<Option<(Instant, f64, f64)>>,
    system: Mutex<Option<SystemSample>>,
}

/// The machine's CPU times at one `/api/stats` call, and the percent reported then.
#[derive(Debug, Clone, Copy)]
struct SystemSample {
    at: Instant,
    busy: u64,
    total: u64,
    percent: f64,
}

impl CpuSampler {
    /// The whole machine's CPU use, in percent of all CPUs, since the previous sample
    /// (≥ 100 ms ago), or since boot on the first call; 0 when `/proc/stat` is unreadable.
    pub fn system_percent(&self) -> f64 {
        let Some((busy, total)) = read_system_cpu() else {
            return 0.0;
        };
        let now = Instant::now();
        let mut last = self.system.lock();
        let (db, dt) = match *last {
            Some(s) if now.duration_since(s.at).as_millis() < 100 => return s.percent,
            Some(s) => (busy.saturating_sub(s.busy), total.saturating_sub(s.total)),
            None => (busy, total),
        };
        let percent = if dt == 0 {
            0.0
        } else {
            (db as f64 / dt as f64 * 1000.0).round() / 10.0
        };
        *last = Some(SystemSample {
            at: now,
            busy,
            total,
            percent,
        });
        percent
    }

    /// Process CPU percent since the previous sample (≥ 100 ms ago), or since start.
    pub fn percent(&self, started: Instant) -> f64 {
        let Some(cpu) = read_cpu_secs() else {
            return 0.0;
        };
        let now = Instant::now();
        let mut last = self.last.lock();
        let pct = match *last {
            Some((t, _, pct)) if now.duration_since(t).as_millis() < 100 => return pct,
            Some((t, c0, _)) => (cpu - c0) / now.duration_since(t).as_secs_f64() * 100.0,
            None => cpu / started.elapsed().as_secs_f64().max(1e-3) * 100.0,
        };
        let pct = (pct * 10.0).round() / 10.0;
        *last = Some((now, cpu, pct));
        pct
    }
}

fn read_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// (busy, total) clock ticks of all CPUs from the first line of `/proc/stat`; idle and
/// iowait are not busy.
fn read_system_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_system_cpu(stat.lines().next()?)
}

fn parse_system_cpu(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest times are inside user/nice).
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

#[derive(Debug, Default)]
struct ProcStatus {
    rss_bytes: Option<u64>,
    threads: Option<u64>,
}

fn read_proc_status() -> ProcStatus {
    let mut out = ProcStatus::default();
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return out;
    };
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            out.rss_bytes = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024);
        } else if let Some(v) = line.strip_prefix("Threads:") {
            out.threads = v.trim().parse().ok();
        }
    }
    out
}

/// The memory limit and where it comes from: config, cgroup v2, cgroup v1, or the host.
pub fn memory_limit(configured: Option<u64>) -> (Option<u64>, &'static str) {
    if let Some(l) = configured {
        return (Some(l), "config");
    }
    static DETECTED: OnceLock<(Option<u64>, &'static str)> = OnceLock::new();
    *DETECTED.get_or_init(detect_memory_limit)
}

fn detect_memory_limit() -> (Option<u64>, &'static str) {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    if let Some(v) = read("/sys/fs/cgroup/memory.max") {
        if let Ok(n) = v.trim().parse::<u64>() {
            return (Some(n), "cgroup_v2");
        }
    }
    if let Some(v) = read("/sys/fs/cgroup/memory/memory.limit_in_bytes") {
        if let Ok(n) = v.trim().parse::<u64>() {
            if n < 1 << 60 {
                return (Some(n), "cgroup_v1");
            }
        }
    }
    if let Some(v) = read("/proc/meminfo") {
        for line in v.lines() {
            if let Some(kb) = line.strip_prefix("MemTotal:") {
                if let Ok(kb) = kb.trim().trim_end_matches("kB").trim().parse::<u64>() {
                    return (Some(kb * 1024), "host");
                }
            }
        }
    }
    (None, "unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_reads() {
        assert!(read_cpu_secs().is_some());
        let s = read_proc_status();
        assert!(s.rss_bytes.unwrap_or(0) > 0);
        assert!(s.threads.unwrap_or(0) >= 1);
        assert!(memory_limit(None).0.is_some());
        assert_eq!(memory_limit(Some(5)), (Some(5), "config"));
        let sampler = CpuSampler::default();
        assert!(sampler.percent(Instant::now()) >= 0.0);
    }

    #[test]
    fn system_cpu_line() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let line = "cpu  100 0 50 800 50 0 0 0 10 0";
        assert_eq!(parse_system_cpu(line), Some((150, 1000)));
        assert_eq!(parse_system_cpu("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_system_cpu("cpu  1 x 3 4"), None);
        assert!(read_system_cpu().is_some_and(|(busy, total)| busy <= total && total > 0));
    }

    #[test]
    fn openapi_is_json() {
        let v: Value = serde_json::from_str(OPENAPI_JSON).unwrap_or(Value::Null);
        assert!(v.get("paths").is_some());
    }
}
