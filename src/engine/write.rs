//! The write path: admission checks, WAL append with group commit, memtable insert,
//! memtable rotation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::batch::{for_each_op, WriteBatch};
use super::error::{BusyReason, Error, Result};
use super::memtable::Memtable;
use super::options::SyncPolicy;
use super::stats::{add, inc};
use super::version::SuperVersion;
use super::wal::{self, WalWriter};
use super::{Inner, WalState};

/// Buffered WAL bytes are handed to the OS past this size even without a sync.
const WAL_BUFFER_BYTES: usize = 256 << 10;

impl Inner {
    /// Refuses a write with `Busy` before it touches the WAL or the memtable.
    fn admit(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.check_poisoned()?;
        let busy = |reason: BusyReason, counter| {
            inc(counter);
            Err(Error::Busy {
                retry_after: self.opts.busy_retry_after,
                reason,
            })
        };
        if let Some(b) = &self.opts.memory_budget {
            if b.over_budget() {
                return busy(BusyReason::Memory, &self.counters.busy_memory);
            }
        }
        let sv = self.sv.load();
        if sv.version.levels[0].len() >= self.opts.level0_stop_writes {
            return busy(BusyReason::Level0, &self.counters.busy_level0);
        }
        Ok(())
    }

    fn mem_full(&self, mem: &Memtable) -> bool {
        mem.len() >= self.opts.flush_size || mem.approximate_bytes() >= self.opts.memtable_bytes
    }

