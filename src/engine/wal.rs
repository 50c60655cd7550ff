//! The write-ahead log: one segment per memtable, CRC32-framed records, one batch each.
//!
//! Segment layout: the magic `MDBWAL01`, then records `crc32 (u32) | len (u32) | payload`,
//! where the CRC covers the length bytes and the payload. Recovery stops at the first bad
//! record: if no valid record follows it in the last segment, it is a torn tail and is
//! truncated; otherwise it is corruption, reported with the file and offset.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{decode_payload, Op, BATCH_HEADER, MAX_BATCH_BYTES};
use super::coding::{get_u32, get_u64};
use super::error::{fsync_ctx, Error, IoContext, Result};
use super::fault::fail_sync;
use super::manifest::sync_dir;

const MAGIC: &[u8; 8] = b"MDBWAL01";
const RECORD_HEADER: usize = 8;

/// The path of segment `id` in `wal_dir`.
pub(crate) fn segment_path(wal_dir: &Path, id: u64) -> PathBuf {
    wal_dir.join(format!("{id:020}.wal"))
}

/// Segment ids in `wal_dir`, ascending; other files are ignored.
pub(crate) fn list_segments(wal_dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for e in fs::read_dir(wal_dir).ctx(|| format!("list {}", wal_dir.display()))? {
        let e = e.ctx(|| format!("list {}", wal_dir.display()))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Appends records to one segment; bytes wait in a buffer until `flush_buf`.
pub(crate) struct WalWriter {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    buf: Vec<u8>,
}

impl WalWriter {
    /// Creates segment `id`, writes its header, and makes it durable.
    pub fn create(wal_dir: &Path, id: u64) -> Result<Self> {
        let path = segment_path(wal_dir, id);
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("create WAL segment {}", path.display()))?;
        file.write_all(MAGIC)
            .ctx(|| format!("write WAL header {}", path.display()))?;
        fsync_ctx(fail_sync("wal-sync").and_then(|()| file.sync_all()), || {
            format!("WAL segment {}", path.display())
        })?;
        sync_dir(wal_dir)?;
        Ok(WalWriter {
            id,
            path,
            file: Arc::new(file),
            buf: Vec::with_capacity(64 << 10),
        })
    }

    /// The segment id (also its memtable's id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Frames `payload` into the buffer; returns the framed size.
    pub fn append(&mut self, payload: &[u8]) -> usize {
        let len = (payload.len() as u32).to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&len);
        h.update(payload);
        self.buf.extend_from_slice(&h.finalize().to_le_bytes());
        self.buf.extend_from_slice(&len);
        self.buf.extend_from_slice(payload);
        RECORD_HEADER + payload.len()
    }

    /// Bytes waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Hands buffered bytes to the OS.
    pub fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        (&*self.file)
            .write_all(&self.buf)
            .ctx(|| format!("write WAL segment {}", path.display()))?;

        self.buf.clear();
        Ok(())
    }

    /// The file, for an fsync outside the WAL lock.
    pub fn file(&self) -> Arc<File> {
        self.file.clone()
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Fsyncs a WAL file (data only: the size is covered by fdatasync).
pub(crate) fn sync_file(file: &File, path: &Path) -> Result<()> {
    fsync_ctx(
        fail_sync("wal-sync").and_then(|()| file.sync_data()),
        || format!("WAL segment {}", path.display()),
    )
}

/// What replaying a segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Highest seqno replayed (0 when none).
    pub max_seq: u64,
    /// Records replayed.
    pub records: u64,
    /// Offset where a torn tail was cut, if any.
    pub truncated_at: Option<u64>,
}

/// Parses the record at `pos`: its payload range, or `None` when it is not a valid record.
fn record_at(data: &[u8], pos: usize) -> Option<(usize, usize)> {
    let crc = get_u32(data, pos)?;
    let len = get_u32(data, pos + 4)? as usize;
    if !(BATCH_HEADER..=MAX_BATCH_BYTES).contains(&len) {
        return None;
    }
    let start = pos + RECORD_HEADER;
    let end = start.checked_add(len)?;
    let payload = data.get(start..end)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&data[pos + 4..pos + 8]);
    h.update(payload);
    (h.finalize() == crc).then_some((start, end))
}

/// True when a valid record with a plausible seqno starts anywhere after `from`.
fn valid_record_after(data: &[u8], from: usize, base_seq: u64) -> bool {
    (from + 1..data.len().saturating_sub(RECORD_HEADER + BATCH_HEADER - 1)).any(|p| {
        // The seqno check first: it rejects almost every offset without a CRC pass.
        get_u64(data, p + RECORD_HEADER).is_some_and(|s| s > base_seq && s - base_seq < 1 << 32)
            && record_at(data, p).is_some_and(|(s, e)| decode_payload(&data[s..e]).is_some())
    })
}

