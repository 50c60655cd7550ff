//! Partial updates: `{"$set": {...}, "$unset": {...}, "$inc": {...}}`.
//!
//! Paths are dot paths; `$set` and `$inc` create missing intermediate objects and may
//! address existing array elements by index. `$unset` removes an object field (or sets an
//! array element to `null`) and ignores its argument. `$inc` treats a missing field as 0;
//! integer + integer stays an integer (overflow is an error), anything with a float gives
//! a float. No path may touch `_id`, and no path may appear twice or inside another.

use serde_json::{Map, Number, Value};

use super::document::{depth_capped, type_name, validate_document, ID_FIELD, MAX_DEPTH};
use super::error::{preview, Result, StoreError};
use super::path::{array_index, lookup_mut, split_path};

/// A parsed update, applied with [`Update::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    changes: Vec<Change>,
}

/// One path and what to do there.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    path: Vec<String>,
    shown: String,
    action: Action,
}

#[derive(Debug, Clone, PartialEq)]
enum Action {
    Set(Value),
    Unset,
    Inc(Number),
}

impl Update {
    /// Parses an update document; errors name the bad operator or path.
    pub fn parse(update: &Value) -> Result<Self> {
        let Value::Object(ops) = update else {
            return Err(invalid(format!(
                "must be a JSON object, got {}",
                type_name(update)
            )));
        };
        if ops.is_empty() {
            return Err(invalid(
                "needs at least one operator ($set, $unset, $inc)".into(),
            ));
        }
        let mut changes = Vec::new();
        for (op, fields) in ops {
            parse_operator(op, fields, &mut changes)?;
        }
        check_conflicts(&changes)?;
        Ok(Self { changes })
    }

    /// Applies the update to `doc`; on error `doc` is left unchanged.
    pub fn apply(&self, doc: &mut Value) -> Result<()> {
        let mut next = doc.clone();
        for change in &self.changes {
            change.apply(&mut next)?;
        }
        validate_document(&next).map_err(|e| match e {
            StoreError::InvalidDocument(m) => invalid(format!("updated document: {m}")),
            other => other,
        })?;
        *doc = next;
        Ok(())
    }
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidUpdate(msg)
}

fn parse_operator(op: &str, fields: &Value, out: &mut Vec<Change>) -> Result<()> {
    if !matches!(op, "$set" | "$unset" | "$inc") {
        return Err(invalid(if op.starts_with('$') {
            format!("unknown operator {op:?}")
        } else {
            format!("expected an operator such as $set, found the field {op:?}")
        }));
    }
    let Value::Object(fields) = fields else {
        return Err(invalid(format!(
            "{op} needs an object of paths, got {}",
            type_name(fields)
        )));
    };
    if fields.is_empty() {
        return Err(invalid(format!("{op} needs at least one path")));
    }
    for (raw, arg) in fields {
        // Paths are quoted in messages cut to a readable length.
        let shown = preview(raw);
        let path = split_path(raw).map_err(|e| invalid(format!("path {shown} {e}")))?;
        if path.first().is_some_and(|first| first == ID_FIELD) {
            return Err(invalid(format!("{op} on {shown}: _id cannot be changed")));
        }
        let action = match (op, arg) {
            // Every segment is one level of nesting, so the result's depth is known now,
            // before anything is built.
            ("$set", value) if path.len() + depth_capped(value, MAX_DEPTH) > MAX_DEPTH => {
                return Err(invalid(format!(
                    "$set on {shown}: the path ({} segments) and the value would nest the \
                     document deeper than {MAX_DEPTH} levels",
                    path.len()
                )))
            }
            ("$set", value) => Action::Set(value.clone()),
            ("$unset", _) => Action::Unset,
            ("$inc", Value::Number(by)) => Action::Inc(by.clone()),
            (_, other) => {
                return Err(invalid(format!(
                    "$inc on {shown} needs a number, got {}",
                    type_name(other)
                )))
            }
        };
        out.push(Change {
            path,
            shown,
            action,
        });
    }
    Ok(())
}

/// Rejects a path given twice, or one path inside another (`a` and `a.b`).
fn check_conflicts(changes: &[Change]) -> Result<()> {
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    // In sorted order, a path and anything under it are adjacent.
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.path.starts_with(&a.path) {
                return Err(invalid(if a.path == b.path {
                    format!("path {} appears in more than one operator", a.shown)
                } else {
                    format!("paths {} and {} conflict", a.shown, b.shown)
                }));
            }
        }
    }
    Ok(())
}

