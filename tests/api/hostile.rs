//! Arbitrary and adversarial JSON texts for the "never a crash" property tests: valid
//! documents, filters and updates, and what an attacker would send (deep nesting, long dot
//! paths, huge numbers, duplicate keys, broken syntax).

use proptest::prelude::*;

/// A JSON text: mostly valid and meaningful, often hostile.
pub fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => value().prop_map(|v| v.to_string()),
        1 => (0usize..400, prop::sample::select(vec!["[", "{\"a\":", "{\"$and\":[", "{\"$or\":[{\"x\":"]))
            .prop_map(|(n, open)| open.repeat(n)),
        1 => (1usize..20_000, prop::sample::select(vec!["$set", "$inc", "$unset", "f"]))
            .prop_map(|(n, op)| {
                let path = vec!["p"; n].join(".");
                if op == "f" {
                    format!("{{\"{path}\":1}}")
                } else {
                    format!("{{\"{op}\":{{\"{path}\":1}}}}")
                }
            }),
        1 => "[0-9]{19,60}".prop_map(|d| format!("{{\"_id\":\"n\",\"v\":{d}}}")),
        1 => "[a-c_$.]{1,4}".prop_map(|k| format!("{{\"{k}\":1,\"{k}\":2}}")),
        1 => "\\PC{0,40}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        prop::sample::select(vec![
            "_id", "a.b", "a.0", "$set", "$inc", "$unset", "$and", "$or", "$eq", "$ne", "$gt",
            "$lt", "$in", "$nin", "$exists", "$x", "", ".", "_count",
        ])
        .prop_map(String::from),
    ]
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-c_.]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 64, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
