//! The memory-budget flood (issue 4, "Memory budget"): the real binary under a 64 MiB
//! limit, 16 concurrent writers sending `_insertMany` batches of up to 1,000 documents of
//! ~1 KiB each. It passes when
//! * only 2xx and 503 come back, every 503 with `Retry-After` (the writers honour it);
//! * every acknowledged document is readable afterwards (exact count and a full id scan);
//! * the server's peak RSS (`VmHWM`) stays within the limit plus [`OVERHEAD_BYTES`].
//!
//! The overhead and what it consists of are measured and explained in docs/BENCH-HTTP.md
//! ("Flood test"). Negative control: `FLOOD_LIMIT_BYTES=0 cargo test --test api_flood`
//! starts the server without the limit (so the 512 MiB default applies) and must fail.
#![cfg(feature = "server")]

mod api;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{json, Server};
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
/// The process memory limit under test.
const LIMIT_BYTES: u64 = 64 * MIB;
/// Peak RSS may exceed the limit by this much (measured; see docs/BENCH-HTTP.md): the
/// binary's file-backed pages (~9 MiB), jemalloc metadata (~5 MiB), dirty pages below the
/// purge slack (limit / 16 = 4 MiB), thread stacks (~1 MiB), and what requests allocate in
/// the up to 100 ms between two jemalloc samples (bounded by the body budget, limit / 16,
/// times ~4). Measured 22-25 MiB with the server defaults; 36 MiB leaves room for a noisy
/// machine.
const OVERHEAD_BYTES: u64 = 36 * MIB;
/// Concurrent writers.
const WRITERS: usize = 16;
/// Documents per batch at most (the server's MAX_BATCH_DOCS).
const BATCH_MAX: usize = 1000;
/// Padding per document: with `_id` and the field names each document is ~1 KiB.
const PAD: usize = 1000;
/// How long the writers flood.
const FLOOD: Duration = Duration::from_secs(12);
/// Server settings for the test: the defaults. A request holds ~4× its body while it is
/// parsed and encoded, before the engine's budget check; the server counts it at 4× its
/// length in a request-memory budget of a quarter of the memory limit
/// (`server::memory::budget_kib`), so 100 in flight × 10 MiB cannot outgrow a 64 MiB process.
const MAX_IN_FLIGHT: &str = "100";
const MAX_BODY_BYTES: &str = "10485760";

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A cheap deterministic generator (xorshift), so each document's padding differs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn pad(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut s = String::with_capacity(PAD);
    while s.len() < PAD {
        let mut r = rng.next();
        for _ in 0..8 {
            s.push(ALPHABET[(r % ALPHABET.len() as u64) as usize] as char);
            r /= ALPHABET.len() as u64;
        }
    }
    s.truncate(PAD);
    s
}

#[derive(Default)]
struct Tally {
    ok: u64,
    busy: u64,
    acked: Vec<String>,
    bad: Vec<String>,
}

