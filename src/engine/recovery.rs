//! Opening an engine: directories, the lock, the manifest, orphan cleanup and WAL replay.
//!
//! Replayed WAL segments are flushed to level-0 tables one by one, so memory stays bounded.
//! On a full disk a segment that cannot be flushed (and every later one) stays in memory as
//! a frozen memtable, its WAL segment kept: the open succeeds, reads are served, and the
//! flush worker writes them out once there is room.
//!
//! Only files of the engine's own naming patterns are ever deleted (`{id:020}.sst`,
//! `{id:020}.wal`, `MANIFEST.tmp`); anything else in the directories is left alone.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::{Condvar, Mutex};

use super::cache::BlockCache;
use super::error::{Error, IoContext, Result};
use super::flush::{build_table, TableSite};
use super::manifest::{self, ManifestState, TableRecord};
use super::memtable::Memtable;
use super::options::Options;
use super::reserve::release_reserve_file;
use super::sstable::Table;
use super::stats::Counters;
use super::storage::{create_dir_all_durable, read_all, EntryKind, Storage};
use super::version::{SuperVersion, Version, NUM_LEVELS};
use super::wal::{self, WalWriter};
use super::{parse_table_name, table_path, Inner, SyncState, WalState, WorkerState};

/// What `recover` rebuilt.
struct Recovered {
    state: ManifestState,
    version: Version,
    /// Replayed memtables that could not be flushed (full disk), newest first.
    imms: Vec<Arc<Memtable>>,
    last_seq: u64,
    next_file_id: u64,
}

/// Opens the engine's state in `dir` (see the module docs).
pub(super) fn open(dir: &Path, opts: Options) -> Result<Inner> {
    let fs = opts.storage.clone();
    let wal_dir = dir.join("wal");
    let sst_dir = dir.join("sst");
    for d in [dir, &wal_dir, &sst_dir] {
        create_dir_all_durable(&*fs, d).ctx(|| format!("create directory {}", d.display()))?;
    }
    let lock_path = dir.join("LOCK");
    let lock = match fs.lock(&lock_path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(Error::io(format!("lock {}", lock_path.display()), e)),
    };
    let counters = Arc::new(Counters::default());
    let cache = Arc::new(BlockCache::new(opts.block_cache_bytes));
    let rec = recover(&*fs, dir, &wal_dir, &sst_dir, &opts, &cache, &counters)?;
    let active_id = rec.next_file_id;
    let mem = Arc::new(Memtable::new(active_id));
    let sv = SuperVersion {
        mem: mem.clone(),
        imms: rec.imms,
        version: Arc::new(rec.version),
    };
    let mut state = rec.state;
    state.next_file_id = active_id + 1;
    state.log_number = sv
        .imms
        .iter()
        .map(|m| m.id())
        .chain(std::iter::once(active_id))
        .min()
        .unwrap_or(active_id);
    let last_seq = rec.last_seq;
    let inner = Inner {
        fs,
        dir: dir.to_path_buf(),
        wal_dir,
        sst_dir,
        counters,
        cache,
        sv: ArcSwap::from_pointee(sv),
        sv_lock: Mutex::new(()),
        visible_seq: AtomicU64::new(last_seq),
        next_file_id: AtomicU64::new(state.next_file_id),
        wal: Mutex::new(WalState {
            wal: None,
            mem,
            last_seq,
            lsn: 0,
            flushed_lsn: 0,
        }),
        syncing: Mutex::new(SyncState::default()),
        sync_cv: Condvar::new(),
        synced_lsn: AtomicU64::new(0),
        discard_pending: AtomicBool::new(false),
        no_space_until_ms: AtomicU64::new(0),
        started: Instant::now(),
        reserve_held: AtomicU64::new(0),
        manifest: Mutex::new(state.clone()),
        compaction_lock: Mutex::new(()),
        workers: Mutex::new(WorkerState::default()),
        work_cv: Condvar::new(),
        flush_done_cv: Condvar::new(),
        poisoned: AtomicBool::new(false),
        poison_reason: Mutex::new(None),
        last_flush_error: Mutex::new(None),
        closed: AtomicBool::new(false),
        opts,
        _lock: lock,
    };
    match inner.with_reserve(|| WalWriter::create(&*inner.fs, &inner.wal_dir, active_id)) {
        Ok(seg) => inner.wal.lock().wal = Some(seg),
        Err(e) if e.is_no_space() => {
            inner.note_no_space();
            tracing::warn!(error = %e, "disk full at open: serving reads; writes wait for space");
        }
        Err(e) => return Err(e),
    }
    match inner.with_reserve(|| manifest::write(&*inner.fs, dir, &state).map_err(Error::from)) {
        Ok(()) => {}
        // The manifest on disk still describes every file that exists: nothing was deleted
        // that it names, and ids are recomputed from the files at the next open.
        Err(e) if e.is_no_space() => {
            tracing::warn!(error = %e, "disk full at open: manifest not rewritten");
        }
        Err(e) => return Err(e),
    }
    inner.ensure_reserve();
    Ok(inner)
}

