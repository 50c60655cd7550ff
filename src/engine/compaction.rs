//! Leveled compaction: L0 (overlapping flush outputs) merges into L1; each deeper level is
//! `level_multiplier` times larger and holds disjoint tables.
//!
//! Leveled rather than tiered: MiniDB's loads are read-heavy point lookups (sessions, cache,
//! documents by id), and leveled keeps at most one table per level on a read path and
//! bounds space amplification near 1.1×, at the cost of more write amplification.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::iter::{MergeIter, Source};
use super::manifest::{self, sync_dir, TableRecord};
use super::sstable::{Table, TableBuilder, TableIter};
use super::stats::{add, inc};
use super::version::{SuperVersion, Version, NUM_LEVELS};
use super::{table_path, Inner};

/// One unit of compaction work.
struct Task {
    /// Every input table, newest data first where ranges overlap.
    inputs: Vec<Arc<Table>>,
    output_level: usize,
    /// True when no table below the output level overlaps the inputs' key range.
    drop_tombstones: bool,
    /// Inputs that can move to `output_level` without a rewrite.
    trivial_move: bool,
}

fn target_bytes(inner: &Inner, level: usize) -> u64 {
    let mut t = inner.opts.level_base_bytes;
    for _ in 1..level {
        t = t.saturating_mul(inner.opts.level_multiplier);
    }
    t
}

fn key_range(tables: &[Arc<Table>]) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = tables.iter().map(|t| t.smallest()).min()?;
    let hi = tables.iter().map(|t| t.largest()).max()?;
    Some((lo.to_vec(), hi.to_vec()))
}

fn overlapping(level: &[Arc<Table>], lo: &[u8], hi: &[u8]) -> Vec<Arc<Table>> {
    level
        .iter()
        .filter(|t| t.overlaps(lo, hi))
        .cloned()
        .collect()
}

fn nothing_below(v: &Version, output_level: usize, lo: &[u8], hi: &[u8]) -> bool {
    v.levels
        .iter()
        .skip(output_level + 1)
        .all(|l| l.iter().all(|t| !t.overlaps(lo, hi)))
}

/// True when the tables' key ranges are pairwise disjoint.
fn disjoint(tables: &[Arc<Table>]) -> bool {
    let mut sorted: Vec<&Arc<Table>> = tables.iter().collect();
    sorted.sort_by(|a, b| a.smallest().cmp(b.smallest()));
    sorted.windows(2).all(|w| w[0].largest() < w[1].smallest())
}

/// Picks the most urgent compaction, if any level is over its target.
fn pick(inner: &Inner, v: &Version, cursor: &mut [Vec<u8>]) -> Option<Task> {
    let l0_score = v.levels[0].len() as f64 / inner.opts.level0_compaction_trigger as f64;
    let mut best = (l0_score, 0usize);
    for level in 1..NUM_LEVELS - 1 {
        let score = v.level_bytes(level) as f64 / target_bytes(inner, level) as f64;
        if score > best.0 {
            best = (score, level);
        }
    }
    let (score, level) = best;
    if score < 1.0 {
        return None;
    }
    let picked: Vec<Arc<Table>> = if level == 0 {
        v.levels[0].clone()
    } else {
        let tables = &v.levels[level];
        // Round-robin through the level's key space so every range gets compacted.
        let t = tables
            .iter()
            .find(|t| t.smallest() > cursor[level].as_slice())
            .or_else(|| tables.first())?;
        cursor[level] = t.largest().to_vec();
        vec![t.clone()]
    };
    let (lo, hi) = key_range(&picked)?;
    let next = overlapping(&v.levels[level + 1], &lo, &hi);
    let trivial_move = next.is_empty() && disjoint(&picked);
    let mut inputs = picked;
    inputs.extend(next);
    let (lo, hi) = key_range(&inputs)?;
    Some(Task {
        drop_tombstones: nothing_below(v, level + 1, &lo, &hi),
        inputs,
        output_level: level + 1,
        trivial_move,
    })
}

