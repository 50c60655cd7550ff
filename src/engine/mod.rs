//! MiniDB's LSM-tree key-value engine: bytes in, bytes out.
//!
//! Write path: budget checks → WAL append (group commit, fsync per [`SyncPolicy`]) →
//! memtable. Full memtables are frozen and flushed to level-0 SSTables by a background
//! worker; a second worker runs leveled compaction. Reads pin a [`Snapshot`]: the memtables
//! and tables of one moment plus a sequence number, so they never block writers.
//!
//! Every call may block on disk I/O (the default sync policy waits for an fsync). Async
//! callers must not call it on a runtime worker: use `tokio::task::spawn_blocking` (or a
//! dedicated thread) for writes, flushes and scans.

mod batch;
mod cache;
mod checkpoint;
mod coding;
mod compaction;
mod error;
mod flush;
#[doc(hidden)]
pub mod fuzzing;
mod iter;
mod manifest;
mod memtable;
mod options;
mod recovery;
mod reserve;
mod snapshot;
mod sstable;
mod stats;
pub mod storage;
mod verify;
mod version;
mod wal;
mod worker;
mod write;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

pub use batch::{WriteBatch, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use checkpoint::CheckpointInfo;
pub use error::{BusyReason, Error, Result};
pub use iter::Scan;
pub use options::{Compression, EventListener, MemoryBudget, Options, SyncPolicy};
pub use snapshot::Snapshot;
pub use stats::{LevelStats, Stats};
pub use verify::{verify_dir, VerifyReport};

use cache::BlockCache;
use manifest::ManifestState;
use memtable::Memtable;
use stats::Counters;
use storage::{Storage, StorageLock};
use version::{SuperVersion, NUM_LEVELS};
use wal::WalWriter;

/// The path of table `id` in `sst_dir`.
fn table_path(sst_dir: &Path, id: u64) -> PathBuf {
    sst_dir.join(format!("{id:020}.sst"))
}

/// The id a table file name stands for, if it is one of ours (`{id:020}.sst`).
fn parse_table_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".sst")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The WAL writer and the memtable it feeds; guarded by one lock so seqnos, WAL order
/// and memtable order agree.
struct WalState {
    /// The active segment; `None` only when it could not be created for lack of space
    /// (at open): writes then try again and get `NoSpace` until it exists.
    wal: Option<WalWriter>,
    mem: Arc<Memtable>,
    last_seq: u64,
    /// Total bytes framed into the WAL since open (a log position across segments).
    lsn: u64,
    /// The position up to which records were handed to the OS.
    flushed_lsn: u64,
}

/// Group commit coordination, under `Inner::syncing`.
#[derive(Default)]
struct SyncState {
    /// True while one writer (the sync leader) runs WAL writes and fsyncs for everyone.
    leader: bool,
    /// Records that a full disk kept out of the WAL: their writers still have to learn it.
    discard: Option<Discard>,
}

/// A range of log positions whose records were dropped (never written, removed from the
/// memtable) because the disk was full.
struct Discard {
    /// Records at positions in `(lo, hi]` were dropped.
    lo: u64,
    hi: u64,
    /// Writers of those records that have not been told yet.
    pending: usize,
}

/// Flags the background workers wait on.
#[derive(Default)]
struct WorkerState {
    shutdown: bool,
    /// On shutdown, flush every frozen memtable first.
    drain: bool,
    /// Test and backup hook: while above zero, the flush worker does not start a flush.
    flush_paused: usize,
    /// Set to wake the compaction worker.
    compaction_wanted: bool,
}

