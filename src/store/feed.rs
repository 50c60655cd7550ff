//! Keys and values of document expiry and the change feed.
//!
//! | key | value |
//! |---|---|
//! | `b"mt" + collection` | the collection's default lifetime in seconds (u64 BE) |
//! | `b"x" + expires_ms (u64 BE) + collection + 0x00 + id` | empty: the expiry index, in expiry order |
//! | `b"c" + collection + 0x00 + seq (u64 BE) + id` | a [`Change`]: the collection's feed |
//! | `b"g" + seq (u64 BE) + collection + 0x00 + id` | a [`Change`]: the feed across collections |
//! | `b"k" + collection + 0x00 + id` | `seq, at_ms` (u64 BE each) of a deleted document's feed entry |
//! | `b"r" + at_ms + seq (u64 BE each) + collection + 0x00 + id` | empty: deletions in time order, for retention |
//! | `b"mf"` | the feed floor: the highest sequence number of a pruned deletion (u64 BE) |
//!
//! A document has exactly one feed entry, at the sequence number of its latest write or
//! deletion (CouchDB's rule): each write removes the entries of the previous one. Sequence
//! numbers are the engine's commit sequence numbers, stamped into the keys when the batch
//! commits, so the feed is in commit order and a reader never misses an entry below the
//! highest one it saw. Every key here is written in the same batch as the document.

use super::error::{Result, StoreError};
use super::key::TERMINATOR;

/// Prefix of a collection's default lifetime.
pub const TTL_PREFIX: &[u8] = b"mt";
/// First byte of the expiry index.
pub const EXPIRY_TAG: u8 = b'x';
/// First byte of a collection's feed.
pub const CHANGE_TAG: u8 = b'c';
/// First byte of the feed across collections.
pub const GLOBAL_TAG: u8 = b'g';
/// First byte of a deleted document's feed pointer.
pub const TOMBSTONE_TAG: u8 = b'k';
/// First byte of the retention index.
pub const RETENTION_TAG: u8 = b'r';
/// Key of the feed floor.
pub const FLOOR_KEY: &[u8] = b"mf";

/// The placeholder the commit overwrites with the sequence number.
const SEQ_PLACEHOLDER: [u8; 8] = [0; 8];

fn be(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_be_bytes(a))
}

fn bad(what: &str, key: &[u8]) -> StoreError {
    StoreError::InvalidKey(format!("bad {what} key {key:?}"))
}

/// Key of `col`'s default lifetime.
pub fn ttl_key(col: &str) -> Vec<u8> {
    [TTL_PREFIX, col.as_bytes()].concat()
}

/// Key of the expiry index entry of `(col, id)` expiring at `expires_ms`.
pub fn expiry_key(expires_ms: u64, col: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + col.len() + id.len());
    k.push(EXPIRY_TAG);
    k.extend_from_slice(&be(expires_ms));
    k.extend_from_slice(col.as_bytes());
    k.push(TERMINATOR);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The expiry index entries due at or before `now_ms`: `[start, end)`.
pub fn expiry_due_range(now_ms: u64) -> (Vec<u8>, Vec<u8>) {
    let mut end = vec![EXPIRY_TAG];
    end.extend_from_slice(&be(now_ms.saturating_add(1)));
    (vec![EXPIRY_TAG], end)
}

/// Splits an expiry index key into `(expires_ms, collection, id)`.
pub fn decode_expiry_key(key: &[u8]) -> Result<(u64, &str, &str)> {
    let rest = key
        .strip_prefix(&[EXPIRY_TAG])
        .ok_or_else(|| bad("expiry", key))?;
    let at = u64_at(rest, 0).ok_or_else(|| bad("expiry", key))?;
    let (col, id) = split_col_id(&rest[8..]).ok_or_else(|| bad("expiry", key))?;
    Ok((at, col, id))
}

fn split_col_id(b: &[u8]) -> Option<(&str, &str)> {
    let i = b.iter().position(|&x| x == TERMINATOR)?;
    Some((
        std::str::from_utf8(&b[..i]).ok()?,
        std::str::from_utf8(&b[i + 1..]).ok()?,
    ))
}

/// Where a key built by [`change_key`] or [`global_key`] carries its stamp.
pub type Stamped = (Vec<u8>, usize);

/// Key of `(col, id)`'s entry in its collection's feed at `seq` (`None`: stamped at commit).
pub fn change_key(col: &str, seq: Option<u64>, id: &str) -> Stamped {
    let mut k = Vec::with_capacity(11 + col.len() + id.len());
    k.push(CHANGE_TAG);
    k.extend_from_slice(col.as_bytes());
    k.push(TERMINATOR);
    let at = k.len();
    k.extend_from_slice(&seq.map_or(SEQ_PLACEHOLDER, be));
    k.extend_from_slice(id.as_bytes());
    (k, at)
}

