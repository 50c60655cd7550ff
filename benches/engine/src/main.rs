//! `make bench-engine`: MiniDB's engine and fjall on the same workloads in one run.
//!
//! Each engine runs in its own child process (this binary with `--engine NAME`), so peak
//! RSS is per engine. Settings on both sides: 32 MiB block cache, 32 MiB memtable, LZ4.
//! Durability: fills and reads use each engine's buffered journal (MiniDB
//! `SyncPolicy::None`, fjall's default: no fsync per write); the durable row fsyncs every
//! write before it returns (MiniDB `SyncPolicy::Always`, group commit; fjall
//! `persist(SyncData)` after each insert).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;

const N: u64 = 1_000_000;
const READS: u64 = 500_000;
const DURABLE_THREADS: u64 = 4;
const DURABLE_PER_THREAD: u64 = 4_000;
const MIB: u64 = 1 << 20;

fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(format!("{i:016}").as_bytes());
    k
}

fn missing_key(i: u64) -> Vec<u8> {
    // Sorts between two present keys, so range checks cannot answer; only filters can.
    let mut k = key(i).to_vec();
    k.push(b'~');
    k
}

fn value(i: u64) -> Vec<u8> {
    let v = format!(
        r#"{{"_id":"{i:016}","name":"user-{i}","email":"user{i}@example.com","age":{},"active":true,"tags":["alpha","beta"],"bio":"lorem ipsum dolor sit amet {}"}}"#,
        i % 90,
        i.wrapping_mul(2654435761) % 1_000_000_007
    );
    let mut v = v.into_bytes();
    v.resize(200, b' ');
    v
}

/// What each engine must offer the workloads.
trait Kv: Send + Sync {
    fn put(&self, k: &[u8], v: &[u8]);
    fn put_durable(&self, k: &[u8], v: &[u8]);
    fn get(&self, k: &[u8]) -> bool;
    fn scan(&self) -> u64;
    fn settle(&self);
}

struct MiniDb {
    buffered: minidb::engine::Engine,
}

impl MiniDb {
    fn options(sync: minidb::engine::SyncPolicy) -> minidb::engine::Options {
        let mut o = minidb::engine::Options::default();
        o.sync = sync;
        o.flush_size = usize::MAX / 2;
        o.memtable_bytes = (32 * MIB) as usize;
        o.block_cache_bytes = (32 * MIB) as usize;
        o.level0_stop_writes = 36;
        o.level0_compaction_trigger = 8;
        o
    }
}

fn retry_busy(mut f: impl FnMut() -> minidb::engine::Result<()>) {
    loop {
        match f() {
            Ok(()) => return,
            Err(minidb::engine::Error::Busy { .. }) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("minidb: {e}"),
        }
    }
}

impl Kv for MiniDb {
    fn put(&self, k: &[u8], v: &[u8]) {
        retry_busy(|| self.buffered.put(k, v));
    }
    fn put_durable(&self, _k: &[u8], _v: &[u8]) {
        unreachable!("durable writes use their own engine")
    }
    fn get(&self, k: &[u8]) -> bool {
        self.buffered.get(k).expect("get").is_some()
    }
    fn scan(&self) -> u64 {
        self.buffered.iter().map(|r| r.expect("scan")).count() as u64
    }
    fn settle(&self) {
        self.buffered.flush().expect("flush");
    }
}

struct DurableMiniDb(minidb::engine::Engine);

impl Kv for DurableMiniDb {
    fn put(&self, k: &[u8], v: &[u8]) {
        retry_busy(|| self.0.put(k, v));
    }
    fn put_durable(&self, k: &[u8], v: &[u8]) {
        retry_busy(|| self.0.put(k, v));
    }
    fn get(&self, k: &[u8]) -> bool {
        self.0.get(k).expect("get").is_some()
    }
    fn scan(&self) -> u64 {
        0
    }
    fn settle(&self) {}
}

struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Fjall {
        let db = fjall::Database::builder(dir)
            .cache_size(32 * MIB)
            .open()
            .expect("fjall open");
        let ks = db
            .keyspace("bench", || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(32 * MIB)
            })
            .expect("fjall keyspace");
        Fjall { db, ks }
    }
}

impl Kv for Fjall {
    fn put(&self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).expect("fjall insert");
    }
    fn put_durable(&self, k: &[u8], v: &[u8]) {
        self.ks.insert(k, v).expect("fjall insert");
        self.db
            .persist(fjall::PersistMode::SyncData)
            .expect("fjall persist");
    }
    fn get(&self, k: &[u8]) -> bool {
        self.ks.get(k).expect("fjall get").is_some()
    }
    fn scan(&self) -> u64 {
        self.ks
            .iter()
            .map(|g| g.into_inner().expect("fjall scan"))
            .count() as u64
    }
    fn settle(&self) {
        self.db
            .persist(fjall::PersistMode::Buffer)
            .expect("fjall persist");
    }
}

/// An engine set up for the durable row: every write fsynced before it returns.
fn open_durable(engine: &str, dir: &Path) -> Arc<dyn Kv> {
    match engine {
        "minidb" => Arc::new(DurableMiniDb(
            minidb::engine::Engine::open(dir, MiniDb::options(minidb::engine::SyncPolicy::Always))
                .expect("minidb open"),
        )),
        _ => Arc::new(Fjall::open(dir)),
    }
}

fn ops_per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn fill(kv: &dyn Kv, order: &[u64]) -> f64 {
    let start = Instant::now();
    for &i in order {
        kv.put(&key(i), &value(i));
    }
    ops_per_sec(order.len() as u64, start.elapsed())
}

