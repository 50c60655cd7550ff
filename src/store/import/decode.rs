//! MiniDBGo's values as documents, decoded the way Go decoded them.
//!
//! Go's `encoding/json` turns every byte that does not begin a valid UTF-8 sequence into
//! U+FFFD and every unpaired UTF-16 surrogate escape (`"\ud800"`) into U+FFFD, keeps the
//! last of duplicate member names, and (unlike MiniDBGo's own dump, which went through
//! float64) the importer keeps integers exact: serde_json holds every integer that fits
//! `i64` or `u64` without rounding.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::summary::{SkipReason, Skipped};
use crate::store::document::{type_name, validate_document, ID_FIELD};
use crate::store::meta::ENVELOPE_HEADER;
use crate::store::name::{validate_collection, validate_id};

/// Largest document JSON the importer writes (the engine's value limit, less the envelope).
pub(crate) const MAX_DOC_BYTES: usize = crate::engine::MAX_VALUE_LEN - ENVELOPE_HEADER;

/// What becomes of one record.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// A document to write: collection, `_id`, compact JSON (with `_id`).
    Import {
        collection: String,
        id: String,
        json: Vec<u8>,
    },
    /// Not importable, and why.
    Skip(Skipped),
}

/// The document for MiniDBGo key `key` holding `value` (a data-directory record).
pub(crate) fn from_record(key: &[u8], value: &[u8]) -> Outcome {
    let key_text = String::from_utf8_lossy(key);
    let skip = |reason, detail: String| {
        Outcome::Skip(Skipped {
            reason,
            key: key_text.clone().into_owned(),
            detail,
        })
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return skip(
            SkipReason::NotADocumentKey,
            "the key is not valid UTF-8".into(),
        );
    };
    // The collection is the text before the first ':'; the id may contain ':' itself.
    let Some((collection, id)) = key.split_once(':') else {
        return skip(
            SkipReason::NotADocumentKey,
            "the key has no ':' separating collection and id".into(),
        );
    };
    if let Err(e) = check_names(collection, id) {
        return skip(SkipReason::NotImportableName, e);
    }
    let doc = match parse_go(value) {
        Ok(doc) => doc,
        Err(e) => {
            return skip(
                SkipReason::InvalidJson,
                format!("the value is not JSON: {e}"),
            )
        }
    };
    match finish(collection, id, doc) {
        Ok(outcome) => outcome,
        Err((reason, detail)) => skip(reason, detail),
    }
}

/// The document `doc` found in collection `collection` of a MiniDBGo dump; `index` is its
/// position in the collection's array (for reports when it has no usable `_id`).
pub(crate) fn from_dump(collection: &str, index: u64, doc: Value) -> Outcome {
    let id = match doc.get(ID_FIELD) {
        Some(Value::String(id)) => id.clone(),
        Some(other) if doc.is_object() => {
            return Outcome::Skip(Skipped {
                reason: SkipReason::MissingId,
                key: format!("{collection}[{index}]"),
                detail: format!(
                    "_id is {}, not a string (MiniDBGo's restoreDB needs a string)",
                    type_name(other)
                ),
            })
        }
        _ if doc.is_object() => {
            return Outcome::Skip(Skipped {
                reason: SkipReason::MissingId,
                key: format!("{collection}[{index}]"),
                detail: "no _id (MiniDBGo's restoreDB needs a string _id)".into(),
            })
        }
        _ => {
            return Outcome::Skip(Skipped {
                reason: SkipReason::NotAnObject,
                key: format!("{collection}[{index}]"),
                detail: format!("the document is {}, not an object", type_name(&doc)),
            })
        }
    };
    let key = format!("{collection}:{id}");
    if let Err(e) = check_names(collection, &id) {
        return Outcome::Skip(Skipped {
            reason: SkipReason::NotImportableName,
            key,
            detail: e,
        });
    }
    match finish(collection, &id, doc) {
        Ok(outcome) => outcome,
        Err((reason, detail)) => Outcome::Skip(Skipped {
            reason,
            key,
            detail,
        }),
    }
}

/// MiniDB's rules for the collection name and the `_id`, as one message.
fn check_names(collection: &str, id: &str) -> Result<(), String> {
    validate_collection(collection).map_err(|e| e.to_string())?;
    validate_id(id).map_err(|e| e.to_string())
}