/// Merges the task's inputs into new tables on the output level; returns their records.
fn merge(inner: &Inner, task: &Task) -> Result<Vec<(Arc<Table>, u64)>> {
    let sources: Vec<Box<dyn Source>> = task
        .inputs
        .iter()
        .map(|t| Box::new(TableIter::new(t.clone(), false)) as Box<dyn Source>)
        .collect();
    let mut it = MergeIter::new(sources);
    it.seek(&[])?;
    let mut outputs: Vec<(u64, u64)> = Vec::new();
    let mut builder: Option<(u64, TableBuilder)> = None;
    let mut last_key: Option<Vec<u8>> = None;
    let result = (|| -> Result<()> {
        while let Some(e) = it.current() {
            if inner.closed.load(Ordering::Relaxed) {
                return Err(Error::Closed);
            }
            // Readers pin the tables they read, so only the newest version matters here.
            let newest = last_key.as_deref() != Some(e.key.as_ref());
            if newest {
                last_key = Some(e.key.to_vec());
                if e.value.is_some() || !task.drop_tombstones {
                    if builder.is_none() {
                        let id = inner.alloc_file_id();
                        let path = table_path(&inner.sst_dir, id);
                        let b = TableBuilder::create(
                            &*inner.fs,
                            &path,
                            inner.opts.block_size,
                            inner.opts.compression,
                            inner.opts.bloom_bits_per_key,
                        )?;
                        builder = Some((id, b));
                    }
                    if let Some((id, b)) = builder.as_mut() {
                        b.add(&e.key, e.seq, e.value.as_deref())?;
                        if b.estimated_size() >= inner.opts.target_file_bytes {
                            let id = *id;
                            if let Some((_, b)) = builder.take() {
                                outputs.push((id, b.finish()?));
                            }
                        }
                    }
                }
            }
            it.advance()?;
        }
        if let Some((id, b)) = builder.take() {
            outputs.push((id, b.finish()?));
        }
        Ok(())
    })();
    let cleanup = |ids: &[u64]| {
        for id in ids {
            let _ = inner.fs.remove_file(&table_path(&inner.sst_dir, *id));
        }
    };
    if let Err(e) = result {
        let mut ids: Vec<u64> = outputs.iter().map(|(id, _)| *id).collect();
        if let Some((id, _)) = builder {
            ids.push(id);
        }
        cleanup(&ids);
        return Err(e);
    }
    if let Err(e) = sync_dir(&*inner.fs, &inner.sst_dir) {
        cleanup(&outputs.iter().map(|(id, _)| *id).collect::<Vec<_>>());
        return Err(e);
    }
    let mut tables = Vec::with_capacity(outputs.len());
    for (id, size) in &outputs {
        let path = table_path(&inner.sst_dir, *id);
        match Table::open(
            &*inner.fs,
            &path,
            *id,
            inner.cache.clone(),
            inner.counters.clone(),
        ) {
            Ok(t) => tables.push((Arc::new(t), *size)),
            Err(e) => {
                cleanup(&outputs.iter().map(|(id, _)| *id).collect::<Vec<_>>());
                return Err(e);
            }
        }
    }
    Ok(tables)
}

/// Replaces the inputs with the outputs in the manifest and the live version.
fn install(
    inner: &Inner,
    inputs: &[Arc<Table>],
    outputs: Vec<(Arc<Table>, u64)>,
    output_level: usize,
) -> Result<()> {
    let gone: HashSet<u64> = inputs.iter().map(|t| t.id()).collect();
    let mut m = inner.manifest.lock();
    let mut state = m.clone();
    state.tables.retain(|t| !gone.contains(&t.id));
    for (t, size) in &outputs {
        state.tables.push(TableRecord {
            level: output_level as u8,
            id: t.id(),
            size: *size,
        });
    }
    state.next_file_id = inner.next_file_id.load(Ordering::SeqCst);
    if let Err(f) = manifest::write(&*inner.fs, &inner.dir, &state) {
        if f.maybe_renamed {
            // The new manifest may be the durable one: neither inputs nor outputs may go.
            let reason = format!("manifest edit failed after its rename: {}", f.error);
            inner.poison(reason.clone());
            return Err(Error::Poisoned { reason });
        }
        // The old manifest stands: the outputs are unreferenced and can go.
        for (t, _) in &outputs {
            if !gone.contains(&t.id()) {
                let _ = inner.fs.remove_file(&table_path(&inner.sst_dir, t.id()));
            }
        }
        return Err(f.error);
    }
    *m = state;
    inner.install(|cur| {
        let mut version = (*cur.version).clone();
        for level in version.levels.iter_mut() {
            level.retain(|t| !gone.contains(&t.id()));
        }
        version.levels[output_level].extend(outputs.into_iter().map(|(t, _)| t));
        version.sort();
        SuperVersion {
            mem: cur.mem.clone(),
            imms: cur.imms.clone(),
            version: Arc::new(version),
        }
    });
    Ok(())
}

