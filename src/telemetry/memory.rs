//! jemalloc as the global allocator, its statistics, the process memory limit and the
//! memory budget that feeds the engine's write backpressure.
//!
//! * [`MemorySampler`] reads jemalloc's statistics on its own thread every ~100 ms into
//!   [`MemoryStatsCell`] atomics; no request ever reads jemalloc itself.
//! * [`resolve_limit`] picks the process limit (the analogue of Go's `GOMEMLIMIT`): the
//!   configured value (`memory.limit_bytes`, env `MINIDB_MEMORY__LIMIT_BYTES`), else 80% of
//!   the cgroup memory limit, else 512 MiB.
//! * [`MemoryGovernor`] implements [`MemoryBudget`] with hysteresis: over budget above 90%
//!   of the limit, back under only below 80%.
//! * [`plan`] sizes the memtables and the block cache inside the limit.
//! * The sampler also purges jemalloc's dirty pages ([`purge_dirty_pages`]) when they
//!   would carry RSS past the budget, so that RSS follows `active` (tests/api_flood.rs).

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::{MemoryBudget, Options};

/// jemalloc is the allocator of the library, the binary and every test that links them.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The limit used when neither the config nor a cgroup sets one: 512 MiB.
pub const DEFAULT_LIMIT_BYTES: u64 = 512 << 20;
/// Share of the cgroup limit taken as the process limit, in percent.
pub const CGROUP_SHARE_PERCENT: u64 = 80;
/// The high watermark, in percent of the limit: above it writes are refused.
pub const HIGH_WATERMARK_PERCENT: u64 = 90;
/// The low watermark, in percent of the limit: below it writes are allowed again.
pub const LOW_WATERMARK_PERCENT: u64 = 80;
/// How often the sampler reads jemalloc by default.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// cgroup limits at or above this are "no limit" (v1 reports `i64::MAX` rounded to a page).
const UNLIMITED_THRESHOLD: u64 = 1 << 60;

/// One reading of jemalloc's statistics, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// `stats.allocated`: bytes in live allocations.
    pub allocated: u64,
    /// `stats.active`: bytes in pages holding live allocations.
    pub active: u64,
    /// `stats.resident`: bytes in physically resident pages mapped by the allocator.
    pub resident: u64,
    /// `stats.metadata`: bytes of allocator metadata.
    pub metadata: u64,
    /// `stats.retained`: bytes of virtual memory kept for reuse, not returned to the OS.
    pub retained: u64,
}

/// The latest [`MemoryStats`], cached in atomics so that readers never touch jemalloc.
#[derive(Debug, Default)]
pub struct MemoryStatsCell {
    allocated: AtomicU64,
    active: AtomicU64,
    resident: AtomicU64,
    metadata: AtomicU64,
    retained: AtomicU64,
}

impl MemoryStatsCell {
    /// Stores a reading (the sampler does this; tests may too).
    pub fn store(&self, s: MemoryStats) {
        self.allocated.store(s.allocated, Ordering::Relaxed);
        self.active.store(s.active, Ordering::Relaxed);
        self.resident.store(s.resident, Ordering::Relaxed);
        self.metadata.store(s.metadata, Ordering::Relaxed);
        self.retained.store(s.retained, Ordering::Relaxed);
    }

    /// The latest reading.
    pub fn load(&self) -> MemoryStats {
        MemoryStats {
            allocated: self.allocated.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            resident: self.resident.load(Ordering::Relaxed),
            metadata: self.metadata.load(Ordering::Relaxed),
            retained: self.retained.load(Ordering::Relaxed),
        }
    }

