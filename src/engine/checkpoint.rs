//! Online checkpoints: a consistent, openable copy of the database at one sequence number,
//! taken while writes go on.
//!
//! Tables are immutable, so they are hard-linked (copied where the file system cannot link,
//! e.g. across devices). The memtables' data lives only in WAL segments, which keep
//! growing, so the records up to the checkpoint's sequence number are copied. While the
//! files are linked and copied, the manifest's edit lock is held: no flush or compaction
//! can install a new table set or delete a file the checkpoint still needs. Writers never
//! wait for that lock.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::batch::BATCH_HEADER;
use super::coding::{get_u32, get_u64};
use super::error::{fsync_ctx, Error, IoContext, Result};
use super::manifest::{self, sync_dir, ManifestState};
use super::storage::{create_dir_all_durable, read_exact_at, write_all_at, EntryKind, Storage};
use super::wal;
use super::write::sync_now;
use super::{table_path, Inner};

/// What [`crate::engine::Engine::checkpoint`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// The checkpoint holds exactly the writes with sequence numbers up to this one.
    pub sequence: u64,
    /// Tables in the checkpoint.
    pub tables: usize,
    /// Tables that had to be copied (the rest are hard links).
    pub tables_copied: usize,
    /// WAL bytes copied (the records not yet in tables).
    pub wal_bytes: u64,
    /// The checkpoint's directory.
    pub dir: PathBuf,
}

/// Makes `dest` an empty directory (created durably), or refuses.
fn prepare_dest(fs: &dyn Storage, dest: &Path) -> Result<()> {
    match fs.kind(dest).ctx(|| format!("stat {}", dest.display()))? {
        None => {}
        Some(EntryKind::Dir) => {
            let entries = fs.list(dest).ctx(|| format!("list {}", dest.display()))?;
            if !entries.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint directory {} is not empty",
                    dest.display()
                )));
            }
        }
        Some(_) => {
            return Err(Error::InvalidArgument(format!(
                "checkpoint target {} exists and is not a directory",
                dest.display()
            )))
        }
    }
    for d in [dest.to_path_buf(), dest.join("sst"), dest.join("wal")] {
        create_dir_all_durable(fs, &d).ctx(|| format!("create directory {}", d.display()))?;
    }
    Ok(())
}

/// Copies a file in bounded chunks and fsyncs the copy.
fn copy_file(fs: &dyn Storage, from: &Path, to: &Path) -> Result<()> {
    let src = fs
        .open(from, false)
        .ctx(|| format!("open {}", from.display()))?;
    let len = src.size().ctx(|| format!("stat {}", from.display()))?;
    let dst = fs
        .create_new(to)
        .ctx(|| format!("create {}", to.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).unwrap_or(buf.len());
        read_exact_at(&*src, &mut buf[..n], at).ctx(|| format!("read {}", from.display()))?;
        write_all_at(&*dst, &buf[..n], at).ctx(|| format!("write {}", to.display()))?;
        at += n as u64;
    }
    fsync_ctx(dst.sync_data(), || {
        format!("checkpoint file {}", to.display())
    })
}

/// The length of the prefix of a WAL segment's bytes whose records all have sequence
/// numbers up to `seq` (a record being written at the end is left out too).
fn prefix_upto(data: &[u8], seq: u64) -> usize {
    const MAGIC_LEN: usize = 8;
    let mut pos = MAGIC_LEN.min(data.len());
    loop {
        let (Some(len), Some(first)) = (get_u32(data, pos + 4), get_u64(data, pos + 8)) else {
            return pos;
        };
        let end = pos + 8 + len as usize;
        if (len as usize) < BATCH_HEADER || end > data.len() || first > seq {
            return pos;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&data[pos + 4..pos + 8]);
        h.update(&data[pos + 8..end]);
        if get_u32(data, pos) != Some(h.finalize()) {
            return pos;
        }
        pos = end;
    }
}

