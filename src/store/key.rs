//! Key encoding: documents and metadata as engine keys.
//!
//! Layout (all keys are raw bytes, compared bytewise by the engine):
//!
//! | key | value |
//! |---|---|
//! | `b"d" + collection + 0x00 + id` | the document's JSON |
//! | `b"mc" + collection` | legacy single document count ([`encode_count`]); the store writes sharded `b"mc" + collection + 0x00 + shard` keys instead (see `meta.rs`) |
//! | `b"mv"` | the store format version ([`FORMAT_VERSION`]) |
//!
//! Collection names never contain `0x00`, so the terminator makes each collection's
//! documents one contiguous range that no other collection's range overlaps ("a" vs
//! "a.b" vs "ab"), and the order of keys is the order of `(collection, id)` pairs.

use super::error::{Result, StoreError};
use super::name::{validate_collection, validate_id};

/// First byte of every document key.
pub const DOC_TAG: u8 = b'd';
/// First byte of every metadata key.
pub const META_TAG: u8 = b'm';
/// Ends the collection name inside a document key; cannot occur in names.
pub const TERMINATOR: u8 = 0x00;
/// Key prefix of all collection counts.
pub const COUNT_PREFIX: &[u8] = b"mc";
/// Key of the store format version.
pub const VERSION_KEY: &[u8] = b"mv";
/// Current store format version, stored under [`VERSION_KEY`].
pub const FORMAT_VERSION: u32 = 1;

/// Key under which document `id` of collection `col` (validated by the caller) is stored.
pub fn doc_key(col: &str, id: &str) -> Vec<u8> {
    let mut key = collection_prefix(col);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Prefix shared by all document keys of `col`, and by no other collection's keys.
pub fn collection_prefix(col: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(col.len() + 2 + 16);
    key.push(DOC_TAG);
    key.extend_from_slice(col.as_bytes());
    key.push(TERMINATOR);
    key
}

/// Half-open key range `[start, end)` holding exactly the documents of `col`.
pub fn collection_range(col: &str) -> (Vec<u8>, Vec<u8>) {
    let start = collection_prefix(col);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = TERMINATOR + 1;
    }
    (start, end)
}

/// Smallest key strictly after document `after_id` in `col`: where a paginated scan resumes.
pub fn resume_key(col: &str, after_id: &str) -> Vec<u8> {
    let mut key = doc_key(col, after_id);
    key.push(0x00);
    key
}

/// Splits a document key back into `(collection, id)`, validating both.
pub fn decode_doc_key(key: &[u8]) -> Result<(&str, &str)> {
    let bad = |why: &str| StoreError::InvalidKey(format!("{why} in document key {key:?}"));
    let rest = match key.split_first() {
        Some((&DOC_TAG, rest)) => rest,
        _ => return Err(bad("wrong tag")),
    };
    let mut parts = rest.splitn(2, |&b| b == TERMINATOR);
    let col = parts.next().unwrap_or_default();
    let id = parts.next().ok_or_else(|| bad("no terminator"))?;
    let col = std::str::from_utf8(col).map_err(|_| bad("non-UTF-8 collection"))?;
    let id = std::str::from_utf8(id).map_err(|_| bad("non-UTF-8 id"))?;
    validate_collection(col).map_err(|e| bad(&e.to_string()))?;
    validate_id(id).map_err(|e| bad(&e.to_string()))?;
    Ok((col, id))
}

/// Key of the document count of `col`.
pub fn count_key(col: &str) -> Vec<u8> {
    [COUNT_PREFIX, col.as_bytes()].concat()
}

/// The collection named by a count key (as found by scanning [`COUNT_PREFIX`]).
pub fn decode_count_key(key: &[u8]) -> Result<&str> {
    let bad = |why: &str| StoreError::InvalidKey(format!("{why} in count key {key:?}"));
    let name = key
        .strip_prefix(COUNT_PREFIX)
        .ok_or_else(|| bad("wrong prefix"))?;
    let col = std::str::from_utf8(name).map_err(|_| bad("non-UTF-8 collection"))?;
    validate_collection(col).map_err(|e| bad(&e.to_string()))?;
    Ok(col)
}

