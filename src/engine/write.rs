//! The write path: admission checks, WAL append with group commit, memtable insert,
//! memtable rotation, and what a full disk does to each.
//!
//! A full disk is a state, not a failure: a WAL write that fails with `ENOSPC` is cut back
//! off the file, the records it carried are taken out of the memtable (they were never
//! visible: a write becomes visible only once durable), their writers get
//! [`Error::NoSpace`], and the engine goes on. Any other WAL write or fsync failure leaves
//! the log in an unknown state and poisons the engine.

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
use super::{Discard, Inner, WalState};

impl Inner {
    /// Refuses a write before it touches the WAL or the memtable.
    fn admit(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        self.check_poisoned()?;
        if self.now_ms() < self.no_space_until_ms.load(Ordering::SeqCst) {
            return Err(self.no_space("the disk was full moments ago"));
        }
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

    /// Applies a batch: admission, WAL, memtable, then the sync policy. Returns the
    /// sequence number of its first operation (0 for an empty batch).
    pub(super) fn write(&self, mut batch: WriteBatch) -> Result<u64> {
        batch.validate()?;
        if batch.is_empty() {
            return Ok(0);
        }
        self.admit()?;
        let count = batch.len() as u64;
        let (puts, deletes) = batch.op_counts();
        let encoded_len = batch.encoded_len() as u64;
        let always = self.opts.sync == SyncPolicy::Always;
        let (lsn, first_seq, last_seq) = {
            let mut w = self.wal.lock();
            self.check_poisoned()?;
            if self.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed);
            }
            if self.discard_pending.load(Ordering::SeqCst) {
                return Err(self.no_space("the disk is full"));
            }
            if self.mem_full(&w.mem) {
                self.rotate(&mut w, false)?;
            }
            let first = w.last_seq + 1;
            let seg = self
                .active_segment(&mut w)
                .map_err(|e| self.note_error(e))?;
            let framed = seg.append(batch.payload_with_seq(first));
            if !always {
                // Every batch goes to the OS before it is acknowledged; a failed write
                // leaves nothing behind, and nothing reached the memtable yet.
                self.flush_wal(&mut w)?;
            }
            let mem = &w.mem;
            let payload = batch.into_payload();
            for_each_op(&payload, |i, key, value| mem.insert(key, first + i, value));
            w.last_seq += count;
            w.lsn += framed as u64;
            if !always {
                w.flushed_lsn = w.lsn;
                self.visible_seq.fetch_max(w.last_seq, Ordering::SeqCst);
            }
            add(&self.counters.wal_bytes, framed as u64);
            (w.lsn, first, w.last_seq)
        };
        add(&self.counters.puts, puts);
        add(&self.counters.deletes, deletes);
        add(&self.counters.written_bytes, encoded_len);
        inc(&self.counters.batches);
        if always {
            self.sync_to(lsn, last_seq)?;
        }
        Ok(first_seq)
    }

    /// The active WAL segment, created now if an earlier attempt found the disk full.
    fn active_segment<'a>(&self, w: &'a mut WalState) -> Result<&'a mut WalWriter> {
        if w.wal.is_none() {
            let id = w.mem.id();
            let seg = self.with_reserve(|| WalWriter::create(&*self.fs, &self.wal_dir, id))?;
            w.wal = Some(seg);
        }
        w.wal
            .as_mut()
            .ok_or_else(|| self.no_space("no WAL segment"))
    }

    /// Hands buffered records to the OS. A failed write is cut back off the file and its
    /// records are dropped (see the module docs); on a full disk the engine goes on, on any
    /// other error it poisons itself.
    fn flush_wal(&self, w: &mut WalState) -> Result<()> {
        let Some(seg) = w.wal.as_mut() else {
            return Ok(());
        };
        let records = seg.buffered_records();
        let (e, rolled_back) = match seg.flush_buf() {
            Ok(()) => {
                w.flushed_lsn = w.lsn;
                return Ok(());
            }
            Err(failure) => failure,
        };
        if !rolled_back {
            // The segment now ends in an unknown state: stop writes rather than guess.
            self.poison(format!("WAL write failed and could not be cut back: {e}"));
            return Err(e);
        }
        let dropped = seg.discard_buf();
        let mem = w.mem.clone();
        wal::for_each_framed(&dropped, |first, ops| {
            for (i, op) in ops.iter().enumerate() {
                mem.remove(op.key, first + i as u64);
            }
        });
        // In the sync policies that write each batch at once, the dropped record is the
        // caller's own (not yet counted in `lsn`), so no writer waits for it.
        if self.opts.sync == SyncPolicy::Always && records > 0 && w.lsn > w.flushed_lsn {
            let mut st = self.syncing.lock();
            st.discard = Some(Discard {
                lo: w.flushed_lsn,
                hi: w.lsn,
                pending: records,
            });
            self.discard_pending.store(true, Ordering::SeqCst);
            self.sync_cv.notify_all();
        }
        w.flushed_lsn = w.lsn;
        if e.is_no_space() {
            self.note_no_space();
        } else {
            // Not a full disk: the device misbehaves; its records are gone, but stop writes.
            self.poison(format!("WAL write failed: {e}"));
        }
        Err(e)
    }

    /// Makes the WAL durable up to `lsn`; one fsync serves every writer waiting for it.
    ///
    /// The first waiter becomes the leader. After its fsync it goes on syncing while
    /// records are pending (a few rounds at most), so the next group does not wait for a
    /// new leader to be woken and scheduled; covered writers return as soon as their
    /// fsync is done.
    fn sync_to(&self, lsn: u64, last_seq: u64) -> Result<()> {
        const LEADER_ROUNDS: usize = 4;
        let mut st = self.syncing.lock();
        loop {
            // A dropped record is checked first: later fsyncs move `synced_lsn` past it.
            if let Some(d) = &mut st.discard {
                if d.lo < lsn && lsn <= d.hi {
                    d.pending = d.pending.saturating_sub(1);
                    if d.pending == 0 {
                        st.discard = None;
                        self.discard_pending.store(false, Ordering::SeqCst);
                    }
                    return Err(self.no_space("the disk is full; the write was not stored"));
                }
            }
            if self.synced_lsn.load(Ordering::SeqCst) >= lsn {
                drop(st);
                self.visible_seq.fetch_max(last_seq, Ordering::SeqCst);
                return Ok(());
            }
            self.check_poisoned()?;
            if !st.leader {
                st.leader = true;
                drop(st);
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
                    let w = self.wal.lock();
                    if w.lsn <= self.synced_lsn.load(Ordering::SeqCst) {
                        break;
                    }
                }
                st = self.syncing.lock();
                st.leader = false;
                self.sync_cv.notify_all();
                if let Err(e) = result {
                    if !e.is_no_space() {
                        return Err(e);
                    }
                    // A full disk: whether this writer's record was among the dropped
                    // ones is decided at the top of the loop.
                }
                continue;
            }
            self.sync_cv.wait(&mut st);
        }
    }

    /// One leader round: write out everything appended so far and fsync it; false when
    /// nothing was pending.
    fn sync_round(&self) -> Result<bool> {
        let (file, path, upto_lsn, upto_seq) = {
            let mut w = self.wal.lock();
            if w.lsn <= self.synced_lsn.load(Ordering::SeqCst) {
                return Ok(false);
            }
            self.flush_wal(&mut w)?;
            let Some(seg) = w.wal.as_ref() else {
                return Ok(false);
            };
            (seg.file(), seg.path().to_path_buf(), w.lsn, w.last_seq)
        };
        let start = Instant::now();
        if let Err(e) = wal::sync_file(&*file, &path) {
            return Err(self.note_error(e));
        }
        self.note_sync(start);
        self.mark_synced(upto_lsn, upto_seq);
        Ok(true)
    }

    /// Records that the WAL is durable up to `lsn` and wakes the writers it covers.
    fn mark_synced(&self, lsn: u64, seq: u64) {
        let _st = self.syncing.lock();
        self.visible_seq.fetch_max(seq, Ordering::SeqCst);
        self.synced_lsn.fetch_max(lsn, Ordering::SeqCst);
        self.sync_cv.notify_all();
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
    /// which waits for room itself). On a full disk the old segment and memtable stay
    /// active and the error is `NoSpace`.
    pub(super) fn rotate(&self, w: &mut WalState, force: bool) -> Result<()> {
        let max = self.opts.max_immutable_memtables;
        if !force && self.sv.load().imms.len() >= max {
            inc(&self.counters.busy_flush_queue);
            return Err(Error::Busy {
                retry_after: self.opts.busy_retry_after,
                reason: BusyReason::FlushQueue,
            });
        }
        if w.wal.is_none() {
            // Nothing was written since open on a full disk: the memtable is empty.
            return Ok(());
        }
        // Seal the old segment so only the newest one can ever have a torn tail.
        let start = Instant::now();
        self.flush_wal(w)?;
        if let Some(seg) = w.wal.as_ref() {
            if let Err(e) = wal::sync_file(&*seg.file(), seg.path()) {
                let e = self.note_error(e);
                self.poison(format!("WAL seal failed: {e}"));
                return Err(e);
            }
        }
        self.note_sync(start);
        self.mark_synced(w.lsn, w.last_seq);
        let id = self.alloc_file_id();
        let new_wal = self
            .with_reserve(|| WalWriter::create(&*self.fs, &self.wal_dir, id))
            .map_err(|e| self.note_error(e))?;
        let new_mem = Arc::new(Memtable::new(id));
        let old_mem = std::mem::replace(&mut w.mem, new_mem.clone());
        w.wal = Some(new_wal);
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
        let _w = self.workers.lock();
        self.work_cv.notify_all();
        Ok(())
    }
}

/// Fsyncs everything written so far (used by close, the interval syncer and checkpoints).
pub(super) fn sync_now(inner: &Inner) -> Result<()> {
    let (lsn, seq) = {
        let w = inner.wal.lock();
        (w.lsn, w.last_seq)
    };
    if inner.opts.sync == SyncPolicy::Always {
        return inner.sync_to(lsn, seq);
    }
    let (file, path) = {
        let w = inner.wal.lock();
        match w.wal.as_ref() {
            Some(seg) => (seg.file(), seg.path().to_path_buf()),
            None => return Ok(()),
        }
    };
    let start = Instant::now();
    wal::sync_file(&*file, &path).map_err(|e| inner.note_error(e))?;
    inner.note_sync(start);
    inner.mark_synced(lsn, seq);
    Ok(())
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