/// Key of `(col, id)`'s entry in the feed across collections at `seq`.
pub fn global_key(seq: Option<u64>, col: &str, id: &str) -> Stamped {
    let mut k = Vec::with_capacity(11 + col.len() + id.len());
    k.push(GLOBAL_TAG);
    k.extend_from_slice(&seq.map_or(SEQ_PLACEHOLDER, be));
    k.extend_from_slice(col.as_bytes());
    k.push(TERMINATOR);
    k.extend_from_slice(id.as_bytes());
    (k, 1)
}

/// The feed range after `since`: `[start, end)` of `col`'s feed, or of the global one.
pub fn feed_range(col: Option<&str>, since: u64) -> (Vec<u8>, Vec<u8>) {
    match col {
        Some(c) => {
            let (mut start, at) = change_key(c, Some(since.saturating_add(1)), "");
            start.truncate(at + 8);
            let mut end = start[..at].to_vec();
            if let Some(last) = end.last_mut() {
                *last = TERMINATOR + 1;
            }
            (start, end)
        }
        None => {
            let mut start = vec![GLOBAL_TAG];
            start.extend_from_slice(&be(since.saturating_add(1)));
            (start, vec![GLOBAL_TAG + 1])
        }
    }
}

/// Splits a feed key (either kind) into `(seq, collection, id)`.
pub fn decode_feed_key(key: &[u8]) -> Result<(u64, &str, &str)> {
    match key.first() {
        Some(&CHANGE_TAG) => {
            let rest = &key[1..];
            let i = rest
                .iter()
                .position(|&x| x == TERMINATOR)
                .ok_or_else(|| bad("feed", key))?;
            let col = std::str::from_utf8(&rest[..i]).map_err(|_| bad("feed", key))?;
            let seq = u64_at(rest, i + 1).ok_or_else(|| bad("feed", key))?;
            let id = std::str::from_utf8(&rest[i + 9..]).map_err(|_| bad("feed", key))?;
            Ok((seq, col, id))
        }
        Some(&GLOBAL_TAG) => {
            let seq = u64_at(key, 1).ok_or_else(|| bad("feed", key))?;
            let (col, id) = split_col_id(&key[9..]).ok_or_else(|| bad("feed", key))?;
            Ok((seq, col, id))
        }
        _ => Err(bad("feed", key)),
    }
}

/// Why a feed entry says a document is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// It is live (as far as the entry knows).
    No,
    /// Deleted by a client.
    Deleted,
    /// Deleted by the expiry sweeper.
    Expired,
}

/// A feed entry's value: what happened and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Whether (and how) the document is gone.
    pub gone: Gone,
    /// When the document expires (0: never), so readers report it gone once it has.
    pub expires_ms: u64,
    /// When the change was made (ms since the Unix epoch).
    pub at_ms: u64,
}

impl Change {
    /// Encodes the value (17 bytes).
    pub fn encode(&self) -> [u8; 17] {
        let mut v = [0u8; 17];
        v[0] = match self.gone {
            Gone::No => 0,
            Gone::Deleted => 1,
            Gone::Expired => 2,
        };
        v[1..9].copy_from_slice(&be(self.expires_ms));
        v[9..17].copy_from_slice(&be(self.at_ms));
        v
    }

    /// Decodes a value written by [`Change::encode`].
    pub fn decode(v: &[u8]) -> Result<Change> {
        let gone = match v.first() {
            Some(0) => Gone::No,
            Some(1) => Gone::Deleted,
            Some(2) => Gone::Expired,
            _ => return Err(StoreError::CorruptValue("bad change-feed entry".into())),
        };
        match (u64_at(v, 1), u64_at(v, 9), v.len()) {
            (Some(expires_ms), Some(at_ms), 17) => Ok(Change {
                gone,
                expires_ms,
                at_ms,
            }),
            _ => Err(StoreError::CorruptValue("bad change-feed entry".into())),
        }
    }

    /// True when the document is gone as of `now_ms` (deleted, or expired since).
    pub fn is_gone_at(&self, now_ms: u64) -> bool {
        self.gone != Gone::No || (self.expires_ms != 0 && self.expires_ms <= now_ms)
    }
}

/// Key of the pointer to a deleted document's feed entry.
pub fn tombstone_key(col: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + col.len() + id.len());
    k.push(TOMBSTONE_TAG);
    k.extend_from_slice(col.as_bytes());
    k.push(TERMINATOR);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The value of a tombstone pointer: `seq` (stamped at commit: placeholder) and `at_ms`.
pub fn encode_tombstone(at_ms: u64) -> ([u8; 16], usize) {
    let mut v = [0u8; 16];
    v[8..].copy_from_slice(&be(at_ms));
    (v, 0)
}

/// Decodes a tombstone pointer: `(seq, at_ms)`.
pub fn decode_tombstone(v: &[u8]) -> Result<(u64, u64)> {
    match (u64_at(v, 0), u64_at(v, 8), v.len()) {
        (Some(s), Some(a), 16) => Ok((s, a)),
        _ => Err(StoreError::CorruptValue("bad deletion pointer".into())),
    }
}

