//! Point-in-time read views.

use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use bytes::Bytes;

use super::error::Result;
use super::iter::{MergeIter, Scan};
use super::memtable::MemKey;
use super::sstable::Table;
use super::version::SuperVersion;
use super::{owned_bounds, prefix_successor};

/// A consistent view: the memtables and tables of one moment, read at one seqno.
///
/// It holds no lock; it pins memory and files until dropped, so drop it when done.
#[derive(Clone)]
pub struct Snapshot {
    sv: Arc<SuperVersion>,
    seq: u64,
}

impl Snapshot {
    pub(crate) fn new(sv: Arc<SuperVersion>, seq: u64) -> Self {
        Snapshot { sv, seq }
    }

    /// The sequence number the snapshot reads at.
    pub fn sequence(&self) -> u64 {
        self.seq
    }

    /// The value of `key` as of the snapshot.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let probe = MemKey {
            key: Bytes::copy_from_slice(key),
            seq: self.seq,
        };
        for m in std::iter::once(&self.sv.mem).chain(&self.sv.imms) {
            if let Some(v) = m.get(&probe) {
                return Ok(v);
            }
        }
        let hash = Table::hash(key);
        let levels = &self.sv.version.levels;
        for t in &levels[0] {
            if let Some(e) = t.get(key, hash, self.seq)? {
                return Ok(e.value);
            }
        }
        for level in levels.iter().skip(1) {
            let i = level.partition_point(|t| t.largest() < key);
            if let Some(t) = level.get(i) {
                if let Some(e) = t.get(key, hash, self.seq)? {
                    return Ok(e.value);
                }
            }
        }
        Ok(None)
    }

    /// Streams live entries with keys in `range`.
    pub fn scan<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Scan {
        let (start, end) = owned_bounds(&range);
        self.scan_bounds(start, end)
    }

    /// Streams live entries whose keys start with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Scan {
        let end = match prefix_successor(prefix) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        self.scan_bounds(Bound::Included(prefix.to_vec()), end)
    }

    /// Streams every live entry.
    pub fn iter(&self) -> Scan {
        self.scan_bounds(Bound::Unbounded, Bound::Unbounded)
    }

    fn scan_bounds(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Scan {
        Scan::new(
            MergeIter::new(self.sv.sources()),
            self.seq,
            start,
            end,
            self.sv.clone(),
        )
    }
}