/// Sets `_id` (the key's id wins over the body's), checks the document, encodes it.
fn finish(collection: &str, id: &str, doc: Value) -> Result<Outcome, (SkipReason, String)> {
    let mut map: Map<String, Value> = match doc {
        Value::Object(map) => map,
        other => {
            return Err((
                SkipReason::NotAnObject,
                format!("the value is {}, not an object", describe(&other)),
            ))
        }
    };
    map.insert(ID_FIELD.to_owned(), Value::String(id.to_owned()));
    let doc = Value::Object(map);
    validate_document(&doc).map_err(|e| (SkipReason::InvalidDocument, e.to_string()))?;
    let json =
        serde_json::to_vec(&doc).map_err(|e| (SkipReason::InvalidDocument, e.to_string()))?;
    if json.len() > MAX_DOC_BYTES {
        return Err((
            SkipReason::InvalidDocument,
            format!(
                "{} bytes of JSON, more than MiniDB's {MAX_DOC_BYTES}",
                json.len()
            ),
        ));
    }
    Ok(Outcome::Import {
        collection: collection.to_owned(),
        id: id.to_owned(),
        json,
    })
}

/// `null` is named as itself (it is the one non-object MiniDBGo stores), other types by kind.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "JSON null",
        other => type_name(other),
    }
}

/// Parses `value` as Go's `json.Unmarshal` would: bad UTF-8 bytes and unpaired surrogate
/// escapes become U+FFFD, duplicate members keep the last.
pub(crate) fn parse_go(value: &[u8]) -> Result<Value, serde_json::Error> {
    let text = go_lossy_utf8(value);
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => Ok(v),
        // serde_json refuses unpaired surrogates; Go replaces them. Only worth a second
        // parse when an escape is there at all.
        Err(e) if text.contains("\\u") => match replace_lone_surrogates(&text) {
            Cow::Owned(fixed) => serde_json::from_str(&fixed),
            Cow::Borrowed(_) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// `bytes` as text, each byte that does not begin a valid UTF-8 sequence replaced by one
/// U+FFFD, as Go's decoder does (`String::from_utf8_lossy` replaces a whole truncated
/// sequence by one U+FFFD instead, which would not give MiniDBGo's strings).
pub(crate) fn go_lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    let mut rest = match std::str::from_utf8(bytes) {
        Ok(s) => return Cow::Borrowed(s),
        Err(_) => bytes,
    };
    let mut out = String::with_capacity(bytes.len() + 8);
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                return Cow::Owned(out);
            }
            Err(e) => {
                let good = e.valid_up_to();
                // The prefix up to `valid_up_to` is valid UTF-8 by definition.
                out.push_str(&String::from_utf8_lossy(&rest[..good]));
                out.push('\u{FFFD}');
                rest = &rest[good + 1..];
            }
        }
    }
}

/// `text` with every `\uXXXX` escape of an unpaired surrogate replaced by `\uFFFD`.
fn replace_lone_surrogates(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `text` already in `out`
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                in_string = !in_string;
                i += 1;
            }
            b'\\' if in_string => {
                let Some(unit) = hex4(b, i) else {
                    i += 2; // a one-character escape (or a syntax error serde reports)
                    continue;
                };
                let len = if (0xD800..0xDC00).contains(&unit) {
                    match hex4(b, i + 6) {
                        Some(low) if (0xDC00..0xE000).contains(&low) => {
                            i += 12; // a proper pair
                            continue;
                        }
                        _ => 6,
                    }
                } else if (0xDC00..0xE000).contains(&unit) {
                    6
                } else {
                    i += 6;
                    continue;
                };
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str("\\uFFFD");
                i += len;
                copied = i;
            }
            _ => i += 1,
        }
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(text),
    }
}

