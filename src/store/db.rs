//! [`Store`]: documents in collections over an [`Engine`].
//!
//! Every write of a document holds the lock stripe of `(collection, _id)` from the read of
//! the old value to the engine write, so read-modify-write operations (patch, conditional
//! writes) never lose each other's changes; the collection statistics shard of the same
//! stripe is updated in the same atomic write batch, so counts stay exact.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};
use serde::Serialize;
use serde_json::Value;

use super::document::{id_of, prepare_insert, prepare_put};
use super::error::{Result, StoreError};
use super::filter::Filter;
use super::jsonl::parse_line;
use super::key::{collection_range, decode_doc_key, doc_key, resume_key, DOC_TAG};
use super::meta::{
    decode_envelope, decode_stats, decode_stats_key, encode_envelope, encode_stats, stats_key,
    stats_prefix, SHARDS,
};
use super::name::{validate_collection, validate_id};
use super::update::Update;
use crate::engine::{Engine, Scan, Snapshot, WriteBatch};

/// Most documents in one `insert_many` batch.
pub const MAX_BATCH_DOCS: usize = 1000;
/// Documents per write batch during a restore.
const RESTORE_CHUNK: usize = 1000;

/// A stored document: its version (for ETags) and its JSON bytes (with `_id`).
#[derive(Debug, Clone)]
pub struct StoredDoc {
    /// Grows on every write of the document.
    pub version: u64,
    /// The document as compact JSON.
    pub json: Bytes,
}

/// One entry of [`Store::collections`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CollectionInfo {
    /// Collection name.
    pub name: String,
    /// Exact number of documents.
    #[serde(rename = "docCount")]
    pub doc_count: u64,
    /// Total size of the documents' JSON, in bytes.
    #[serde(rename = "byteSize")]
    pub byte_size: u64,
}

/// One page of [`Store::search`].
#[derive(Debug, Default)]
pub struct SearchPage {
    /// Matching documents in `_id` order, as JSON.
    pub docs: Vec<Bytes>,
    /// Where the next page starts (an `_id` to pass back as `after`), if there may be more.
    pub next_after: Option<String>,
}

/// One step of a [`SearchCursor`].
#[derive(Debug)]
pub enum Hit {
    /// The next matching document.
    Doc {
        /// Its `_id`.
        id: String,
        /// Its JSON.
        json: Bytes,
    },
    /// The scan budget is spent: resume after `last_examined` (paging still sees every
    /// document exactly once).
    BudgetSpent {
        /// The last `_id` examined.
        last_examined: String,
    },
    /// No more documents.
    End,
}

/// A search in progress: matching documents of one collection in `_id` order, from one
/// snapshot, one at a time (it holds the current document only). Owns everything it
/// reads, so it can move between threads; every step may block on disk I/O.
pub struct SearchCursor {
    scan: Scan,
    filter: Arc<Filter>,
    misses: usize,
    scan_budget: Option<usize>,
}

impl SearchCursor {
    fn new(
        snap: &Snapshot,
        col: &str,
        filter: Arc<Filter>,
        after: Option<&str>,
        scan_budget: Option<usize>,
    ) -> Result<Self> {
        validate_collection(col)?;
        let (start, end) = collection_range(col);
        let start = match after {
            Some(id) => resume_key(col, id),
            None => start,
        };
        Ok(SearchCursor {
            scan: snap.scan(start..end),
            filter,
            misses: 0,
            scan_budget,
        })
    }

    /// The next matching document, or why there is none.
    pub fn next_hit(&mut self) -> Result<Hit> {
        for item in self.scan.by_ref() {
            let (key, value) = item?;
            let (_, id) = decode_doc_key(&key)?;
            let (_, json) = decode_envelope(&value)?;
            if self.filter.is_all() || self.filter.matches(&parse_stored(&json)?) {
                return Ok(Hit::Doc {
                    id: id.to_owned(),
                    json,
                });
            }
            self.misses += 1;
            if self.scan_budget.is_some_and(|b| self.misses > b) {
                return Ok(Hit::BudgetSpent {
                    last_examined: id.to_owned(),
                });
            }
        }
        Ok(Hit::End)
    }
}

/// What a conditional single-document write requires of the current version.
pub type IfMatch = Option<u64>;

/// Documents over the engine. Cheap to share through `Arc`; all methods block (disk I/O):
/// call them from `spawn_blocking` in async code.
pub struct Store {
    engine: Arc<Engine>,
    stripes: Box<[Mutex<()>]>,
    clock: AtomicU64,
}

