//! The set of live tables per level, and the super-version readers pin.

use std::sync::Arc;

use super::error::Result;
use super::iter::{Entry, Source};
use super::memtable::{Memtable, MemtableIter};
use super::sstable::{Table, TableIter};

/// Number of levels (L0..L6).
pub(crate) const NUM_LEVELS: usize = 7;

/// Live tables: level 0 newest first (ranges overlap); deeper levels sorted by key, disjoint.
#[derive(Clone, Default)]
pub(crate) struct Version {
    pub levels: Vec<Vec<Arc<Table>>>,
}

impl Version {
    /// An empty version with every level present.
    pub fn empty() -> Self {
        Version {
            levels: vec![Vec::new(); NUM_LEVELS],
        }
    }

    /// Total bytes on `level`.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|t| t.size()).sum()
    }

    /// Restores the level invariants after an edit.
    pub fn sort(&mut self) {
        self.levels[0].sort_by(|a, b| b.max_seq().cmp(&a.max_seq()).then(b.id().cmp(&a.id())));
        for level in self.levels.iter_mut().skip(1) {
            level.sort_by(|a, b| a.smallest().cmp(b.smallest()));
        }
    }

    /// Sources that together cover every table, for a merging iterator.
    pub fn sources(&self, fill_cache: bool) -> Vec<Box<dyn Source>> {
        let mut out: Vec<Box<dyn Source>> = Vec::new();
        for t in &self.levels[0] {
            out.push(Box::new(TableIter::new(t.clone(), fill_cache)));
        }
        for level in self.levels.iter().skip(1) {
            if !level.is_empty() {
                out.push(Box::new(LevelIter::new(level.clone(), fill_cache)));
            }
        }
        out
    }
}

/// What a reader pins: the memtables and the table set at one moment.
pub(crate) struct SuperVersion {
    pub mem: Arc<Memtable>,
    /// Frozen memtables, newest first.
    pub imms: Vec<Arc<Memtable>>,
    pub version: Arc<Version>,
}

impl SuperVersion {
    /// Sources over everything, newest layers first.
    pub fn sources(&self) -> Vec<Box<dyn Source>> {
        let mut out: Vec<Box<dyn Source>> = Vec::new();
        out.push(Box::new(MemtableIter::new(self.mem.clone())));
        for m in &self.imms {
            out.push(Box::new(MemtableIter::new(m.clone())));
        }
        out.extend(self.version.sources(true));
        out
    }
}

/// Concatenates the disjoint, sorted tables of one level, opening one at a time.
pub(crate) struct LevelIter {
    tables: Vec<Arc<Table>>,
    fill_cache: bool,
    idx: usize,
    iter: Option<TableIter>,
}

impl LevelIter {
    /// A cursor over `tables` (sorted, disjoint).
    pub fn new(tables: Vec<Arc<Table>>, fill_cache: bool) -> Self {
        LevelIter {
            tables,
            fill_cache,
            idx: 0,
            iter: None,
        }
    }

    fn skip_exhausted(&mut self) -> Result<()> {
        while self.iter.as_ref().is_some_and(|i| i.current().is_none()) {
            self.idx += 1;
            match self.tables.get(self.idx) {
                Some(t) => {
                    let mut it = TableIter::new(t.clone(), self.fill_cache);
                    it.seek(&[])?;
                    self.iter = Some(it);
                }
                None => self.iter = None,
            }
        }
        Ok(())
    }
}

impl Source for LevelIter {
    fn current(&self) -> Option<&Entry> {
        self.iter.as_ref()?.current()
    }

    fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.idx = self.tables.partition_point(|t| t.largest() < key);
        self.iter = match self.tables.get(self.idx) {
            Some(t) => {
                let mut it = TableIter::new(t.clone(), self.fill_cache);
                it.seek(key)?;
                Some(it)
            }
            None => None,
        };
        self.skip_exhausted()
    }

    fn advance(&mut self) -> Result<()> {
        if let Some(it) = &mut self.iter {
            it.advance()?;
        }
        self.skip_exhausted()
    }
}
