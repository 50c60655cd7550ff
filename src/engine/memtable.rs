//! The in-memory write buffer: a lock-free skiplist of versioned entries.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use bytes::Bytes;
use crossbeam_skiplist::SkipMap;

use super::iter::{Entry, Source};

/// Per-entry overhead counted against the memtable byte limit (skiplist node, Bytes headers).
const ENTRY_OVERHEAD: usize = 96;

/// A user key at one sequence number; sorts by key ascending, then newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemKey {
    pub key: Bytes,
    pub seq: u64,
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .cmp(&other.key)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// One memtable; it owns the WAL segment with the same id.
pub(crate) struct Memtable {
    id: u64,
    map: SkipMap<MemKey, Option<Bytes>>,
    bytes: AtomicUsize,
    entries: AtomicUsize,
    max_seq: AtomicU64,
}

impl Memtable {
    /// An empty memtable backed by WAL segment `id`.
    pub fn new(id: u64) -> Self {
        Memtable {
            id,
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            max_seq: AtomicU64::new(0),
        }
    }

    /// The WAL segment id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Inserts a version; `value` `None` is a tombstone. The key and value may share one
    /// buffer (a batch's payload): nothing is copied.
    pub fn insert(&self, key: Bytes, seq: u64, value: Option<Bytes>) {
        let size = key.len() + value.as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD;
        self.map.insert(MemKey { key, seq }, value);
        self.bytes.fetch_add(size, AtomicOrdering::Relaxed);
        self.entries.fetch_add(1, AtomicOrdering::Relaxed);
        self.max_seq.fetch_max(seq, AtomicOrdering::Relaxed);
    }

    /// Takes out one version (a write whose WAL record never reached the disk).
    pub fn remove(&self, key: &[u8], seq: u64) {
        let k = MemKey {
            key: Bytes::copy_from_slice(key),
            seq,
        };
        if let Some(e) = self.map.remove(&k) {
            let size = key.len() + e.value().as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD;
            self.bytes.fetch_sub(size, AtomicOrdering::Relaxed);
            self.entries.fetch_sub(1, AtomicOrdering::Relaxed);
        }
    }

    /// The newest version of `probe.key` at or below `probe.seq`: `Some(None)` is a
    /// tombstone. One probe serves every memtable a read checks.
    pub fn get(&self, probe: &MemKey) -> Option<Option<Bytes>> {
        let e = self.map.lower_bound(Bound::Included(probe))?;
        (e.key().key == probe.key).then(|| e.value().clone())
    }

    /// Approximate bytes held.
    pub fn approximate_bytes(&self) -> usize {
        self.bytes.load(AtomicOrdering::Relaxed)
    }

    /// Number of versions held.
    pub fn len(&self) -> usize {
        self.entries.load(AtomicOrdering::Relaxed)
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Highest seqno inserted (0 when empty).
    pub fn max_seq(&self) -> u64 {
        self.max_seq.load(AtomicOrdering::Relaxed)
    }

    /// The first entry strictly after `after` (or from the start), for iterators.
    pub fn next_after(&self, after: Option<&MemKey>) -> Option<Entry> {
        let e = match after {
            Some(k) => self.map.lower_bound(Bound::Excluded(k))?,
            None => self.map.front()?,
        };
        Some(Entry {
            key: e.key().key.clone(),
            seq: e.key().seq,
            value: e.value().clone(),
        })
    }

    /// The first entry whose user key is at or after `key`.
    pub fn seek(&self, key: &[u8]) -> Option<Entry> {
        let probe = MemKey {
            key: Bytes::copy_from_slice(key),
            seq: u64::MAX,
        };
        let e = self.map.lower_bound(Bound::Included(&probe))?;
        Some(Entry {
            key: e.key().key.clone(),
            seq: e.key().seq,
            value: e.value().clone(),
        })
    }
}

/// A streaming cursor over a memtable; re-seeks each step so it holds no borrow.
pub(crate) struct MemtableIter {
    mem: std::sync::Arc<Memtable>,
    current: Option<Entry>,
}

impl MemtableIter {
    /// A cursor positioned before the first entry.
    pub fn new(mem: std::sync::Arc<Memtable>) -> Self {
        MemtableIter { mem, current: None }
    }
}

impl Source for MemtableIter {
    fn current(&self) -> Option<&Entry> {
        self.current.as_ref()
    }

    fn seek(&mut self, key: &[u8]) -> super::Result<()> {
        self.current = self.mem.seek(key);
        Ok(())
    }

    fn advance(&mut self) -> super::Result<()> {
        let after = self.current.as_ref().map(|e| MemKey {
            key: e.key.clone(),
            seq: e.seq,
        });
        self.current = match after {
            Some(k) => self.mem.next_after(Some(&k)),
            None => None,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_visible_version_wins() {
        let m = Memtable::new(1);
        let get = |key: &'static [u8], seq| {
            m.get(&MemKey {
                key: Bytes::from_static(key),
                seq,
            })
        };
        let b = |s: &'static [u8]| Bytes::from_static(s);
        m.insert(b(b"k"), 1, Some(b(b"v1")));
        m.insert(b(b"k"), 3, Some(b(b"v3")));
        m.insert(b(b"k"), 5, None);
        assert_eq!(get(b"k", 0), None);
        assert_eq!(get(b"k", 2), Some(Some(Bytes::from_static(b"v1"))));
        assert_eq!(get(b"k", 4), Some(Some(Bytes::from_static(b"v3"))));
        assert_eq!(get(b"k", 9), Some(None));
        assert_eq!(get(b"j", 9), None);
        assert_eq!(get(b"kk", 9), None);
        assert_eq!(m.max_seq(), 5);
        assert_eq!(m.len(), 3);
    }
}
