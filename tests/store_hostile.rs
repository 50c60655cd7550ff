//! The store never crashes on client input (issue 8, item 1): arbitrary and adversarial
//! documents, filters and updates, parsed as the server parses them, give Ok or a typed
//! error that maps to a 4xx status, never a panic or a stack overflow.
#![cfg(feature = "server")]

#[path = "api/hostile.rs"]
mod hostile;

use std::sync::Arc;

use minidb::engine::{Engine, Options};
use minidb::server::error::status_of;
use minidb::store::{json, Filter, Store, StoreError, Update};
use proptest::prelude::*;

fn client_error(what: &str, e: &StoreError) -> Result<(), TestCaseError> {
    let (status, _) = status_of(e);
    prop_assert!(status.is_client_error(), "{what}: {status} for {e}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn hostile_input_gives_ok_or_a_client_error(
        texts in prop::collection::vec(hostile::json_text(), 4),
    ) {
        let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let engine = Engine::open(dir.path(), Options::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let store = Store::new(Arc::new(engine));
        store
            .put("c", "seed", serde_json::json!({"a": {"b": [1, 2]}, "n": 1}), None)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        for text in &texts {
            let value = match json::parse(text.as_bytes()) {
                Ok(v) => v,
                Err(source) => {
                    client_error("parse", &StoreError::InvalidJson { what: "body", source })?;
                    continue;
                }
            };
            if let Err(e) = store.insert("c", &value) {
                client_error("insert", &e)?;
            }
            if let Err(e) = store.put("c", "p", value.clone(), None) {
                client_error("put", &e)?;
            }
            if let serde_json::Value::Array(docs) = &value {
                if let Err(e) = store.insert_many("c", docs) {
                    client_error("insert_many", &e)?;
                }
            }
            match Filter::parse(&value) {
                Ok(f) => {
                    if let Err(e) = store.search("c", &f, None, 10, Some(100)) {
                        client_error("search", &e)?;
                    }
                    if let Err(e) = store.count("c", &f) {
                        client_error("count", &e)?;
                    }
                }
                Err(e) => client_error("filter", &e)?,
            }
            match Update::parse(&value) {
                Ok(u) => {
                    if let Err(e) = store.patch("c", "seed", &u, None) {
                        client_error("patch", &e)?;
                    }
                }
                Err(e) => client_error("update", &e)?,
            }
        }
        // Whatever happened, the store still answers.
        prop_assert!(store.get("c", "seed").is_ok());
    }
}