/// Runs one task end to end, then deletes the input files (open handles keep readers going).
fn run(inner: &Inner, task: Task) -> Result<()> {
    let _span = tracing::info_span!(
        "engine.compaction",
        inputs = task.inputs.len(),
        output_level = task.output_level,
        trivial_move = task.trivial_move
    )
    .entered();
    let start = Instant::now();
    if task.trivial_move {
        let moved = task.inputs.iter().map(|t| (t.clone(), t.size())).collect();
        // Re-home without rewriting: the same tables, listed under the next level.
        install(inner, &task.inputs, moved, task.output_level)?;
        return Ok(());
    }
    let outputs = merge(inner, &task)?;
    let written: u64 = outputs.iter().map(|(_, s)| *s).sum();
    install(inner, &task.inputs, outputs, task.output_level)?;
    for t in &task.inputs {
        let path = table_path(&inner.sst_dir, t.id());
        if let Err(e) = inner.fs.remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not delete compacted table");
        }
    }
    inc(&inner.counters.compacts);
    add(&inner.counters.compaction_bytes_written, written);
    inner.ensure_reserve();
    if let Some(l) = &inner.opts.listener {
        l.on_compaction(start.elapsed(), written);
    }
    Ok(())
}

/// The compaction worker: runs picked tasks while any level is over its target.
pub(super) fn run_worker(inner: &Inner) {
    let mut cursor = vec![Vec::new(); NUM_LEVELS];
    loop {
        {
            let mut w = inner.workers.lock();
            while !w.compaction_wanted && !w.shutdown {
                inner.work_cv.wait(&mut w);
            }
            if w.shutdown {
                return;
            }
            w.compaction_wanted = false;
        }
        loop {
            if inner.poisoned.load(Ordering::SeqCst) || inner.workers.lock().shutdown {
                break;
            }
            let _g = inner.compaction_lock.lock();
            let v = inner.sv.load().version.clone();
            let Some(task) = pick(inner, &v, &mut cursor) else {
                break;
            };
            if let Err(e) = run(inner, task) {
                if matches!(e, Error::Closed) {
                    return;
                }
                inc(&inner.counters.compaction_errors);
                let e = inner.note_error(e);
                if e.is_no_space() {
                    tracing::warn!(error = %e, "compaction waits for disk space; will retry");
                } else {
                    tracing::error!(error = %e, "compaction failed; will retry");
                }
                let mut w = inner.workers.lock();
                inner.work_cv.wait_for(&mut w, Duration::from_secs(1));
                break;
            }
        }
    }
}

/// `Engine::compact`: merges every table into the deepest occupied level (at least L1).
pub(super) fn compact_all(inner: &Inner) -> Result<()> {
    inner.check_poisoned()?;
    let _g = inner.compaction_lock.lock();
    let v = inner.sv.load().version.clone();
    let inputs: Vec<Arc<Table>> = v.levels.iter().flatten().cloned().collect();
    if inputs.is_empty() {
        return Ok(());
    }
    let output_level = (1..NUM_LEVELS)
        .rev()
        .find(|&l| !v.levels[l].is_empty())
        .unwrap_or(1);
    let task = Task {
        inputs,
        output_level,
        drop_tombstones: true,
        trivial_move: false,
    };
    run(inner, task).map_err(|e| {
        inc(&inner.counters.compaction_errors);
        inner.note_error(e)
    })
}