impl Change {
    fn apply(&self, doc: &mut Value) -> Result<()> {
        let Some((last, parents)) = self.path.split_last() else {
            return Ok(());
        };
        if let Action::Unset = self.action {
            match lookup_mut(doc, parents) {
                Some(Value::Object(m)) => {
                    m.remove(last);
                }
                Some(Value::Array(a)) => {
                    if let Some(slot) = array_index(last).and_then(|i| a.get_mut(i)) {
                        *slot = Value::Null;
                    }
                }
                _ => {}
            }
            return Ok(());
        }
        let container = self.container(doc, parents)?;
        let new = match &self.action {
            Action::Set(value) => value.clone(),
            Action::Inc(by) => match slot(container, last) {
                None => Value::Number(by.clone()),
                Some(Value::Number(n)) => Value::Number(self.add(n, by)?),
                Some(other) => {
                    return Err(invalid(format!(
                        "$inc on {} needs a numeric field, found {}",
                        self.shown,
                        type_name(other)
                    )))
                }
            },
            Action::Unset => return Ok(()),
        };
        match container {
            Value::Object(m) => {
                m.insert(last.clone(), new);
            }
            Value::Array(a) => match array_index(last).and_then(|i| a.get_mut(i)) {
                Some(slot) => *slot = new,
                None => return Err(self.not_an_object(last)),
            },
            _ => return Err(self.not_an_object(last)),
        }
        Ok(())
    }

    /// Walks `parents`, creating missing objects, to the value that holds the last segment.
    fn container<'a>(&self, doc: &'a mut Value, parents: &[String]) -> Result<&'a mut Value> {
        let mut cur = doc;
        for seg in parents {
            cur = match cur {
                Value::Object(m) => m
                    .entry(seg.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                Value::Array(a) => match array_index(seg).and_then(|i| a.get_mut(i)) {
                    Some(v) => v,
                    None => return Err(self.not_an_object(seg)),
                },
                _ => return Err(self.not_an_object(seg)),
            };
        }
        Ok(cur)
    }

    fn not_an_object(&self, seg: &str) -> StoreError {
        invalid(format!(
            "cannot reach {} on path {}: its parent is not an object (or the index is out of range)",
            preview(seg),
            self.shown
        ))
    }

    /// `a + b`, exact for integers (overflow is an error), float otherwise.
    fn add(&self, a: &Number, b: &Number) -> Result<Number> {
        let int = |n: &Number| {
            n.as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
        };
        if let (Some(x), Some(y)) = (int(a), int(b)) {
            let sum = x + y;
            return i64::try_from(sum)
                .map(Number::from)
                .or_else(|_| u64::try_from(sum).map(Number::from))
                .map_err(|_| invalid(format!("$inc on {} overflows", self.shown)));
        }
        a.as_f64()
            .zip(b.as_f64())
            .and_then(|(x, y)| Number::from_f64(x + y))
            .ok_or_else(|| invalid(format!("$inc on {} is not a finite number", self.shown)))
    }
}

