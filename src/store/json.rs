//! The one JSON parser for everything a client sends: documents, filters, updates,
//! `_insertMany` arrays and dump lines.
//!
//! On top of `serde_json` it refuses what `serde_json` would silently change:
//! * integer literals outside the 64-bit range (`serde_json` rounds them to a float, so
//!   10^30 would be stored as `1e30`): refused, naming the number;
//! * duplicate object keys (`serde_json` keeps the last one): refused at any depth, naming
//!   the key;
//!
//! and it bounds nesting before anything is built: a linear scan of the raw bytes (no
//! recursion, tracking string state) refuses input nested deeper than [`MAX_JSON_DEPTH`],
//! so the value built afterwards, and every recursive walk or drop of it, stays shallow.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays and objects in any request body. Documents are further limited
/// to [`super::document::MAX_DEPTH`]; a filter needs a few levels more than the documents
/// it matches (`{"$or": [{"a": {"$eq": …}}]}`).
/// serde_json's own recursion limit (128) stays out of reach.
pub const MAX_JSON_DEPTH: usize = 100;

/// Longest number literal quoted in an error message.
const SHOWN_DIGITS: usize = 40;

/// Why a JSON text was refused; the message says where and what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// Not JSON, or trailing data (serde_json's message, with line and column).
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// Nested deeper than [`MAX_JSON_DEPTH`].
    #[error("nested deeper than {MAX_JSON_DEPTH} levels (at byte {offset})")]
    TooDeep {
        /// Byte offset of the bracket that went too deep.
        offset: usize,
    },
    /// An integer literal outside the i64/u64 range.
    #[error(
        "integer {shown} at byte {offset} is outside the 64-bit range \
         (-9223372036854775808 to 18446744073709551615) and would lose precision; \
         send it as a string, or as a float (with a decimal point or an exponent)"
    )]
    IntegerOutOfRange {
        /// The literal (cut after 40 digits).
        shown: String,
        /// Byte offset of the literal.
        offset: usize,
    },
    /// The same key twice in one object.
    #[error("duplicate key {key} in an object ({at})")]
    DuplicateKey {
        /// The key, quoted (and cut to a readable length).
        key: String,
        /// Where serde_json was (line and column).
        at: String,
    },
}