/// What a single-document write decides to do with the old value.
enum Action {
    Put(Vec<u8>),
    Delete,
}

impl Store {
    /// A store over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        Store {
            engine,
            stripes: (0..SHARDS).map(|_| Mutex::new(())).collect(),
            clock: AtomicU64::new(now),
        }
    }

    /// The engine under the store.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn stripe(col: &str, id: &str) -> usize {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(col.as_bytes());
        h.update(&[0]);
        h.update(id.as_bytes());
        (h.digest() % SHARDS as u64) as usize
    }

    fn next_version(&self, old: u64) -> u64 {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        tick.max(old + 1)
    }

    fn read_doc(&self, key: &[u8]) -> Result<Option<StoredDoc>> {
        match self.engine.get(key)? {
            None => Ok(None),
            Some(v) => {
                let (version, json) = decode_envelope(&v)?;
                Ok(Some(StoredDoc { version, json }))
            }
        }
    }

    /// Adds `(docs, bytes)` deltas to the statistics shards (locks held by the caller).
    fn add_stats(
        &self,
        batch: &mut WriteBatch,
        deltas: &HashMap<(String, usize), (i64, i64)>,
    ) -> Result<()> {
        for ((col, shard), (dd, db)) in deltas {
            if *dd == 0 && *db == 0 {
                continue;
            }
            let key = stats_key(col, *shard);
            let (docs, bytes) = match self.engine.get(&key)? {
                Some(v) => decode_stats(&v)?,
                None => (0, 0),
            };
            let docs = docs.saturating_add_signed(*dd);
            let bytes = bytes.saturating_add_signed(*db);
            if docs == 0 {
                batch.delete(&key);
            } else {
                batch.put(&key, &encode_stats(docs, bytes));
            }
        }
        Ok(())
    }

    /// Runs one read-modify-write of a document under its stripe lock.
    fn write_one<F>(&self, col: &str, id: &str, decide: F) -> Result<Option<u64>>
    where
        F: FnOnce(Option<&StoredDoc>) -> Result<Action>,
    {
        validate_collection(col)?;
        validate_id(id)?;
        let stripe = Self::stripe(col, id);
        let _guard = self.stripes[stripe].lock();
        let key = doc_key(col, id);
        let old = self.read_doc(&key)?;
        let action = decide(old.as_ref())?;
        let old_len = old.as_ref().map_or(0, |d| d.json.len() as i64);
        let old_n = i64::from(old.is_some());
        let mut batch = WriteBatch::new();
        let (version, delta) = match action {
            Action::Put(json) => {
                let version = self.next_version(old.as_ref().map_or(0, |d| d.version));
                batch.put(&key, &encode_envelope(version, &json));
                (Some(version), (1 - old_n, json.len() as i64 - old_len))
            }
            Action::Delete => (None, (-old_n, -old_len)),
        };
        let mut deltas = HashMap::new();
        deltas.insert((col.to_owned(), stripe), delta);
        if version.is_none() {
            batch.delete(&key);
        }
        self.add_stats(&mut batch, &deltas)?;
        self.engine.write(batch)?;
        Ok(version)
    }

    /// Inserts a new document (needs a string `_id`); `Conflict` if it exists. Returns its version.
    #[tracing::instrument(name = "store.insert", skip_all, fields(collection = %col))]
    pub fn insert(&self, col: &str, doc: &Value) -> Result<u64> {
        validate_collection(col)?;
        let id = prepare_insert(doc)?.to_owned();
        let json = to_json(doc)?;
        let version = self.write_one(col, &id, |old| match old {
            Some(_) => Err(StoreError::Conflict {
                collection: col.to_owned(),
                id: id.clone(),
            }),
            None => Ok(Action::Put(json)),
        })?;
        version.ok_or_else(|| StoreError::CorruptValue("insert wrote nothing".into()))
    }

    /// Creates or replaces document `id`; returns `(version, created)`.
    #[tracing::instrument(name = "store.put", skip_all, fields(collection = %col))]
    pub fn put(
        &self,
        col: &str,
        id: &str,
        mut doc: Value,
        if_match: IfMatch,
    ) -> Result<(u64, bool)> {
        validate_collection(col)?;
        prepare_put(&mut doc, id)?;
        let json = to_json(&doc)?;
        let mut created = false;
        let version = self.write_one(col, id, |old| {
            check_if_match(old, if_match)?;
            created = old.is_none();
            Ok(Action::Put(json))
        })?;
        let version =
            version.ok_or_else(|| StoreError::CorruptValue("put wrote nothing".into()))?;
        Ok((version, created))
    }

    /// Reads document `id`.
    #[tracing::instrument(name = "store.get", skip_all, fields(collection = %col))]
    pub fn get(&self, col: &str, id: &str) -> Result<StoredDoc> {
        validate_collection(col)?;
        validate_id(id)?;
        self.read_doc(&doc_key(col, id))?
            .ok_or_else(|| not_found(col, id))
    }

    /// Applies `update` to document `id` atomically; returns the new document.
    #[tracing::instrument(name = "store.patch", skip_all, fields(collection = %col))]
    pub fn patch(
        &self,
        col: &str,
        id: &str,
        update: &Update,
        if_match: IfMatch,
    ) -> Result<StoredDoc> {
        let mut new_json = Vec::new();
        let version = self.write_one(col, id, |old| {
            let old = old.ok_or_else(|| not_found(col, id))?;
            check_if_match(Some(old), if_match)?;
            let mut doc: Value = serde_json::from_slice(&old.json)
                .map_err(|e| StoreError::CorruptValue(format!("stored document: {e}")))?;
            update.apply(&mut doc)?;
            new_json = to_json(&doc)?;
            Ok(Action::Put(new_json.clone()))
        })?;
        let version =
            version.ok_or_else(|| StoreError::CorruptValue("patch wrote nothing".into()))?;
        Ok(StoredDoc {
            version,
            json: Bytes::from(new_json),
        })
    }

    /// Deletes document `id`; `NotFound` if it does not exist.
    #[tracing::instrument(name = "store.delete", skip_all, fields(collection = %col))]
    pub fn delete(&self, col: &str, id: &str, if_match: IfMatch) -> Result<()> {
        self.write_one(col, id, |old| {
            if old.is_none() {
                return Err(not_found(col, id));
            }
            check_if_match(old, if_match)?;
            Ok(Action::Delete)
        })?;
        Ok(())
    }

    /// Inserts up to [`MAX_BATCH_DOCS`] new documents atomically: all or none.
    #[tracing::instrument(name = "store.insert_many", skip_all, fields(collection = %col))]
    pub fn insert_many(&self, col: &str, docs: &[Value]) -> Result<usize> {
        validate_collection(col)?;
        if docs.len() > MAX_BATCH_DOCS {
            return Err(StoreError::TooMany {
                got: docs.len(),
                max: MAX_BATCH_DOCS,
            });
        }
        let mut items = Vec::with_capacity(docs.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(docs.len());
        for (index, doc) in docs.iter().enumerate() {
            let at = |e: StoreError| StoreError::AtIndex {
                index,
                source: Box::new(e),
            };
            let id = prepare_insert(doc).map_err(at)?;
            if let Some(first) = seen.insert(id, index) {
                return Err(at(StoreError::InvalidDocument(format!(
                    "duplicate _id {id:?}, also at index {first}"
                ))));
            }
            items.push((col, id, to_json(doc).map_err(at)?));
        }
        self.write_many(&items, true)?;
        Ok(items.len())
    }

    /// Upserts `(collection, id, json)` items in one atomic batch, keeping the counts
    /// exact. The caller has validated names and documents and gives each key once.
    pub(crate) fn upsert_batch(&self, items: &[(&str, &str, Vec<u8>)]) -> Result<()> {
        self.write_many(items, false)
    }

    /// Writes `(collection, id, json)` items in one batch under all their stripe locks.
    /// With `insert_only`, an existing document fails the whole batch naming its index.
    fn write_many(&self, items: &[(&str, &str, Vec<u8>)], insert_only: bool) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut stripes: Vec<usize> = items.iter().map(|(c, i, _)| Self::stripe(c, i)).collect();
        let item_stripes = stripes.clone();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<MutexGuard<'_, ()>> =
            stripes.iter().map(|&s| self.stripes[s].lock()).collect();
        let mut batch = WriteBatch::new();
        let mut deltas: HashMap<(String, usize), (i64, i64)> = HashMap::new();
        for (index, ((col, id, json), stripe)) in items.iter().zip(item_stripes).enumerate() {
            let key = doc_key(col, id);
            let old = self.read_doc(&key)?;
            if insert_only && old.is_some() {
                return Err(StoreError::AtIndex {
                    index,
                    source: Box::new(StoreError::Conflict {
                        collection: (*col).to_owned(),
                        id: (*id).to_owned(),
                    }),
                });
            }
            let version = self.next_version(old.as_ref().map_or(0, |d| d.version));
            batch.put(&key, &encode_envelope(version, json));
            let d = deltas.entry(((*col).to_owned(), stripe)).or_default();
            d.0 += i64::from(old.is_none());
            d.1 += json.len() as i64 - old.as_ref().map_or(0, |o| o.json.len() as i64);
        }
        self.add_stats(&mut batch, &deltas)?;
        self.engine.write(batch)?;
        Ok(())
    }

    /// Finds documents of `col` matching `filter` in `_id` order, starting after `after`.
    ///
    /// Stops at `limit` documents, or after examining `scan_budget` non-matching documents
    /// (then `next_after` is the last examined `_id`, so paging still sees every document
    /// exactly once). Memory is bounded by `limit`; [`Store::search_cursor`] streams instead.
    #[tracing::instrument(name = "store.search", skip_all, fields(collection = %col))]
    pub fn search(
        &self,
        col: &str,
        filter: &Filter,
        after: Option<&str>,
        limit: usize,
        scan_budget: Option<usize>,
    ) -> Result<SearchPage> {
        let snap = self.engine.snapshot();
        let mut cursor =
            SearchCursor::new(&snap, col, Arc::new(filter.clone()), after, scan_budget)?;
        let mut page = SearchPage::default();
        let mut last_id: Option<String> = None;
        loop {
            match cursor.next_hit()? {
                Hit::Doc { id, json } => {
                    if page.docs.len() == limit {
                        // One more match exists: the page is full and there is a next one.
                        page.next_after = last_id;
                        return Ok(page);
                    }
                    page.docs.push(json);
                    last_id = Some(id);
                }
                Hit::BudgetSpent { last_examined } => {
                    page.next_after = Some(last_examined);
                    return Ok(page);
                }
                Hit::End => return Ok(page),
            }
        }
    }

    /// A streaming search of `col` over `snap` (see [`SearchCursor`]); `after` and
    /// `scan_budget` as in [`Store::search`].
    pub fn search_cursor(
        &self,
        snap: &Snapshot,
        col: &str,
        filter: Arc<Filter>,
        after: Option<&str>,
        scan_budget: Option<usize>,
    ) -> Result<SearchCursor> {
        SearchCursor::new(snap, col, filter, after, scan_budget)
    }

    /// A consistent view for several reads (a search read twice, ...).
    pub fn snapshot(&self) -> Snapshot {
        self.engine.snapshot()
    }

    /// Counts documents of `col`: exact stored counters without a filter, a scan with one.
    #[tracing::instrument(name = "store.count", skip_all, fields(collection = %col))]
    pub fn count(&self, col: &str, filter: &Filter) -> Result<u64> {
        validate_collection(col)?;
        if filter.is_all() {
            let snap = self.engine.snapshot();
            return Ok(sum_stats(&snap, col)?.0);
        }
        let (start, end) = collection_range(col);
        let mut n = 0;
        for item in self.engine.scan(start..end) {
            let (_, value) = item?;
            let (_, json) = decode_envelope(&value)?;
            if filter.matches(&parse_stored(&json)?) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every non-empty collection with its exact document count and byte size, by name.
    /// Reads only the statistics keys, never the documents.
    #[tracing::instrument(name = "store.collections", skip_all)]
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        let mut out: BTreeMap<String, CollectionInfo> = BTreeMap::new();
        for item in self.engine.scan_prefix(super::key::COUNT_PREFIX) {
            let (key, value) = item?;
            let Ok((col, _)) = decode_stats_key(&key) else {
                continue; // a legacy or foreign metadata key
            };
            let (docs, bytes) = decode_stats(&value)?;
            let e = out.entry(col.to_owned()).or_insert_with(|| CollectionInfo {
                name: col.to_owned(),
                doc_count: 0,
                byte_size: 0,
            });
            e.doc_count += docs;
            e.byte_size += bytes;
        }
        Ok(out.into_values().filter(|c| c.doc_count > 0).collect())
    }

    /// Streams every document as JSON Lines to `out` from one snapshot; returns the count.
    /// `progress` is called with the running count every 1,000 documents.
    pub fn dump<W: Write>(&self, out: &mut W, mut progress: impl FnMut(u64)) -> Result<u64> {
        let io = |e| StoreError::Io {
            context: "write dump".into(),
            source: e,
        };
        let mut n = 0u64;
        let snap = self.engine.snapshot();
        for item in snap.scan(vec![DOC_TAG]..vec![DOC_TAG + 1]) {
            let (key, value) = item?;
            let (col, _) = decode_doc_key(&key)?;
            let (_, json) = decode_envelope(&value)?;
            let col =
                serde_json::to_string(col).map_err(|e| StoreError::CorruptValue(e.to_string()))?;
            out.write_all(b"{\"collection\":").map_err(io)?;
            out.write_all(col.as_bytes()).map_err(io)?;
            out.write_all(b",\"doc\":").map_err(io)?;
            out.write_all(&json).map_err(io)?;
            out.write_all(b"}\n").map_err(io)?;
            n += 1;
            if n.is_multiple_of(1000) {
                progress(n);
            }
        }
        out.flush().map_err(io)?;
        progress(n);
        Ok(n)
    }

    /// Checks every line of a dump without writing; returns the number of records.
    pub fn validate_dump<R: BufRead>(input: R) -> Result<u64> {
        let mut n = 0;
        for_each_record(input, |_, _| {
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Upserts every record of a dump, in atomic chunks; returns the number of records.
    /// A bad line stops the restore with its line number (earlier chunks stay written:
    /// run [`Store::validate_dump`] first for all-or-nothing).
    pub fn restore<R: BufRead>(&self, input: R, mut progress: impl FnMut(u64)) -> Result<u64> {
        let mut chunk: Vec<(String, String, Vec<u8>)> = Vec::with_capacity(RESTORE_CHUNK);
        let mut keys: std::collections::HashSet<(String, String)> = Default::default();
        let mut n = 0u64;
        for_each_record(input, |col, doc| {
            let id = id_of(&doc)?.to_owned();
            let k = (col.clone(), id.clone());
            if keys.contains(&k) || chunk.len() >= RESTORE_CHUNK {
                self.commit_chunk(&mut chunk)?;
                keys.clear();
            }
            keys.insert(k);
            chunk.push((col, id, to_json(&doc)?));
            n += 1;
            if n.is_multiple_of(1000) {
                progress(n);
            }
            Ok(())
        })?;
        self.commit_chunk(&mut chunk)?;
        progress(n);
        Ok(n)
    }

    fn commit_chunk(&self, chunk: &mut Vec<(String, String, Vec<u8>)>) -> Result<()> {
        let items: Vec<(&str, &str, Vec<u8>)> = chunk
            .iter_mut()
            .map(|(c, i, j)| (c.as_str(), i.as_str(), std::mem::take(j)))
            .collect();
        self.write_many(&items, false)?;
        chunk.clear();
        Ok(())
    }
}

/// Calls `f(collection, doc)` for every line of a dump, validating each (1-based line numbers;
/// blank lines are skipped).
fn for_each_record<R: BufRead>(
    input: R,
    mut f: impl FnMut(String, Value) -> Result<()>,
) -> Result<()> {
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| StoreError::InvalidDumpLine {
            line: line_no,
            reason: format!("unreadable: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec = parse_line(line_no, &line)?;
        f(rec.collection, rec.doc).map_err(|e| match e {
            e @ (StoreError::Engine(_) | StoreError::Io { .. }) => e,
            other => StoreError::InvalidDumpLine {
                line: line_no,
                reason: other.to_string(),
            },
        })?;
    }
    Ok(())
}

/// Sums the statistics shards of `col` in `snap`: `(documents, bytes)`.
fn sum_stats(snap: &Snapshot, col: &str) -> Result<(u64, u64)> {
    let mut total = (0u64, 0u64);
    for item in snap.scan_prefix(&stats_prefix(col)) {
        let (_, value) = item?;
        let (d, b) = decode_stats(&value)?;
        total.0 += d;
        total.1 += b;
    }
    Ok(total)
}

fn to_json(doc: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(doc).map_err(|e| StoreError::InvalidDocument(e.to_string()))
}

fn parse_stored(json: &[u8]) -> Result<Value> {
    serde_json::from_slice(json)
        .map_err(|e| StoreError::CorruptValue(format!("stored document: {e}")))
}

fn not_found(col: &str, id: &str) -> StoreError {
    StoreError::NotFound {
        collection: col.to_owned(),
        id: id.to_owned(),
    }
}

fn check_if_match(current: Option<&StoredDoc>, if_match: IfMatch) -> Result<()> {
    match (if_match, current) {
        (None, _) => Ok(()),
        (Some(want), Some(doc)) if doc.version == want => Ok(()),
        (Some(want), Some(doc)) => Err(StoreError::PreconditionFailed(format!(
            "If-Match version {want} does not match the current version {}",
            doc.version
        ))),
        (Some(want), None) => Err(StoreError::PreconditionFailed(format!(
            "If-Match version {want} given, but the document does not exist"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Options;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let engine = Engine::open(dir.path(), Options::default()).unwrap_or_else(|e| panic!("{e}"));
        (dir, Store::new(Arc::new(engine)))
    }

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn counts_and_sizes_follow_every_write() {
        let (_d, s) = store();
        ok(s.insert("a", &json!({"_id": "1", "v": 1})));
        ok(s.put("a", "2", json!({"v": 22}), None));
        ok(s.put("a", "2", json!({"v": 2}), None));
        ok(s.insert_many("b", &[json!({"_id": "x"}), json!({"_id": "y"})]));
        ok(s.delete("b", "x", None));
        let update = ok(Update::parse(&json!({"$set": {"w": "long string"}})));
        ok(s.patch("a", "1", &update, None));
        let cols = ok(s.collections());
        let size = |c: &str, id: &str| ok(s.get(c, id)).json.len() as u64;
        assert_eq!(
            cols,
            vec![
                CollectionInfo {
                    name: "a".into(),
                    doc_count: 2,
                    byte_size: size("a", "1") + size("a", "2"),
                },
                CollectionInfo {
                    name: "b".into(),
                    doc_count: 1,
                    byte_size: size("b", "y"),
                },
            ]
        );
        assert_eq!(ok(s.count("a", &Filter::all())), 2);
        ok(s.delete("b", "y", None));
        assert_eq!(ok(s.collections()).len(), 1);
    }

    #[test]
    fn versions_grow_and_guard_writes() {
        let (_d, s) = store();
        let v1 = ok(s.insert("c", &json!({"_id": "k"})));
        let (v2, created) = ok(s.put("c", "k", json!({"n": 1}), Some(v1)));
        assert!(v2 > v1 && !created);
        assert!(matches!(
            s.put("c", "k", json!({}), Some(v1)),
            Err(StoreError::PreconditionFailed(_))
        ));
        assert!(matches!(
            s.delete("c", "k", Some(v1)),
            Err(StoreError::PreconditionFailed(_))
        ));
        ok(s.delete("c", "k", Some(v2)));
        assert!(matches!(s.get("c", "k"), Err(StoreError::NotFound { .. })));
    }

    #[test]
    fn concurrent_increments_are_not_lost() {
        let (_d, s) = store();
        let s = Arc::new(s);
        ok(s.insert("n", &json!({"_id": "c", "v": 0})));
        let inc = Arc::new(ok(Update::parse(&json!({"$inc": {"v": 1}}))));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, inc) = (s.clone(), inc.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        ok(s.patch("n", "c", &inc, None));
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let doc: Value = ok(parse_stored(&ok(s.get("n", "c")).json));
        assert_eq!(doc["v"], 200);
    }

    #[test]
    fn dump_restore_roundtrip_and_bad_lines() {
        let (_d, s) = store();
        for i in 0..2500 {
            ok(s.insert(
                if i % 2 == 0 { "even" } else { "odd" },
                &json!({"_id": format!("{i:05}"), "i": i}),
            ));
        }
        let mut out = Vec::new();
        assert_eq!(ok(s.dump(&mut out, |_| {})), 2500);
        assert_eq!(ok(Store::validate_dump(&out[..])), 2500);
        let (_d2, s2) = store();
        assert_eq!(ok(s2.restore(&out[..], |_| {})), 2500);
        let mut out2 = Vec::new();
        ok(s2.dump(&mut out2, |_| {}));
        assert_eq!(out, out2);
        assert_eq!(ok(s2.collections()), ok(s.collections()));
        let bad = b"{\"collection\":\"a\",\"doc\":{\"_id\":\"1\"}}\n\nnot json\n";
        assert!(matches!(
            Store::validate_dump(&bad[..]),
            Err(StoreError::InvalidDumpLine { line: 3, .. })
        ));
    }
}
