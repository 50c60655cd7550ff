//! Compiled `_search` filters.
//!
//! A filter is a JSON object compiled once by [`Filter::parse`], then evaluated with
//! [`Filter::matches`]. Keys are dot paths (`"a.b"`, `"tags.0"`) or `$and` / `$or`; all
//! keys of an object must match. A field's value is either a plain value (equality) or an
//! object of operators: `$eq $ne $gt $gte $lt $lte $in $nin $exists`.
//!
//! Semantics: numbers compare numerically across integers and floats (`1 == 1.0`), strings
//! lexicographically by bytes; `$gt`-style operators only match a field of the same kind
//! (number or string) as their argument. Objects and arrays are equal when structurally
//! equal. A missing field matches only `$ne`, `$nin` and `$exists: false`; there is no
//! implicit matching of array elements (use `"tags.0"` or `$in` on a scalar field).

use std::cmp::Ordering;

use serde_json::{Map, Number, Value};

use super::document::{depth_capped, type_name};
use super::error::{Result, StoreError};
use super::path::{lookup, split_path};

/// Deepest nesting a filter may have; bounds every recursion over it.
pub const MAX_FILTER_DEPTH: usize = 128;

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    root: Node,
}

/// A node of the filter tree.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// All children match (an object's keys, or `$and`); empty matches everything.
    All(Vec<Node>),
    /// At least one child matches (`$or`).
    Any(Vec<Node>),
    /// The value at `path` satisfies every operator.
    Field { path: Vec<String>, ops: Vec<Op> },
}

/// One operator applied to a field's value (or its absence).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Value),
    Ne(Value),
    Range(Bound, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exists(bool),
}

/// Which orderings a range operator accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Filter {
    /// Compiles a filter from JSON; errors name the bad operator or field.
    pub fn parse(filter: &Value) -> Result<Self> {
        let Value::Object(map) = filter else {
            return Err(invalid(format!(
                "must be a JSON object, got {}",
                type_name(filter)
            )));
        };
        if depth_capped(filter, MAX_FILTER_DEPTH) > MAX_FILTER_DEPTH {
            return Err(invalid(format!(
                "nested deeper than {MAX_FILTER_DEPTH} levels"
            )));
        }
        Ok(Self {
            root: parse_object(map)?,
        })
    }

    /// A filter that matches every document (same as `{}`).
    pub fn all() -> Self {
        Self {
            root: Node::All(Vec::new()),
        }
    }

    /// Whether this filter matches every document.
    pub fn is_all(&self) -> bool {
        matches!(&self.root, Node::All(nodes) if nodes.is_empty())
    }

    /// Whether `doc` satisfies the filter.
    pub fn matches(&self, doc: &Value) -> bool {
        self.root.matches(doc)
    }
}

impl Node {
    fn matches(&self, doc: &Value) -> bool {
        match self {
            Node::All(nodes) => nodes.iter().all(|n| n.matches(doc)),
            Node::Any(nodes) => nodes.iter().any(|n| n.matches(doc)),
            Node::Field { path, ops } => {
                let value = lookup(doc, path);
                ops.iter().all(|op| op.matches(value))
            }
        }
    }
}

impl Op {
    fn matches(&self, value: Option<&Value>) -> bool {
        let equals = |x: &Value| value.is_some_and(|v| json_eq(v, x));
        match self {
            Op::Eq(x) => equals(x),
            Op::Ne(x) => !equals(x),
            Op::Range(bound, x) => value
                .and_then(|v| compare(v, x))
                .is_some_and(|o| bound.accepts(o)),
            Op::In(xs) => xs.iter().any(equals),
            Op::Nin(xs) => !xs.iter().any(equals),
            Op::Exists(wanted) => value.is_some() == *wanted,
        }
    }
}

impl Bound {
    fn accepts(self, o: Ordering) -> bool {
        match self {
            Bound::Gt => o.is_gt(),
            Bound::Gte => o.is_ge(),
            Bound::Lt => o.is_lt(),
            Bound::Lte => o.is_le(),
        }
    }
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidFilter(msg)
}

fn parse_object(map: &Map<String, Value>) -> Result<Node> {
    map.iter()
        .map(|(key, value)| parse_entry(key, value))
        .collect::<Result<_>>()
        .map(Node::All)
}

