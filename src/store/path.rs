//! Dot paths (`a.b.0`) into documents, shared by filters and updates.

use serde_json::Value;

use super::document::MAX_DEPTH;

/// Why a dot path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path, or one of its segments, is empty (`""`, `"a..b"`, `"a."`).
    EmptySegment,
    /// More segments than a document can be deep ([`MAX_DEPTH`]): no document has such a
    /// field, and building one (`$set`) would nest deeper than the limit.
    TooManySegments,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::EmptySegment => f.write_str("has an empty segment"),
            PathError::TooManySegments => write!(
                f,
                "has more than {MAX_DEPTH} segments (the document depth limit)"
            ),
        }
    }
}

/// Splits a dot path into its segments, refusing empty segments and paths longer than the
/// document depth limit. The segment count is checked before anything is allocated.
pub fn split_path(path: &str) -> Result<Vec<String>, PathError> {
    if path.bytes().filter(|&b| b == b'.').count() >= MAX_DEPTH {
        return Err(PathError::TooManySegments);
    }
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(PathError::EmptySegment);
    }
    Ok(segments)
}

/// The array index a segment names: plain ASCII digits only (no sign, no spaces).
pub fn array_index(segment: &str) -> Option<usize> {
    if segment.bytes().all(|b| b.is_ascii_digit()) {
        segment.parse().ok()
    } else {
        None
    }
}

/// The value at `path` in `doc`: object fields by name, array elements by index.
pub fn lookup<'a>(doc: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => array_index(seg).and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Mutable access to the value at `path` in `doc`, like [`lookup`].
pub fn lookup_mut<'a>(doc: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(doc, |v, seg| match v {
        Value::Object(m) => m.get_mut(seg),
        Value::Array(a) => array_index(seg).and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split() {
        assert_eq!(split_path("a.b"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(split_path("a"), Ok(vec!["a".into()]));
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert_eq!(split_path(bad), Err(PathError::EmptySegment), "{bad}");
        }
        let longest = vec!["p"; MAX_DEPTH].join(".");
        assert_eq!(split_path(&longest).map(|p| p.len()), Ok(MAX_DEPTH));
        let too_long = vec!["p"; MAX_DEPTH + 1].join(".");
        assert_eq!(split_path(&too_long), Err(PathError::TooManySegments));
        let attack = vec!["p"; 15_000].join(".");
        assert_eq!(split_path(&attack), Err(PathError::TooManySegments));
        assert!(PathError::TooManySegments.to_string().contains("64"));
    }

    #[test]
    fn index() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        for bad in ["", "+1", "-1", " 1", "a", "99999999999999999999999"] {
            assert_eq!(array_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn lookups() {
        let doc = json!({"a": {"b": [10, {"c": 3}]}, "x.y": 1});
        let at = |p: &str| lookup(&doc, &split_path(p).unwrap_or_default()).cloned();
        assert_eq!(at("a.b.0"), Some(json!(10)));
        assert_eq!(at("a.b.1.c"), Some(json!(3)));
        assert_eq!(at("a.b.2"), None);
        assert_eq!(at("a.b.x"), None);
        assert_eq!(at("a.b.0.z"), None);
        assert_eq!(at("x.y"), None);
        let mut doc = doc;
        if let Some(v) = lookup_mut(&mut doc, &["a".into(), "b".into(), "0".into()]) {
            *v = json!(11);
        }
        assert_eq!(doc["a"]["b"][0], json!(11));
    }
}
