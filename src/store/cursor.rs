//! Opaque pagination cursors.
//!
//! A cursor is `[version byte] + last returned _id` as URL-safe base64 without padding.
//! The scan resumes strictly after that `_id` (see [`super::key::resume_key`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::error::{Result, StoreError};
use super::name::{validate_id, MAX_ID_BYTES};

/// Format version written as the cursor's first byte.
const CURSOR_VERSION: u8 = 1;

/// Longest encoded cursor: base64 of the version byte and a maximal `_id`.
const MAX_CURSOR_LEN: usize = (1 + MAX_ID_BYTES).div_ceil(3) * 4;

/// Encodes the last returned `_id` as an opaque cursor.
pub fn encode_cursor(last_id: &str) -> String {
    let mut raw = Vec::with_capacity(1 + last_id.len());
    raw.push(CURSOR_VERSION);
    raw.extend_from_slice(last_id.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes a cursor back to the last returned `_id`; anything malformed is `InvalidCursor`.
pub fn decode_cursor(cursor: &str) -> Result<String> {
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(StoreError::InvalidCursor);
    }
    let raw = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| StoreError::InvalidCursor)?;
    let Some((&CURSOR_VERSION, id)) = raw.split_first() else {
        return Err(StoreError::InvalidCursor);
    };
    let id = String::from_utf8(id.to_vec()).map_err(|_| StoreError::InvalidCursor)?;
    validate_id(&id).map_err(|_| StoreError::InvalidCursor)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        for id in ["a", "user/42?x=1", "日本", "\0", &"é".repeat(256)] {
            let c = encode_cursor(id);
            assert!(c.len() <= MAX_CURSOR_LEN);
            assert!(c
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(decode_cursor(&c).ok().as_deref(), Some(id));
        }
    }

    #[test]
    fn garbage_is_invalid() {
        let padded = URL_SAFE_NO_PAD.encode([1, b'a']) + "=";
        let wrong_version = URL_SAFE_NO_PAD.encode([2, b'a']);
        let not_utf8 = URL_SAFE_NO_PAD.encode([1, 0xff]);
        let empty_id = URL_SAFE_NO_PAD.encode([1]);
        let too_long = "A".repeat(MAX_CURSOR_LEN + 1);
        for bad in [
            "",
            "!!!",
            "a",
            "AQ=",
            "+/",
            &padded,
            &wrong_version,
            &not_utf8,
            &empty_id,
            &too_long,
        ] {
            assert!(
                matches!(decode_cursor(bad), Err(StoreError::InvalidCursor)),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn roundtrips_any_id(chars in prop::collection::vec(any::<char>(), 1..128)) {
            let id = String::from_iter(chars);
            prop_assume!(id.len() <= MAX_ID_BYTES);
            prop_assert_eq!(decode_cursor(&encode_cursor(&id)).ok(), Some(id));
        }

        #[test]
        fn decode_never_panics(s in "\\PC{0,80}|[A-Za-z0-9_-]{0,80}") {
            let _ = decode_cursor(&s);
        }
    }
}
