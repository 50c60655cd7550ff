//! Counters and gauges, shared by the engine's parts and read by `Engine::stats`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters; every field is a monotonic counter unless noted.
#[derive(Default)]
pub(crate) struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub deletes: AtomicU64,
    pub batches: AtomicU64,
    pub written_bytes: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_errors: AtomicU64,
    pub compacts: AtomicU64,
    pub compaction_errors: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    pub busy_flush_queue: AtomicU64,
    pub busy_level0: AtomicU64,
    pub busy_memory: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub block_cache_hits: AtomicU64,
    pub block_cache_misses: AtomicU64,
    pub bloom_skips: AtomicU64,
    pub corruption_errors: AtomicU64,
    pub no_space_errors: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Reads a counter.
pub(crate) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Files and bytes on one level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LevelStats {
    /// SSTables on the level.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
}

/// A point-in-time copy of the engine's counters and gauges.
///
/// Keeps MiniDBGo's names (`puts`, `gets`, `deletes`, `flushes`, `compacts`,
/// `memtable_entries`, `memtable_bytes`, `immutable_count`, and per-level files/bytes).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Put operations applied (batch puts included).
    pub puts: u64,
    /// Point lookups.
    pub gets: u64,
    /// Delete operations applied.
    pub deletes: u64,
    /// Memtables flushed to SSTables.
    pub flushes: u64,
    /// Failed flush attempts (each is retried).
    pub flush_errors: u64,
    /// Compactions finished.
    pub compacts: u64,
    /// Failed compactions.
    pub compaction_errors: u64,
    /// Bytes written by compaction.
    pub compaction_bytes_written: u64,
    /// Entries (versions) in the active memtable (gauge).
    pub memtable_entries: u64,
    /// Bytes in the active memtable (gauge).
    pub memtable_bytes: u64,
    /// Frozen memtables waiting for flush (gauge).
    pub immutable_count: u64,
    /// Bytes in frozen memtables (gauge).
    pub immutable_bytes: u64,
    /// Writes refused because the flush queue was full.
    pub busy_flush_queue: u64,
    /// Writes refused because level 0 was full.
    pub busy_level0: u64,
    /// Writes refused by the memory budget hook.
    pub busy_memory: u64,
    /// Times the disk was found full (writes refused with `NoSpace`, flushes, compactions
    /// or manifest edits that could not finish).
    pub no_space_errors: u64,
    /// Bytes held in the `RESERVE` file now (0 once released on a full disk) (gauge).
    pub reserve_bytes: u64,
    /// Bytes appended to the WAL.
    pub wal_bytes: u64,
    /// WAL fsyncs.
    pub wal_syncs: u64,
    /// Key and value bytes written by users.
    pub written_bytes: u64,
    /// WAL bytes on disk (gauge).
    pub wal_disk_bytes: u64,
    /// SSTable bytes on disk (gauge).
    pub sst_disk_bytes: u64,
    /// Block cache hits.
    pub block_cache_hits: u64,
    /// Block cache misses.
    pub block_cache_misses: u64,
    /// Block cache bytes in use (gauge).
    pub block_cache_bytes: u64,
    /// Table probes skipped by a bloom filter.
    pub bloom_filter_skips: u64,
    /// Checksum or format errors met.
    pub corruption_errors: u64,
    /// True once a failed fsync stopped writes.
    pub poisoned: bool,
    /// Why the engine is poisoned.
    pub poison_reason: Option<String>,
    /// Last sequence number visible to readers.
    pub last_sequence: u64,
    /// Files and bytes per level, level 0 first.
    pub levels: Vec<LevelStats>,
}

impl Stats {
    /// Total writes refused with `Busy`.
    pub fn busy_total(&self) -> u64 {
        self.busy_flush_queue + self.busy_level0 + self.busy_memory
    }

    /// Flat `(name, value)` pairs under MiniDBGo's names, `level_N_files`/`level_N_bytes` included.
    pub fn named(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = [
            ("puts", self.puts),
            ("gets", self.gets),
            ("deletes", self.deletes),
            ("flushes", self.flushes),
            ("flush_errors", self.flush_errors),
            ("compacts", self.compacts),
            ("compaction_errors", self.compaction_errors),
            ("compaction_bytes_written", self.compaction_bytes_written),
            ("memtable_entries", self.memtable_entries),
            ("memtable_bytes", self.memtable_bytes),
            ("immutable_count", self.immutable_count),
            ("immutable_bytes", self.immutable_bytes),
            ("busy_flush_queue", self.busy_flush_queue),
            ("busy_level0", self.busy_level0),
            ("busy_memory", self.busy_memory),
            ("no_space_errors", self.no_space_errors),
            ("reserve_bytes", self.reserve_bytes),
            ("write_stalls", self.busy_total()),
            ("wal_bytes", self.wal_bytes),
            ("wal_syncs", self.wal_syncs),
            ("written_bytes", self.written_bytes),
            ("wal_disk_bytes", self.wal_disk_bytes),
            ("sst_disk_bytes", self.sst_disk_bytes),
            ("block_cache_hits", self.block_cache_hits),
            ("block_cache_misses", self.block_cache_misses),
            ("block_cache_bytes", self.block_cache_bytes),
            ("bloom_filter_skips", self.bloom_filter_skips),
            ("corruption_errors", self.corruption_errors),
            ("poisoned", u64::from(self.poisoned)),
            ("last_sequence", self.last_sequence),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (i, l) in self.levels.iter().enumerate() {
            v.push((format!("level_{i}_files"), l.files));
            v.push((format!("level_{i}_bytes"), l.bytes));
        }
        v
    }
}
