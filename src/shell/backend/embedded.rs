//! The shell on a data directory: the store opened in this process, as the offline
//! commands open it. The engine's lock keeps a running server (or another shell) out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{Backend, Change, Changes, Compaction, Page};
use crate::engine::{self, Engine};
use crate::shell::cancel::Cancel;
use crate::shell::command::{Query, UpdateArg};
use crate::shell::error::{Result, ShellError};
use crate::store::import::{self, Summary};
use crate::store::{CollectionInfo, Store, StoreError};

/// Documents without a match examined per `search` call, so that Ctrl-C is seen between
/// calls even when a filter matches nothing in a large collection.
const SCAN_BUDGET: usize = 20_000;
/// How long a write is retried while the engine answers `Busy` (flushes catching up).
const BUSY_GIVE_UP: Duration = Duration::from_secs(60);
/// Bytes of a feed page (no documents are read: ids only), as the server's.
const CHANGES_PAGE_BYTES: u64 = 256 << 10;

pub(crate) struct Embedded {
    store: Option<Store>,
    dir: PathBuf,
    cancel: Cancel,
}

impl Embedded {
    /// Opens `dir`; a directory a server holds is refused with [`ShellError::Locked`].
    pub(crate) fn open(dir: &Path, options: engine::Options, cancel: Cancel) -> Result<Self> {
        match Engine::open(dir, options) {
            Ok(engine) => Ok(Embedded {
                store: Some(Store::new(Arc::new(engine))),
                dir: dir.to_path_buf(),
                cancel,
            }),
            Err(engine::Error::Locked { dir }) => Err(ShellError::Locked { dir }),
            Err(source) => Err(ShellError::Open {
                dir: dir.to_path_buf(),
                source,
            }),
        }
    }

    fn store(&self) -> Result<&Store> {
        self.store.as_ref().ok_or_else(|| {
            ShellError::Usage(format!(
                "the data directory {} is closed",
                self.dir.display()
            ))
        })
    }

    /// Runs a write, retrying while the engine is busy (backpressure, not failure).
    fn write<T>(&self, mut f: impl FnMut(&Store) -> crate::store::Result<T>) -> Result<T> {
        let store = self.store()?;
        let started = Instant::now();
        loop {
            match f(store) {
                Err(StoreError::Engine(engine::Error::Busy { retry_after, .. }))
                    if started.elapsed() < BUSY_GIVE_UP =>
                {
                    self.cancel.check()?;
                    std::thread::sleep(
                        retry_after.clamp(Duration::from_millis(1), Duration::from_secs(1)),
                    );
                }
                other => return Ok(other?),
            }
        }
    }

    /// The current document and version, if it exists and matches `query`.
    fn matching(&self, col: &str, id: &str, query: &Query) -> Result<Option<u64>> {
        let doc = match self.store()?.get(col, id) {
            Ok(doc) => doc,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let value: Value = serde_json::from_slice(&doc.json).map_err(|e| {
            ShellError::Store(StoreError::CorruptValue(format!("stored document: {e}")))
        })?;
        Ok(query.filter.matches(&value).then_some(doc.version))
    }
}

impl Backend for Embedded {
    fn describe(&self) -> String {
        format!("data directory {}", self.dir.display())
    }

    fn insert_one(&mut self, col: &str, doc: &Value) -> Result<()> {
        self.write(|s| s.insert(col, doc)).map(drop)
    }

    fn insert_many(&mut self, col: &str, docs: &[Value]) -> Result<usize> {
        self.write(|s| s.insert_many(col, docs))
    }

    fn get(&mut self, col: &str, id: &str) -> Result<Option<Bytes>> {
        match self.store()?.get(col, id) {
            Ok(doc) => Ok(Some(doc.json)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn search(
        &mut self,
        col: &str,
        query: &Query,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page> {
        let page = self
            .store()?
            .search(col, &query.filter, after, limit, Some(SCAN_BUDGET))?;
        Ok(Page {
            docs: page.docs,
            next: page.next_after,
        })
    }

    fn update_if_matches(
        &mut self,
        col: &str,
        id: &str,
        query: &Query,
        update: &UpdateArg,
    ) -> Result<Option<Bytes>> {
        let Some(version) = self.matching(col, id, query)? else {
            return Ok(None);
        };
        match self.write(|s| s.patch(col, id, &update.update, Some(version))) {
            Ok(doc) => Ok(Some(doc.json)),
            Err(ShellError::Store(
                StoreError::NotFound { .. } | StoreError::PreconditionFailed(_),
            )) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete_if_matches(&mut self, col: &str, id: &str, query: &Query) -> Result<bool> {
        let Some(version) = self.matching(col, id, query)? else {
            return Ok(false);
        };
        match self.write(|s| s.delete(col, id, Some(version))) {
            Ok(()) => Ok(true),
            Err(ShellError::Store(
                StoreError::NotFound { .. } | StoreError::PreconditionFailed(_),
            )) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn count(&mut self, col: &str, query: &Query) -> Result<u64> {
        Ok(self.store()?.count(col, &query.filter)?)
    }

    fn collections(&mut self) -> Result<Vec<CollectionInfo>> {
        Ok(self.store()?.collections()?)
    }

    fn collection_ttl(&mut self, col: &str) -> Result<Option<u64>> {
        Ok(self.store()?.collection_ttl(col)?)
    }

    fn set_collection_ttl(&mut self, col: &str, secs: Option<u64>) -> Result<Option<u64>> {
        self.write(|s| s.set_collection_ttl(col, secs))?;
        Ok(secs)
    }

    fn changes(&mut self, col: Option<&str>, since: u64, limit: usize) -> Result<Changes> {
        let page = match self
            .store()?
            .changes(col, since, limit, false, CHANGES_PAGE_BYTES)
        {
            Ok(page) => page,
            Err(StoreError::ChangesGone { oldest }) => {
                return Err(ShellError::ChangesGone { since, oldest })
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Changes {
            rows: page
                .results
                .into_iter()
                .map(|r| Change {
                    seq: r.seq,
                    collection: r.collection,
                    id: r.id,
                    deleted: r.deleted,
                })
                .collect(),
            last_seq: page.last_seq,
            more: page.more,
        })
    }

    fn compact(&mut self) -> Result<Compaction> {
        self.store()?
            .engine()
            .compact()
            .map_err(|e| ShellError::Store(e.into()))?;
        Ok(Compaction::Done)
    }

    fn stats(&mut self) -> Result<Value> {
        let named = self.store()?.engine().stats().named();
        let map: Map<String, Value> = named.into_iter().map(|(k, v)| (k, v.into())).collect();
        Ok(Value::Object(map))
    }

    fn restore(&mut self, file: &Path, cancel: &Cancel) -> Result<Summary> {
        let store = self.store()?;
        let summary = import::restore_dump_until(store, file, &mut |_, _| {}, &|| cancel.is_set())?;
        Ok(summary)
    }

    fn close(&mut self) -> Result<()> {
        if let Some(store) = self.store.take() {
            store
                .engine()
                .shutdown()
                .map_err(|e| ShellError::Store(e.into()))?;
        }
        Ok(())
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // A session ended by an error still closes the engine cleanly.
        let _ = self.close();
    }
}