/// State shared by the engine handle and its worker threads.
struct Inner {
    fs: Arc<dyn Storage>,
    dir: PathBuf,
    wal_dir: PathBuf,
    sst_dir: PathBuf,
    opts: Options,
    counters: Arc<Counters>,
    cache: Arc<BlockCache>,
    sv: ArcSwap<SuperVersion>,
    /// Serializes super-version installs (short, no I/O); writers rotating memtables take it.
    sv_lock: Mutex<()>,
    /// Highest seqno readers may see.
    visible_seq: AtomicU64,
    next_file_id: AtomicU64,
    wal: Mutex<WalState>,
    /// Group commit: the sync leader and dropped records.
    syncing: Mutex<SyncState>,
    /// Signalled after each WAL fsync and when the leader steps down.
    sync_cv: Condvar,
    synced_lsn: AtomicU64,
    /// True while writers of dropped records have not all been told (see `Discard`):
    /// new writes are refused meanwhile.
    discard_pending: AtomicBool,
    /// Until this many milliseconds after `started`, writes are refused with `NoSpace`
    /// without touching the disk (a short backoff after the disk was found full).
    no_space_until_ms: AtomicU64,
    started: Instant,
    /// Bytes held by the `RESERVE` file (0: released or never taken).
    reserve_held: AtomicU64,
    /// The durable manifest state; its lock serializes every version edit (flush,
    /// compaction, checkpoint) including the manifest I/O. Writers never take it.
    manifest: Mutex<ManifestState>,
    /// Held for the duration of one compaction.
    compaction_lock: Mutex<()>,
    workers: Mutex<WorkerState>,
    /// Signalled when flush or compaction work may be waiting, or on shutdown.
    work_cv: Condvar,
    /// Signalled after each flush attempt.
    flush_done_cv: Condvar,
    poisoned: AtomicBool,
    poison_reason: Mutex<Option<String>>,
    /// The last background flush failure and whether it was a full disk.
    last_flush_error: Mutex<Option<(String, bool)>>,
    closed: AtomicBool,
    /// Held to keep the directory lock.
    _lock: Box<dyn StorageLock>,
}

/// An open engine. `Send + Sync`: share it through `Arc`.
pub struct Engine {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Engine {
    /// Opens (or creates) the engine in `dir`, replaying the WAL.
    ///
    /// On a full disk the open still succeeds: WAL segments that cannot be flushed stay in
    /// memory, reads are served and writes get [`Error::NoSpace`] until there is room.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        opts.validate().map_err(Error::InvalidArgument)?;
        let inner = Arc::new(recovery::open(dir.as_ref(), opts)?);
        let mut threads = Vec::new();
        threads.push(worker::spawn(&inner, "minidb-flush", flush::run_worker)?);
        if inner.opts.background_compaction {
            threads.push(worker::spawn(
                &inner,
                "minidb-compact",
                compaction::run_worker,
            )?);
        }
        if let SyncPolicy::Interval(_) = inner.opts.sync {
            threads.push(worker::spawn(&inner, "minidb-wal-sync", write::run_syncer)?);
        }
        inner.wake_compaction();
        Ok(Engine {
            inner,
            threads: Mutex::new(threads),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the engine was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::with_capacity(key.len() + value.len());
        b.put(key, value);
        self.write(b)
    }

    /// Deletes `key` (a tombstone; absent keys are fine).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let mut b = WriteBatch::with_capacity(key.len());
        b.delete(key);
        self.write(b)
    }

    /// Applies `batch` atomically: all of it or none, also across a crash.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.write_seq(batch).map(drop)
    }

    /// [`Engine::write`], returning the sequence number of the batch's first operation:
    /// its commit position (sequence numbers grow in commit order; readers see a prefix).
    pub fn write_seq(&self, batch: WriteBatch) -> Result<u64> {
        let _span = tracing::info_span!("engine.write", ops = batch.len()).entered();
        self.inner.write(batch)
    }

    /// The highest sequence number readers see now: every write up to it is visible.
    pub fn visible_sequence(&self) -> u64 {
        self.inner.visible_seq.load(Ordering::SeqCst)
    }

