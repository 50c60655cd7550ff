//! Document validation and `_id` helpers.
//!
//! Nesting depth counts objects and arrays: a scalar has depth 0, `{"a": 1}` depth 1,
//! `{"a": [1]}` depth 2. Documents deeper than [`MAX_DEPTH`] are rejected. The depth is
//! measured iteratively, so even a value built in memory (not parsed) cannot overflow the
//! stack here. Note that `serde_json` refuses to parse input nested deeper than 128 levels
//! on its own (its recursion limit), so parsed values reach us at most 128 deep.

use serde_json::{Map, Value};

use super::error::{Result, StoreError};
use super::name::{validate_id, validate_new_id};

/// The field holding a document's identity.
pub const ID_FIELD: &str = "_id";

/// Deepest nesting of objects and arrays a document may have.
pub const MAX_DEPTH: usize = 64;

/// Nesting depth of `value`, counting at most to `limit + 1` (iterative, never recursive).
pub fn depth_capped(value: &Value, limit: usize) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let d = d + 1;
        match v {
            Value::Object(m) => stack.extend(m.values().map(|c| (c, d))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d))),
            _ => continue,
        }
        max = max.max(d);
        if max > limit {
            break;
        }
    }
    max
}

/// Checks that `doc` is a JSON object nested at most [`MAX_DEPTH`] levels.
pub fn validate_document(doc: &Value) -> Result<()> {
    if !doc.is_object() {
        return Err(StoreError::InvalidDocument(format!(
            "must be a JSON object, got {}",
            type_name(doc)
        )));
    }
    if depth_capped(doc, MAX_DEPTH) > MAX_DEPTH {
        return Err(StoreError::InvalidDocument(format!(
            "nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(())
}

/// The document's `_id`, which must be present, a string, and a valid id.
pub fn id_of(doc: &Value) -> Result<&str> {
    match doc.get(ID_FIELD) {
        None => Err(StoreError::InvalidDocument("missing string _id".into())),
        Some(Value::String(id)) => validate_id(id).map(|()| id.as_str()),
        Some(other) => Err(StoreError::InvalidDocument(format!(
            "_id must be a string, got {}",
            type_name(other)
        ))),
    }
}

/// Validates a document for insert (POST, `_insertMany`, restore) and returns its `_id`,
/// which must not be reserved.
pub fn prepare_insert(doc: &Value) -> Result<&str> {
    validate_document(doc)?;
    let id = id_of(doc)?;
    validate_new_id(id)?;
    Ok(id)
}

/// Validates a document for upsert (PUT) under `id` from the URL and sets its `_id`.
///
/// A body `_id` that differs from `id` (in value or type) is rejected, and so is a
/// reserved `id`.
pub fn prepare_put(doc: &mut Value, id: &str) -> Result<()> {
    validate_new_id(id)?;
    validate_document(doc)?;
    let map: &mut Map<String, Value> = match doc.as_object_mut() {
        Some(m) => m,
        None => return Err(StoreError::InvalidDocument("must be a JSON object".into())),
    };
    match map.get(ID_FIELD) {
        None => {
            map.insert(ID_FIELD.to_owned(), Value::String(id.to_owned()));
        }
        Some(Value::String(body)) if body == id => {}
        Some(other) => {
            return Err(StoreError::InvalidDocument(format!(
                "body _id {other} differs from the URL's {id:?}"
            )))
        }
    }
    Ok(())
}

/// A short name for a JSON value's type, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `{"a": {"a": ... 1}}` with `levels` objects.
    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth_capped(&json!(1), 100), 0);
        assert_eq!(depth_capped(&json!({}), 100), 1);
        assert_eq!(depth_capped(&json!({"a": 1}), 100), 1);
        assert_eq!(depth_capped(&json!({"a": [1]}), 100), 2);
        assert_eq!(depth_capped(&json!({"a": [[], {"b": {}}]}), 100), 4);
        assert_eq!(depth_capped(&nested(10), 100), 10);
        assert_eq!(depth_capped(&nested(10), 3), 4);
    }

    #[test]
    fn depth_limit() {
        assert!(validate_document(&nested(64)).is_ok());
        assert!(matches!(
            validate_document(&nested(65)),
            Err(StoreError::InvalidDocument(m)) if m.contains("64")
        ));
    }

    #[test]
    fn very_deep_value_does_not_overflow() {
        // Built in memory, beyond what serde_json would parse.
        let mut v = json!(1);
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(depth_capped(&v, MAX_DEPTH), MAX_DEPTH + 1);
        // Dismantle iteratively: serde_json's Drop for Value is recursive.
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn serde_json_parse_limit() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(serde_json::from_str::<Value>(&deep).is_err());
    }

    #[test]
    fn must_be_object() {
        for v in [json!(null), json!(1), json!("x"), json!([{}])] {
            assert!(matches!(
                validate_document(&v),
                Err(StoreError::InvalidDocument(_))
            ));
        }
    }

    #[test]
    fn insert_needs_string_id() {
        assert_eq!(prepare_insert(&json!({"_id": "k", "v": 1})).ok(), Some("k"));
        assert!(prepare_insert(&json!({"v": 1})).is_err());
        assert!(prepare_insert(&json!({"_id": 5})).is_err());
        assert!(matches!(
            prepare_insert(&json!({"_id": ""})),
            Err(StoreError::InvalidId(_))
        ));
        assert!(prepare_insert(&json!([1])).is_err());
    }

    #[test]
    fn put_sets_and_checks_id() {
        let mut doc = json!({"v": 1});
        assert!(prepare_put(&mut doc, "k").is_ok());
        assert_eq!(doc, json!({"_id": "k", "v": 1}));

        let mut same = json!({"_id": "k"});
        assert!(prepare_put(&mut same, "k").is_ok());

        let mut other = json!({"_id": "j"});
        assert!(prepare_put(&mut other, "k").is_err());
        assert_eq!(other, json!({"_id": "j"}));

        let mut typed = json!({"_id": 1});
        assert!(prepare_put(&mut typed, "1").is_err());

        assert!(prepare_put(&mut json!({}), "").is_err());
        assert!(prepare_put(&mut json!("x"), "k").is_err());
    }
}