/// `Engine::checkpoint`.
pub(super) fn run(inner: &Inner, dest: &Path) -> Result<CheckpointInfo> {
    if inner.closed.load(Ordering::SeqCst) {
        return Err(Error::Closed);
    }
    inner.check_poisoned()?;
    let fs = &*inner.fs;
    prepare_dest(fs, dest)?;
    let _span = tracing::info_span!("engine.checkpoint", dir = %dest.display()).entered();
    // Under `None` and `Interval` acknowledged writes may not be fsynced yet; the copy
    // reads them from the OS either way, but a checkpoint is a durability point.
    sync_now(inner)?;
    let m = inner.manifest.lock();
    let seq = inner.visible_seq.load(Ordering::SeqCst);
    let mut copied = 0;
    for t in &m.tables {
        let name = table_path(&inner.sst_dir, t.id);
        let to = table_path(&dest.join("sst"), t.id);
        if let Err(e) = fs.hard_link(&name, &to) {
            tracing::debug!(error = %e, "hard link impossible; copying the table");
            copy_file(fs, &name, &to)?;
            copied += 1;
        }
    }
    let mut wal_bytes = 0;
    let mut first_segment = None;
    for id in wal::list_segments(fs, &inner.wal_dir)? {
        if id < m.log_number {
            continue;
        }
        let from = wal::segment_path(&inner.wal_dir, id);
        let src = fs
            .open(&from, false)
            .ctx(|| format!("open {}", from.display()))?;
        // The length is read after the sequence number: every record up to it is there.
        let len = src.size().ctx(|| format!("stat {}", from.display()))?;
        let mut data = vec![0u8; usize::try_from(len).unwrap_or(0)];
        read_exact_at(&*src, &mut data, 0).ctx(|| format!("read {}", from.display()))?;
        let keep = prefix_upto(&data, seq);
        let to = wal::segment_path(&dest.join("wal"), id);
        let dst = fs
            .create_new(&to)
            .ctx(|| format!("create {}", to.display()))?;
        write_all_at(&*dst, &data[..keep], 0).ctx(|| format!("write {}", to.display()))?;
        fsync_ctx(dst.sync_data(), || {
            format!("checkpoint WAL {}", to.display())
        })?;
        wal_bytes += keep as u64;
        first_segment.get_or_insert(id);
    }
    let state = ManifestState {
        next_file_id: m
            .next_file_id
            .max(inner.next_file_id.load(Ordering::SeqCst)),
        last_seq: m.last_seq.min(seq),
        log_number: first_segment.unwrap_or(m.log_number),
        tables: m.tables.clone(),
    };
    let tables = m.tables.len();
    drop(m);
    sync_dir(fs, &dest.join("sst"))?;
    sync_dir(fs, &dest.join("wal"))?;
    manifest::write(fs, dest, &state)?;
    tracing::info!(
        sequence = seq,
        tables,
        tables_copied = copied,
        wal_bytes,
        "checkpoint written"
    );
    Ok(CheckpointInfo {
        sequence: seq,
        tables,
        tables_copied: copied,
        wal_bytes,
        dir: dest.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::batch::WriteBatch;
    use super::*;

    #[test]
    fn prefix_stops_at_the_sequence_and_at_a_partial_record() {
        let mut data = b"MDBWAL01".to_vec();
        let mut ends = Vec::new();
        for first in [1u64, 3, 4] {
            let mut b = WriteBatch::new();
            b.put(b"k", b"v");
            if first == 1 {
                b.put(b"k2", b"v");
            }
            let payload = b.payload_with_seq(first).to_vec();
            let len = (payload.len() as u32).to_le_bytes();
            let mut h = crc32fast::Hasher::new();
            h.update(&len);
            h.update(&payload);
            data.extend_from_slice(&h.finalize().to_le_bytes());
            data.extend_from_slice(&len);
            data.extend_from_slice(&payload);
            ends.push(data.len());
        }
        assert_eq!(prefix_upto(&data, 0), 8);
        assert_eq!(prefix_upto(&data, 2), ends[0]);
        assert_eq!(prefix_upto(&data, 3), ends[1]);
        assert_eq!(prefix_upto(&data, 99), ends[2]);
        assert_eq!(prefix_upto(&data[..ends[2] - 1], 99), ends[1]);
        assert_eq!(prefix_upto(&data[..5], 99), 5);
    }
}