fn durable(kv: Arc<dyn Kv>) -> (f64, Duration) {
    let start = Instant::now();
    let threads: Vec<_> = (0..DURABLE_THREADS)
        .map(|t| {
            let kv = kv.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(DURABLE_PER_THREAD as usize);
                for i in 0..DURABLE_PER_THREAD {
                    let id = t * 10_000_000 + i;
                    let s = Instant::now();
                    kv.put_durable(&key(id), &value(id));
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("durable thread"))
        .collect();
    let rate = ops_per_sec(DURABLE_THREADS * DURABLE_PER_THREAD, start.elapsed());
    lat.sort();
    (rate, lat[lat.len() * 99 / 100])
}

fn reads(kv: &dyn Kv, keys: &[u64], missing: bool) -> f64 {
    let start = Instant::now();
    let mut found = 0u64;
    for &i in keys {
        found += u64::from(if missing {
            kv.get(&missing_key(i))
        } else {
            kv.get(&key(i))
        });
    }
    let expect = if missing { 0 } else { keys.len() as u64 };
    assert_eq!(found, expect, "read answers are wrong");
    ops_per_sec(keys.len() as u64, start.elapsed())
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs every workload on one engine and prints `name value` lines.
fn child(engine: &str) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let seq: Vec<u64> = (0..N).collect();
    let mut shuffled = seq.clone();
    shuffled.shuffle(&mut rng);
    let read_keys: Vec<u64> = shuffled.iter().copied().take(READS as usize).collect();
    let open = |dir: &Path, sync: minidb::engine::SyncPolicy| -> Box<dyn Kv> {
        match engine {
            "minidb" => Box::new(MiniDb {
                buffered: minidb::engine::Engine::open(dir, MiniDb::options(sync))
                    .expect("minidb open"),
            }),
            _ => Box::new(Fjall::open(dir)),
        }
    };
    let mut out = BTreeMap::new();
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let kv = open(dir.path(), minidb::engine::SyncPolicy::None);
        out.insert("1 fillseq (ops/s)", fill(kv.as_ref(), &seq));
        kv.settle();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kv = open(dir.path(), minidb::engine::SyncPolicy::None);
    out.insert("2 fillrandom (ops/s)", fill(kv.as_ref(), &shuffled));
    kv.settle();
    out.insert(
        "4 readrandom (ops/s)",
        reads(kv.as_ref(), &read_keys, false),
    );
    out.insert(
        "5 readmissing (ops/s)",
        reads(kv.as_ref(), &read_keys, true),
    );
    let start = Instant::now();
    let n = kv.scan();
    assert_eq!(n, N, "scan count");
    out.insert("6 full scan (entries/s)", ops_per_sec(n, start.elapsed()));
    out.insert("7 peak RSS after load (MiB)", peak_rss_mib());
    drop(kv);
    let ddir = tempfile::tempdir().expect("tempdir");
    let (rate, p99) = durable(open_durable(engine, ddir.path()));
    out.insert("3 durable writes, 4 threads (ops/s)", rate);
    out.insert("3b durable p99 (ms)", p99.as_secs_f64() * 1000.0);
    for (k, v) in out {
        println!("RESULT\t{k}\t{v:.1}");
    }
}

fn run_child(engine: &str) -> BTreeMap<String, f64> {
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new(exe)
        .args(["--engine", engine])
        .output()
        .expect("run child");
    assert!(
        out.status.success(),
        "{engine} run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split('\t');
            (p.next() == Some("RESULT")).then_some(())?;
            Some((p.next()?.to_string(), p.next()?.parse().ok()?))
        })
        .collect()
}

/// Per row, the best run: highest throughput, lowest latency and memory.
fn best(runs: &[BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for run in runs {
        for (k, &v) in run {
            let lower_is_better = k.contains("(ms)") || k.contains("(MiB)");
            out.entry(k.clone())
                .and_modify(|b: &mut f64| *b = if lower_is_better { b.min(v) } else { b.max(v) })
                .or_insert(v);
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--durable-only") {
        // Quick probe of the durable row alone: `--durable-only minidb|fjall`.
        let engine = args.get(i + 1).map_or("minidb", String::as_str);
        let dir = tempfile::tempdir().expect("tempdir");
        let (rate, p99) = durable(open_durable(engine, dir.path()));
        println!(
            "{engine}: durable {rate:.0} ops/s, p99 {:.2} ms",
            p99.as_secs_f64() * 1e3
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--engine") {
        child(args.get(i + 1).map_or("minidb", String::as_str));
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    println!(
        "MiniDB engine vs fjall: 1M keys (16 B), ~200 B JSON values, 32 MiB cache + memtable; \
         best of {rounds} alternating runs per engine"
    );
    // Alternating runs spread the shared machine's noise over both engines.
    let mut minis = Vec::new();
    let mut fjs = Vec::new();
    for _ in 0..rounds {
        minis.push(run_child("minidb"));
        fjs.push(run_child("fjall"));
    }
    let mini = best(&minis);
    let fj = best(&fjs);
    println!("| workload | minidb | fjall | minidb/fjall |");
    println!("|---|---:|---:|---:|");
    for (k, m) in &mini {
        let f = fj.get(k).copied().unwrap_or(f64::NAN);
        // For latency and memory, lower is better: the ratio still reads minidb/fjall.
        let name = k.split_once(' ').map_or(k.as_str(), |(_, n)| n);
        // Latencies are fractions of a millisecond: keep two decimals for small figures.
        let fmt = |v: f64| {
            if v < 100.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.0}")
            }
        };
        println!("| {name} | {} | {} | {:.2} |", fmt(*m), fmt(f), m / f);
    }
}
