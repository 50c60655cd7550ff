//! Data directories of the current on-disk format, committed under `tests/fixtures/`, must
//! keep opening with the same contents: a format change that breaks old data fails here.
//!
//! `cargo test --test engine_fixtures -- --ignored write_fixtures` rewrites them (only when
//! the format changes on purpose, with a new directory name for the new version).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minidb::engine::{Engine, Options, WriteBatch};
use minidb::store::{Filter, Store};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn options() -> Options {
    let mut o = Options::default();
    o.flush_size = 50;
    o.reserve_bytes = 0;
    o.background_compaction = false;
    o
}

/// What `engine-v1/tables-and-wal` holds: versions spread over level 1, level 0 and the
/// WAL, with deletes and a batch in each.
fn tables_and_wal_contents() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for round in 0..3u32 {
        for i in 0..120u32 {
            if (i + round) % 7 == 0 {
                m.remove(format!("key{i:04}").as_bytes());
            } else {
                m.insert(
                    format!("key{i:04}").into_bytes(),
                    format!("round{round}-value{i}")
                        .repeat(1 + (i % 3) as usize)
                        .into_bytes(),
                );
            }
        }
    }
    m
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).expect("copy");
        }
    }
}

/// A copy of a fixture (opening writes: the replayed WAL is flushed).
fn open_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(name);
    copy_dir(&fixtures().join(name), &dir);
    (tmp, dir)
}

#[test]
fn engine_v1_tables_and_wal_opens_with_its_contents() {
    let (_tmp, dir) = open_copy("engine-v1/tables-and-wal");
    let report = minidb::engine::verify_dir(&dir, &options()).expect("verify");
    assert!(report.tables >= 2 && report.wal_records > 0, "{report:?}");
    let db = Engine::open(&dir, options()).expect("open the v1 fixture");
    let got: BTreeMap<Vec<u8>, Vec<u8>> = db
        .iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .expect("scan");
    assert_eq!(got, tables_and_wal_contents());
    assert!(db.verify().is_ok());
}

#[test]
fn engine_v1_torn_tail_recovers_the_prefix() {
    let (_tmp, dir) = open_copy("engine-v1/torn-tail");
    let report = minidb::engine::verify_dir(&dir, &options()).expect("verify");
    assert_eq!(report.torn_tails.len(), 1, "{report:?}");
    let db = Engine::open(&dir, options()).expect("open");
    assert_eq!(
        db.get(b"before-tear").expect("get").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(db.iter().count(), 21);
}

#[test]
fn store_v1_opens_with_its_documents_and_counts() {
    let (_tmp, dir) = open_copy("store-v1");
    let store = Store::new(Arc::new(Engine::open(&dir, options()).expect("open")));
    let cols = store.collections().expect("collections");
    let names: Vec<(String, u64)> = cols.iter().map(|c| (c.name.clone(), c.doc_count)).collect();
    assert_eq!(names, vec![("orders".into(), 40), ("users".into(), 25)]);
    let doc: serde_json::Value =
        serde_json::from_slice(&store.get("users", "u07").expect("get").json).expect("json");
    assert_eq!(
        doc,
        serde_json::json!({"_id": "u07", "name": "user 7", "age": 27})
    );
    assert_eq!(store.count("orders", &Filter::all()).expect("count"), 40);
}

#[test]
#[ignore = "rewrites the committed fixtures; run by hand when the format changes"]
fn write_fixtures() {
    let base = fixtures();
    let tw = base.join("engine-v1/tables-and-wal");
    let _ = fs::remove_dir_all(&tw);
    {
        let db = Engine::open(&tw, options()).expect("open");
        for round in 0..3u32 {
            let mut batch = WriteBatch::new();
            for i in 0..120u32 {
                let k = format!("key{i:04}");
                if (i + round) % 7 == 0 {
                    batch.delete(k.as_bytes());
                } else {
                    let v = format!("round{round}-value{i}").repeat(1 + (i % 3) as usize);
                    if i % 10 == 0 {
                        batch.put(k.as_bytes(), v.as_bytes());
                    } else {
                        db.put(k.as_bytes(), v.as_bytes()).expect("put");
                    }
                }
            }
            db.write(batch).expect("batch");
            match round {
                0 => db.compact().expect("compact"),
                1 => db.flush().expect("flush"),
                _ => {}
            }
        }
        // Dropped without close: the last round stays in the WAL.
    }
    let torn = base.join("engine-v1/torn-tail");
    let _ = fs::remove_dir_all(&torn);
    {
        let db = Engine::open(&torn, options()).expect("open");
        for i in 0..20 {
            db.put(format!("k{i}").as_bytes(), b"v").expect("put");
        }
        db.put(b"before-tear", b"kept").expect("put");
        db.put(b"torn", &[9u8; 100]).expect("put");
    }
    let wal = fs::read_dir(torn.join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "wal") && fs::metadata(p).is_ok_and(|m| m.len() > 8)
        })
        .expect("a non-empty segment");
    let data = fs::read(&wal).expect("read");
    fs::write(&wal, &data[..data.len() - 40]).expect("tear");
    let st = base.join("store-v1");
    let _ = fs::remove_dir_all(&st);
    {
        let store = Store::new(Arc::new(Engine::open(&st, options()).expect("open")));
        for i in 0..25 {
            store
                .insert("users", &serde_json::json!({"_id": format!("u{i:02}"), "name": format!("user {i}"), "age": 20 + i}))
                .expect("insert");
        }
        let orders: Vec<_> = (0..40)
            .map(|i| serde_json::json!({"_id": format!("o{i:03}"), "total": i * 3}))
            .collect();
        store.insert_many("orders", &orders).expect("insert_many");
        store.engine().flush().expect("flush");
        store.delete("users", "u24", None).ok();
        store
            .insert(
                "users",
                &serde_json::json!({"_id": "u24", "name": "user 24", "age": 44}),
            )
            .expect("reinsert");
    }
    for d in [&tw, &torn, &st] {
        let _ = fs::remove_file(d.join("LOCK"));
    }
}
