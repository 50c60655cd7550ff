//! The dump line format: one `{"collection": ..., "doc": ...}` JSON object per line.

use serde::Serialize;
use serde_json::Value;

use super::document::{id_of, prepare_insert, type_name};
use super::error::{preview, Result, StoreError};
use super::name::validate_collection;

/// One parsed dump line: a document and the collection it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpRecord {
    /// The (validated) collection name.
    pub collection: String,
    /// The (validated) document, an object with a string `_id`.
    pub doc: Value,
}

impl DumpRecord {
    /// The document's `_id` (validated at parse time).
    pub fn id(&self) -> Result<&str> {
        id_of(&self.doc)
    }
}

/// The borrowed form written by [`encode_line`].
#[derive(Serialize)]
struct LineRef<'a> {
    collection: &'a str,
    doc: &'a Value,
}

/// Encodes one dump line (without the trailing newline), validating its parts.
pub fn encode_line(collection: &str, doc: &Value) -> Result<String> {
    validate_record(collection, doc)?;
    serde_json::to_string(&LineRef { collection, doc })
        .map_err(|e| StoreError::InvalidDocument(e.to_string()))
}

/// Parses line `line_no` (1-based, for errors) of a dump into a validated record.
///
/// Blank lines are errors too; callers that want to skip them should do so first.
pub fn parse_line(line_no: usize, line: &str) -> Result<DumpRecord> {
    let at_line = |reason: String| StoreError::InvalidDumpLine {
        line: line_no,
        reason,
    };
    let expected = |why: String| {
        at_line(format!(
            "expected {{\"collection\": ..., \"doc\": ...}}: {why}"
        ))
    };
    let value = super::json::parse(line.as_bytes()).map_err(|e| expected(e.to_string()))?;
    let Value::Object(mut fields) = value else {
        return Err(expected(format!("got {}", type_name(&value))));
    };
    if let Some(other) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "collection" | "doc"))
    {
        return Err(expected(format!("unknown field {}", preview(other))));
    }
    let collection = match fields.remove("collection") {
        Some(Value::String(c)) => c,
        Some(other) => return Err(expected(format!("collection is {}", type_name(&other)))),
        None => return Err(expected("missing field `collection`".into())),
    };
    let doc = fields
        .remove("doc")
        .ok_or_else(|| expected("missing field `doc`".into()))?;
    validate_record(&collection, &doc).map_err(|e| at_line(e.to_string()))?;
    Ok(DumpRecord { collection, doc })
}

/// Checks the collection name and the document (object, depth, string `_id` that is not
/// reserved).
fn validate_record(collection: &str, doc: &Value) -> Result<()> {
    validate_collection(collection)?;
    prepare_insert(doc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(line: &str) -> String {
        match parse_line(3, line) {
            Err(StoreError::InvalidDumpLine { line: 3, reason }) => reason,
            other => panic!("{line:?} should be rejected at line 3, got {other:?}"),
        }
    }

    #[test]
    fn roundtrip() {
        let doc = json!({"_id": "k\n1", "v": [1, {"w": "x"}]});
        let line = encode_line("users", &doc).unwrap_or_default();
        assert!(!line.contains('\n'));
        let record = parse_line(1, &line).ok();
        assert_eq!(
            record,
            Some(DumpRecord {
                collection: "users".into(),
                doc: doc.clone()
            })
        );
        assert_eq!(record.as_ref().and_then(|r| r.id().ok()), Some("k\n1"));
    }

    #[test]
    fn encode_validates() {
        assert!(encode_line("_bad", &json!({"_id": "k"})).is_err());
        assert!(encode_line("ok", &json!({"v": 1})).is_err());
        assert!(encode_line("ok", &json!([1])).is_err());
    }

    #[test]
    fn errors_name_the_line_and_cause() {
        assert!(reason("").contains("expected"));
        assert!(reason("not json").contains("expected"));
        assert!(reason("[]").contains("expected"));
        assert!(reason(r#"{"collection": "a"}"#).contains("doc"));
        assert!(reason(r#"{"collection": "a", "doc": {"_id": "k"}, "x": 1}"#).contains("x"));
        assert!(reason(r#"{"collection": "a b", "doc": {"_id": "k"}}"#).contains("collection"));
        assert!(reason(r#"{"collection": "a", "doc": {"_id": 1}}"#).contains("_id"));
        assert!(reason(r#"{"collection": "a", "doc": {"v": 1}}"#).contains("_id"));
        assert!(reason(r#"{"collection": "a", "doc": {"_id": ""}}"#).contains("_id"));
        assert!(reason(r#"{"collection": "a", "doc": {"_id": "_count"}}"#)
            .contains("ids starting with '_' are reserved"));
        assert!(reason(r#"{"collection": "a", "doc": 5}"#).contains("object"));
        let deep = format!(
            r#"{{"collection": "a", "doc": {{"_id": "k", "v": {}1{}}}}}"#,
            "[".repeat(70),
            "]".repeat(70)
        );
        assert!(reason(&deep).contains("deeper"));
        let err = parse_line(9, "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("line 9: "), "{err}");
    }

    #[test]
    fn tolerates_surrounding_whitespace() {
        assert!(parse_line(1, "  {\"collection\":\"a\",\"doc\":{\"_id\":\"k\"}}\r").is_ok());
    }
}