/// Key of a deletion in the retention index (`seq` `None`: stamped at commit).
pub fn retention_key(at_ms: u64, seq: Option<u64>, col: &str, id: &str) -> Stamped {
    let mut k = Vec::with_capacity(18 + col.len() + id.len());
    k.push(RETENTION_TAG);
    k.extend_from_slice(&be(at_ms));
    k.extend_from_slice(&seq.map_or(SEQ_PLACEHOLDER, be));
    k.extend_from_slice(col.as_bytes());
    k.push(TERMINATOR);
    k.extend_from_slice(id.as_bytes());
    (k, 9)
}

/// Deletions made before `before_ms`: `[start, end)` of the retention index.
pub fn retention_due_range(before_ms: u64) -> (Vec<u8>, Vec<u8>) {
    let mut end = vec![RETENTION_TAG];
    end.extend_from_slice(&be(before_ms));
    (vec![RETENTION_TAG], end)
}

/// Splits a retention key into `(at_ms, seq, collection, id)`.
pub fn decode_retention_key(key: &[u8]) -> Result<(u64, u64, &str, &str)> {
    let rest = key
        .strip_prefix(&[RETENTION_TAG])
        .ok_or_else(|| bad("retention", key))?;
    let at = u64_at(rest, 0).ok_or_else(|| bad("retention", key))?;
    let seq = u64_at(rest, 8).ok_or_else(|| bad("retention", key))?;
    let (col, id) = split_col_id(&rest[16..]).ok_or_else(|| bad("retention", key))?;
    Ok((at, seq, col, id))
}

/// Encodes a u64 value (lifetimes, the floor).
pub fn encode_u64(v: u64) -> [u8; 8] {
    be(v)
}

/// Decodes a value written by [`encode_u64`].
pub fn decode_u64(v: &[u8]) -> Result<u64> {
    match (u64_at(v, 0), v.len()) {
        (Some(x), 8) => Ok(x),
        _ => Err(StoreError::CorruptValue(format!(
            "u64 value of {} bytes",
            v.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn feed_keys_sort_by_sequence_within_and_across_collections() {
        let a = change_key("users", Some(5), "zz").0;
        let b = change_key("users", Some(6), "aa").0;
        assert!(a < b);
        let (start, end) = feed_range(Some("users"), 5);
        assert!(a < start && start <= b && b < end);
        assert!(change_key("users2", Some(1), "x").0 >= end);
        let g1 = global_key(Some(9), "b", "x").0;
        let g2 = global_key(Some(10), "a", "x").0;
        assert!(g1 < g2);
        let (gs, ge) = feed_range(None, 9);
        assert!(g1 < gs && gs <= g2 && g2 < ge);
        assert_eq!(decode_feed_key(&b).ok(), Some((6, "users", "aa")));
        assert_eq!(decode_feed_key(&g2).ok(), Some((10, "a", "x")));
    }

    #[test]
    fn stamp_offsets_point_at_the_sequence() {
        let (mut k, at) = change_key("c", None, "id");
        k[at..at + 8].copy_from_slice(&77u64.to_be_bytes());
        assert_eq!(decode_feed_key(&k).ok(), Some((77, "c", "id")));
        let (mut g, at) = global_key(None, "c", "id");
        g[at..at + 8].copy_from_slice(&78u64.to_be_bytes());
        assert_eq!(decode_feed_key(&g).ok(), Some((78, "c", "id")));
        let (mut r, at) = retention_key(1000, None, "c", "id");
        r[at..at + 8].copy_from_slice(&79u64.to_be_bytes());
        assert_eq!(decode_retention_key(&r).ok(), Some((1000, 79, "c", "id")));
        let (mut t, at) = encode_tombstone(55);
        t[at..at + 8].copy_from_slice(&80u64.to_be_bytes());
        assert_eq!(decode_tombstone(&t).ok(), Some((80, 55)));
    }

    #[test]
    fn expiry_keys_order_by_time() {
        let k1 = expiry_key(100, "z", "a");
        let k2 = expiry_key(101, "a", "a");
        assert!(k1 < k2);
        let (s, e) = expiry_due_range(100);
        assert!(s <= k1 && k1 < e && k2 >= e);
        assert_eq!(decode_expiry_key(&k2).ok(), Some((101, "a", "a")));
    }

    #[test]
    fn change_values_roundtrip() {
        for gone in [Gone::No, Gone::Deleted, Gone::Expired] {
            let c = Change {
                gone,
                expires_ms: 10,
                at_ms: 3,
            };
            assert_eq!(Change::decode(&c.encode()).ok(), Some(c));
        }
        let live = Change {
            gone: Gone::No,
            expires_ms: 10,
            at_ms: 3,
        };
        assert!(!live.is_gone_at(9) && live.is_gone_at(10));
        assert!(Change::decode(b"\x05").is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_feed_key(&b);
            let _ = decode_expiry_key(&b);
            let _ = decode_retention_key(&b);
            let _ = decode_tombstone(&b);
            let _ = Change::decode(&b);
            let _ = decode_u64(&b);
        }
    }
}
