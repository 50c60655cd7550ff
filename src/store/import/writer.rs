//! Imported documents into the store, in atomic chunks, and the running summary.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::decode::Outcome;
use super::error::{ImportError, Result};
use super::summary::Summary;
use crate::engine;
use crate::store::{Store, StoreError};

/// Most documents per atomic chunk.
pub const CHUNK_DOCS: usize = 1000;
/// Most JSON bytes per chunk (a bigger document gets a chunk of its own).
pub const CHUNK_BYTES: usize = 4 << 20;
/// How long a chunk is retried while the engine answers `Busy` (flushes catching up).
const BUSY_GIVE_UP: Duration = Duration::from_secs(300);
/// Progress is reported every this many records.
const PROGRESS_EVERY: u64 = 1000;

/// Takes the outcome of every record: skips go to the summary, documents to the store
/// (or only to the counts, without a store: the check pass).
pub(crate) struct Sink<'a> {
    store: Option<&'a Store>,
    chunk: Vec<(String, String, Vec<u8>)>,
    /// The chunk's keys: a key twice in one batch would be counted twice.
    keys: HashSet<(String, String)>,
    bytes: usize,
    committed: u64,
    /// The collection being received and its documents so far (sources give each
    /// collection's documents together, so counting runs counts collections).
    run: Option<(String, u64)>,
    seen: u64,
    progress: &'a mut dyn FnMut(u64),
    pub summary: Summary,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(store: Option<&'a Store>, progress: &'a mut dyn FnMut(u64)) -> Self {
        Sink {
            store,
            chunk: Vec::new(),
            keys: HashSet::new(),
            bytes: 0,
            committed: 0,
            run: None,
            seen: 0,
            progress,
            summary: Summary::default(),
        }
    }

    /// Takes one record's outcome.
    pub(crate) fn accept(&mut self, outcome: Outcome) -> Result<()> {
        self.seen += 1;
        match outcome {
            Outcome::Skip(s) => self.summary.skip(s),
            Outcome::Import {
                collection,
                id,
                json,
            } => {
                self.count_in(&collection);
                if self.store.is_some() {
                    let key = (collection, id);
                    let full = self.chunk.len() >= CHUNK_DOCS
                        || (!self.chunk.is_empty() && self.bytes + json.len() > CHUNK_BYTES);
                    if full || self.keys.contains(&key) {
                        self.commit()?;
                    }
                    self.bytes += json.len();
                    self.keys.insert(key.clone());
                    self.chunk.push((key.0, key.1, json));
                }
                self.summary.documents += 1;
            }
        }
        if self.seen.is_multiple_of(PROGRESS_EVERY) {
            (self.progress)(self.seen);
        }
        Ok(())
    }

    fn count_in(&mut self, collection: &str) {
        match &mut self.run {
            Some((name, n)) if name == collection => *n += 1,
            _ => {
                if let Some((name, n)) = self.run.take() {
                    self.summary.add_collection(&name, n);
                }
                self.run = Some((collection.to_owned(), 1));
            }
        }
    }

    /// Writes the chunk as one batch, retrying while the engine is busy.
    fn commit(&mut self) -> Result<()> {
        let Some(store) = self.store else {
            return Ok(());
        };
        if self.chunk.is_empty() {
            return Ok(());
        }
        let items: Vec<(&str, &str, Vec<u8>)> = self
            .chunk
            .iter_mut()
            .map(|(c, i, j)| (c.as_str(), i.as_str(), std::mem::take(j)))
            .collect();
        let started = Instant::now();
        loop {
            match store.upsert_batch(&items) {
                Ok(()) => break,
                Err(StoreError::Engine(engine::Error::Busy { retry_after, .. }))
                    if started.elapsed() < BUSY_GIVE_UP =>
                {
                    // Backpressure from the flush queue or level 0: wait for it to drain.
                    std::thread::sleep(
                        retry_after.clamp(Duration::from_millis(1), Duration::from_secs(1)),
                    );
                }
                Err(source) => {
                    return Err(ImportError::Store {
                        committed: self.committed,
                        source,
                    })
                }
            }
        }
        self.committed += items.len() as u64;
        drop(items);
        self.chunk.clear();
        self.keys.clear();
        self.bytes = 0;
        Ok(())
    }

    /// Whether this sink writes (the write pass) or only counts (the check pass).
    pub(crate) fn writes(&self) -> bool {
        self.store.is_some()
    }

    /// Documents committed so far.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// Writes what is left and returns the summary.
    pub(crate) fn finish(mut self) -> Result<Summary> {
        self.commit()?;
        if let Some((name, n)) = self.run.take() {
            self.summary.add_collection(&name, n);
        }
        (self.progress)(self.seen);
        self.summary.dry_run = self.store.is_none();
        Ok(self.summary)
    }
}
