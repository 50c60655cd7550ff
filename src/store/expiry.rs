//! Document lifetimes: a collection's default, per-write lifetimes, and the sweeper that
//! deletes expired documents through ordinary write batches.
//!
//! An expired document is gone for every read at once (the read checks its expiry); the
//! sweeper only makes the space and the collection counters follow. It finds due documents
//! through the expiry index (`x` keys, in expiry order), never by scanning documents, and
//! deletes at most a given number per pass, in write batches of up to 64 documents under
//! their stripe locks like any multi-document write.

use std::time::{SystemTime, UNIX_EPOCH};

use std::sync::atomic::Ordering;

use super::db::{Hints, Next, Store};
use super::error::{Result, StoreError};
use super::feed::{
    decode_expiry_key, decode_u64, encode_u64, expiry_due_range, ttl_key, Gone, EXPIRY_TAG,
};
use super::key::doc_key;
use super::name::validate_collection;
use crate::engine::{Snapshot, WriteBatch};

/// The longest lifetime a write or collection may ask for: 10 years.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;

/// Expired documents deleted per write batch (one fsync for all of them).
const EXPIRE_CHUNK: usize = 64;

/// A due expiry index entry: (expires_ms, collection, id, its key).
type Due = (u64, String, String, Vec<u8>);

/// Most collections whose default lifetime is cached; past it the cache starts over.
const TTL_CACHE_MAX: usize = 10_000;

/// Milliseconds since the Unix epoch on the server's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long a written document lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Ttl {
    /// The collection's default lifetime if it has one, else permanent.
    #[default]
    Default,
    /// Never expires.
    Permanent,
    /// Expires this many seconds after the write (1 to [`MAX_TTL_SECS`]).
    Seconds(u64),
}

impl Ttl {
    /// `?ttl=N`: 0 is permanent; more than [`MAX_TTL_SECS`] is refused.
    pub fn from_secs(secs: u64) -> Result<Ttl> {
        match secs {
            0 => Ok(Ttl::Permanent),
            s if s <= MAX_TTL_SECS => Ok(Ttl::Seconds(s)),
            s => Err(StoreError::InvalidTtl(format!(
                "{s} seconds is longer than the maximum of {MAX_TTL_SECS} (10 years)"
            ))),
        }
    }
}

/// What one sweeper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sweep {
    /// Expired documents deleted.
    pub expired: u64,
    /// Index entries removed that no longer matched their document.
    pub stale: u64,
    /// True when the pass stopped at its limit with more due.
    pub more: bool,
}

impl Store {
    /// The expiry time (ms; 0: never) of a write at `now` under `ttl` in `col`.
    pub(super) fn expiry_for(&self, col: &str, ttl: Ttl, now: u64) -> Result<u64> {
        let secs = match ttl {
            Ttl::Permanent => 0,
            Ttl::Seconds(s) => s,
            Ttl::Default => self.collection_ttl(col)?.unwrap_or(0),
        };
        Ok(if secs == 0 {
            0
        } else {
            now.saturating_add(secs.saturating_mul(1000))
        })
    }

    /// `col`'s default lifetime in seconds, if it has one.
    pub fn collection_ttl(&self, col: &str) -> Result<Option<u64>> {
        validate_collection(col)?;
        if let Some(&s) = self.ttls.read().get(col) {
            return Ok((s > 0).then_some(s));
        }
        let secs = match self.engine.get(&ttl_key(col))? {
            Some(v) => decode_u64(&v)?,
            None => 0,
        };
        let mut cache = self.ttls.write();
        if cache.len() >= TTL_CACHE_MAX {
            cache.clear();
        }
        cache.insert(col.to_owned(), secs);
        Ok((secs > 0).then_some(secs))
    }

    /// Sets (`Some`) or removes (`None`) `col`'s default lifetime. Documents already
    /// written keep theirs; later writes without their own lifetime get this one.
    pub fn set_collection_ttl(&self, col: &str, secs: Option<u64>) -> Result<()> {
        validate_collection(col)?;
        if let Some(s) = secs {
            if s == 0 || s > MAX_TTL_SECS {
                return Err(StoreError::InvalidTtl(format!(
                    "a collection's lifetime is 1 to {MAX_TTL_SECS} seconds, got {s}"
                )));
            }
        }
        let mut batch = WriteBatch::new();
        match secs {
            Some(s) => batch.put(&ttl_key(col), &encode_u64(s)),
            None => batch.delete(&ttl_key(col)),
        };
        // Under the cache's lock, so no write reads the old value back into it after.
        let mut cache = self.ttls.write();
        self.engine.write(batch)?;
        cache.insert(col.to_owned(), secs.unwrap_or(0));
        Ok(())
    }

