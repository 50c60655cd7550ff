//! Memtable flushes: the background worker and `Engine::flush`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::cache::BlockCache;
use super::error::{Error, Result};
use super::manifest::{self, sync_dir, TableRecord};
use super::memtable::Memtable;
use super::options::Options;
use super::sstable::{Table, TableBuilder};
use super::stats::{get, inc, Counters};
use super::storage::Storage;
use super::version::SuperVersion;
use super::{table_path, wal, Inner};
use std::time::Instant;

/// Flush attempts that may fail while `Engine::flush` waits before it gives up.
const FLUSH_WAIT_ERRORS: u64 = 3;

/// Writes the newest version of every key in `mem` to a new table at `path`.
fn write_memtable(fs: &dyn Storage, mem: &Memtable, path: &Path, opts: &Options) -> Result<u64> {
    let mut b = TableBuilder::create(
        fs,
        path,
        opts.block_size,
        opts.compression,
        opts.bloom_bits_per_key,
    )?;
    let mut cur = mem.next_after(None);
    while let Some(e) = cur {
        // Frozen memtables only hold visible entries and readers pin them, so older
        // versions of a key can go.
        if b.entries() == 0 || b.last_key() != e.key.as_ref() {
            b.add(&e.key, e.seq, e.value.as_deref())?;
        }
        let k = super::memtable::MemKey {
            key: e.key,
            seq: e.seq,
        };
        cur = mem.next_after(Some(&k));
    }
    b.finish()
}

/// Where new tables go and what they are opened with.
pub(super) struct TableSite<'a> {
    pub fs: &'a dyn Storage,
    pub sst_dir: &'a Path,
    pub opts: &'a Options,
    pub cache: &'a Arc<BlockCache>,
    pub counters: &'a Arc<Counters>,
}

/// Writes `mem` as table `id`, makes it and its name durable, and opens it. A failure
/// leaves no table file behind (best effort).
pub(super) fn build_table(
    site: &TableSite<'_>,
    mem: &Memtable,
    id: u64,
) -> Result<(Arc<Table>, u64)> {
    let fs = site.fs;
    let path = table_path(site.sst_dir, id);
    let built = write_memtable(fs, mem, &path, site.opts).and_then(|size| {
        sync_dir(fs, site.sst_dir)?;
        let table = Table::open(fs, &path, id, site.cache.clone(), site.counters.clone())?;
        Ok((Arc::new(table), size))
    });
    if built.is_err() {
        let _ = fs.remove_file(&path);
    }
    built
}

/// Flushes the oldest frozen memtable `mem` and installs its table at level 0.
fn flush_memtable(inner: &Inner, mem: &Arc<Memtable>) -> Result<()> {
    let _span =
        tracing::info_span!("engine.flush", memtable = mem.id(), entries = mem.len()).entered();
    let start = Instant::now();
    let (table, size) = inner.with_reserve(|| {
        let site = TableSite {
            fs: &*inner.fs,
            sst_dir: &inner.sst_dir,
            opts: &inner.opts,
            cache: &inner.cache,
            counters: &inner.counters,
        };
        build_table(&site, mem, inner.alloc_file_id())
    })?;
    let id = table.id();
    {
        // The edit lock is held across the manifest I/O; writers never take it (memtable
        // rotation only takes the short super-version lock).
        let mut m = inner.manifest.lock();
        let sv = inner.sv.load_full();
        let mut state = m.clone();
        state.tables.push(TableRecord { level: 0, id, size });
        state.last_seq = state.last_seq.max(mem.max_seq());
        // Rotations meanwhile only add memtables with larger ids, so this minimum holds.
        state.log_number = sv
            .imms
            .iter()
            .filter(|x| x.id() != mem.id())
            .map(|x| x.id())
            .chain(std::iter::once(sv.mem.id()))
            .min()
            .unwrap_or(state.log_number);
        state.next_file_id = inner.next_file_id.load(Ordering::SeqCst);
        let written = inner.with_reserve(|| {
            manifest::write(&*inner.fs, &inner.dir, &state).map_err(|f| {
                if !f.maybe_renamed {
                    return f.error;
                }
                // The new manifest may be the durable one: the table must stay.
                Error::Poisoned {
                    reason: format!("manifest edit failed after its rename: {}", f.error),
                }
            })
        });
        if let Err(e) = written {
            if let Error::Poisoned { reason } = &e {
                inner.poison(reason.clone());
            } else {
                drop(table);
                let _ = inner.fs.remove_file(&table_path(&inner.sst_dir, id));
            }
            return Err(e);
        }
        *m = state;
        inner.install(|cur| {
            let mut version = (*cur.version).clone();
            version.levels[0].push(table);
            version.sort();
            SuperVersion {
                mem: cur.mem.clone(),
                imms: cur
                    .imms
                    .iter()
                    .filter(|x| x.id() != mem.id())
                    .cloned()
                    .collect(),
                version: Arc::new(version),
            }
        });
    }
    let seg = wal::segment_path(&inner.wal_dir, mem.id());
    match inner.fs.remove_file(&seg) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %seg.display(), error = %e, "could not delete flushed WAL segment")
        }
    }
    inc(&inner.counters.flushes);
    if let Some(l) = &inner.opts.listener {
        l.on_flush(start.elapsed(), size);
    }
    inner.ensure_reserve();
    inner.wake_compaction();
    Ok(())
}

