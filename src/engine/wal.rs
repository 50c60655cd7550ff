//! The write-ahead log: one segment per memtable, CRC32-framed records, one batch each.
//!
//! Segment layout: the magic `MDBWAL01`, then records `crc32 (u32) | len (u32) | payload`,
//! where the CRC covers the length bytes and the payload. Recovery stops at the first bad
//! record: if no valid record follows it in the last segment, it is a torn tail and is
//! truncated; otherwise it is corruption, reported with the file and offset.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::{decode_payload, Op, BATCH_HEADER, MAX_BATCH_BYTES};
use super::coding::{get_u32, get_u64};
use super::error::{fsync_ctx, Error, IoContext, Result};
use super::manifest::sync_dir;
use super::storage::{write_all_at, EntryKind, Storage, StorageFile};

const MAGIC: &[u8; 8] = b"MDBWAL01";
const RECORD_HEADER: usize = 8;

/// The path of segment `id` in `wal_dir`.
pub(crate) fn segment_path(wal_dir: &Path, id: u64) -> PathBuf {
    wal_dir.join(format!("{id:020}.wal"))
}

/// The id a segment file name stands for, if it is one of ours (`{id:020}.wal`).
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Segment ids in `wal_dir`, ascending; other files are ignored.
pub(crate) fn list_segments(fs: &dyn Storage, wal_dir: &Path) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = fs
        .list(wal_dir)
        .ctx(|| format!("list {}", wal_dir.display()))?
        .into_iter()
        .filter(|e| e.kind == EntryKind::File)
        .filter_map(|e| parse_segment_name(&e.name))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Appends records to one segment. Records wait in a buffer until `flush_buf` hands them
/// to the OS; `offset` is where the next write goes.
pub(crate) struct WalWriter {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    offset: u64,
    buf: Vec<u8>,
    /// Records in `buf` (one per `write` call).
    buf_records: usize,
}

