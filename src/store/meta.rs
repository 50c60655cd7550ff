//! Stored value layouts owned by the [`Store`](super::Store): the document envelope and
//! the sharded per-collection statistics.
//!
//! A document value is `[ENVELOPE_V2, version, seq, expires_ms, JSON bytes...]` (three u64
//! BE): the version grows on every write of the document and feeds its ETag; `seq` is the
//! engine sequence number of the write (stamped at commit), which names its change-feed
//! entry; `expires_ms` is when it expires (ms since the Unix epoch, 0 = never). Documents
//! written before expiry and the change feed existed carry `[ENVELOPE_TAG, version, JSON]`
//! and read as permanent, with no feed entry.
//!
//! A collection's statistics are split in [`SHARDS`] keys `b"mc" + collection + 0x00 +
//! shard`, one per lock stripe, each holding `(documents, JSON bytes)` as two u64 BE. A
//! shard is only read and written under its stripe's lock, in the same write batch as the
//! documents it counts, so the sums are exact without one hot key per collection.

use bytes::Bytes;

use super::error::{Result, StoreError};
use super::key::{COUNT_PREFIX, TERMINATOR};
use super::name::validate_collection;

/// Number of lock stripes, and of statistics shards per collection.
pub const SHARDS: usize = 64;
/// First byte of every document value.
pub const ENVELOPE_TAG: u8 = 1;
/// Bytes before the JSON in a document value.
pub const ENVELOPE_HEADER: usize = 9;

/// First byte of a document value with a change sequence and an expiry.
pub const ENVELOPE_V2: u8 = 2;
/// Bytes before the JSON in a v2 document value.
pub const ENVELOPE_V2_HEADER: usize = 25;
/// Where the commit stamps the sequence number in a v2 value.
pub const ENVELOPE_SEQ_AT: usize = 9;

/// A decoded document value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Grows on every write of the document (the ETag).
    pub version: u64,
    /// The engine sequence number of the write that stored it (0: before the feed existed).
    pub seq: u64,
    /// When it expires, in ms since the Unix epoch (0: never).
    pub expires_ms: u64,
    /// The document as compact JSON.
    pub json: Bytes,
}

impl Envelope {
    /// True when the document has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }
}

/// Encodes a v2 document value; its sequence number (at [`ENVELOPE_SEQ_AT`]) is left for
/// the commit to stamp.
pub fn encode_document(version: u64, expires_ms: u64, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENVELOPE_V2_HEADER + json.len());
    v.push(ENVELOPE_V2);
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&[0u8; 8]);
    v.extend_from_slice(&expires_ms.to_be_bytes());
    v.extend_from_slice(json);
    v
}

/// Decodes a document value of either layout.
pub fn decode_document(value: &Bytes) -> Result<Envelope> {
    let u64_at = |at: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&value[at..at + 8]);
        u64::from_be_bytes(b)
    };
    match value.first() {
        Some(&ENVELOPE_V2) if value.len() >= ENVELOPE_V2_HEADER => Ok(Envelope {
            version: u64_at(1),
            seq: u64_at(9),
            expires_ms: u64_at(17),
            json: value.slice(ENVELOPE_V2_HEADER..),
        }),
        Some(&ENVELOPE_TAG) if value.len() >= ENVELOPE_HEADER => Ok(Envelope {
            version: u64_at(1),
            seq: 0,
            expires_ms: 0,
            json: value.slice(ENVELOPE_HEADER..),
        }),
        _ => Err(StoreError::CorruptValue(format!(
            "document value of {} bytes has no envelope",
            value.len()
        ))),
    }
}

/// Encodes a document value: tag, version, JSON (the layout before v2; still read).
pub fn encode_envelope(version: u64, json: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENVELOPE_HEADER + json.len());
    v.push(ENVELOPE_TAG);
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(json);
    v
}

/// Splits a document value (either layout) into `(version, JSON bytes)`.
pub fn decode_envelope(value: &Bytes) -> Result<(u64, Bytes)> {
    decode_document(value).map(|e| (e.version, e.json))
}