#[test]
fn flood_of_large_batches_stays_inside_the_memory_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let limit = std::env::var("FLOOD_LIMIT_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(LIMIT_BYTES);
    let limit_str = limit.to_string();
    let mut env = vec![
        ("MINIDB_SERVER__MAX_IN_FLIGHT", MAX_IN_FLIGHT),
        ("MINIDB_SERVER__MAX_BODY_BYTES", MAX_BODY_BYTES),
    ];
    if limit > 0 {
        env.push(("MINIDB_MEMORY__LIMIT_BYTES", limit_str.as_str()));
    }
    let s = Server::start(&dir, &env);
    let pid = s.child.id();
    let idle_rss = proc_status_bytes(pid, "VmRSS").unwrap_or(0);

    // Sample RSS every 20 ms as well as VmHWM at the end (they should agree).
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = proc_status_bytes(pid, "VmRSS") {
                    max_rss.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let debug = std::env::var("FLOOD_DEBUG").is_ok();
    let monitor = debug.then(|| {
        let (stop, base) = (stop.clone(), s.base.clone());
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::new();
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = c.get(format!("{base}/metrics")).send() {
                    let text = r.text().unwrap_or_default();
                    let pick: Vec<String> = text
                        .lines()
                        .filter(|l| {
                            !l.starts_with('#')
                                && (l.starts_with("minidb_memory_")
                                    || l.starts_with("minidb_write_busy_total")
                                    || l.starts_with("minidb_http_rejections_total")
                                    || l.starts_with("minidb_memtable")
                                    || l.starts_with("minidb_immutable")
                                    || l.starts_with("minidb_http_requests_in_flight")
                                    || l.starts_with("minidb_block_cache_bytes")
                                    || l.starts_with("process_threads"))
                        })
                        .map(|l| {
                            let mut it = l.rsplitn(2, ' ');
                            let v = it.next().unwrap_or("");
                            let k = it.next().unwrap_or("").replace("minidb_", "");
                            match v.parse::<f64>() {
                                Ok(x) if x > 1e5 => format!("{k}={:.1}M", x / MIB as f64),
                                _ => format!("{k}={v}"),
                            }
                        })
                        .collect();
                    let m = |f: &str| proc_status_bytes(pid, f).unwrap_or(0) as f64 / MIB as f64;
                    eprintln!(
                        "{:5.2}s rss={:.1}M anon={:.1}M file={:.1}M {}",
                        t0.elapsed().as_secs_f64(),
                        m("VmRSS"),
                        m("RssAnon"),
                        m("RssFile"),
                        pick.join(" ")
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (tally, base) = (tally.clone(), s.base.clone());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1000_0001));
                let mut b = 0u64;
                while start.elapsed() < FLOOD {
                    // 500..=1000 documents per batch.
                    let n = BATCH_MAX / 2 + (rng.next() % (BATCH_MAX as u64 / 2 + 1)) as usize;
                    let ids: Vec<String> =
                        (0..n).map(|i| format!("w{w:02}-b{b:05}-{i:04}")).collect();
                    let docs: Vec<Value> = ids
                        .iter()
                        .map(|id| json!({"_id": id, "w": w, "pad": pad(&mut rng)}))
                        .collect();
                    let body = serde_json::to_vec(&docs).unwrap();
                    b += 1;
                    let r = c
                        .post(format!("{base}/api/flood/_insertMany"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send();
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => {
                            tally
                                .lock()
                                .unwrap()
                                .bad
                                .push(format!("transport error: {e:?}"));
                            continue;
                        }
                    };
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let text = r.text().unwrap_or_default();
                    match status {
                        200..=299 => {
                            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                            let mut t = tally.lock().unwrap();
                            if v["insertedCount"].as_u64() == Some(n as u64) {
                                t.ok += 1;
                                t.acked.extend(ids);
                            } else {
                                t.bad.push(format!("{status} with body {text}"));
                            }
                        }
                        503 => {
                            let Some(secs) = retry_after else {
                                tally
                                    .lock()
                                    .unwrap()
                                    .bad
                                    .push(format!("503 without Retry-After: {text}"));
                                continue;
                            };
                            tally.lock().unwrap().busy += 1;
                            // Honour Retry-After (whole seconds), but not past the flood's end.
                            let left = FLOOD.saturating_sub(start.elapsed());
                            std::thread::sleep(Duration::from_secs(secs).min(left));
                        }
                        _ => tally
                            .lock()
                            .unwrap()
                            .bad
                            .push(format!("unexpected {status}: {text}")),
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let flood_secs = start.elapsed().as_secs_f64();
    let hwm_after_flood = proc_status_bytes(pid, "VmHWM").unwrap_or(0);

    let t = std::mem::take(&mut *tally.lock().unwrap());
    assert!(
        t.bad.is_empty(),
        "{} responses other than 2xx / 503+Retry-After, e.g. {:?}",
        t.bad.len(),
        &t.bad[..t.bad.len().min(5)]
    );
    assert!(t.ok > 0, "no batch was acknowledged");

    // Every acknowledged document is readable: the exact count, a full paged scan of the
    // ids, and a sample read one by one.
    let count = json(s.get("/api/flood/_count"))["count"].as_u64().unwrap();
    assert_eq!(
        count,
        t.acked.len() as u64,
        "count vs acknowledged documents"
    );
    let mut seen = HashSet::with_capacity(t.acked.len());
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/flood/_search?limit=1000&cursor={c}"),
            None => "/api/flood/_search?limit=1000".to_string(),
        };
        let page = json(s.post_raw(&path, "{}"));
        for d in page["documents"].as_array().expect("documents") {
            seen.insert(d["_id"].as_str().expect("_id").to_string());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let missing: Vec<&String> = t.acked.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged documents not found, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for id in t.acked.iter().step_by(997) {
        let r = s.get(&format!("/api/flood/{id}"));
        assert_eq!(r.status(), 200, "GET {id}");
    }

    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    if let Some(m) = monitor {
        m.join().unwrap();
    }
    let hwm = proc_status_bytes(pid, "VmHWM").unwrap_or(0);
    let sampled = max_rss.load(Ordering::Relaxed);
    let peak = hwm.max(sampled);
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "flood: {} writers, {:.1}s, {} batches acknowledged ({} docs), {} answered 503; \
         RSS idle {:.1} MiB, peak during flood {:.1} MiB (VmHWM), peak overall {:.1} MiB \
         (sampled {:.1} MiB); limit {:.1} MiB + overhead {:.1} MiB",
        WRITERS,
        flood_secs,
        t.ok,
        t.acked.len(),
        t.busy,
        mib(idle_rss),
        mib(hwm_after_flood),
        mib(peak),
        mib(sampled),
        mib(LIMIT_BYTES),
        mib(OVERHEAD_BYTES),
    );
    assert!(
        peak <= LIMIT_BYTES + OVERHEAD_BYTES,
        "peak RSS {:.1} MiB exceeds the {:.0} MiB limit + {:.0} MiB overhead",
        mib(peak),
        mib(LIMIT_BYTES),
        mib(OVERHEAD_BYTES)
    );
    s.stop();
}