/// The code unit of a `\uXXXX` escape starting at `at`, if there is one.
fn hex4(b: &[u8], at: usize) -> Option<u32> {
    let esc = b.get(at..at + 6)?;
    if esc[0] != b'\\' || esc[1] != b'u' {
        return None;
    }
    if !esc[2..].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let hex = std::str::from_utf8(&esc[2..]).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(key: &str, value: &[u8]) -> (String, String, Value) {
        match from_record(key.as_bytes(), value) {
            Outcome::Import {
                collection,
                id,
                json,
            } => (
                collection,
                id,
                serde_json::from_slice(&json).unwrap_or(Value::Null),
            ),
            Outcome::Skip(s) => panic!("{key} skipped: {s:?}"),
        }
    }

    fn skip(key: &[u8], value: &[u8]) -> Skipped {
        match from_record(key, value) {
            Outcome::Skip(s) => s,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn bad_bytes_become_one_replacement_each_as_in_go() {
        assert_eq!(go_lossy_utf8(b"caf\xe9"), "caf\u{FFFD}");
        // A truncated 4-byte sequence: Go gives one U+FFFD per byte; Rust's lossy gives one.
        assert_eq!(go_lossy_utf8(b"\xf0\x9f\x98A"), "\u{FFFD}\u{FFFD}\u{FFFD}A");
        assert_eq!(go_lossy_utf8(b"\xe0\x80x\xff"), "\u{FFFD}\u{FFFD}x\u{FFFD}");
        assert!(matches!(
            go_lossy_utf8("héllo 😀".as_bytes()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn unpaired_surrogates_become_replacements() {
        let v = parse_go(
            br#"{"a":"x\ud800y","b":"\udc00","c":"\ud83d\ude00","d":"\\ud800","e":"\ud800\u0041"}"#,
        )
        .unwrap_or(Value::Null);
        assert_eq!(
            v,
            json!({"a": "x\u{FFFD}y", "b": "\u{FFFD}", "c": "😀", "d": "\\ud800", "e": "\u{FFFD}A"})
        );
        assert!(parse_go(br#"{"a":"\ud800""#).is_err());
    }

    #[test]
    fn integers_stay_exact_and_the_last_duplicate_wins() {
        let (_, _, d) = doc(
            "docs:n",
            br#"{"u":18446744073709551615,"i":-9223372036854775808,"b":12345678901234567890,"a":1,"a":2}"#,
        );
        assert_eq!(d["u"].as_u64(), Some(u64::MAX));
        assert_eq!(d["i"].as_i64(), Some(i64::MIN));
        assert_eq!(d["b"].as_u64(), Some(12_345_678_901_234_567_890));
        assert_eq!(d["a"], json!(2));
        let text = serde_json::to_string(&d).unwrap_or_default();
        assert!(text.contains("18446744073709551615") && text.contains("12345678901234567890"));
    }

    #[test]
    fn id_comes_from_the_key_split_at_the_first_colon() {
        let (c, id, d) = doc("ns:sub:x", br#"{"_id":"other","v":1}"#);
        assert_eq!((c.as_str(), id.as_str()), ("ns", "sub:x"));
        assert_eq!(d, json!({"_id": "sub:x", "v": 1}));
        let (_, _, d) = doc("docs:no-id", br#"{"v":1}"#);
        assert_eq!(d["_id"], "no-id");
    }

    #[test]
    fn unimportable_records_are_skipped_with_the_reason() {
        let s = skip(b"docs:null-doc", b"null");
        assert_eq!(s.reason, SkipReason::NotAnObject);
        assert!(s.detail.contains("null"), "{}", s.detail);
        assert_eq!(skip(b"docs:a", b"[1]").reason, SkipReason::NotAnObject);
        let s = skip("my coll:sp".as_bytes(), b"{}");
        assert_eq!(s.reason, SkipReason::NotImportableName);
        assert!(s.detail.contains("collection"), "{}", s.detail);
        let s = skip("ưu_đãi:v1".as_bytes(), b"{}");
        assert_eq!(s.reason, SkipReason::NotImportableName);
        assert_eq!(s.key, "ưu_đãi:v1");
        let s = skip(b"docs:", b"{}");
        assert_eq!(s.reason, SkipReason::NotImportableName);
        assert!(s.detail.contains("_id"), "{}", s.detail);
        assert_eq!(skip(b"nocolon", b"{}").reason, SkipReason::NotADocumentKey);
        assert_eq!(skip(b"a\xff:b", b"{}").reason, SkipReason::NotADocumentKey);
        assert_eq!(skip(b"docs:x", b"{nope").reason, SkipReason::InvalidJson);
        let deep = format!("{}1{}", r#"{"a":"#.repeat(70), "}".repeat(70));
        assert_eq!(
            skip(b"docs:deep", deep.as_bytes()).reason,
            SkipReason::InvalidDocument
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_records_never_panic(
            key in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let _ = from_record(&key, &value);
        }

        #[test]
        fn escapes_anywhere_never_panic(text in r#"[{}\[\]"\\u:,dDfF0-9a ]{0,60}"#) {
            let _ = parse_go(text.as_bytes());
            // Each replaced escape is six bytes for six bytes.
            proptest::prop_assert_eq!(replace_lone_surrogates(&text).len(), text.len());
        }
    }

    #[test]
    fn dump_documents_need_a_string_id() {
        let ok = from_dump("users", 0, json!({"_id": "u1", "n": 1}));
        assert!(matches!(ok, Outcome::Import { ref id, .. } if id == "u1"));
        for (doc, reason) in [
            (json!({"n": 1}), SkipReason::MissingId),
            (json!({"_id": 7}), SkipReason::MissingId),
            (json!(null), SkipReason::NotAnObject),
            (json!({"_id": ""}), SkipReason::NotImportableName),
        ] {
            match from_dump("users", 3, doc) {
                Outcome::Skip(s) => assert_eq!(s.reason, reason, "{s:?}"),
                other => panic!("{other:?}"),
            }
        }
        match from_dump("my coll", 0, json!({"_id": "sp"})) {
            Outcome::Skip(s) => {
                assert_eq!(s.reason, SkipReason::NotImportableName);
                assert_eq!(s.key, "my coll:sp");
            }
            other => panic!("{other:?}"),
        }
    }
}