/// Parses `bytes` as one JSON value, refusing deep nesting, out-of-range integers and
/// duplicate keys (see the module documentation).
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    scan(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = ValueSeed.deserialize(&mut de).map_err(|e| classify(&e))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Marker put in front of duplicate-key messages, so they can be told from syntax errors.
const DUPLICATE: &str = "\u{0}duplicate key ";

fn classify(e: &serde_json::Error) -> JsonError {
    let msg = e.to_string();
    match msg.strip_prefix(DUPLICATE) {
        Some(rest) => {
            let at = format!("line {} column {}", e.line(), e.column());
            let key = rest
                .rsplit_once(" at line ")
                .map_or(rest, |(k, _)| k)
                .to_string();
            JsonError::DuplicateKey { key, at }
        }
        None => JsonError::Syntax(msg),
    }
}

/// One pass over the raw bytes: nesting depth and integer literals, outside strings.
/// Malformed input is left for serde_json to describe.
fn scan(bytes: &[u8]) -> Result<(), JsonError> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(JsonError::TooDeep { offset: i });
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut integer = true;
                while i < bytes.len() {
                    match bytes[i] {
                        b'0'..=b'9' | b'-' | b'+' => {}
                        b'.' | b'e' | b'E' => integer = false,
                        _ => break,
                    }
                    i += 1;
                }
                if integer {
                    check_integer(&bytes[start..i], start)?;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Refuses a well-formed integer literal that fits neither i64 nor u64.
fn check_integer(lit: &[u8], offset: usize) -> Result<(), JsonError> {
    let Ok(text) = std::str::from_utf8(lit) else {
        return Ok(());
    };
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(()); // not a number serde_json accepts; it reports the syntax error
    }
    let fits = if text.starts_with('-') {
        text.parse::<i64>().is_ok()
    } else {
        text.parse::<u64>().is_ok()
    };
    if fits {
        return Ok(());
    }
    let shown = match text.char_indices().nth(SHOWN_DIGITS) {
        Some((cut, _)) => format!("{}... ({} digits)", &text[..cut], digits.len()),
        None => text.to_string(),
    };
    Err(JsonError::IntegerOutOfRange { shown, offset })
}

/// Builds a [`Value`] like serde_json's own `Deserialize`, but refuses duplicate keys.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        ValueSeed.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE}{}",
                    super::error::preview(&key)
                )));
            }
            let v = map.next_value_seed(ValueSeed)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn err(text: &str) -> JsonError {
        match parse(text.as_bytes()) {
            Err(e) => e,
            Ok(v) => panic!("{text:?} should be refused, parsed as {v}"),
        }
    }

    #[test]
    fn plain_json_parses_as_serde_json_does() {
        for text in [
            "{}",
            "[]",
            "null",
            "true",
            " 1 ",
            "-0",
            "1.5e300",
            "-9223372036854775808",
            "18446744073709551615",
            "1e30",
            "123456789012345678901234567890.0",
            r#"{"a":[1,{"b":"\"x\\"}],"c":null,"d":"1e999999999999999999999"}"#,
            r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#,
            r#""\u00e9 \ud83d\ude00""#,
        ] {
            let want: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parse(text.as_bytes()), Ok(want), "{text}");
        }
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_with_the_number() {
        let e = err(r#"{"n": 1000000000000000000000000000000}"#).to_string();
        assert!(e.contains("1000000000000000000000000000000"), "{e}");
        assert!(e.contains("string"), "{e}");
        assert!(err("18446744073709551616")
            .to_string()
            .contains("18446744073709551616"));
        assert!(matches!(
            err("[-9223372036854775809]"),
            JsonError::IntegerOutOfRange { offset: 1, .. }
        ));
        let long = "9".repeat(10_000);
        let e = err(&long).to_string();
        assert!(e.contains("10000 digits") && e.len() < 400, "{e}");
        // Inside strings, digits are text.
        assert_eq!(
            parse(br#"{"n":"100000000000000000000000000000"}"#),
            Ok(json!({"n": "100000000000000000000000000000"}))
        );
        assert_eq!(
            parse(br#"{"k\"1000000000000000000000":1}"#),
            Ok(json!({"k\"1000000000000000000000": 1}))
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = err(r#"{"_id":"a","_id":"b"}"#);
        assert!(
            matches!(&e, JsonError::DuplicateKey { key, .. } if key == "\"_id\""),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"_id\""), "{e}");
        let e = err(r#"{"a":[{"x":1},{"y":{"z":1,"z":2}}]}"#).to_string();
        assert!(e.contains("\"z\"") && e.contains("line 1"), "{e}");
        // Escapes are decoded before comparing.
        assert!(matches!(
            err(r#"{"a":1,"\u0061":2}"#),
            JsonError::DuplicateKey { .. }
        ));
        // The same key in different objects is fine.
        assert!(parse(br#"{"a":{"a":1},"b":{"a":2}}"#).is_ok());
    }

    #[test]
    fn nesting_is_bounded_before_parsing() {
        let ok = "[".repeat(MAX_JSON_DEPTH) + &"]".repeat(MAX_JSON_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_JSON_DEPTH + 1) + &"]".repeat(MAX_JSON_DEPTH + 1);
        assert_eq!(
            parse(deep.as_bytes()),
            Err(JsonError::TooDeep {
                offset: MAX_JSON_DEPTH
            })
        );
        let huge = "{\"a\":".repeat(1_000_000);
        assert!(matches!(
            parse(huge.as_bytes()),
            Err(JsonError::TooDeep { .. })
        ));
        // Brackets inside strings do not count.
        let text = format!("[\"{}\"]", "[".repeat(1000));
        assert!(parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn syntax_errors_keep_serde_json_messages() {
        for text in [
            "",
            "{",
            "{\"a\" 1}",
            "[1,]",
            "1 2",
            "\"unterminated",
            "-",
            "01",
            "1e",
        ] {
            assert!(matches!(err(text), JsonError::Syntax(_)), "{text:?}");
        }
    }

    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            "[a-z\\\\\"\\[\\]{}0-9 ]{0,8}"
                .prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        ];
        leaf.prop_recursive(6, 64, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::btree_map("[a-c0-9\"\\\\]{0,3}", inner, 0..5).prop_map(|m| {
                    let fields: Vec<String> = m
                        .into_iter()
                        .map(|(k, v)| {
                            format!("{}:{v}", serde_json::to_string(&k).unwrap_or_default())
                        })
                        .collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn equals_serde_json_on_valid_input(text in json_text()) {
            let want: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parse(text.as_bytes()), Ok(want));
        }

        #[test]
        fn never_panics_and_agrees_on_acceptance(bytes in prop::collection::vec(
            prop::sample::select(b"{}[]\":,-0123456789.eE+ \\abtnul".to_vec()), 0..64)) {
            match parse(&bytes) {
                Ok(v) => prop_assert_eq!(Ok(v), serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string())),
                Err(JsonError::Syntax(_)) => prop_assert!(serde_json::from_slice::<Value>(&bytes).is_err()),
                Err(_) => {}
            }
        }
    }
}