/// Encodes a document count as a value (8 bytes, big-endian).
pub fn encode_count(count: u64) -> [u8; 8] {
    count.to_be_bytes()
}

/// Decodes a value written by [`encode_count`].
pub fn decode_count(value: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| StoreError::InvalidKey(format!("count value of {} bytes", value.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout() {
        assert_eq!(doc_key("a", "x"), b"da\0x");
        assert_eq!(collection_prefix("a.b"), b"da.b\0");
        assert_eq!(
            collection_range("a"),
            (b"da\0".to_vec(), b"da\x01".to_vec())
        );
        assert_eq!(resume_key("a", "x"), b"da\0x\0");
        assert_eq!(count_key("a"), b"mca");
    }

    #[test]
    fn similar_names_do_not_overlap() {
        let cols = ["a", "a.b", "ab", "a-", "a0", "b"];
        for c1 in cols {
            for c2 in cols {
                if c1 != c2 {
                    assert!(!doc_key(c1, "\0z").starts_with(&collection_prefix(c2)));
                }
            }
        }
    }

    #[test]
    fn decode_roundtrip_and_garbage() {
        assert_eq!(decode_doc_key(b"da.b\0x\0y").ok(), Some(("a.b", "x\0y")));
        for bad in [
            &b""[..],
            b"d",
            b"da",
            b"xa\0id",
            b"da\0",
            b"d\0id",
            b"d_a\0id",
            b"da\0\xff",
        ] {
            assert!(matches!(
                decode_doc_key(bad),
                Err(StoreError::InvalidKey(_))
            ));
        }
        assert_eq!(decode_count_key(b"mcusers").ok(), Some("users"));
        assert!(decode_count_key(b"mc").is_err());
        assert!(decode_count_key(b"da\0x").is_err());
    }

    #[test]
    fn counts() {
        assert_eq!(decode_count(&encode_count(42)).ok(), Some(42));
        assert!(decode_count(b"123").is_err());
    }

    fn col() -> impl Strategy<Value = String> {
        "[A-Za-z0-9-][A-Za-z0-9_.-]{0,63}"
    }

    fn id() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 1..40).prop_map(String::from_iter)
    }

    proptest! {
        #[test]
        fn order_is_preserved(c1 in col(), i1 in id(), c2 in col(), i2 in id()) {
            let pairs = (c1.as_bytes(), i1.as_bytes()).cmp(&(c2.as_bytes(), i2.as_bytes()));
            prop_assert_eq!(doc_key(&c1, &i1).cmp(&doc_key(&c2, &i2)), pairs);
            // Within one collection, key order is id order.
            prop_assert_eq!(doc_key(&c1, &i1).cmp(&doc_key(&c1, &i2)), i1.cmp(&i2));
        }

        #[test]
        fn collections_are_disjoint_ranges(c1 in col(), c2 in col(), i in id()) {
            let key = doc_key(&c1, &i);
            let (start, end) = collection_range(&c1);
            prop_assert!(start <= key && key < end);
            prop_assert!(key.starts_with(&collection_prefix(&c1)));
            prop_assert!(resume_key(&c1, &i) > key && resume_key(&c1, &i) < end);
            if c1 != c2 {
                let (s2, e2) = collection_range(&c2);
                prop_assert!(end <= s2 || e2 <= start);
                prop_assert!(!key.starts_with(&collection_prefix(&c2)));
            }
            prop_assert!(!count_key(&c1).starts_with(&[DOC_TAG]));
        }

        #[test]
        fn decode_inverts_encode(c in col(), i in id()) {
            let key = doc_key(&c, &i);
            prop_assert_eq!(decode_doc_key(&key).ok(), Some((c.as_str(), i.as_str())));
            let count = count_key(&c);
            prop_assert_eq!(decode_count_key(&count).ok(), Some(c.as_str()));
        }

        #[test]
        fn decode_never_panics(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_doc_key(&key);
            let _ = decode_count_key(&key);
        }
    }
}