    /// The newest value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let _span = tracing::info_span!("engine.get").entered();
        stats::inc(&self.inner.counters.gets);
        self.snapshot().get(key)
    }

    /// A consistent point-in-time view for several reads.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot()
    }

    /// Streams live entries with keys in `range`, in order, from a snapshot taken now.
    pub fn scan<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Scan {
        self.snapshot().scan(range)
    }

    /// Streams live entries whose keys start with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        self.snapshot().scan_prefix(prefix)
    }

    /// Streams every live entry.
    pub fn iter(&self) -> Scan {
        self.snapshot().iter()
    }

    /// Freezes the active memtable, writes it and every queued one to SSTables, and waits.
    pub fn flush(&self) -> Result<()> {
        flush::flush_all(&self.inner)
    }

    /// Flushes, then merges every table into the bottom level, dropping shadowed versions
    /// and tombstones. Waits for the result.
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        compaction::compact_all(&self.inner)
    }

    /// Holds the flush worker until the guard drops (tests, backups).
    pub fn pause_flush(&self) -> FlushPause {
        self.inner.workers.lock().flush_paused += 1;
        FlushPause {
            inner: self.inner.clone(),
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// True while the engine refuses writes after a failed fsync.
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::SeqCst)
    }

    /// Verifies every checksum of every live table; returns entries checked.
    pub fn verify(&self) -> Result<u64> {
        let sv = self.inner.sv.load_full();
        let mut n = 0;
        for t in sv.version.levels.iter().flatten() {
            n += verify::check_table(t)?;
        }
        Ok(n)
    }

    /// Writes a consistent, openable copy of the database to `dir` (which must not exist,
    /// or be empty) at one sequence number, while writes go on: hard links for the
    /// immutable tables (copies where links are impossible), the manifest, and the WAL
    /// records up to that sequence number. See the README's engine section.
    pub fn checkpoint(&self, dir: impl AsRef<Path>) -> Result<CheckpointInfo> {
        checkpoint::run(&self.inner, dir.as_ref())
    }

    /// Drains queued flushes, fsyncs the WAL, stops the workers. Further calls get `Closed`.
    /// Idempotent; the directory lock is released when the engine is dropped.
    pub fn shutdown(&self) -> Result<()> {
        self.stop(true)
    }

    /// [`Engine::shutdown`], then releases the directory lock.
    pub fn close(self) -> Result<()> {
        self.stop(true)
    }

    fn stop(&self, drain: bool) -> Result<()> {
        let first = !self.inner.closed.swap(true, Ordering::SeqCst);
        let mut result = Ok(());
        if first && drain && !self.is_poisoned() {
            result = write::sync_now(&self.inner);
        }
        {
            let mut w = self.inner.workers.lock();
            w.shutdown = true;
            w.drain = drain && result.is_ok();
            self.inner.work_cv.notify_all();
            self.inner.flush_done_cv.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            worker::join(&self.inner, t);
        }
        if first && !drain && !self.is_poisoned() {
            // Best effort: hand buffered WAL bytes to the OS, as a crashed process would not.
            if let Some(w) = self.inner.wal.lock().wal.as_mut() {
                let _ = w.flush_buf();
            }
        }
        if result.is_ok() && drain && !self.inner.sv.load().imms.is_empty() {
            if let Some(reason) = self.inner.poison_reason.lock().clone() {
                result = Err(Error::Poisoned { reason });
            }
        }
        result
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Without `close`, act like a crash that keeps the OS page cache: no drain.
        let _ = self.stop(false);
    }
}

/// Keeps the flush worker idle while alive. See [`Engine::pause_flush`].
pub struct FlushPause {
    inner: Arc<Inner>,
}

impl Drop for FlushPause {
    fn drop(&mut self) {
        let mut w = self.inner.workers.lock();
        w.flush_paused = w.flush_paused.saturating_sub(1);
        self.inner.work_cv.notify_all();
    }
}

impl Inner {
    fn alloc_file_id(&self) -> u64 {
        self.next_file_id.fetch_add(1, Ordering::SeqCst)
    }