    /// The figure the budget is measured on: jemalloc `active` (see [`MemoryGovernor`]).
    pub fn budget_usage(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// Reads jemalloc's statistics now (advancing the epoch first).
///
/// Without the `jemalloc` feature only `resident` is filled, from `/proc/self/statm`.
pub fn read_stats() -> MemoryStats {
    #[cfg(feature = "jemalloc")]
    {
        use tikv_jemalloc_ctl::{epoch, stats};
        // Statistics are snapshotted per epoch; a failed read leaves the field at 0.
        let _ = epoch::advance();
        MemoryStats {
            allocated: stats::allocated::read().unwrap_or(0) as u64,
            active: stats::active::read().unwrap_or(0) as u64,
            resident: stats::resident::read().unwrap_or(0) as u64,
            metadata: stats::metadata::read().unwrap_or(0) as u64,
            retained: stats::retained::read().unwrap_or(0) as u64,
        }
    }
    #[cfg(not(feature = "jemalloc"))]
    {
        let resident = proc_statm_resident().unwrap_or(0);
        MemoryStats {
            allocated: resident,
            active: resident,
            resident,
            metadata: 0,
            retained: 0,
        }
    }
}

#[cfg(not(feature = "jemalloc"))]
fn proc_statm_resident() -> Option<u64> {
    let s = fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A background thread copying [`read_stats`] into a [`MemoryStatsCell`] at an interval.
///
/// The thread stops when the sampler is dropped.
pub struct MemorySampler {
    cell: Arc<MemoryStatsCell>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl MemorySampler {
    /// Takes a first reading, then starts the sampling thread.
    pub fn start(interval: Duration) -> std::io::Result<MemorySampler> {
        Self::start_with(interval, None)
    }

    /// Like [`MemorySampler::start`], also re-evaluating `governor` after every reading so
    /// that its state (and the log line on a transition) follows memory even without writes.
    pub fn start_with(
        interval: Duration,
        governor: Option<Arc<MemoryGovernor>>,
    ) -> std::io::Result<MemorySampler> {
        let cell = match &governor {
            Some(g) => g.stats_cell(),
            None => Arc::new(MemoryStatsCell::default()),
        };
        cell.store(read_stats());
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (c, s) = (cell.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("minidb-mem-sampler".into())
            .spawn(move || sampler_loop(&c, &s, interval, governor.as_deref()))?;
        Ok(MemorySampler {
            cell,
            stop,
            handle: Some(handle),
        })
    }

    /// The cell the thread writes into.
    pub fn cell(&self) -> Arc<MemoryStatsCell> {
        self.cell.clone()
    }
}

fn sampler_loop(
    cell: &MemoryStatsCell,
    stop: &(Mutex<bool>, Condvar),
    interval: Duration,
    governor: Option<&MemoryGovernor>,
) {
    let (lock, cv) = stop;
    let mut stopped = match lock.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    while !*stopped {
        stopped = match cv.wait_timeout(stopped, interval) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
        if *stopped {
            break;
        }
        let stats = read_stats();
        cell.store(stats);
        if let Some(g) = governor {
            if g.should_purge(&stats) {
                purge_dirty_pages();
                cell.store(read_stats());
            }
            g.over_budget();
        }
    }
}

/// Calls of [`purge_dirty_pages`] since the process started.
static PURGES: AtomicU64 = AtomicU64::new(0);

/// How many times freed pages were returned to the OS ([`purge_dirty_pages`]) since the
/// process started: the nearest thing to a garbage collection cycle that MiniDB has
/// (`/api/stats` reports it as MiniDBGo's `go_num_gc`).
pub fn purge_count() -> u64 {
    PURGES.load(Ordering::Relaxed)
}

/// Returns every arena's dirty pages to the OS now (`arena.<all>.purge`).
///
/// jemalloc keeps freed pages resident for `dirty_decay_ms` (10 s by default) so that it
/// can reuse them without page faults. The budget is measured on `active`, which excludes
/// them, but the kernel (and the cgroup) count them in RSS: under a flood of large
/// requests they reached 40-50 MiB beyond a 64 MiB limit. The sampler purges them when
/// they would carry RSS past the budget (see [`MemoryGovernor::should_purge`]).
pub fn purge_dirty_pages() {
    PURGES.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "jemalloc")]
    {
        // MALLCTL_ARENAS_ALL: the pseudo-index addressing every arena at once.
        const NAME: &[u8] = b"arena.4096.purge\0";
        // SAFETY: `arena.<i>.purge` is a void control: it reads and writes nothing, so all
        // pointers are null and the length 0, as jemalloc requires; NAME is NUL-terminated.
        let _ = unsafe {
            tikv_jemalloc_sys::mallctl(
                NAME.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        match lock.lock() {
            Ok(mut g) => *g = true,
            Err(p) => *p.into_inner() = true,
        }
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where the memory limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    /// The config (`memory.limit_bytes` / `MINIDB_MEMORY__LIMIT_BYTES`).
    Configured,
    /// 80% of the cgroup v2 `memory.max`.
    CgroupV2,
    /// 80% of the cgroup v1 `memory/memory.limit_in_bytes`.
    CgroupV1,
    /// No limit found: [`DEFAULT_LIMIT_BYTES`].
    Default,
}

/// The process memory limit in bytes: see [`resolve_limit_with_source`].
pub fn resolve_limit(configured: Option<u64>, cgroup_root: &Path) -> u64 {
    resolve_limit_with_source(configured, cgroup_root).0
}

/// The process memory limit and where it came from.
///
/// `configured` wins when it is non-zero. Otherwise 80% of the cgroup limit read under
/// `cgroup_root` (normally `/sys/fs/cgroup`): v2 `memory.max`, then v1
/// `memory/memory.limit_in_bytes`; `max`, unreadable or absurdly large values mean "no
/// limit". With no limit at all, 512 MiB.
pub fn resolve_limit_with_source(
    configured: Option<u64>,
    cgroup_root: &Path,
) -> (u64, LimitSource) {
    if let Some(n) = configured.filter(|n| *n > 0) {
        return (n, LimitSource::Configured);
    }
    let v2 = read_cgroup_limit(&cgroup_root.join("memory.max"));
    if let Some(n) = v2 {
        return (n / 100 * CGROUP_SHARE_PERCENT, LimitSource::CgroupV2);
    }
    let v1 = read_cgroup_limit(&cgroup_root.join("memory").join("memory.limit_in_bytes"));
    if let Some(n) = v1 {
        return (n / 100 * CGROUP_SHARE_PERCENT, LimitSource::CgroupV1);
    }
    (DEFAULT_LIMIT_BYTES, LimitSource::Default)
}

/// A cgroup limit file's value, or `None` for "max", garbage, a missing file or no limit.
fn read_cgroup_limit(path: &Path) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let n: u64 = text.trim().parse().ok()?;
    (n > 0 && n < UNLIMITED_THRESHOLD).then_some(n)
}

/// The memory budget hook: over budget above the high watermark, and again under it only
/// below the low watermark (hysteresis, so the state does not flap).
///
/// It is measured on jemalloc `active`, not `resident` nor `allocated`:
/// * `resident` keeps freed dirty pages until jemalloc's decay returns them (seconds), so
///   after a burst it would refuse writes for memory that is already free and reusable;
/// * `allocated` ignores page-level fragmentation, which is real memory the cgroup counts;
/// * `active` is the pages that hold live data: it falls as soon as memory is freed and
///   includes fragmentation. The gap to `resident` (dirty pages, metadata) is what the
///   other 10-20% of the limit, and the 20% between the limit and the cgroup, are for.
#[derive(Debug)]
pub struct MemoryGovernor {
    limit: u64,
    high: u64,
    low: u64,
    over: AtomicBool,
    stats: Arc<MemoryStatsCell>,
}

impl MemoryGovernor {
    /// A governor for `limit` bytes, reading usage from `stats`.
    pub fn new(limit: u64, stats: Arc<MemoryStatsCell>) -> MemoryGovernor {
        MemoryGovernor {
            limit,
            high: limit / 100 * HIGH_WATERMARK_PERCENT,
            low: limit / 100 * LOW_WATERMARK_PERCENT,
            over: AtomicBool::new(false),
            stats,
        }
    }

    /// The process memory limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The high watermark in bytes (writes refused above it).
    pub fn high_watermark(&self) -> u64 {
        self.high
    }

    /// The low watermark in bytes (writes allowed again below it).
    pub fn low_watermark(&self) -> u64 {
        self.low
    }

    /// The bytes the budget is measured on right now (jemalloc `active`).
    pub fn usage(&self) -> u64 {
        self.stats.budget_usage()
    }

    /// The state as last evaluated, without re-evaluating it.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// The statistics cell this governor reads.
    pub fn stats_cell(&self) -> Arc<MemoryStatsCell> {
        self.stats.clone()
    }

    /// Dirty pages (`resident` − `active` − `metadata`) tolerated before the sampler
    /// purges them: 1/16 of the limit, at least 2 MiB.
    pub fn purge_slack(&self) -> u64 {
        (self.limit / 16).max(2 << 20)
    }

    /// True when jemalloc's resident memory is past the low watermark and more than
    /// [`MemoryGovernor::purge_slack`] of it is freed-but-kept (dirty) pages. Below the low
    /// watermark dirty pages are left to jemalloc's own decay (cheaper reuse).
    pub fn should_purge(&self, s: &MemoryStats) -> bool {
        let dirty = s.resident.saturating_sub(s.active + s.metadata);
        s.resident > self.low && dirty > self.purge_slack()
    }
}

impl MemoryBudget for MemoryGovernor {
    fn over_budget(&self) -> bool {
        let used = self.usage();
        let was = self.over.load(Ordering::Relaxed);
        let now = if was {
            used >= self.low
        } else {
            used > self.high
        };
        if now != was
            && self
                .over
                .compare_exchange(was, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            if now {
                tracing::warn!(
                    used,
                    limit = self.limit,
                    high = self.high,
                    "memory over budget: refusing writes"
                );
            } else {
                tracing::info!(
                    used,
                    limit = self.limit,
                    low = self.low,
                    "memory back under budget: accepting writes"
                );
            }
        }
        now
    }
}

/// How the memory limit is shared out; see [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Size at which one memtable is frozen (`Options::memtable_bytes`).
    pub memtable_bytes: usize,
    /// Frozen memtables allowed to wait for flush (`Options::max_immutable_memtables`).
    pub max_immutable_memtables: usize,
    /// Block cache capacity (`Options::block_cache_bytes`).
    pub block_cache_bytes: usize,
}

impl MemoryPlan {
    /// Bytes the memtables may hold at most: the active one plus the frozen ones.
    pub fn memtables_total(&self) -> u64 {
        self.memtable_bytes as u64 * (1 + self.max_immutable_memtables as u64)
    }

    /// Writes the plan into engine options.
    pub fn apply(&self, opts: &mut Options) {
        opts.memtable_bytes = self.memtable_bytes;
        opts.max_immutable_memtables = self.max_immutable_memtables;
        opts.block_cache_bytes = self.block_cache_bytes;
    }
}

/// Shares `limit` bytes out between the engine's caches.
///
/// * memtables: 40% in all, split over the active memtable and 3 frozen ones (10% each),
///   each between 1 MiB and 64 MiB. Recovery replays the WAL into memtables of the same size
///   and flushes as it goes, so it stays inside the same share;
/// * block cache: 20%, between 1 MiB and 1 GiB;
/// * the remaining 40% or more is headroom: request bodies and responses, compaction and
///   flush buffers, bloom filters and index blocks, allocator fragmentation; the high
///   watermark (90%) refuses writes before the headroom is gone.
///
/// With the 512 MiB default that is 4 × 51 MiB memtables and a 102 MiB cache; under a
/// 64 MiB limit, 4 × 6.4 MiB and 12.8 MiB.
pub fn plan(limit: u64) -> MemoryPlan {
    const MIB: u64 = 1 << 20;
    let max_immutable = 3;
    let memtable = (limit / 10).clamp(MIB, 64 * MIB);
    let cache = (limit / 5).clamp(MIB, 1024 * MIB);
    MemoryPlan {
        memtable_bytes: usize::try_from(memtable).unwrap_or(usize::MAX),
        max_immutable_memtables: max_immutable,
        block_cache_bytes: usize::try_from(cache).unwrap_or(usize::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_live_stats() {
        let v: Vec<u8> = vec![1; 4 << 20];
        let s = read_stats();
        assert!(s.resident > 0, "{s:?}");
        #[cfg(feature = "jemalloc")]
        {
            assert!(s.allocated >= 4 << 20, "{s:?}");
            assert!(s.active >= s.allocated, "{s:?}");
        }
        drop(v);
    }

    #[test]
    fn sampler_fills_the_cell() {
        let sampler = match MemorySampler::start(Duration::from_millis(10)) {
            Ok(s) => s,
            Err(e) => panic!("sampler: {e}"),
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(sampler.cell().load().resident > 0);
    }

    #[test]
    fn purges_dirty_pages_only_past_the_low_watermark() {
        const MIB: u64 = 1 << 20;
        let g = MemoryGovernor::new(64 * MIB, Arc::new(MemoryStatsCell::default()));
        let stats = |active: u64, resident: u64| MemoryStats {
            active: active * MIB,
            resident: resident * MIB,
            metadata: 5 * MIB,
            ..MemoryStats::default()
        };
        // 45 MiB of dirty pages, but resident is under the low watermark: jemalloc decays.
        assert!(!g.should_purge(&stats(5, 50)));
        // Past the low watermark with 40 MiB dirty: purge.
        assert!(g.should_purge(&stats(30, 75)));
        // Past it, but dirty within the slack (64 MiB / 16 = 4 MiB): leave it.
        assert!(!g.should_purge(&stats(50, 58)));
        purge_dirty_pages();
        assert!(read_stats().resident > 0);
    }

    #[test]
    fn plan_fits_the_limit() {
        for limit in [16u64 << 20, 64 << 20, 512 << 20, 8 << 30, 64 << 30] {
            let p = plan(limit);
            let used = p.memtables_total() + p.block_cache_bytes as u64;
            assert!(used <= limit * 6 / 10 + (5 << 20), "{limit}: {p:?}");
            let mut o = Options::default();
            p.apply(&mut o);
            assert!(o.validate().is_ok());
        }
        assert_eq!(plan(64 << 20).block_cache_bytes as u64, (64u64 << 20) / 5);
    }
}
