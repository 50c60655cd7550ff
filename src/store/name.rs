//! Validation of collection names and document `_id`s.

use super::error::{Result, StoreError};

/// Longest collection name, in characters (names are ASCII, so also bytes).
pub const MAX_COLLECTION_LEN: usize = 64;

/// Longest `_id`, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 512;

/// Checks a collection name: 1–64 chars of `[A-Za-z0-9_.-]`, not starting with `_` or `.`.
pub fn validate_collection(name: &str) -> Result<()> {
    let fail = |reason: String| {
        Err(StoreError::InvalidCollection {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("must not be empty".into());
    }
    if let Some((pos, c)) = name.char_indices().find(|&(_, c)| !is_name_char(c)) {
        return fail(format!(
            "invalid character {c:?} at byte {pos}; allowed are A-Z a-z 0-9 _ . -"
        ));
    }
    if name.len() > MAX_COLLECTION_LEN {
        return fail(format!(
            "{} characters long, at most {MAX_COLLECTION_LEN} allowed",
            name.len()
        ));
    }
    if name.starts_with(['_', '.']) {
        return fail("must not start with '_' or '.'".into());
    }
    Ok(())
}

/// Checks an `_id`: a non-empty string of at most 512 bytes (any UTF-8).
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(StoreError::InvalidId("must not be empty".into()));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(StoreError::InvalidId(format!(
            "{} bytes long, at most {MAX_ID_BYTES} allowed",
            id.len()
        )));
    }
    Ok(())
}

/// The rule for new ids, quoted in every refusal.
pub const RESERVED_ID_RULE: &str = "ids starting with '_' are reserved for routes";

/// Checks the `_id` of a document being created or replaced: a valid id that does not
/// start with `_`. Such ids would collide with the routes (`/api/{col}/_count`,
/// `_search`, `_insertMany`), as CouchDB's reserved ids would; existing documents with such
/// ids can still be read, patched and deleted where the route allows.
pub fn validate_new_id(id: &str) -> Result<()> {
    validate_id(id)?;
    if id.starts_with('_') {
        return Err(StoreError::InvalidId(format!(
            "{RESERVED_ID_RULE} (\"_count\", \"_search\", ...); got {}",
            super::error::preview(id)
        )));
    }
    Ok(())
}

/// Whether `c` may appear in a collection name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match validate_collection(name) {
            Err(StoreError::InvalidCollection { reason, .. }) => reason,
            other => panic!("expected InvalidCollection for {name:?}, got {other:?}"),
        }
    }

    #[test]
    fn accepts_good_names() {
        for name in ["a", "users", "A.b-c_d", "0", "a_", "a.", &"x".repeat(64)] {
            assert!(validate_collection(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        assert!(reason("").contains("empty"));
        assert!(reason(&"x".repeat(65)).contains("at most 64"));
        assert!(reason("_sys").contains("start"));
        assert!(reason(".hidden").contains("start"));
        assert!(reason("a b").contains("' '"));
        assert!(reason("a/b").contains("'/'"));
        assert!(reason("a\0b").contains("'\\0'"));
        assert!(reason("café").contains("'é'"));
    }

    #[test]
    fn ids() {
        assert!(validate_id("x").is_ok());
        assert!(validate_id("日本\0 / ?").is_ok());
        assert!(validate_id(&"é".repeat(256)).is_ok()); // 512 bytes
        assert!(matches!(validate_id(""), Err(StoreError::InvalidId(_))));
        assert!(matches!(
            validate_id(&"a".repeat(513)),
            Err(StoreError::InvalidId(_))
        ));
    }

    #[test]
    fn new_ids_must_not_start_with_an_underscore() {
        assert!(
            validate_id("_count").is_ok(),
            "existing documents stay readable"
        );
        for id in ["_count", "_search", "_insertMany", "_", "_x"] {
            assert!(
                matches!(validate_new_id(id), Err(StoreError::InvalidId(m)) if m.contains(RESERVED_ID_RULE)),
                "{id}"
            );
        }
        for id in ["a_", "count", "x_y", " _"] {
            assert!(validate_new_id(id).is_ok(), "{id}");
        }
        assert!(validate_new_id("").is_err());
    }
}