/// Prefix of all statistics shards of `col`.
pub fn stats_prefix(col: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(COUNT_PREFIX.len() + col.len() + 2);
    k.extend_from_slice(COUNT_PREFIX);
    k.extend_from_slice(col.as_bytes());
    k.push(TERMINATOR);
    k
}

/// Key of statistics shard `shard` of `col`.
pub fn stats_key(col: &str, shard: usize) -> Vec<u8> {
    let mut k = stats_prefix(col);
    // SHARDS <= 256, so the shard fits one byte.
    k.push((shard % SHARDS) as u8);
    k
}

/// Splits a statistics key into `(collection, shard)`.
pub fn decode_stats_key(key: &[u8]) -> Result<(&str, usize)> {
    let bad = || StoreError::InvalidKey(format!("bad statistics key {key:?}"));
    let rest = key.strip_prefix(COUNT_PREFIX).ok_or_else(bad)?;
    let (&shard, rest) = rest.split_last().ok_or_else(bad)?;
    let name = rest.strip_suffix(&[TERMINATOR]).ok_or_else(bad)?;
    let col = std::str::from_utf8(name).map_err(|_| bad())?;
    validate_collection(col).map_err(|_| bad())?;
    Ok((col, usize::from(shard)))
}

/// Encodes `(documents, bytes)` of one shard.
pub fn encode_stats(docs: u64, bytes: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&docs.to_be_bytes());
    v[8..].copy_from_slice(&bytes.to_be_bytes());
    v
}

/// Decodes a value written by [`encode_stats`].
pub fn decode_stats(value: &[u8]) -> Result<(u64, u64)> {
    let arr: [u8; 16] = value
        .try_into()
        .map_err(|_| StoreError::CorruptValue(format!("stats value of {} bytes", value.len())))?;
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&arr[..8]);
    b.copy_from_slice(&arr[8..]);
    Ok((u64::from_be_bytes(a), u64::from_be_bytes(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_roundtrip() {
        let v = Bytes::from(encode_envelope(7, b"{\"a\":1}"));
        let (ver, json) = decode_envelope(&v).unwrap_or_default();
        assert_eq!(ver, 7);
        assert_eq!(&json[..], b"{\"a\":1}");
        assert!(decode_envelope(&Bytes::from_static(b"{}")).is_err());
    }

    #[test]
    fn v2_envelope_roundtrip_and_v1_still_reads() {
        let mut v = encode_document(7, 1234, b"{}");
        v[ENVELOPE_SEQ_AT..ENVELOPE_SEQ_AT + 8].copy_from_slice(&99u64.to_be_bytes());
        let e = decode_document(&Bytes::from(v)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.version, e.seq, e.expires_ms, &e.json[..]),
            (7, 99, 1234, &b"{}"[..])
        );
        assert!(e.expired_at(1234) && !e.expired_at(1233));
        let old = decode_document(&Bytes::from(encode_envelope(3, b"[]")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((old.version, old.seq, old.expires_ms), (3, 0, 0));
        assert!(!old.expired_at(u64::MAX));
        for bad in [
            &b""[..],
            b"\x02short",
            b"\x01",
            b"\x09xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ] {
            assert!(decode_document(&Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn stats_keys() {
        let k = stats_key("a.b", 63);
        assert_eq!(k, b"mca.b\0\x3f");
        assert_eq!(decode_stats_key(&k).ok(), Some(("a.b", 63)));
        assert!(k.starts_with(&stats_prefix("a.b")));
        assert!(!k.starts_with(&stats_prefix("a")));
        assert!(decode_stats_key(b"mc").is_err());
        assert!(decode_stats_key(b"mc_x\0\x01").is_err());
        assert_eq!(decode_stats(&encode_stats(3, 99)).ok(), Some((3, 99)));
        assert!(decode_stats(b"short").is_err());
    }
}