    /// Documents of `col` due (expired at `now`) but not yet swept, in `snap`.
    pub(super) fn due_in(&self, snap: &Snapshot, col: &str, now: u64) -> Result<u64> {
        let (start, end) = expiry_due_range(now);
        let mut n = 0;
        for item in snap.scan(start..end) {
            let (key, _) = item?;
            let (_, c, _) = decode_expiry_key(&key)?;
            n += u64::from(c == col);
        }
        Ok(n)
    }

    /// Documents due at `now` and not yet swept, counted up to `cap`.
    pub fn expiry_backlog(&self, now: u64, cap: u64) -> Result<u64> {
        if now < self.next_expiry.load(Ordering::SeqCst) {
            return Ok(0);
        }
        let (start, end) = expiry_due_range(now);
        let mut n = 0;
        for item in self.engine.scan(start..end) {
            item?;
            n += 1;
            if n >= cap {
                break;
            }
        }
        Ok(n)
    }

    /// Deletes up to `max` documents expired at `now` (each in its own write batch, with a
    /// change-feed entry saying it expired). Call it again while [`Sweep::more`].
    pub fn sweep_expired(&self, now: u64, max: usize) -> Result<Sweep> {
        // Nothing expires before the hint: no scan at all (the common case).
        if now < self.next_expiry.load(Ordering::SeqCst) {
            return Ok(Sweep::default());
        }
        // Reset, then scan: a write committed after the scan lowers the hint again.
        self.next_expiry.store(u64::MAX, Ordering::SeqCst);
        let (start, _) = expiry_due_range(now);
        let mut due = Vec::new();
        let mut more = false;
        for item in self.engine.scan(start..vec![EXPIRY_TAG + 1]) {
            let (key, _) = item?;
            let (at, col, id) = decode_expiry_key(&key)?;
            if at > now || due.len() == max {
                // The first entry not swept in this pass is the next one due.
                self.next_expiry.fetch_min(at, Ordering::SeqCst);
                more = at <= now;
                break;
            }
            due.push((at, col.to_owned(), id.to_owned(), key.to_vec()));
        }
        let mut sweep = Sweep {
            more,
            ..Sweep::default()
        };
        for chunk in due.chunks(EXPIRE_CHUNK) {
            match self.expire_chunk(chunk, now) {
                Ok((expired, stale)) => {
                    sweep.expired += expired;
                    sweep.stale += stale;
                }
                Err(e) => {
                    // What this pass did not get to is due still: look again next time.
                    self.next_expiry.store(0, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        Ok(sweep)
    }

    /// Deletes each `(at, col, id, index key)` of `chunk` whose document still expires at
    /// `at` (and has by `now`), in one write batch under the chunk's stripe locks (taken in
    /// order, as every multi-document write does); an entry that no longer matches its
    /// document loses only its index key. Returns (deleted, stale).
    fn expire_chunk(&self, chunk: &[Due], now: u64) -> Result<(u64, u64)> {
        let mut stripes: Vec<usize> = chunk
            .iter()
            .map(|(_, c, i, _)| Self::stripe(c, i))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<_> = stripes.iter().map(|&s| self.stripes[s].lock()).collect();
        let mut batch = WriteBatch::new();
        let mut hints = Hints::default();
        let mut deltas = std::collections::HashMap::new();
        let (mut expired, mut stale) = (0, 0);
        for (at, col, id, index_key) in chunk {
            let key = doc_key(col, id);
            match self.read_doc(&key)? {
                Some(o) if o.expires_ms == *at && o.expired_at(now) => {
                    let next = Next::Gone(Gone::Expired);
                    self.stage(&mut batch, &mut hints, (col, id, &key), Some(&o), next, now)?;
                    let d: &mut (i64, i64) = deltas
                        .entry((col.clone(), Self::stripe(col, id)))
                        .or_default();
                    d.0 -= 1;
                    d.1 -= o.json.len() as i64;
                    expired += 1;
                }
                _ => {
                    batch.delete(index_key);
                    stale += 1;
                }
            }
        }
        self.add_stats(&mut batch, &deltas)?;
        self.commit(batch, hints)?;
        Ok((expired, stale))
    }
}
