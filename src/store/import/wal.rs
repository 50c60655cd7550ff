//! MiniDBGo's write-ahead logs (FORMAT.md section 5): the record decoder and the order
//! of the files.

use std::cmp::Ordering;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{ImportError, Result};
use super::sstable::{le_u32, read_exact};

/// Record header: CRC, key length, value length, flag.
pub(crate) const RECORD_HEADER: u64 = 13;
/// Largest key or value accepted in one record; larger lengths are refused, not allocated.
pub(crate) const MAX_FIELD: u64 = 256 << 20;

/// One WAL record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalRecord {
    /// Offset of the record in its file.
    pub offset: u64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The stored CRC-32C (flag, key, value), checked.
    pub crc: u32,
}

impl WalRecord {
    /// Where the value's bytes start in the file.
    pub(crate) fn value_offset(&self) -> u64 {
        self.offset + RECORD_HEADER + self.key.len() as u64
    }
}

/// The CRC-32C MiniDBGo stores: over the flag, the key and the value.
pub(crate) fn record_crc(tombstone: bool, key: &[u8], value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&[u8::from(tombstone)]);
    crc32c::crc32c_append(crc32c::crc32c_append(crc, key), value)
}

/// Reads the records of one WAL file of `len` bytes in order.
pub(crate) struct WalReader<R> {
    path: PathBuf,
    r: R,
    offset: u64,
    len: u64,
}

impl<R: Read> WalReader<R> {
    /// A reader over `r` (buffered by the caller), `len` bytes long; `path` names it in errors.
    pub(crate) fn new(path: &Path, r: R, len: u64) -> Self {
        WalReader {
            path: path.to_path_buf(),
            r,
            offset: 0,
            len,
        }
    }

    /// The next record, `None` at the end of the file.
    pub(crate) fn next_record(&mut self) -> Result<Option<WalRecord>> {
        let at = self.offset;
        let left = self.len - at;
        if left == 0 {
            return Ok(None);
        }
        let torn = |what: String| {
            ImportError::damaged(
                &self.path,
                at,
                format!(
                    "{what}: a torn last record (a crash during its write; MiniDBGo refuses to \
                     open such a WAL too). Cutting the file at this offset \
                     (truncate -s {at}) drops only that record"
                ),
            )
        };
        if left < RECORD_HEADER {
            return Err(torn(format!("{left} bytes left, a record header needs 13")));
        }
        let mut h = [0u8; RECORD_HEADER as usize];
        read_exact(&self.path, &mut self.r, &mut h, at)?;
        let crc = le_u32(&h[0..4]);
        let key_len = u64::from(le_u32(&h[4..8]));
        let value_len = u64::from(le_u32(&h[8..12]));
        let flag = h[12];
        if flag > 1 {
            return Err(ImportError::damaged(
                &self.path,
                at,
                format!("record flag {flag}, expected 0 (put) or 1 (delete)"),
            ));
        }
        if key_len > MAX_FIELD || value_len > MAX_FIELD {
            return Err(ImportError::damaged(
                &self.path,
                at,
                format!(
                    "record lengths {key_len}+{value_len} bytes: more than the {MAX_FIELD} \
                     accepted per key or value"
                ),
            ));
        }
        let body = left - RECORD_HEADER;
        if key_len + value_len > body {
            return Err(torn(format!(
                "record of {key_len}+{value_len} bytes, only {body} left in the file"
            )));
        }
        let mut key = vec![0u8; key_len as usize];
        read_exact(&self.path, &mut self.r, &mut key, at + RECORD_HEADER)?;
        let mut value = vec![0u8; value_len as usize];
        read_exact(
            &self.path,
            &mut self.r,
            &mut value,
            at + RECORD_HEADER + key_len,
        )?;
        let actual = record_crc(flag == 1, &key, &value);
        if actual != crc {
            return Err(ImportError::damaged(
                &self.path,
                at,
                format!("record checksum mismatch: stored {crc:#010x}, computed {actual:#010x}"),
            ));
        }
        self.offset = at + RECORD_HEADER + key_len + value_len;
        Ok(Some(WalRecord {
            offset: at,
            key,
            value: (flag == 0).then_some(value),
            crc,
        }))
    }
}

/// A WAL file name: `wal-<seq>.log` (opened at process start) or
/// `wal-<seq>-<unixnano>.log` (opened at a memtable rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalName {
    pub name: String,
    pub seq: u64,
    /// `None` for the plain start-up name.
    pub nanos: Option<u64>,
}

impl WalName {
    /// Parses a file name; `None` if it is not a MiniDBGo WAL name.
    pub(crate) fn parse(name: &str) -> Option<WalName> {
        let core = name.strip_prefix("wal-")?.strip_suffix(".log")?;
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let (seq, nanos) = match core.split_once('-') {
            Some((s, n)) => (number(s)?, Some(number(n)?)),
            None => (number(core)?, None),
        };
        Some(WalName {
            name: name.to_owned(),
            seq,
            nanos,
        })
    }

    /// Creation order within one process lifetime: the plain file first (it is opened at
    /// start), then the rotated ones by (seq, nanos). Never the names' lexicographic
    /// order, which puts `wal-101-…` before `wal-99-…` and `wal-7-….log` before `wal-7.log`.
    pub(crate) fn creation_order(a: &WalName, b: &WalName) -> Ordering {
        (a.seq, a.nanos.is_some(), a.nanos).cmp(&(b.seq, b.nanos.is_some(), b.nanos))
    }
}

