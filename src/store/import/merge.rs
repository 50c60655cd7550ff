//! The k-way merge of a data directory's files by recency (FORMAT.md section 8).
//!
//! Every SSTable is a sorted stream; the WAL records are not sorted, so they are indexed
//! first in a `BTreeMap` from key to where the newest record of that key is (not the
//! value itself): its size follows the WAL, a few memtables, never the database. The
//! merge holds one entry per source; for each key the source of lowest rank (newest)
//! wins, and a winning tombstone hides the key.

use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use super::datadir::DataDir;
use super::error::{ImportError, Result};
use super::sstable::{show, ReadAt, TableReader};
use super::wal::{record_crc, WalReader};

/// Where the newest WAL record of a key is.
#[derive(Debug, Clone, Copy)]
struct WalSlot {
    file: usize,
    record: u64,
    value_offset: u64,
    value_len: u64,
    crc: u32,
    tombstone: bool,
}

enum Payload {
    Value(Vec<u8>),
    Tombstone,
    Wal(WalSlot),
}

/// The current entry of one source, ordered so that the max-heap pops the smallest key
/// first and, among equal keys, the newest source (lowest rank).
struct Head {
    key: Vec<u8>,
    rank: usize,
    payload: Payload,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (&other.key, other.rank).cmp(&(&self.key, self.rank))
    }
}

enum Source {
    Wal(btree_map::IntoIter<Vec<u8>, WalSlot>),
    Table(TableReader<File>),
}

/// A live document version: the key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Live {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Counts of what the merge saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MergeStats {
    /// WAL records and SSTable entries read.
    pub records: u64,
    /// Keys whose newest version is a tombstone.
    pub deleted: u64,
    /// Versions hidden by a newer one.
    pub shadowed: u64,
}

/// Resolves every key of a data directory to its newest version, in key order.
pub(crate) struct Merge {
    sources: Vec<Source>,
    heap: BinaryHeap<Head>,
    wal_files: Vec<(PathBuf, File)>,
    pub stats: MergeStats,
}

impl Merge {
    /// Reads the WAL files into the index and opens every table; `warn` gets notes such
    /// as a MANIFEST key count that differs from the table's own.
    pub(crate) fn open(dd: &DataDir, warn: &mut dyn FnMut(String)) -> Result<Merge> {
        let mut stats = MergeStats::default();
        let mut index: BTreeMap<Vec<u8>, WalSlot> = BTreeMap::new();
        let mut wal_files = Vec::with_capacity(dd.wals.len());
        for (i, path) in dd.wals.iter().enumerate() {
            let file = File::open(path).map_err(|e| ImportError::io("open", path, e))?;
            let len = file
                .metadata()
                .map_err(|e| ImportError::io("stat", path, e))?
                .len();
            let reader = file
                .try_clone()
                .map_err(|e| ImportError::io("open", path, e))?;
            let mut records = WalReader::new(path, BufReader::with_capacity(64 << 10, reader), len);
            while let Some(r) = records.next_record()? {
                stats.records += 1;
                let slot = WalSlot {
                    file: i,
                    record: r.offset,
                    value_offset: r.value_offset(),
                    value_len: r.value.as_ref().map_or(0, |v| v.len() as u64),
                    crc: r.crc,
                    tombstone: r.value.is_none(),
                };
                // Files are in creation order and records in file order: the last wins.
                if index.insert(r.key, slot).is_some() {
                    stats.shadowed += 1;
                }
            }
            wal_files.push((path.clone(), file));
        }
        let mut sources = vec![Source::Wal(index.into_iter())];
        for (path, t) in &dd.tables {
            let reader = TableReader::open(path)?;
            if let Some(n) = t.key_count {
                if n != u64::from(reader.declared_entries()) {
                    warn(format!(
                        "MANIFEST says {} has {n} entries, its header says {}",
                        t.name,
                        reader.declared_entries()
                    ));
                }
            }
            sources.push(Source::Table(reader));
        }
        let mut merge = Merge {
            sources,
            heap: BinaryHeap::new(),
            wal_files,
            stats,
        };
        for rank in 0..merge.sources.len() {
            merge.advance(rank)?;
        }
        Ok(merge)
    }

    /// Pushes the next entry of source `rank` onto the heap.
    fn advance(&mut self, rank: usize) -> Result<()> {
        let next = match &mut self.sources[rank] {
            Source::Wal(it) => it.next().map(|(key, slot)| (key, Payload::Wal(slot))),
            Source::Table(t) => t.next_entry()?.map(|e| {
                self.stats.records += 1;
                let payload = match e.value {
                    Some(v) => Payload::Value(v),
                    None => Payload::Tombstone,
                };
                (e.key, payload)
            }),
        };
        if let Some((key, payload)) = next {
            self.heap.push(Head { key, rank, payload });
        }
        Ok(())
    }

    /// The next live key and its newest value, in key order; `None` at the end.
    pub(crate) fn next_live(&mut self) -> Result<Option<Live>> {
        while let Some(top) = self.heap.pop() {
            self.advance(top.rank)?;
            while self.heap.peek().is_some_and(|h| h.key == top.key) {
                if let Some(older) = self.heap.pop() {
                    self.stats.shadowed += 1;
                    self.advance(older.rank)?;
                }
            }
            let value = match top.payload {
                Payload::Value(v) => v,
                Payload::Tombstone => {
                    self.stats.deleted += 1;
                    continue;
                }
                Payload::Wal(slot) if slot.tombstone => {
                    self.stats.deleted += 1;
                    continue;
                }
                Payload::Wal(slot) => self.read_wal_value(&top.key, slot)?,
            };
            return Ok(Some(Live {
                key: top.key,
                value,
            }));
        }
        Ok(None)
    }

