//! Reading the change feed, and pruning deletions past their retention.
//!
//! Each document has one entry, at the sequence number of its latest change (CouchDB's
//! rule), so a feed read from 0 lists every live document once plus the deletions still
//! kept. A deletion is kept for the retention period; pruning it raises the feed's floor,
//! and a reader resuming from below the floor may have missed a deletion: it is told so
//! ([`StoreError::ChangesGone`]) rather than served an incomplete feed.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::db::Store;
use super::error::{Result, StoreError};
use super::expiry::now_ms;
use super::feed::{
    change_key, decode_feed_key, decode_retention_key, decode_tombstone, decode_u64, encode_u64,
    feed_range, global_key, retention_due_range, tombstone_key, Change, FLOOR_KEY, RETENTION_TAG,
};
use super::key::doc_key;
use super::meta::decode_document;
use super::name::validate_collection;
use crate::engine::WriteBatch;

/// Most entries in one page of the feed.
pub const MAX_CHANGES: usize = 1000;

/// One entry of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeRow {
    /// The sequence number of the document's latest change.
    pub seq: u64,
    /// Its collection.
    pub collection: String,
    /// Its `_id`.
    pub id: String,
    /// True when it was deleted or has expired.
    pub deleted: bool,
    /// The document, when asked for and live.
    pub doc: Option<Bytes>,
}

/// A page of the feed.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ChangesPage {
    /// Entries in sequence order.
    pub results: Vec<ChangeRow>,
    /// Where the next read resumes (`since`).
    pub last_seq: u64,
    /// True when the page stopped at its limit (more may follow at once).
    pub more: bool,
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Prune {
    /// Deletions removed from the feed.
    pub pruned: u64,
    /// True when the pass stopped at its limit with more due.
    pub more: bool,
}

impl Store {
    /// The feed's floor: resuming from below it (but above 0) gets [`StoreError::ChangesGone`].
    pub fn changes_floor(&self) -> Result<u64> {
        match self.engine.get(FLOOR_KEY)? {
            Some(v) => decode_u64(&v),
            None => Ok(0),
        }
    }

    /// The changes after `since` (of `col`, or of every collection), at most `limit`
    /// entries (more when one batch's entries share the last sequence number: a page never
    /// ends inside a batch, so resuming from `last_seq` misses nothing), and at most about
    /// `max_bytes` of documents with `include_docs`.
    pub fn changes(
        &self,
        col: Option<&str>,
        since: u64,
        limit: usize,
        include_docs: bool,
        max_bytes: u64,
    ) -> Result<ChangesPage> {
        if let Some(c) = col {
            validate_collection(c)?;
        }
        let limit = limit.clamp(1, MAX_CHANGES);
        let visible = self.engine.visible_sequence();
        let snap = self.engine.snapshot();
        let floor = match snap.get(FLOOR_KEY)? {
            Some(v) => decode_u64(&v)?,
            None => 0,
        };
        if since > 0 && since < floor {
            return Err(StoreError::ChangesGone { oldest: floor });
        }
        let now = now_ms();
        let (start, end) = feed_range(col, since);
        let mut page = ChangesPage::default();
        let mut bytes = 0u64;
        for item in snap.scan(start..end) {
            let (key, value) = item?;
            let (seq, c, id) = decode_feed_key(&key)?;
            let full = page.results.len() >= limit || bytes >= max_bytes;
            if full && page.results.last().is_some_and(|r| r.seq != seq) {
                page.more = true;
                break;
            }
            let change = Change::decode(&value)?;
            let mut deleted = change.is_gone_at(now);
            let mut doc = None;
            if include_docs && !deleted {
                match snap.get(&doc_key(c, id))? {
                    Some(v) => {
                        let e = decode_document(&v)?;
                        if e.expired_at(now) {
                            deleted = true;
                        } else {
                            bytes += e.json.len() as u64;
                            doc = Some(e.json);
                        }
                    }
                    None => deleted = true,
                }
            }
            page.results.push(ChangeRow {
                seq,
                collection: c.to_owned(),
                id: id.to_owned(),
                deleted,
                doc,
            });
        }
        let last = page.results.last().map_or(0, |r| r.seq);
        page.last_seq = if page.more {
            last
        } else {
            since.max(visible).max(last)
        };
        Ok(page)
    }

    /// Removes from the feed up to `max` deletions made before `before_ms`, raising the
    /// floor to the highest sequence number removed.
    pub fn prune_changes(&self, before_ms: u64, max: usize) -> Result<Prune> {
        // No deletion is old enough: no scan (as for expiry, reset then scan).
        if before_ms <= self.oldest_deletion.load(Ordering::SeqCst) {
            return Ok(Prune::default());
        }
        self.oldest_deletion.store(u64::MAX, Ordering::SeqCst);
        let (start, _) = retention_due_range(before_ms);
        let mut due = Vec::new();
        let mut more = false;
        for item in self.engine.scan(start..vec![RETENTION_TAG + 1]) {
            let (key, _) = item?;
            let (at, seq, col, id) = decode_retention_key(&key)?;
            if at >= before_ms || due.len() == max {
                self.oldest_deletion.fetch_min(at, Ordering::SeqCst);
                more = at < before_ms;
                break;
            }
            due.push((at, seq, col.to_owned(), id.to_owned(), key.to_vec()));
        }
        let mut prune = Prune {
            more,
            ..Prune::default()
        };
        for (_, seq, col, id, rkey) in due {
            let stripe = Self::stripe(&col, &id);
            let _guard = self.stripes[stripe].lock();
            let mut batch = WriteBatch::new();
            batch.delete(&rkey);
            let tomb = tombstone_key(&col, &id);
            // The pointer moves on when the document is written again (and that write
            // removed this deletion's entries already).
            if let Some(v) = self.engine.get(&tomb)? {
                if decode_tombstone(&v)?.0 == seq {
                    batch.delete(&tomb);
                    batch.delete(&change_key(&col, Some(seq), &id).0);
                    batch.delete(&global_key(Some(seq), &col, &id).0);
                }
            }
            let done = self.changes_floor().and_then(|floor| {
                if seq > floor {
                    batch.put(FLOOR_KEY, &encode_u64(seq));
                }
                self.engine.write(batch).map_err(StoreError::from)
            });
            if let Err(e) = done {
                // What this pass did not get to is due still: look again next time.
                self.oldest_deletion.store(0, Ordering::SeqCst);
                return Err(e);
            }
            prune.pruned += 1;
        }
        Ok(prune)
    }
}