impl WalWriter {
    /// Creates segment `id`, writes its header, and makes it and its name durable. A
    /// failure leaves no segment behind (best effort; recovery ignores a headerless one).
    pub fn create(fs: &dyn Storage, wal_dir: &Path, id: u64) -> Result<Self> {
        let path = segment_path(wal_dir, id);
        let made = (|| -> Result<Arc<dyn StorageFile>> {
            let file: Arc<dyn StorageFile> = match fs.create_new(&path) {
                Ok(f) => Arc::from(f),
                // Left by an earlier failed attempt of this process: the id is ours.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let f: Arc<dyn StorageFile> = Arc::from(
                        fs.open(&path, true)
                            .ctx(|| format!("open WAL segment {}", path.display()))?,
                    );
                    f.set_len(0)
                        .ctx(|| format!("truncate WAL segment {}", path.display()))?;
                    f
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("create WAL segment {}", path.display()),
                        e,
                    ))
                }
            };
            write_all_at(&*file, MAGIC, 0)
                .ctx(|| format!("write WAL header {}", path.display()))?;
            fsync_ctx(file.sync_data(), || {
                format!("WAL segment {}", path.display())
            })?;
            sync_dir(fs, wal_dir)?;
            Ok(file)
        })();
        match made {
            Ok(file) => Ok(WalWriter {
                path,
                file,
                offset: MAGIC.len() as u64,
                buf: Vec::with_capacity(64 << 10),
                buf_records: 0,
            }),
            Err(e) => {
                let _ = fs.remove_file(&path);
                Err(e)
            }
        }
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
        self.buf_records += 1;
        RECORD_HEADER + payload.len()
    }

    /// Records waiting in the buffer.
    pub fn buffered_records(&self) -> usize {
        self.buf_records
    }

    /// Hands buffered records to the OS. On failure the file is cut back to where the
    /// buffer started, so no partial record stays on disk, and the buffer is kept for the
    /// caller to discard. `Err((error, rolled_back))`: `rolled_back` false means the cut
    /// failed too and the segment's tail is unknown.
    pub fn flush_buf(&mut self) -> std::result::Result<(), (Error, bool)> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match write_all_at(&*self.file, &self.buf, self.offset) {
            Ok(()) => {
                self.offset += self.buf.len() as u64;
                self.buf.clear();
                self.buf_records = 0;
                Ok(())
            }
            Err(e) => {
                let rolled_back = self.file.set_len(self.offset).is_ok();
                Err((
                    Error::io(format!("write WAL segment {}", self.path.display()), e),
                    rolled_back,
                ))
            }
        }
    }

    /// Empties the buffer, returning the framed records it held (never written).
    pub fn discard_buf(&mut self) -> Vec<u8> {
        self.buf_records = 0;
        std::mem::take(&mut self.buf)
    }

    /// The file, for an fsync outside the WAL lock.
    pub fn file(&self) -> Arc<dyn StorageFile> {
        self.file.clone()
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Calls `f(first_seq, ops)` for every record of framed, never-written records (as
/// returned by [`WalWriter::discard_buf`]).
pub(crate) fn for_each_framed(data: &[u8], mut f: impl FnMut(u64, &[Op<'_>])) {
    let mut pos = 0;
    while let Some((s, e)) = record_at(data, pos) {
        if let Some((seq, ops)) = decode_payload(&data[s..e]) {
            f(seq, &ops);
        }
        pos = e;
    }
}

/// Fsyncs a WAL file (data only: the size is covered by fdatasync).
pub(crate) fn sync_file(file: &dyn StorageFile, path: &Path) -> Result<()> {
    fsync_ctx(file.sync_data(), || {
        format!("WAL segment {}", path.display())
    })
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

/// Replays the bytes of segment `path`, calling `apply(first_seq, ops)` per record.
///
/// `is_last` allows a torn tail (reported in [`Replay::truncated_at`]; the caller cuts it
/// off); `base_seq` is the highest seqno known to precede this segment. A segment too
/// short to hold its header (creation cut short) holds no record, wherever it is.
pub(crate) fn replay(
    path: &Path,
    data: &[u8],
    is_last: bool,
    base_seq: u64,
    mut apply: impl FnMut(u64, &[Op<'_>]),
) -> Result<Replay> {
    let mut out = Replay::default();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        // A segment whose header never reached the disk holds no acknowledged write.
        if data.len() < MAGIC.len() && MAGIC.starts_with(data) {
            if !data.is_empty() {
                out.truncated_at = Some(0);
            }
            return Ok(out);
        }
        return Err(Error::corruption(path, 0, "bad WAL segment header"));
    }
    let mut pos = MAGIC.len();
    let mut last_seq = base_seq;
    while pos < data.len() {
        let decoded = record_at(data, pos).and_then(|(s, e)| decode_payload(&data[s..e]));
        match decoded {
            Some((seq, ops)) => {
                apply(seq, &ops);
                let end_seq = seq + ops.len().max(1) as u64 - 1;
                last_seq = last_seq.max(end_seq);
                out.max_seq = out.max_seq.max(end_seq);
                out.records += 1;
                pos += RECORD_HEADER + (get_u32(data, pos + 4).unwrap_or(0) as usize);
            }
            None => {
                if !is_last || valid_record_after(data, pos, last_seq) {
                    return Err(Error::corruption(
                        path,
                        pos as u64,
                        "WAL record checksum or format mismatch",
                    ));
                }
                out.truncated_at = Some(pos as u64);
                break;
            }
        }
    }
    Ok(out)
}

/// Cuts a segment at `len` and makes that durable.
pub(crate) fn truncate(fs: &dyn Storage, path: &Path, len: u64) -> Result<()> {
    let f = fs
        .open(path, true)
        .ctx(|| format!("open WAL segment {}", path.display()))?;
    f.set_len(len)
        .ctx(|| format!("truncate WAL segment {}", path.display()))?;
    fsync_ctx(f.sync_data(), || format!("WAL segment {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::batch::WriteBatch;
    use super::super::storage::SimFs;
    use super::*;
    use proptest::prelude::*;

    fn write_segment(fs: &SimFs, n: u64) -> PathBuf {
        let dir = Path::new("/wal");
        if fs.kind(dir).ok().flatten().is_none() {
            fs.create_dir(dir).expect("mkdir");
        }
        let mut w = WalWriter::create(fs, dir, 1).expect("create");
        for i in 1..=n {
            let mut b = WriteBatch::new();
            b.put(format!("key{i}").as_bytes(), b"value");
            w.append(b.payload_with_seq(i));
        }
        assert!(w.flush_buf().is_ok());
        w.path().to_path_buf()
    }

    fn count(data: &[u8], is_last: bool) -> Result<Replay> {
        replay(Path::new("seg"), data, is_last, 0, |_, _| {})
    }

    #[test]
    fn clean_segment_replays_every_record() {
        let fs = SimFs::new();
        let path = write_segment(&fs, 10);
        let data = fs.read_file(&path).expect("read");
        let r = count(&data, true).expect("replay");
        assert_eq!((r.records, r.max_seq, r.truncated_at), (10, 10, None));
    }

    #[test]
    fn torn_tail_is_reported_but_middle_damage_is_an_error() {
        let fs = SimFs::new();
        let path = write_segment(&fs, 10);
        let good = fs.read_file(&path).expect("read");
        // Cut inside the last record: a torn tail.
        let r = count(&good[..good.len() - 3], true).expect("torn tail recovers");
        assert_eq!(r.records, 9);
        assert_eq!(r.truncated_at, Some(8 + 9 * 32));
        // Flip a byte in the third record: valid records follow, so it is corruption.
        let mut bad = good.clone();
        // Records 1..=9 are 32 bytes: 8 of framing and a 24-byte batch of one put.
        bad[8 + 2 * 32 + 12] ^= 0x40;
        match count(&bad, true) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, 8 + 2 * 32),
            other => panic!("expected corruption, got {other:?}"),
        }
        // The same damage in a segment that is not the last is never a torn tail.
        assert!(count(&good[..good.len() - 3], false).is_err());
    }

    #[test]
    fn zeroed_tail_is_torn() {
        let fs = SimFs::new();
        let path = write_segment(&fs, 4);
        let mut data = fs.read_file(&path).expect("read");
        data.extend_from_slice(&[0u8; 4096]);
        let r = count(&data, true).expect("zero tail recovers");
        assert_eq!(r.records, 4);
    }

    #[test]
    fn headerless_segment_holds_nothing_anywhere() {
        for data in [&b""[..], b"MDB", b"MDBWAL0"] {
            for last in [true, false] {
                let r = count(data, last).expect("no records");
                assert_eq!(r.records, 0);
            }
        }
        assert!(count(b"XXXXXXXXXXXX", false).is_err());
    }

    #[test]
    fn failed_flush_rolls_the_file_back() {
        let fs = SimFs::new();
        let path = write_segment(&fs, 2);
        let before = fs.read_file(&path).expect("read");
        let mut w = WalWriter {
            path: path.clone(),
            file: Arc::from(fs.open(&path, true).expect("open")),
            offset: before.len() as u64,
            buf: Vec::new(),
            buf_records: 0,
        };
        let mut b = WriteBatch::new();
        b.put(b"k", &[7u8; 100]);
        w.append(b.payload_with_seq(3));
        fs.fail_op(fs.stats().ops + 2, crate::engine::storage::FaultKind::Eio);
        fs.fail_op(
            fs.stats().ops + 1,
            crate::engine::storage::FaultKind::ShortWrite,
        );
        assert!(matches!(w.flush_buf(), Err((_, true))));
        assert_eq!(fs.read_file(&path), Some(before));
        let mut seen = 0;
        for_each_framed(&w.discard_buf(), |seq, ops| {
            assert_eq!((seq, ops.len()), (3, 1));
            seen += 1;
        });
        assert_eq!(seen, 1);
    }

    proptest! {
        #[test]
        fn replay_of_arbitrary_bytes_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..300),
            last in any::<bool>(),
        ) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&tail);
            let _ = count(&data, last);
            let _ = count(&tail, last);
            for_each_framed(&tail, |_, _| {});
        }
    }
}