fn parse_entry(key: &str, value: &Value) -> Result<Node> {
    match key {
        "$and" => parse_list(key, value).map(Node::All),
        "$or" => parse_list(key, value).map(Node::Any),
        op if op.starts_with('$') => Err(invalid(format!("unknown operator {op:?}"))),
        field => parse_field(field, value),
    }
}

fn parse_list(op: &str, value: &Value) -> Result<Vec<Node>> {
    let Value::Array(items) = value else {
        return Err(invalid(format!(
            "{op} needs an array of filters, got {}",
            type_name(value)
        )));
    };
    if items.is_empty() {
        return Err(invalid(format!("{op} needs at least one filter")));
    }
    items
        .iter()
        .map(|item| match item {
            Value::Object(map) => parse_object(map),
            other => Err(invalid(format!(
                "{op} elements must be filter objects, got {}",
                type_name(other)
            ))),
        })
        .collect()
}

fn parse_field(field: &str, value: &Value) -> Result<Node> {
    let path = split_path(field)
        .map_err(|e| invalid(format!("field path {} {e}", super::error::preview(field))))?;
    let ops = match value {
        Value::Object(map) if map.keys().any(|k| k.starts_with('$')) => {
            if let Some(plain) = map.keys().find(|k| !k.starts_with('$')) {
                return Err(invalid(format!(
                    "field {field:?} mixes operators with the plain key {plain:?}"
                )));
            }
            map.iter()
                .map(|(op, arg)| parse_op(field, op, arg))
                .collect::<Result<_>>()?
        }
        _ => vec![Op::Eq(value.clone())],
    };
    Ok(Node::Field { path, ops })
}

fn parse_op(field: &str, op: &str, arg: &Value) -> Result<Op> {
    let range = |bound| match arg {
        Value::Number(_) | Value::String(_) => Ok(Op::Range(bound, arg.clone())),
        other => Err(invalid(format!(
            "{op} on {field:?} needs a number or a string, got {}",
            type_name(other)
        ))),
    };
    let list = || match arg {
        Value::Array(items) => Ok(items.clone()),
        other => Err(invalid(format!(
            "{op} on {field:?} needs an array, got {}",
            type_name(other)
        ))),
    };
    match op {
        "$eq" => Ok(Op::Eq(arg.clone())),
        "$ne" => Ok(Op::Ne(arg.clone())),
        "$gt" => range(Bound::Gt),
        "$gte" => range(Bound::Gte),
        "$lt" => range(Bound::Lt),
        "$lte" => range(Bound::Lte),
        "$in" => list().map(Op::In),
        "$nin" => list().map(Op::Nin),
        "$exists" => match arg {
            Value::Bool(b) => Ok(Op::Exists(*b)),
            other => Err(invalid(format!(
                "$exists on {field:?} needs true or false, got {}",
                type_name(other)
            ))),
        },
        other => Err(invalid(format!("unknown operator {other:?} on {field:?}"))),
    }
}

/// Structural equality where numbers compare by value (`1 == 1.0`).
///
/// Recursion stops at the shallower value; filter values are at most
/// [`MAX_FILTER_DEPTH`] deep.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Orders two numbers or two strings; `None` for any other pair.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A JSON number as an exact integer or a float.
enum Num {
    Int(i128),
    Float(f64),
}

fn num(n: &Number) -> Option<Num> {
    if let Some(i) = n.as_i64() {
        Some(Num::Int(i.into()))
    } else if let Some(u) = n.as_u64() {
        Some(Num::Int(u.into()))
    } else {
        n.as_f64().map(Num::Float)
    }
}

/// Exact numeric order of two JSON numbers, mixing i64, u64 and f64 without rounding.
pub fn cmp_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (num(a)?, num(b)?) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
        (Num::Int(x), Num::Float(y)) => cmp_int_float(x, y),
        (Num::Float(x), Num::Int(y)) => cmp_int_float(y, x).map(Ordering::reverse),
    }
}