/// True when `dir` holds a file of ours with `suffix` (`.wal`, `.sst`).
fn has_engine_files(fs: &dyn Storage, dir: &Path, parse: fn(&str) -> Option<u64>) -> Result<bool> {
    Ok(fs
        .list(dir)
        .ctx(|| format!("list {}", dir.display()))?
        .iter()
        .any(|e| e.kind == EntryKind::File && parse(&e.name).is_some()))
}

/// Builds a table from a replayed memtable, releasing the reserve once on a full disk.
fn flush_replayed(
    site: &TableSite<'_>,
    dir: &Path,
    mem: &Memtable,
    id: u64,
) -> Result<(Arc<Table>, u64)> {
    match build_table(site, mem, id) {
        Err(e) if e.is_no_space() && release_reserve_file(site.fs, dir) => {
            build_table(site, mem, id)
        }
        r => r,
    }
}

/// Reads the manifest, opens the tables, removes orphans, and replays the WAL segments
/// that are not yet in tables.
#[allow(clippy::too_many_arguments)]
fn recover(
    fs: &dyn Storage,
    dir: &Path,
    wal_dir: &Path,
    sst_dir: &Path,
    opts: &Options,
    cache: &Arc<BlockCache>,
    counters: &Arc<Counters>,
) -> Result<Recovered> {
    let mut state = match manifest::read(fs, dir)? {
        Some(s) => s,
        None => {
            if has_engine_files(fs, wal_dir, wal::parse_segment_name)?
                || has_engine_files(fs, sst_dir, parse_table_name)?
            {
                return Err(Error::corruption(
                    dir.join(manifest::MANIFEST),
                    0,
                    "MANIFEST is missing but WAL or table files exist",
                ));
            }
            // A new database: its manifest exists before any other file, so a crash can
            // never leave WAL or table files without one.
            let s = ManifestState {
                next_file_id: 1,
                ..ManifestState::default()
            };
            manifest::write(fs, dir, &s)?;
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
        let table = Table::open(fs, &path, rec.id, cache.clone(), counters.clone()).map_err(
            |e| match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    Error::corruption(
                        &path,
                        0,
                        "table listed in the manifest is missing".to_string(),
                    )
                }
                other => other,
            },
        )?;
        if table.size() != rec.size {
            return Err(Error::corruption(
                &path,
                table.size(),
                format!(
                    "table is {} bytes, the manifest says {}",
                    table.size(),
                    rec.size
                ),
            ));
        }
        version.levels[level].push(Arc::new(table));
        live.insert(rec.id);
    }
    version.sort();
    let mut max_id = state.next_file_id.saturating_sub(1);
    for e in fs
        .list(sst_dir)
        .ctx(|| format!("list {}", sst_dir.display()))?
    {
        let id = match (e.kind, parse_table_name(&e.name)) {
            (EntryKind::File, Some(id)) => id,
            _ => {
                tracing::info!(file = %e.name, dir = %sst_dir.display(), "leaving a file that is not a table alone");
                continue;
            }
        };
        max_id = max_id.max(id);
        if live.contains(&id) {
            continue;
        }
        // A table a crash left out of the manifest holds nothing the WAL does not.
        tracing::info!(file = %e.name, "removing orphaned table file");
        let path = sst_dir.join(&e.name);
        fs.remove_file(&path)
            .ctx(|| format!("remove orphan {}", path.display()))?;
    }
    match fs.remove_file(&dir.join(manifest::MANIFEST_TMP)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove MANIFEST.tmp", e)),
    }
    let segments = wal::list_segments(fs, wal_dir)?;
    max_id = max_id.max(segments.last().copied().unwrap_or(0));
    max_id = max_id.max(state.tables.iter().map(|t| t.id).max().unwrap_or(0));
    let mut next_id = max_id + 1;
    let mut last_seq = state.last_seq;

    let mut to_replay = Vec::new();
    for &seg in &segments {
        let path = wal::segment_path(wal_dir, seg);
        if seg < state.log_number {
            fs.remove_file(&path)
                .ctx(|| format!("remove flushed WAL {}", path.display()))?;
            continue;
        }
        let len = fs
            .open(&path, false)
            .and_then(|f| f.size())
            .ctx(|| format!("stat WAL segment {}", path.display()))?;
        to_replay.push((seg, len));
    }
    // The last segment with a header is the only one that may end in a torn record.
    let last_real = to_replay
        .iter()
        .rev()
        .find(|(_, len)| *len >= 8)
        .map(|(s, _)| *s);
    let total: u64 = to_replay.iter().map(|(_, len)| len).sum();
    let progress = |done: u64| {
        if let Some(l) = &opts.listener {
            l.on_recovery_progress(done, total);
        }
    };
    tracing::info!(segments = to_replay.len(), bytes = total, "replaying WAL");
    let replay_start = Instant::now();
    progress(0);
    let mut replayed = 0u64;
    let mut imms: Vec<Arc<Memtable>> = Vec::new();
    // Set once a replayed segment could not be flushed: every later one stays in memory
    // too, so `log_number` never passes a segment whose data is only in memory.
    let mut in_memory = false;
    for &(seg, len) in &to_replay {
        let path = wal::segment_path(wal_dir, seg);
        let data = bytes::Bytes::from(
            fs.open(&path, false)
                .and_then(|f| read_all(&*f))
                .ctx(|| format!("read WAL segment {}", path.display()))?,
        );
        let mem = Memtable::new(seg);
        // The memtable shares the segment's buffer: nothing is copied per entry.
        let replay = wal::replay(
            &path,
            &data,
            Some(seg) == last_real,
            last_seq,
            |first, ops| {
                for (j, op) in ops.iter().enumerate() {
                    let value = op.value.map(|v| data.slice_ref(v));
                    mem.insert(data.slice_ref(op.key), first + j as u64, value);
                }
            },
        )?;
        if let Some(at) = replay.truncated_at {
            tracing::warn!(path = %path.display(), offset = at, "truncated a torn WAL tail");
            wal::truncate(fs, &path, at)?;
        }
        last_seq = last_seq.max(replay.max_seq);
        replayed += len;
        tracing::info!(
            segment = seg,
            records = replay.records,
            replayed_bytes = replayed,
            total_bytes = total,
            "replaying WAL: segment done"
        );
        progress(replayed);
        if mem.is_empty() && !in_memory {
            state.log_number = seg + 1;
            fs.remove_file(&path)
                .ctx(|| format!("remove empty WAL {}", path.display()))?;
            continue;
        }
        if mem.is_empty() {
            continue;
        }
        if !in_memory {
            let id = next_id;
            next_id += 1;
            let site = TableSite {
                fs,
                sst_dir,
                opts,
                cache,
                counters,
            };
            match flush_replayed(&site, dir, &mem, id) {
                Ok((table, size)) => {
                    let mut next = state.clone();
                    next.tables.push(TableRecord { level: 0, id, size });
                    next.log_number = seg + 1;
                    next.last_seq = last_seq;
                    next.next_file_id = next_id;
                    match manifest::write(fs, dir, &next) {
                        Ok(()) => {
                            state = next;
                            version.levels[0].push(table);
                            version.sort();
                            fs.remove_file(&path)
                                .ctx(|| format!("remove replayed WAL {}", path.display()))?;
                            continue;
                        }
                        Err(f) if f.error.is_no_space() && !f.maybe_renamed => {
                            drop(table);
                            let _ = fs.remove_file(&table_path(sst_dir, id));
                            tracing::warn!(error = %f.error, "disk full during WAL replay");
                        }
                        Err(f) => return Err(f.error),
                    }
                }
                Err(e) if e.is_no_space() => {
                    tracing::warn!(error = %e, "disk full during WAL replay");
                }
                Err(e) => return Err(e),
            }
            in_memory = true;
        }
        tracing::warn!(
            segment = seg,
            "WAL segment kept in memory until the disk has room for its table"
        );
        imms.push(Arc::new(mem));
    }
    progress(total);
    tracing::info!(
        bytes = total,
        secs = replay_start.elapsed().as_secs_f64(),
        "WAL replay finished"
    );
    imms.reverse();
    state.last_seq = last_seq;
    state.next_file_id = next_id;
    Ok(Recovered {
        state,
        version,
        imms,
        last_seq,
        next_file_id: next_id,
    })
}
