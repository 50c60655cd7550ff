//! Engine options, each with a documented default.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::storage::{StdFs, Storage};

/// When the WAL is fsynced relative to acknowledging a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncPolicy {
    /// fsync before acknowledging; concurrent writers share one fsync (group commit).
    /// A write is visible to readers only once it is durable. The default.
    Always,
    /// A background thread fsyncs at this interval; a crash may lose that window.
    Interval(Duration),
    /// Hand every batch to the OS (`write(2)`) before acknowledging, never fsync on the
    /// write path: a killed process loses nothing, a power cut may lose recent writes.
    None,
}

/// Block compression for SSTables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// LZ4 (lz4_flex); blocks that do not shrink are stored raw.
    Lz4,
}

/// The outside memory check that feeds backpressure (the telemetry layer feeds it jemalloc).
pub trait MemoryBudget: Send + Sync {
    /// True while writes must be refused for memory.
    fn over_budget(&self) -> bool;
}

/// Callbacks for background events, so metrics live outside the engine.
pub trait EventListener: Send + Sync {
    /// A WAL fsync finished.
    fn on_wal_sync(&self, _duration: Duration) {}
    /// A memtable flush finished, writing `bytes` to one SSTable.
    fn on_flush(&self, _duration: Duration, _bytes: u64) {}
    /// A compaction finished, writing `bytes`.
    fn on_compaction(&self, _duration: Duration, _bytes: u64) {}
    /// WAL replay at open: `replayed` of `total` WAL bytes done. Called once with
    /// `replayed == 0` before the first segment (also when there is nothing to replay),
    /// after each segment, and last with `replayed == total`.
    fn on_recovery_progress(&self, _replayed: u64, _total: u64) {}
}

/// Options for [`crate::engine::Engine::open`]. Start from `Options::default()` and set
/// fields (the struct may grow).
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Freeze the memtable at this many records. Default 10,000 (MiniDBGo's FLUSH_SIZE).
    pub flush_size: usize,
    /// Freeze the memtable at this many bytes. Default 16 MiB (MiniDBGo's MAX_MEM_MB).
    pub memtable_bytes: usize,
    /// Frozen memtables that may wait for flush before writes get `Busy`. Default 3.
    pub max_immutable_memtables: usize,
    /// WAL sync policy. Default [`SyncPolicy::Always`].
    pub sync: SyncPolicy,
    /// Target uncompressed data block size. Default 4 KiB.
    pub block_size: usize,
    /// Bloom filter bits per key (0 disables filters). Default 10 (~1% false positives).
    pub bloom_bits_per_key: usize,
    /// Block cache capacity in bytes. Default 32 MiB.
    pub block_cache_bytes: usize,
    /// Data block compression. Default [`Compression::Lz4`].
    pub compression: Compression,
    /// Level-0 file count that starts an L0→L1 compaction. Default 4.
    pub level0_compaction_trigger: usize,
    /// Level-0 file count at which writes get `Busy`. Default 20.
    pub level0_stop_writes: usize,
    /// Target size of level 1; each deeper level is `level_multiplier` times larger. Default 64 MiB.
    pub level_base_bytes: u64,
    /// Size ratio between adjacent levels. Default 10.
    pub level_multiplier: u64,
    /// SSTables written by compaction are cut at about this size. Default 32 MiB.
    pub target_file_bytes: u64,
    /// Run compaction in the background. Default true; `compact()` works either way.
    pub background_compaction: bool,
    /// The retry hint given with `Busy`. Default 100 ms.
    pub busy_retry_after: Duration,
    /// Outside memory check; `None` disables memory backpressure. Default `None`.
    pub memory_budget: Option<Arc<dyn MemoryBudget>>,
    /// Background event callbacks. Default `None`.
    pub listener: Option<Arc<dyn EventListener>>,
    /// Where every file operation goes. Default [`StdFs`], the real file system; tests use
    /// [`crate::engine::storage::SimFs`].
    pub storage: Arc<dyn Storage>,
    /// Bytes kept in a preallocated `RESERVE` file and released when the disk fills, so a
    /// flush and a manifest edit can still finish. 0 disables it. Default 16 MiB.
    pub reserve_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            flush_size: 10_000,
            memtable_bytes: 16 << 20,
            max_immutable_memtables: 3,
            sync: SyncPolicy::Always,
            block_size: 4096,
            bloom_bits_per_key: 10,
            block_cache_bytes: 32 << 20,
            compression: Compression::Lz4,
            level0_compaction_trigger: 4,
            level0_stop_writes: 20,
            level_base_bytes: 64 << 20,
            level_multiplier: 10,
            target_file_bytes: 32 << 20,
            background_compaction: true,
            busy_retry_after: Duration::from_millis(100),
            memory_budget: None,
            listener: None,
            storage: Arc::new(StdFs),
            reserve_bytes: 16 << 20,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("flush_size", &self.flush_size)
            .field("memtable_bytes", &self.memtable_bytes)
            .field("max_immutable_memtables", &self.max_immutable_memtables)
            .field("sync", &self.sync)
            .field("block_size", &self.block_size)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("compression", &self.compression)
            .field("level0_compaction_trigger", &self.level0_compaction_trigger)
            .field("level0_stop_writes", &self.level0_stop_writes)
            .field("level_base_bytes", &self.level_base_bytes)
            .field("level_multiplier", &self.level_multiplier)
            .field("target_file_bytes", &self.target_file_bytes)
            .field("background_compaction", &self.background_compaction)
            .field("memory_budget", &self.memory_budget.is_some())
            .field("listener", &self.listener.is_some())
            .field("storage", &self.storage)
            .field("reserve_bytes", &self.reserve_bytes)
            .finish()
    }
}

impl Options {
    /// Checks ranges; returns a message naming the option on failure.
    pub fn validate(&self) -> Result<(), String> {
        let checks: [(&str, bool); 8] = [
            ("flush_size must be at least 1", self.flush_size >= 1),
            (
                "memtable_bytes must be at least 4 KiB",
                self.memtable_bytes >= 4096,
            ),
            (
                "max_immutable_memtables must be at least 1",
                self.max_immutable_memtables >= 1,
            ),
            (
                "block_size must be between 256 B and 1 MiB",
                (256..=1 << 20).contains(&self.block_size),
            ),
            (
                "bloom_bits_per_key must be at most 64",
                self.bloom_bits_per_key <= 64,
            ),
            (
                "level0_compaction_trigger must be at least 2 and below level0_stop_writes",
                self.level0_compaction_trigger >= 2
                    && self.level0_compaction_trigger < self.level0_stop_writes,
            ),
            (
                "level_multiplier must be at least 2",
                self.level_multiplier >= 2,
            ),
            (
                "target_file_bytes and level_base_bytes must be at least 64 KiB",
                self.target_file_bytes >= 64 << 10 && self.level_base_bytes >= 64 << 10,
            ),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((msg, _)) => Err((*msg).to_string()),
            None => Ok(()),
        }
    }
}