    /// Applies a batch: admission, WAL, memtable, then the sync policy.
    pub(super) fn write(&self, mut batch: WriteBatch) -> Result<()> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        self.admit()?;
        let count = batch.len() as u64;
        let (lsn, last_seq) = {
            let mut w = self.wal.lock();
            self.check_poisoned()?;
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if self.mem_full(&w.mem) {
                self.rotate(&mut w, false)?;
            }
            let first = w.last_seq + 1;
            let payload = batch.payload_with_seq(first);
            let framed = w.wal.append(payload);
            if w.wal.buffered() >= WAL_BUFFER_BYTES {
                if let Err(e) = w.wal.flush_buf() {
                    // The WAL now ends in an unknown state: stop writes rather than guess.
                    self.poison(format!("WAL write failed: {e}"));
                    return Err(e);
                }
            }
            let mem = &w.mem;
            for_each_op(payload, |i, key, value| mem.insert(key, first + i, value));
            w.last_seq += count;
            w.lsn += framed as u64;
            add(&self.counters.wal_bytes, framed as u64);
            if self.opts.sync != SyncPolicy::Always {
                self.visible_seq.fetch_max(w.last_seq, Ordering::SeqCst);
            }
            (w.lsn, w.last_seq)
        };
        let (puts, deletes) = batch.op_counts();
        add(&self.counters.puts, puts);
        add(&self.counters.deletes, deletes);
        add(&self.counters.written_bytes, batch.encoded_len() as u64);
        inc(&self.counters.batches);
        if self.opts.sync == SyncPolicy::Always {
            self.sync_to(lsn, last_seq)?;
        }
        Ok(())
    }

    /// Makes the WAL durable up to `lsn`; one fsync serves every writer waiting for it.
    ///
    /// The first waiter becomes the leader. After its fsync it goes on syncing while
    /// records are pending (a few rounds at most), so the next group does not wait for a
    /// new leader to be woken and scheduled; covered writers return as soon as their
    /// fsync is done.
    fn sync_to(&self, lsn: u64, last_seq: u64) -> Result<()> {
        const LEADER_ROUNDS: usize = 4;
        if self.synced_lsn.load(Ordering::SeqCst) >= lsn {
            return Ok(());
        }
        {
            let mut syncing = self.syncing.lock();
            loop {
                if self.synced_lsn.load(Ordering::SeqCst) >= lsn {
                    return Ok(());
                }
                self.check_poisoned()?;
                if !*syncing {
                    *syncing = true;
                    break;
                }
                self.sync_cv.wait(&mut syncing);
            }
        }
        let mut result = Ok(());
        for _ in 0..LEADER_ROUNDS {
            match self.sync_round() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            let pending = self.wal.lock().lsn > self.synced_lsn.load(Ordering::SeqCst);
            if !pending {
                break;
            }
        }
        let mut syncing = self.syncing.lock();
        *syncing = false;
        self.sync_cv.notify_all();
        drop(syncing);
        result?;
        self.visible_seq.fetch_max(last_seq, Ordering::SeqCst);
        Ok(())
    }

    /// One leader fsync of everything appended so far; false when nothing was pending.
    fn sync_round(&self) -> Result<bool> {
        let (file, path, upto_lsn, upto_seq) = {
            let mut w = self.wal.lock();
            if w.lsn <= self.synced_lsn.load(Ordering::SeqCst) {
                return Ok(false);
            }
            if let Err(e) = w.wal.flush_buf() {
                self.poison(format!("WAL write failed: {e}"));
                return Err(e);
            }
            (w.wal.file(), w.wal.path().to_path_buf(), w.lsn, w.last_seq)
        };
        let start = Instant::now();
        if let Err(e) = wal::sync_file(&file, &path) {
            return Err(self.note_error(e));
        }
        self.note_sync(start);
        let _g = self.syncing.lock();
        self.visible_seq.fetch_max(upto_seq, Ordering::SeqCst);
        self.synced_lsn.fetch_max(upto_lsn, Ordering::SeqCst);
        self.sync_cv.notify_all();
        Ok(true)
    }

    fn note_sync(&self, start: Instant) {
        inc(&self.counters.wal_syncs);
        if let Some(l) = &self.opts.listener {
            l.on_wal_sync(start.elapsed());
        }
    }

    /// Freezes the active memtable and starts a new WAL segment.
    ///
    /// Refuses with `Busy` when the flush queue is full, unless `force` (used by `flush`,
    /// which waits for room itself).
    pub(super) fn rotate(&self, w: &mut WalState, force: bool) -> Result<()> {
        let max = self.opts.max_immutable_memtables;
        if !force && self.sv.load().imms.len() >= max {
            inc(&self.counters.busy_flush_queue);
            return Err(Error::Busy {
                retry_after: self.opts.busy_retry_after,
                reason: BusyReason::FlushQueue,
            });
        }
        // Seal the old segment so only the newest one can ever have a torn tail.
        let start = Instant::now();
        let sealed = w
            .wal
            .flush_buf()
            .and_then(|()| wal::sync_file(&w.wal.file(), w.wal.path()));
        if let Err(e) = sealed {
            self.poison(format!("WAL seal failed: {e}"));
            return Err(e);
        }
        self.note_sync(start);
        self.synced_lsn.fetch_max(w.lsn, Ordering::SeqCst);
        self.visible_seq.fetch_max(w.last_seq, Ordering::SeqCst);
        let id = self.alloc_file_id();
        let new_wal = WalWriter::create(&self.wal_dir, id).map_err(|e| self.note_error(e))?;
        let new_mem = Arc::new(Memtable::new(id));
        let old_mem = std::mem::replace(&mut w.mem, new_mem.clone());
        w.wal = new_wal;
        {
            let _m = self.manifest.lock();
            self.install(|cur| {
                let mut imms = Vec::with_capacity(cur.imms.len() + 1);
                imms.push(old_mem);
                imms.extend(cur.imms.iter().cloned());
                SuperVersion {
                    mem: new_mem,
                    imms,
                    version: cur.version.clone(),
                }
            });
        }
        let _w = self.workers.lock();
        self.work_cv.notify_all();
        Ok(())
    }
}

/// Fsyncs everything written so far (used by close and the interval syncer).
pub(super) fn sync_now(inner: &Inner) -> Result<()> {
    let (lsn, seq) = {
        let w = inner.wal.lock();
        (w.lsn, w.last_seq)
    };
    inner.sync_to(lsn, seq)
}

/// The interval syncer thread: fsyncs the WAL every `SyncPolicy::Interval`.
pub(super) fn run_syncer(inner: &Inner) {
    let SyncPolicy::Interval(every) = inner.opts.sync else {
        return;
    };
    loop {
        {
            let mut w = inner.workers.lock();
            if w.shutdown {
                return;
            }
            inner.work_cv.wait_for(&mut w, every);
            if w.shutdown {
                return;
            }
        }
        if inner.poisoned.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = sync_now(inner) {
            tracing::error!(error = %e, "interval WAL sync failed");
        }
    }
}