    /// Stops writes for good after a failure that leaves the disk state unknown.
    fn poison(&self, reason: String) {
        tracing::error!(%reason, "engine poisoned: writes are refused until restart");
        let mut r = self.poison_reason.lock();
        if r.is_none() {
            *r = Some(reason);
        }
        self.poisoned.store(true, Ordering::SeqCst);
        self.flush_done_cv.notify_all();
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::SeqCst) {
            let reason = self.poison_reason.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned { reason });
        }
        Ok(())
    }

    /// Poisons on fsync failures; passes every error through.
    fn note_error(&self, e: Error) -> Error {
        if let Error::Fsync { .. } = &e {
            self.poison(e.to_string());
        }
        if let Error::NoSpace { .. } = &e {
            self.note_no_space();
        }
        if e.is_corruption() {
            stats::inc(&self.counters.corruption_errors);
        }
        e
    }

    fn wake_compaction(&self) {
        let mut w = self.workers.lock();
        w.compaction_wanted = true;
        self.work_cv.notify_all();
    }

    fn snapshot(&self) -> Snapshot {
        // Load the super-version before the seqno: every entry it holds in tables or frozen
        // memtables is then at or below the seqno, so the pair is one point in time.
        let sv = self.sv.load_full();
        let seq = self.visible_seq.load(Ordering::SeqCst);
        Snapshot::new(sv, seq)
    }

    /// Installs a new super-version built from the current one.
    fn install(&self, f: impl FnOnce(&SuperVersion) -> SuperVersion) {
        let _g = self.sv_lock.lock();
        let cur = self.sv.load_full();
        self.sv.store(Arc::new(f(&cur)));
    }

    /// Milliseconds since the engine opened.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The disk was found full: refuse writes without touching it for a short while.
    fn note_no_space(&self) {
        stats::inc(&self.counters.no_space_errors);
        let until =
            self.now_ms() + u64::try_from(self.opts.busy_retry_after.as_millis()).unwrap_or(100);
        self.no_space_until_ms.fetch_max(until, Ordering::SeqCst);
    }

    /// The `NoSpace` error writes get while the disk is known to be full.
    fn no_space(&self, context: impl Into<String>) -> Error {
        Error::NoSpace {
            context: context.into(),
            retry_after: error::NO_SPACE_RETRY_AFTER,
        }
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let sv = self.sv.load_full();
        let levels: Vec<LevelStats> = (0..NUM_LEVELS)
            .map(|l| LevelStats {
                files: sv.version.levels[l].len() as u64,
                bytes: sv.version.level_bytes(l),
            })
            .collect();
        let wal_disk_bytes = wal::list_segments(&*self.fs, &self.wal_dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| {
                self.fs
                    .open(&wal::segment_path(&self.wal_dir, id), false)
                    .and_then(|f| f.size())
                    .ok()
            })
            .sum();
        Stats {
            puts: stats::get(&c.puts),
            gets: stats::get(&c.gets),
            deletes: stats::get(&c.deletes),
            flushes: stats::get(&c.flushes),
            flush_errors: stats::get(&c.flush_errors),
            compacts: stats::get(&c.compacts),
            compaction_errors: stats::get(&c.compaction_errors),
            compaction_bytes_written: stats::get(&c.compaction_bytes_written),
            memtable_entries: sv.mem.len() as u64,
            memtable_bytes: sv.mem.approximate_bytes() as u64,
            immutable_count: sv.imms.len() as u64,
            immutable_bytes: sv.imms.iter().map(|m| m.approximate_bytes() as u64).sum(),
            busy_flush_queue: stats::get(&c.busy_flush_queue),
            busy_level0: stats::get(&c.busy_level0),
            busy_memory: stats::get(&c.busy_memory),
            no_space_errors: stats::get(&c.no_space_errors),
            reserve_bytes: self.reserve_held(),
            wal_bytes: stats::get(&c.wal_bytes),
            wal_syncs: stats::get(&c.wal_syncs),
            written_bytes: stats::get(&c.written_bytes),
            wal_disk_bytes,
            sst_disk_bytes: levels.iter().map(|l| l.bytes).sum(),
            block_cache_hits: stats::get(&c.block_cache_hits),
            block_cache_misses: stats::get(&c.block_cache_misses),
            block_cache_bytes: self.cache.weight(),
            bloom_filter_skips: stats::get(&c.bloom_skips),
            corruption_errors: stats::get(&c.corruption_errors),
            poisoned: self.poisoned.load(Ordering::SeqCst),
            poison_reason: self.poison_reason.lock().clone(),
            last_sequence: self.visible_seq.load(Ordering::SeqCst),
            levels,
        }
    }
}

/// Converts any `RangeBounds` over byte-like keys to owned bounds.
fn owned_bounds<K: AsRef<[u8]>, R: RangeBounds<K>>(range: &R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let own = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(range.start_bound()), own(range.end_bound()))
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_bounds_the_prefix() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }
}
