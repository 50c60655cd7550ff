//! Memtable flushes (the background worker and `Engine::flush`) and recovery at open.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cache::BlockCache;
use super::error::{Error, IoContext, Result};
use super::manifest::{self, sync_dir, ManifestState, TableRecord};
use super::memtable::Memtable;
use super::options::Options;
use super::sstable::{Table, TableBuilder};
use super::stats::{get, inc, Counters};
use super::version::{SuperVersion, Version, NUM_LEVELS};
use super::{table_path, wal, Inner};

/// Flush attempts that may fail while `Engine::flush` waits before it gives up.
const FLUSH_WAIT_ERRORS: u64 = 3;

/// Writes the newest version of every key in `mem` to a new table at `path`.
fn write_memtable(mem: &Memtable, path: &Path, opts: &Options) -> Result<u64> {
    let mut b = TableBuilder::create(
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

/// Writes `mem` as table `id` in `sst_dir` and opens it.
fn build_table(
    mem: &Memtable,
    id: u64,
    sst_dir: &Path,
    opts: &Options,
    cache: &Arc<BlockCache>,
    counters: &Arc<Counters>,
) -> Result<(Arc<Table>, u64)> {
    let path = table_path(sst_dir, id);
    let written = crate::engine::fault::fail_sync("flush-build")
        .map_err(|e| Error::io(format!("build table {}", path.display()), e))
        .and_then(|()| write_memtable(mem, &path, opts));
    let size = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    sync_dir(sst_dir)?;
    let table = Table::open(&path, id, cache.clone(), counters.clone())?;
    Ok((Arc::new(table), size))
}

/// Flushes the oldest frozen memtable `mem` and installs its table at level 0.
fn flush_memtable(inner: &Inner, mem: &Arc<Memtable>) -> Result<()> {
    let _span =
        tracing::info_span!("engine.flush", memtable = mem.id(), entries = mem.len()).entered();
    let start = Instant::now();
    let id = inner.alloc_file_id();
    let (table, size) = build_table(
        mem,
        id,
        &inner.sst_dir,
        &inner.opts,
        &inner.cache,
        &inner.counters,
    )?;
    {
        let mut m = inner.manifest.lock();
        let sv = inner.sv.load_full();
        let mut state = m.clone();
        state.tables.push(TableRecord { level: 0, id, size });
        state.last_seq = state.last_seq.max(mem.max_seq());
        state.log_number = sv
            .imms
            .iter()
            .filter(|x| x.id() != mem.id())
            .map(|x| x.id())
            .chain(std::iter::once(sv.mem.id()))
            .min()
            .unwrap_or(state.log_number);
        state.next_file_id = inner.next_file_id.load(Ordering::SeqCst);
        // On failure the table stays as an orphan that the next open removes (or keeps,
        // if the rename did reach the disk): deleting it here could break a durable manifest.
        manifest::write(&inner.dir, &state)?;
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
    if let Err(e) = fs::remove_file(&seg) {
        tracing::warn!(path = %seg.display(), error = %e, "could not delete flushed WAL segment");
    }
    inc(&inner.counters.flushes);
    if let Some(l) = &inner.opts.listener {
        l.on_flush(start.elapsed(), size);
    }
    inner.wake_compaction();
    Ok(())
}

/// The flush worker: flushes frozen memtables oldest first, retrying failures.
pub(super) fn run_worker(inner: &Inner) {
    let mut backoff = Duration::from_millis(50);
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
            Ok(()) => backoff = Duration::from_millis(50),
            Err(e) => {
                inc(&inner.counters.flush_errors);
                let e = inner.note_error(e);
                tracing::error!(error = %e, memtable = mem.id(), "flush failed; will retry");
                inner.flush_done_cv.notify_all();
                if !w.shutdown {
                    inner.work_cv.wait_for(&mut w, backoff);
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
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
            return Err(Error::io(
                "flush",
                std::io::Error::other("background flush keeps failing; see the logs"),
            ));
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

/// What `recover` rebuilt.
pub(super) struct Recovered {
    pub state: ManifestState,
    pub version: Version,
    pub last_seq: u64,
    pub next_file_id: u64,
}

fn has_files_with_suffix(dir: &Path, suffix: &str) -> Result<bool> {
    for e in fs::read_dir(dir).ctx(|| format!("list {}", dir.display()))? {
        let e = e.ctx(|| format!("list {}", dir.display()))?;
        if e.file_name().to_string_lossy().ends_with(suffix) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads the manifest, opens the tables, removes orphans, and replays the WAL segments
/// that are not yet in tables, flushing each to level 0 so memory stays bounded.
pub(super) fn recover(
    dir: &Path,
    wal_dir: &Path,
    sst_dir: &Path,
    opts: &Options,
    cache: &Arc<BlockCache>,
    counters: &Arc<Counters>,
) -> Result<Recovered> {
    let mut state = match manifest::read(dir)? {
        Some(s) => s,
        None => {
            if has_files_with_suffix(wal_dir, ".wal")? || has_files_with_suffix(sst_dir, ".sst")? {
                return Err(Error::corruption(
                    dir.join(manifest::MANIFEST),
                    0,
                    "MANIFEST is missing but WAL or table files exist",
                ));
            }
            let s = ManifestState {
                next_file_id: 1,
                ..ManifestState::default()
            };
            manifest::write(dir, &s)?;
            s
        }
    };
    let mut version = Version::empty();
    let mut live = HashSet::new();
    for rec in &state.tables {
        let path = table_path(sst_dir, rec.id);
        let level = usize::from(rec.level);
        if level >= NUM_LEVELS {
            return Err(Error::corruption(
                dir.join(manifest::MANIFEST),
                0,
                format!("table {} on level {level}", rec.id),
            ));
        }
        let size = fs::metadata(&path)
            .ctx(|| format!("table {} listed in the manifest", path.display()))?
            .len();
        if size != rec.size {
            return Err(Error::corruption(
                &path,
                size,
                format!("table is {size} bytes, the manifest says {}", rec.size),
            ));
        }
        let table = Table::open(&path, rec.id, cache.clone(), counters.clone())?;
        version.levels[level].push(Arc::new(table));
        live.insert(rec.id);
    }
    version.sort();
    let mut max_id = state.next_file_id.saturating_sub(1);
    for e in fs::read_dir(sst_dir).ctx(|| format!("list {}", sst_dir.display()))? {
        let e = e.ctx(|| format!("list {}", sst_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let id = name
            .strip_suffix(".sst")
            .and_then(|s| s.parse::<u64>().ok());
        if id.is_some_and(|id| live.contains(&id)) {
            continue;
        }
        // A table a crash left out of the manifest holds nothing the WAL does not.
        tracing::info!(file = %name, "removing orphaned table file");
        fs::remove_file(e.path()).ctx(|| format!("remove orphan {}", e.path().display()))?;
        max_id = max_id.max(id.unwrap_or(0));
    }
    let _ = fs::remove_file(dir.join("MANIFEST.tmp"));
    let segments = wal::list_segments(wal_dir)?;
    max_id = max_id.max(segments.last().copied().unwrap_or(0));
    max_id = max_id.max(state.tables.iter().map(|t| t.id).max().unwrap_or(0));
    let mut next_id = max_id + 1;
    let mut last_seq = state.last_seq;
    let to_replay: Vec<(u64, u64)> = segments
        .iter()
        .filter(|&&seg| seg >= state.log_number)
        .map(|&seg| {
            let len = fs::metadata(wal::segment_path(wal_dir, seg)).map_or(0, |m| m.len());
            (seg, len)
        })
        .collect();
    let total: u64 = to_replay.iter().map(|(_, len)| len).sum();
    let mut replayed = 0u64;
    let progress = |done: u64| {
        if let Some(l) = &opts.listener {
            l.on_recovery_progress(done, total);
        }
    };
    tracing::info!(segments = to_replay.len(), bytes = total, "replaying WAL");
    let replay_start = Instant::now();
    progress(0);
    for (i, &seg) in segments.iter().enumerate() {
        let path = wal::segment_path(wal_dir, seg);
        if seg < state.log_number {
            fs::remove_file(&path).ctx(|| format!("remove flushed WAL {}", path.display()))?;
            continue;
        }
        let mem = Memtable::new(seg);
        let replay = wal::replay(&path, i + 1 == segments.len(), last_seq, |first, ops| {
            for (j, op) in ops.iter().enumerate() {
                mem.insert(op.key, first + j as u64, op.value);
            }
        })?;
        if let Some(at) = replay.truncated_at {
            tracing::warn!(path = %path.display(), offset = at, "truncated a torn WAL tail");
        }
        last_seq = last_seq.max(replay.max_seq);
        if !mem.is_empty() {
            let id = next_id;
            next_id += 1;
            let (table, size) = build_table(&mem, id, sst_dir, opts, cache, counters)?;
            version.levels[0].push(table);
            state.tables.push(TableRecord { level: 0, id, size });
        }
        state.log_number = seg + 1;
        state.last_seq = last_seq;
        state.next_file_id = next_id;
        manifest::write(dir, &state)?;
        fs::remove_file(&path).ctx(|| format!("remove replayed WAL {}", path.display()))?;
        replayed += to_replay
            .iter()
            .find(|(s, _)| *s == seg)
            .map_or(0, |(_, l)| *l);
        tracing::info!(
            segment = seg,
            records = replay.records,
            replayed_bytes = replayed,
            total_bytes = total,
            "replaying WAL: segment done"
        );
        progress(replayed);
    }
    progress(total);
    tracing::info!(
        bytes = total,
        secs = replay_start.elapsed().as_secs_f64(),
        "WAL replay finished"
    );
    version.sort();
    state.next_file_id = next_id;
    Ok(Recovered {
        state,
        version,
        last_seq,
        next_file_id: next_id,
    })
}
