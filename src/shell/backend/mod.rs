//! Where the shell's commands go: a running server over HTTP ([`http::Http`]) or a data
//! directory opened in this process ([`embedded::Embedded`]). Both give the same results
//! for the same data; `exec` holds everything the two have in common (paging, first
//! match, the dump file), so a backend only says how to reach the documents.

pub(crate) mod embedded;
pub(crate) mod http;

use std::path::Path;

use bytes::Bytes;
use serde_json::Value;

use super::cancel::Cancel;
use super::command::{Query, UpdateArg};
use super::error::Result;
use crate::store::import::Summary;
use crate::store::CollectionInfo;

/// One page of matching documents in `_id` order.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// Compact JSON of each document.
    pub docs: Vec<Bytes>,
    /// Passed back to get the next page; `None` at the end. A page may be empty and still
    /// have a next one (the scan budget of one call ran out before a match).
    pub next: Option<String>,
}

/// One entry of the change feed (the document's latest change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub seq: u64,
    pub collection: String,
    pub id: String,
    /// Deleted or expired.
    pub deleted: bool,
}

/// One page of the change feed.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// In sequence order.
    pub rows: Vec<Change>,
    /// The `since` of the next page.
    pub last_seq: u64,
    /// More entries follow at once (the page stopped at its limit).
    pub more: bool,
}

/// What `compact` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Compaction {
    /// Finished here.
    Done,
    /// Started, or already running, on the server (the server's words).
    Started(String),
}

/// A way to the documents. Methods block; a long one returns
/// [`ShellError::Cancelled`](super::error::ShellError::Cancelled) soon after Ctrl-C.
///
/// A command that needs something new from the database (index commands will) adds a
/// method here, implemented by both backends.
pub(crate) trait Backend {
    /// "http://127.0.0.1:6866" or "data directory ./data", for the banner.
    fn describe(&self) -> String;
    /// Inserts one document (it has a string `_id`; an existing one is refused).
    fn insert_one(&mut self, col: &str, doc: &Value) -> Result<()>;
    /// Inserts up to 1,000 documents atomically; returns how many.
    fn insert_many(&mut self, col: &str, docs: &[Value]) -> Result<usize>;
    /// Document `id`, if it exists.
    fn get(&mut self, col: &str, id: &str) -> Result<Option<Bytes>>;
    /// Up to `limit` matches after the position `after` (a previous page's `next`).
    fn search(
        &mut self,
        col: &str,
        query: &Query,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page>;
    /// Applies `update` to document `id` if it still exists and matches `query`, as one
    /// atomic step against other writers; returns the new document, or `None`.
    fn update_if_matches(
        &mut self,
        col: &str,
        id: &str,
        query: &Query,
        update: &UpdateArg,
    ) -> Result<Option<Bytes>>;
    /// Deletes document `id` if it still exists and matches `query`; whether it did.
    fn delete_if_matches(&mut self, col: &str, id: &str, query: &Query) -> Result<bool>;
    /// Exact count without a filter, a scan with one.
    fn count(&mut self, col: &str, query: &Query) -> Result<u64>;
    /// Every non-empty collection, by name.
    fn collections(&mut self) -> Result<Vec<CollectionInfo>>;
    /// Collection names for tab completion: quick, and allowed to fail quietly.
    fn collection_names(&mut self) -> Result<Vec<String>> {
        Ok(self.collections()?.into_iter().map(|c| c.name).collect())
    }
    /// `col`'s default lifetime in seconds, if it has one.
    fn collection_ttl(&mut self, col: &str) -> Result<Option<u64>>;
    /// Sets (`Some`, 1 to `MAX_TTL_SECS`) or removes (`None`) `col`'s default lifetime;
    /// returns it as it now is.
    fn set_collection_ttl(&mut self, col: &str, secs: Option<u64>) -> Result<Option<u64>>;
    /// Up to `limit` feed entries after `since`, of `col` or of every collection. A `since`
    /// below the feed's floor is [`ShellError::ChangesGone`](super::error::ShellError).
    fn changes(&mut self, col: Option<&str>, since: u64, limit: usize) -> Result<Changes>;
    /// Runs (embedded) or starts (server) a full compaction.
    fn compact(&mut self) -> Result<Compaction>;
    /// The engine's counters, as a JSON object.
    fn stats(&mut self) -> Result<Value>;
    /// Upserts every document of the MiniDBGo dump `file`, checking it whole first.
    fn restore(&mut self, file: &Path, cancel: &Cancel) -> Result<Summary>;
    /// Ends the session (the embedded engine shuts down cleanly).
    fn close(&mut self) -> Result<()>;
}