/// Replays segment `path`, calling `apply(first_seq, ops)` per record.
///
/// `is_last` allows a torn tail to be truncated; `base_seq` is the highest seqno known
/// to precede this segment.
pub(crate) fn replay(
    path: &Path,
    is_last: bool,
    base_seq: u64,
    mut apply: impl FnMut(u64, &[Op<'_>]),
) -> Result<Replay> {
    let data = fs::read(path).ctx(|| format!("read WAL segment {}", path.display()))?;
    let mut out = Replay::default();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        // A segment whose header never reached the disk holds no acknowledged write.
        if is_last && data.len() < MAGIC.len() && MAGIC.starts_with(&data) {
            truncate(path, 0)?;
            out.truncated_at = Some(0);
            return Ok(out);
        }
        return Err(Error::corruption(path, 0, "bad WAL segment header"));
    }
    let mut pos = MAGIC.len();
    let mut last_seq = base_seq;
    while pos < data.len() {
        let decoded = record_at(&data, pos).and_then(|(s, e)| decode_payload(&data[s..e]));
        match decoded {
            Some((seq, ops)) => {
                apply(seq, &ops);
                let end_seq = seq + ops.len().max(1) as u64 - 1;
                last_seq = last_seq.max(end_seq);
                out.max_seq = out.max_seq.max(end_seq);
                out.records += 1;
                pos += RECORD_HEADER + (get_u32(&data, pos + 4).unwrap_or(0) as usize);
            }
            None => {
                if !is_last || valid_record_after(&data, pos, last_seq) {
                    return Err(Error::corruption(
                        path,
                        pos as u64,
                        "WAL record checksum or format mismatch",
                    ));
                }
                truncate(path, pos as u64)?;
                out.truncated_at = Some(pos as u64);
                break;
            }
        }
    }
    Ok(out)
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = File::options()
        .write(true)
        .open(path)
        .ctx(|| format!("open WAL segment {}", path.display()))?;
    f.set_len(len)
        .ctx(|| format!("truncate WAL segment {}", path.display()))?;
    fsync_ctx(f.sync_all(), || format!("WAL segment {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::batch::WriteBatch;
    use super::*;

    fn write_segment(dir: &Path, n: u64) -> PathBuf {
        let mut w = WalWriter::create(dir, 1).expect("create");
        for i in 1..=n {
            let mut b = WriteBatch::new();
            b.put(format!("key{i}").as_bytes(), b"value");
            w.append(b.payload_with_seq(i));
        }
        w.flush_buf().expect("flush");
        w.path().to_path_buf()
    }

    fn count(path: &Path, is_last: bool) -> Result<Replay> {
        replay(path, is_last, 0, |_, _| {})
    }

    #[test]
    fn clean_segment_replays_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_segment(dir.path(), 10);
        let r = count(&path, true).expect("replay");
        assert_eq!((r.records, r.max_seq, r.truncated_at), (10, 10, None));
    }

    #[test]
    fn torn_tail_is_truncated_but_middle_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_segment(dir.path(), 10);
        let good = fs::read(&path).expect("read");
        // Cut inside the last record: a torn tail.
        fs::write(&path, &good[..good.len() - 3]).expect("write");
        let r = count(&path, true).expect("torn tail recovers");
        assert_eq!(r.records, 9);
        assert!(r.truncated_at.is_some());
        // Flip a byte in the third record: valid records follow, so it is corruption.
        let mut bad = good.clone();
        // Records 1..=9 are 32 bytes: 8 of framing and a 24-byte batch of one put.
        bad[8 + 2 * 32 + 12] ^= 0x40;
        fs::write(&path, &bad).expect("write");
        match count(&path, true) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, 8 + 2 * 32),
            other => panic!("expected corruption, got {other:?}"),
        }
        // The same damage in a segment that is not the last is never a torn tail.
        fs::write(&path, &good[..good.len() - 3]).expect("write");
        assert!(count(&path, false).is_err());
    }

    #[test]
    fn zeroed_tail_is_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_segment(dir.path(), 4);
        let mut data = fs::read(&path).expect("read");
        data.extend_from_slice(&[0u8; 4096]);
        fs::write(&path, &data).expect("write");
        let r = count(&path, true).expect("zero tail recovers");
        assert_eq!(r.records, 4);
    }
}