/// Splits `wals` into the files to apply, in creation order, and the stale ones.
///
/// A start-up replays every WAL; when the replay ends exactly at a flush boundary it
/// deletes nothing, so the replayed files stay next to the new `wal-<S>.log`, although
/// their content is already in the SSTables it flushed (seq >= S). So a plain
/// `wal-<S>.log` with a registered SSTable of seq >= S marks such a start-up, and every
/// other WAL with seq <= S predates it (FORMAT.md section 5): applying those as newest
/// could undo later writes.
pub(crate) fn order_wals(
    mut wals: Vec<WalName>,
    max_registered_seq: Option<u64>,
) -> (Vec<WalName>, Vec<(WalName, WalName)>) {
    wals.sort_by(WalName::creation_order);
    let marker = wals
        .iter()
        .filter(|w| w.nanos.is_none() && max_registered_seq.is_some_and(|m| m >= w.seq))
        .max_by_key(|w| w.seq)
        .cloned();
    let Some(marker) = marker else {
        return (wals, Vec::new());
    };
    let (stale, live): (Vec<WalName>, Vec<WalName>) = wals
        .into_iter()
        .partition(|w| *w != marker && w.seq <= marker.seq);
    let stale = stale.into_iter().map(|w| (w, marker.clone())).collect();
    (live, stale)
}

#[cfg(test)]
mod tests {
    use super::super::testenc::wal_record;
    use super::*;
    use proptest::prelude::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<WalRecord>> {
        let mut r = WalReader::new(Path::new("wal/wal-3.log"), bytes, bytes.len() as u64);
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    type Pairs = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn sample() -> (Pairs, Vec<u8>) {
        let recs: Pairs = (0..20u32)
            .map(|i| {
                (
                    format!("c:{}", i % 6).into_bytes(),
                    (i % 5 != 4).then(|| format!("{{\"rev\":{i}}}").into_bytes()),
                )
            })
            .collect();
        let bytes = recs
            .iter()
            .flat_map(|(k, v)| wal_record(k, v.as_deref()))
            .collect();
        (recs, bytes)
    }

    #[test]
    fn reads_records_in_file_order() {
        let (recs, bytes) = sample();
        let got = read_all(&bytes).unwrap_or_default();
        let got: Vec<_> = got.into_iter().map(|r| (r.key, r.value)).collect();
        assert_eq!(got, recs);
        assert_eq!(read_all(&[]).ok(), Some(vec![]));
    }

    #[test]
    fn truncation_inside_a_record_names_its_offset() {
        let (_, bytes) = sample();
        let starts: Vec<u64> = read_all(&bytes)
            .unwrap_or_default()
            .iter()
            .map(|r| r.offset)
            .collect();
        for cut in 0..bytes.len() {
            let result = read_all(&bytes[..cut]);
            if starts.contains(&(cut as u64)) {
                assert!(result.is_ok(), "cut at a record boundary {cut}");
                continue;
            }
            let record = starts.iter().rev().find(|&&s| s < cut as u64).copied();
            match result {
                Err(ImportError::Damaged { offset, reason, .. }) => {
                    assert_eq!(Some(offset), record, "cut {cut}");
                    assert!(reason.contains("torn"), "{reason}");
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_or_length_error() {
        let (_, good) = sample();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(
                matches!(read_all(&bad), Err(ImportError::Damaged { .. })),
                "flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn names_and_creation_order() {
        assert_eq!(
            WalName::parse("wal-99-1796155124101955905.log"),
            Some(WalName {
                name: "wal-99-1796155124101955905.log".into(),
                seq: 99,
                nanos: Some(1_796_155_124_101_955_905)
            })
        );
        assert_eq!(WalName::parse("wal-7.log").map(|w| w.nanos), Some(None));
        for bad in [
            "wal-.log",
            "wal-7",
            "wal-x.log",
            "wal-7-.log",
            "wal-1-2-3.log",
            "log",
        ] {
            assert_eq!(WalName::parse(bad), None, "{bad}");
        }
        let names = |v: Vec<WalName>| v.into_iter().map(|w| w.name).collect::<Vec<_>>();
        let wals: Vec<WalName> = ["wal-101-5.log", "wal-7-9.log", "wal-99-3.log", "wal-7.log"]
            .iter()
            .filter_map(|n| WalName::parse(n))
            .collect();
        let (live, stale) = order_wals(wals.clone(), Some(6));
        assert_eq!(
            names(live),
            ["wal-7.log", "wal-7-9.log", "wal-99-3.log", "wal-101-5.log"]
        );
        assert!(stale.is_empty());
        let _ = wals;
    }

    #[test]
    fn wals_older_than_a_restart_that_flushed_them_are_stale() {
        // What MiniDBGo left when it reopened crash-with-wal: the old rotated files, the
        // new plain one, and sst-L0-000101 from the replay.
        let wals: Vec<WalName> = ["wal-99-3.log", "wal-101-5.log", "wal-101.log"]
            .iter()
            .filter_map(|n| WalName::parse(n))
            .collect();
        let (live, stale) = order_wals(wals.clone(), Some(101));
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].name, "wal-101.log");
        let stale: Vec<&str> = stale.iter().map(|(w, _)| w.name.as_str()).collect();
        assert_eq!(stale, ["wal-99-3.log", "wal-101-5.log"]);
        // Without an SSTable from that start-up there is nothing to hide them behind.
        let (live, stale) = order_wals(wals, Some(100));
        assert_eq!(live.len(), 3);
        assert!(stale.is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_all(&data);
        }

        #[test]
        fn arbitrary_names_never_panic(name in "\\PC{0,40}") {
            let _ = WalName::parse(&name);
        }
    }
}
