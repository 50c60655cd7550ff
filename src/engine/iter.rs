//! Merging iterators: many sorted sources become one stream of visible user entries.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::error::Result;
use super::version::SuperVersion;

/// One version of a key as stored: `value` `None` is a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: Bytes,
    pub seq: u64,
    pub value: Option<Bytes>,
}

/// Orders entries by user key ascending, then newest (highest seqno) first.
pub(crate) fn entry_order(a: &Entry, b: &Entry) -> Ordering {
    a.key.cmp(&b.key).then_with(|| b.seq.cmp(&a.seq))
}

/// A sorted stream of entries (memtable, table, level).
pub(crate) trait Source: Send {
    /// The entry under the cursor, `None` at the end.
    fn current(&self) -> Option<&Entry>;
    /// Positions at the first entry whose user key is at or after `key`.
    fn seek(&mut self, key: &[u8]) -> Result<()>;
    /// Moves to the next entry.
    fn advance(&mut self) -> Result<()>;
}

/// Merges sources into one sorted stream of every version.
pub(crate) struct MergeIter {
    sources: Vec<Box<dyn Source>>,
    current: Option<usize>,
}

impl MergeIter {
    /// Merges `sources`; call `seek` before reading.
    pub fn new(sources: Vec<Box<dyn Source>>) -> Self {
        MergeIter {
            sources,
            current: None,
        }
    }

    // A linear pick is cheaper than a heap for the handful of sources an LSM tree has.
    fn pick(&mut self) {
        let mut best: Option<(usize, &Entry)> = None;
        for (i, s) in self.sources.iter().enumerate() {
            if let Some(e) = s.current() {
                if best.is_none_or(|(_, b)| entry_order(e, b) == Ordering::Less) {
                    best = Some((i, e));
                }
            }
        }
        self.current = best.map(|(i, _)| i);
    }

    /// Positions every source at `key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<()> {
        for s in &mut self.sources {
            s.seek(key)?;
        }
        self.pick();
        Ok(())
    }

    /// The smallest entry across sources.
    pub fn current(&self) -> Option<&Entry> {
        self.sources.get(self.current?)?.current()
    }

    /// Moves past the current entry.
    pub fn advance(&mut self) -> Result<()> {
        if let Some(i) = self.current {
            self.sources[i].advance()?;
            self.pick();
        }
        Ok(())
    }
}

/// A streaming scan over one snapshot; yields live `(key, value)` pairs in key order.
///
/// It pins the memtables and tables of its snapshot, never holds a lock, and keeps at
/// most one block per table in memory.
pub struct Scan {
    merge: MergeIter,
    snapshot: u64,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    started: bool,
    done: bool,
    _pin: Arc<SuperVersion>,
}

impl Scan {
    pub(crate) fn new(
        merge: MergeIter,
        snapshot: u64,
        start: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
        pin: Arc<SuperVersion>,
    ) -> Self {
        Scan {
            merge,
            snapshot,
            start,
            end,
            started: false,
            done: false,
            _pin: pin,
        }
    }

    fn past_end(&self, key: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => key > e.as_slice(),
            Bound::Excluded(e) => key >= e.as_slice(),
            Bound::Unbounded => false,
        }
    }

    fn step(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        if !self.started {
            self.started = true;
            match &self.start {
                Bound::Included(k) | Bound::Excluded(k) => {
                    let k = k.clone();
                    self.merge.seek(&k)?;
                }
                Bound::Unbounded => self.merge.seek(&[])?,
            }
        }
        loop {
            let Some(e) = self.merge.current() else {
                return Ok(None);
            };
            if self.past_end(&e.key) {
                return Ok(None);
            }
            if let Bound::Excluded(s) = &self.start {
                if e.key.as_ref() == s.as_slice() {
                    self.merge.advance()?;
                    continue;
                }
            }
            if e.seq > self.snapshot {
                self.merge.advance()?;
                continue;
            }
            let key = e.key.clone();
            let value = e.value.clone();
            // Older versions of the same key are shadowed.
            self.merge.advance()?;
            while self.merge.current().is_some_and(|n| n.key == key) {
                self.merge.advance()?;
            }
            if let Some(v) = value {
                return Ok(Some((key, v)));
            }
        }
    }
}

impl Iterator for Scan {
    type Item = Result<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