    /// Reads a WAL value back, checking its record's CRC again (the file could have
    /// changed since it was indexed).
    fn read_wal_value(&self, key: &[u8], slot: WalSlot) -> Result<Vec<u8>> {
        let (path, file) = &self.wal_files[slot.file];
        let mut value = vec![0u8; slot.value_len as usize];
        file.read_exact_at(&mut value, slot.value_offset)
            .map_err(|e| ImportError::io("read", path, e))?;
        if record_crc(false, key, &value) != slot.crc {
            return Err(ImportError::damaged(
                path,
                slot.record,
                format!(
                    "the record of key {} changed while the import read the file",
                    show(key)
                ),
            ));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testenc::{write_dir, Table};
    use super::*;

    fn resolve(dir: &std::path::Path) -> (Vec<(String, String)>, MergeStats, Vec<String>) {
        let dd = DataDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
        let mut warnings = dd.warnings.clone();
        let mut m = Merge::open(&dd, &mut |w| warnings.push(w)).unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        while let Some(live) = m.next_live().unwrap_or_else(|e| panic!("{e}")) {
            out.push((
                String::from_utf8_lossy(&live.key).into_owned(),
                String::from_utf8_lossy(&live.value).into_owned(),
            ));
        }
        (out, m.stats, warnings)
    }

    #[test]
    fn recency_wal_then_l0_backwards_then_l1_by_seq_then_l2() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("db");
        write_dir(
            &dir,
            &[
                // L0 in MANIFEST order (oldest first).
                Table {
                    level: 0,
                    seq: 40,
                    entries: &[("k:a", Some("l0-40")), ("k:d", None)],
                },
                Table {
                    level: 0,
                    seq: 41,
                    entries: &[("k:a", Some("l0-41")), ("k:b", Some("l0-41"))],
                },
                // L1 in MANIFEST (minKey) order, not age order: seq 37 is the newest.
                Table {
                    level: 1,
                    seq: 16,
                    entries: &[
                        ("k:b", Some("l1-16")),
                        ("k:c", Some("l1-16")),
                        ("k:e", Some("l1-16")),
                    ],
                },
                Table {
                    level: 1,
                    seq: 37,
                    entries: &[("k:c", Some("l1-37")), ("k:f", Some("l1-37"))],
                },
                Table {
                    level: 1,
                    seq: 22,
                    entries: &[("k:c", Some("l1-22")), ("k:e", Some("l1-22"))],
                },
                // L2 has a higher seq than L1 16 but is older than every L1 file.
                Table {
                    level: 2,
                    seq: 18,
                    entries: &[
                        ("k:d", Some("l2")),
                        ("k:e", Some("l2")),
                        ("k:g", Some("l2")),
                    ],
                },
            ],
            &[Table {
                level: 1,
                seq: 32,
                entries: &[("k:g", Some("unregistered"))],
            }],
            &[
                // Creation order: wal-99-… before wal-101-… (lexicographic would swap them).
                ("wal-101-5.log", &[("k:f", Some("wal-101")), ("k:g", None)]),
                (
                    "wal-99-3.log",
                    &[
                        ("k:f", Some("wal-99")),
                        ("k:h", Some("wal-99")),
                        ("k:h", Some("wal-99b")),
                    ],
                ),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (live, stats, warnings) = resolve(&dir);
        let want: Vec<(String, String)> = [
            ("k:a", "l0-41"),
            ("k:b", "l0-41"),
            ("k:c", "l1-37"),
            ("k:e", "l1-22"),
            ("k:f", "wal-101"),
            ("k:h", "wal-99b"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(live, want);
        // k:d deleted in L0 over L2; k:g deleted in the WAL over L2.
        assert_eq!(stats.deleted, 2);
        assert_eq!(stats.records, 5 + 4 + 3 + 2 + 2 + 3);
        assert_eq!(stats.records - stats.shadowed, 8);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("sst-L1-000032.sst ignored")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("sst-L1-000016.sst and the newer-numbered")
                    && w.contains("sst-L2-000018.sst")),
            "{warnings:?}"
        );
    }

    #[test]
    fn stale_wals_after_a_restart_are_not_applied() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("db");
        write_dir(
            &dir,
            &[
                // The replay at start-up flushed the old WALs' content as sst-L0-000101.
                Table {
                    level: 0,
                    seq: 101,
                    entries: &[("k:a", Some("replayed"))],
                },
                // Newer than that replay.
                Table {
                    level: 0,
                    seq: 102,
                    entries: &[("k:a", Some("after-restart"))],
                },
            ],
            &[],
            &[
                ("wal-99-3.log", &[("k:a", Some("stale"))]),
                ("wal-101-5.log", &[("k:a", Some("stale-too"))]),
                ("wal-101.log", &[]),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (live, _, warnings) = resolve(&dir);
        assert_eq!(live, [("k:a".to_string(), "after-restart".to_string())]);
        assert_eq!(
            warnings
                .iter()
                .filter(|w| w.contains("predates the restart"))
                .count(),
            2
        );
    }

    #[test]
    fn a_missing_registered_table_is_an_error() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dir = tmp.path().join("db");
        write_dir(
            &dir,
            &[Table {
                level: 0,
                seq: 1,
                entries: &[("k:a", Some("{}"))],
            }],
            &[],
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(dir.join("sst/sst-L0-000001.sst")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            DataDir::open(&dir),
            Err(ImportError::MissingFile { .. })
        ));
    }
}
