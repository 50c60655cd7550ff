//! Dot paths (`a.b.0`) into documents, shared by filters and updates.

use serde_json::Value;

/// Splits a dot path into its segments; `None` if the path or any segment is empty.
pub fn split_path(path: &str) -> Option<Vec<String>> {
    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
    segments.iter().all(|s| !s.is_empty()).then_some(segments)
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
        assert_eq!(split_path("a.b"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(split_path("a"), Some(vec!["a".into()]));
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
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