/// The flush worker: flushes frozen memtables oldest first, retrying failures.
pub(super) fn run_worker(inner: &Inner) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let mem = {
            let mut w = inner.workers.lock();
            loop {
                let sv = inner.sv.load();
                let poisoned = inner.poisoned.load(Ordering::SeqCst);
                let pending = sv.imms.last().cloned();
                if w.shutdown && (!w.drain || pending.is_none() || poisoned) {
                    return;
                }
                if let Some(m) = pending {
                    if !poisoned && (w.flush_paused == 0 || w.shutdown) {
                        break m;
                    }
                }
                inner.work_cv.wait(&mut w);
            }
        };
        let result = flush_memtable(inner, &mem);
        let mut w = inner.workers.lock();
        match result {
            Ok(()) => backoff = Duration::from_millis(10),
            Err(e) => {
                inc(&inner.counters.flush_errors);
                let e = inner.note_error(e);
                *inner.last_flush_error.lock() = Some((e.to_string(), e.is_no_space()));
                if e.is_no_space() {
                    tracing::warn!(error = %e, memtable = mem.id(), "flush waits for disk space; will retry");
                } else {
                    tracing::error!(error = %e, memtable = mem.id(), "flush failed; will retry");
                }
                inner.flush_done_cv.notify_all();
                if !w.shutdown {
                    inner.work_cv.wait_for(&mut w, backoff);
                }
                // A full disk is looked at again within a second, so writes resume soon
                // after space comes back; other failures back off further.
                let cap = if e.is_no_space() { 1 } else { 5 };
                backoff = (backoff * 2).min(Duration::from_secs(cap));
            }
        }
        inner.flush_done_cv.notify_all();
    }
}

/// `Engine::flush`: freezes the active memtable and waits until it and all older ones are
/// in tables.
pub(super) fn flush_all(inner: &Inner) -> Result<()> {
    let errors_at_start = get(&inner.counters.flush_errors);
    let wait_failed = |inner: &Inner| -> Result<()> {
        inner.check_poisoned()?;
        if inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if get(&inner.counters.flush_errors) >= errors_at_start + FLUSH_WAIT_ERRORS {
            let last = inner.last_flush_error.lock().clone();
            return Err(match last {
                Some((msg, true)) => inner.no_space(format!("flush: {msg}")),
                Some((msg, false)) => Error::io(
                    "flush",
                    std::io::Error::other(format!("background flush keeps failing: {msg}")),
                ),
                None => Error::io(
                    "flush",
                    std::io::Error::other("background flush keeps failing; see the logs"),
                ),
            });
        }
        Ok(())
    };
    let target = loop {
        wait_failed(inner)?;
        {
            let mut w = inner.wal.lock();
            if w.mem.is_empty() {
                break inner.sv.load().imms.first().map(|m| m.id());
            }
            if inner.sv.load().imms.len() < inner.opts.max_immutable_memtables {
                let id = w.mem.id();
                inner.rotate(&mut w, true)?;
                break Some(id);
            }
        }
        let mut w = inner.workers.lock();
        inner
            .flush_done_cv
            .wait_for(&mut w, Duration::from_millis(200));
    };
    let Some(target) = target else {
        return Ok(());
    };
    loop {
        let mut w = inner.workers.lock();
        if inner.sv.load().imms.iter().all(|m| m.id() > target) {
            return Ok(());
        }
        wait_failed(inner)?;
        inner
            .flush_done_cv
            .wait_for(&mut w, Duration::from_millis(200));
    }
}