/// Exact order of an integer (within u64/i64 range) and a float.
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    let whole = f.trunc();
    // `as` saturates; beyond i128 the float is far outside the u64/i64 range anyway.
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => 0.0.partial_cmp(&(f - whole)),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn check(filter: Value, doc: Value) -> bool {
        match Filter::parse(&filter) {
            Ok(f) => f.matches(&doc),
            Err(e) => panic!("{filter} should parse: {e}"),
        }
    }

    fn error(filter: Value) -> String {
        match Filter::parse(&filter) {
            Err(StoreError::InvalidFilter(m)) => m,
            other => panic!("{filter} should be rejected, got {other:?}"),
        }
    }

    #[test]
    fn empty_matches_everything() {
        assert!(check(json!({}), json!({"a": 1})));
        assert!(check(json!({}), json!({})));
        assert!(Filter::parse(&json!({})).is_ok_and(|f| f.is_all()));
        assert!(Filter::all().matches(&json!({"x": null})));
    }

    #[test]
    fn equality_and_paths() {
        let doc = json!({"a": {"b": 1}, "name": "x", "tags": ["p", "q"], "n": null});
        assert!(check(json!({"name": "x"}), doc.clone()));
        assert!(check(json!({"a.b": 1}), doc.clone()));
        assert!(check(json!({"a.b": 1.0}), doc.clone()));
        assert!(check(json!({"a": {"b": 1.0}}), doc.clone()));
        assert!(check(json!({"tags.1": "q"}), doc.clone()));
        assert!(check(json!({"tags": ["p", "q"]}), doc.clone()));
        assert!(check(json!({"n": null}), doc.clone()));
        assert!(!check(json!({"tags": "p"}), doc.clone()));
        assert!(!check(json!({"tags": ["q", "p"]}), doc.clone()));
        assert!(!check(json!({"a": {}}), doc.clone()));
        assert!(!check(json!({"missing": null}), doc.clone()));
        assert!(!check(json!({"name": "x", "a.b": 2}), doc.clone()));
        assert!(!check(json!({"name.x": "x"}), doc));
    }

    #[test]
    fn operators() {
        let doc = json!({"n": 5, "s": "m", "b": true, "big": u64::MAX});
        assert!(check(json!({"n": {"$eq": 5}}), doc.clone()));
        assert!(check(json!({"n": {"$gt": 4, "$lt": 6}}), doc.clone()));
        assert!(check(json!({"n": {"$gte": 5, "$lte": 5.0}}), doc.clone()));
        assert!(!check(json!({"n": {"$gt": 5}}), doc.clone()));
        assert!(check(json!({"n": {"$gt": 4.5}}), doc.clone()));
        assert!(check(json!({"s": {"$gt": "a", "$lt": "n"}}), doc.clone()));
        assert!(!check(json!({"s": {"$gt": 1}}), doc.clone()));
        assert!(!check(json!({"n": {"$lt": "z"}}), doc.clone()));
        assert!(!check(json!({"b": {"$gt": 0}}), doc.clone()));
        assert!(!check(json!({"missing": {"$lt": 1}}), doc.clone()));
        assert!(check(json!({"big": {"$gt": i64::MAX}}), doc.clone()));
        assert!(check(json!({"n": {"$in": [1, "5", 5.0]}}), doc.clone()));
        assert!(!check(json!({"n": {"$in": []}}), doc.clone()));
        assert!(check(json!({"n": {"$nin": [1, 2]}}), doc.clone()));
        assert!(check(json!({"n": {"$exists": true}}), doc.clone()));
        assert!(check(json!({"zz": {"$exists": false}}), doc.clone()));
        assert!(!check(json!({"zz": {"$exists": true}}), doc));
    }

    #[test]
    fn negations_match_missing_and_other_types() {
        let doc = json!({"n": 5});
        assert!(check(json!({"zz": {"$ne": 1}}), doc.clone()));
        assert!(check(json!({"n": {"$ne": "5"}}), doc.clone()));
        assert!(!check(json!({"n": {"$ne": 5.0}}), doc.clone()));
        assert!(check(json!({"zz": {"$nin": [1]}}), doc.clone()));
        assert!(check(json!({"n": {"$nin": ["5"]}}), doc));
    }

    #[test]
    fn and_or() {
        let doc = json!({"a": 1, "b": 2});
        assert!(check(json!({"$or": [{"a": 2}, {"b": 2}]}), doc.clone()));
        assert!(!check(json!({"$or": [{"a": 2}, {"b": 3}]}), doc.clone()));
        assert!(check(json!({"$and": [{"a": 1}, {"b": 2}]}), doc.clone()));
        assert!(!check(json!({"$and": [{"a": 1}, {"b": 3}]}), doc.clone()));
        assert!(check(
            json!({"$and": [{"$or": [{"a": 9}, {"a": {"$lt": 2}}]}, {}]}),
            doc
        ));
    }

    #[test]
    fn numbers_compare_exactly() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        let cmp = |a: Value, b: Value| cmp_numbers(&n(a), &n(b));
        use Ordering::*;
        assert_eq!(cmp(json!(1), json!(1.0)), Some(Equal));
        assert_eq!(cmp(json!(-1), json!(u64::MAX)), Some(Less));
        assert_eq!(cmp(json!(i64::MAX), json!(2f64.powi(63))), Some(Less));
        assert_eq!(
            cmp(json!(u64::MAX), json!(1.8446744073709552e19)),
            Some(Less)
        );
        assert_eq!(cmp(json!(i64::MIN), json!(-(2f64.powi(63)))), Some(Equal));
        assert_eq!(cmp(json!(2), json!(2.5)), Some(Less));
        assert_eq!(cmp(json!(-2), json!(-2.5)), Some(Greater));
        assert_eq!(cmp(json!(3), json!(1e300)), Some(Less));
        assert_eq!(cmp(json!(-1e300), json!(3)), Some(Less));
        assert_eq!(cmp(json!(0), json!(-0.0)), Some(Equal));
        // 2^53 + 1 is not a float; it must not equal 2^53.
        assert_eq!(
            cmp(json!(9007199254740993_i64), json!(9007199254740992.0)),
            Some(Greater)
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(error(json!({"a": {"$foo": 1}})).contains(r#"unknown operator "$foo""#));
        assert!(error(json!({"$foo": 1})).contains(r#"unknown operator "$foo""#));
        assert!(error(json!({"$not": {}})).contains("$not"));
        assert!(error(json!({"a": {"$in": 1}})).contains("$in"));
        assert!(error(json!({"a": {"$nin": {}}})).contains("$nin"));
        assert!(error(json!({"a": {"$exists": 1}})).contains("$exists"));
        assert!(error(json!({"a": {"$gt": null}})).contains("$gt"));
        assert!(error(json!({"a": {"$gt": 1, "b": 2}})).contains(r#""b""#));
        assert!(error(json!({"$and": []})).contains("$and"));
        assert!(error(json!({"$or": {}})).contains("$or"));
        assert!(error(json!({"$or": [1]})).contains("$or"));
        assert!(error(json!({"a..b": 1})).contains("a..b"));
        assert!(error(json!({"$and": [{"a": {"$bad": 1}}]})).contains("$bad"));
        for not_object in [json!(null), json!([]), json!("x"), json!(1)] {
            assert!(error(not_object).contains("object"));
        }
    }

    #[test]
    fn deep_filter_is_rejected_not_overflowed() {
        let mut f = json!({"a": 1});
        for _ in 0..MAX_FILTER_DEPTH {
            f = json!({ "$and": [f] });
        }
        assert!(error(f).contains("deeper"));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            "[a-c]{1,2}",
            prop::sample::select(vec![
                "a.b", "a.0", "b.1.a", "$and", "$or", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte",
                "$in", "$nin", "$exists", "$x", "", ".",
            ])
            .prop_map(String::from),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics(filter in json_value(), doc in json_value()) {
            if let Ok(f) = Filter::parse(&filter) {
                let _ = f.matches(&doc);
            }
        }

        #[test]
        fn negations_are_complements(v in json_value(), doc in json_value()) {
            let eq = check(json!({"a": {"$eq": v.clone()}}), doc.clone());
            prop_assert_eq!(check(json!({"a": {"$ne": v.clone()}}), doc.clone()), !eq);
            let list = json!([v, 7]);
            let is_in = check(json!({"a": {"$in": list.clone()}}), doc.clone());
            prop_assert_eq!(check(json!({"a": {"$nin": list}}), doc), !is_in);
        }

        #[test]
        fn int_float_order(a in -(1i64 << 53)..(1i64 << 53), b in any::<f64>()) {
            prop_assume!(b.is_finite());
            let doc = json!({"x": a});
            prop_assert_eq!(check(json!({"x": {"$gt": b}}), doc.clone()), (a as f64) > b);
            prop_assert_eq!(check(json!({"x": {"$lte": b}}), doc.clone()), (a as f64) <= b);
            prop_assert_eq!(check(json!({"x": b}), doc), (a as f64) == b);
        }

        #[test]
        fn int_order(a in any::<i64>(), b in any::<u64>()) {
            let doc = json!({"x": a});
            prop_assert_eq!(check(json!({"x": {"$lt": b}}), doc), i128::from(a) < i128::from(b));
        }
    }
}