/// The current value of `last` inside `container`, if any.
fn slot<'a>(container: &'a Value, last: &str) -> Option<&'a Value> {
    match container {
        Value::Object(m) => m.get(last),
        Value::Array(a) => array_index(last).and_then(|i| a.get(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn applied(update: Value, mut doc: Value) -> Value {
        match Update::parse(&update).and_then(|u| u.apply(&mut doc)) {
            Ok(()) => doc,
            Err(e) => panic!("{update} should apply: {e}"),
        }
    }

    fn parse_error(update: Value) -> String {
        match Update::parse(&update) {
            Err(StoreError::InvalidUpdate(m)) => m,
            other => panic!("{update} should be rejected, got {other:?}"),
        }
    }

    fn apply_error(update: Value, doc: Value) -> String {
        let mut after = doc.clone();
        let result = Update::parse(&update).and_then(|u| u.apply(&mut after));
        assert_eq!(after, doc, "document changed by a failed update");
        match result {
            Err(StoreError::InvalidUpdate(m)) => m,
            other => panic!("{update} should fail, got {other:?}"),
        }
    }

    #[test]
    fn set_unset_inc() {
        let doc = json!({"_id": "k", "a": 1, "b": {"c": 2}, "l": [1, 2]});
        assert_eq!(
            applied(json!({"$set": {"a": "x", "b.d": true}}), doc.clone()),
            json!({"_id": "k", "a": "x", "b": {"c": 2, "d": true}, "l": [1, 2]})
        );
        assert_eq!(
            applied(
                json!({"$set": {"n.m.o": 1}, "$unset": {"b.c": ""}}),
                doc.clone()
            ),
            json!({"_id": "k", "a": 1, "b": {}, "l": [1, 2], "n": {"m": {"o": 1}}})
        );
        assert_eq!(
            applied(
                json!({"$unset": {"zz": 1, "b.zz": 1, "a.x": 1, "l.0": 1}}),
                doc.clone()
            ),
            json!({"_id": "k", "a": 1, "b": {"c": 2}, "l": [null, 2]})
        );
        assert_eq!(
            applied(
                json!({"$set": {"l.1": 5}, "$inc": {"a": 2, "new": 3, "b.c": 0.5}}),
                doc
            ),
            json!({"_id": "k", "a": 3, "b": {"c": 2.5}, "l": [1, 5], "new": 3})
        );
    }

    #[test]
    fn inc_numbers() {
        let inc = |start: Value, by: Value| {
            applied(json!({"$inc": {"n": by}}), json!({"n": start}))["n"].clone()
        };
        assert_eq!(inc(json!(1), json!(2)), json!(3));
        assert!(inc(json!(1), json!(2)).is_i64());
        assert_eq!(inc(json!(1), json!(0.5)), json!(1.5));
        assert_eq!(inc(json!(1.5), json!(1)), json!(2.5));
        assert_eq!(
            inc(json!(i64::MAX), json!(1)),
            json!(9223372036854775808_u64)
        );
        assert_eq!(inc(json!(u64::MAX), json!(-1)), json!(u64::MAX - 1));
        assert_eq!(inc(json!(i64::MIN + 1), json!(-1)), json!(i64::MIN));
        assert!(
            apply_error(json!({"$inc": {"n": 1}}), json!({"n": u64::MAX})).contains("overflow")
        );
        assert!(
            apply_error(json!({"$inc": {"n": -1}}), json!({"n": i64::MIN})).contains("overflow")
        );
        assert!(apply_error(json!({"$inc": {"n": 1e308}}), json!({"n": 1e308})).contains("finite"));
        assert!(apply_error(json!({"$inc": {"n": 1}}), json!({"n": "1"})).contains("numeric"));
    }

    #[test]
    fn failed_apply_leaves_document_unchanged() {
        let doc = json!({"a": 1, "s": "x", "l": [1]});
        apply_error(json!({"$set": {"a": 2}, "$inc": {"s": 1}}), doc.clone());
        apply_error(json!({"$set": {"s.x": 1}}), doc.clone());
        apply_error(json!({"$set": {"l.5": 1}}), doc.clone());
        apply_error(json!({"$set": {"l.x.y": 1}}), doc.clone());
        apply_error(json!({"$set": {"a": 1}}), json!([1]));
        let mut deep = json!(1);
        for _ in 0..63 {
            deep = json!({ "x": deep });
        }
        assert!(apply_error(json!({"$set": {"b.c": deep}}), doc).contains("deeper"));
    }

    #[test]
    fn parse_errors() {
        assert!(parse_error(json!({})).contains("at least one"));
        assert!(parse_error(json!([])).contains("object"));
        assert!(parse_error(json!({"$push": {"a": 1}})).contains(r#""$push""#));
        assert!(parse_error(json!({"a": 1})).contains(r#""a""#));
        assert!(parse_error(json!({"$set": 1})).contains("$set"));
        assert!(parse_error(json!({"$set": {}})).contains("$set"));
        assert!(parse_error(json!({"$set": {"_id": "x"}})).contains("_id"));
        assert!(parse_error(json!({"$unset": {"_id.a": 1}})).contains("_id"));
        assert!(parse_error(json!({"$inc": {"a": "1"}})).contains("number"));
        assert!(parse_error(json!({"$set": {"a..b": 1}})).contains("a..b"));
        assert!(parse_error(json!({"$set": {"a": 1}, "$inc": {"a": 1}})).contains("more than one"));
        assert!(parse_error(json!({"$set": {"a.b": 1}, "$unset": {"a": 1}})).contains("conflict"));
        assert!(parse_error(json!({"$set": {"a": 1, "a.b.c": 1}})).contains("conflict"));
        // Not a conflict: "a" is not a segment prefix of "ab".
        assert!(Update::parse(&json!({"$set": {"a": 1, "ab": 1, "a0": 1}})).is_ok());
    }

    fn small_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-b]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            let key = prop::sample::select(vec![
                "a", "b", "0", "a.b", "a.0", "_id", "$set", "$inc", "$unset",
            ]);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(key.prop_map(String::from), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_and_failures_change_nothing(update in small_json(), doc in small_json()) {
            if let Ok(u) = Update::parse(&update) {
                let mut after = doc.clone();
                if u.apply(&mut after).is_err() {
                    prop_assert_eq!(after, doc);
                }
            }
        }

        #[test]
        fn integer_inc_is_exact(a in any::<i64>(), b in any::<i64>()) {
            let mut doc = json!({"n": a});
            let result = Update::parse(&json!({"$inc": {"n": b}})).and_then(|u| u.apply(&mut doc));
            let sum = i128::from(a) + i128::from(b);
            match (i64::try_from(sum), u64::try_from(sum)) {
                (Ok(s), _) => prop_assert_eq!(doc["n"].as_i64(), Some(s)),
                (_, Ok(s)) => prop_assert_eq!(doc["n"].as_u64(), Some(s)),
                _ => prop_assert!(result.is_err()),
            }
        }
    }
}
