//! Snapshots see one point in time; scans never block writers; orphans are cleaned up.

use std::fs;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use minidb::engine::{Engine, Options, WriteBatch};

fn small() -> Options {
    {
        let mut o = Options::default();
        o.flush_size = 50;
        o
    }
}

#[test]
fn snapshot_reads_stay_at_their_point_in_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), small()).expect("open");
    for i in 0..100u32 {
        db.put(&i.to_be_bytes(), b"old").expect("put");
    }
    let snap = db.snapshot();
    let scan = db.iter();
    let mut batch = WriteBatch::new();
    for i in 0..100u32 {
        if i % 2 == 0 {
            batch.delete(&i.to_be_bytes());
        } else {
            batch.put(&i.to_be_bytes(), b"new");
        }
    }
    batch.put(b"zzz-added", b"new");
    db.write(batch).expect("write");
    // Flushes and compactions after the snapshot must not change what it sees.
    db.compact().expect("compact");
    for i in 0..100u32 {
        assert_eq!(
            snap.get(&i.to_be_bytes()).expect("get").as_deref(),
            Some(&b"old"[..])
        );
    }
    assert_eq!(snap.get(b"zzz-added").expect("get"), None);
    let old: Vec<_> = scan.collect::<Result<_, _>>().expect("scan");
    assert_eq!(old.len(), 100);
    assert!(old.iter().all(|(_, v)| v.as_ref() == b"old"));
    let now: Vec<_> = db.iter().collect::<Result<_, _>>().expect("scan");
    assert_eq!(now.len(), 51);
    assert!(now.iter().all(|(_, v)| v.as_ref() == b"new"));
}

#[test]
fn an_open_scan_does_not_block_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Engine::open(dir.path(), small()).expect("open"));
    for i in 0..1000u32 {
        db.put(&i.to_be_bytes(), b"v").expect("put");
    }
    let mut scan = db.iter();
    let first = scan.next().expect("an entry").expect("scan");
    assert_eq!(first.0.as_ref(), &0u32.to_be_bytes());
    // With the scan open mid-way, another thread's writes, flushes and compactions finish.
    let (tx, rx) = mpsc::channel();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 1000..3000u32 {
                db.put(&i.to_be_bytes(), b"w").expect("put");
            }
            db.flush().expect("flush");
            db.compact().expect("compact");
            let _ = tx.send(());
        })
    };
    rx.recv_timeout(Duration::from_secs(60))
        .expect("writer finished while the scan was open");
    writer.join().expect("writer");
    // The scan still yields its own snapshot: the 999 remaining entries, none of the new.
    let rest: Vec<_> = scan.collect::<Result<_, _>>().expect("scan");
    assert_eq!(rest.len(), 999);
    assert!(rest.iter().all(|(_, v)| v.as_ref() == b"v"));
    assert_eq!(db.iter().count(), 3000);
}

#[test]
fn orphaned_table_files_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), small()).expect("open");
    db.put(b"k", b"v").expect("put");
    db.flush().expect("flush");
    db.close().expect("close");
    // What a crash between a table write and its manifest edit leaves behind.
    let orphan = dir.path().join("sst").join(format!("{:020}.sst", 999_999));
    fs::write(&orphan, b"half-written table").expect("write orphan");
    fs::write(dir.path().join("MANIFEST.tmp"), b"half-written manifest").expect("write tmp");
    let db = Engine::open(dir.path(), small()).expect("open");
    assert!(!orphan.exists(), "orphaned table still there");
    assert!(!dir.path().join("MANIFEST.tmp").exists());
    assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&b"v"[..]));
}

#[test]
fn stats_keep_minidbgo_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), small()).expect("open");
    for i in 0..120u32 {
        db.put(&i.to_be_bytes(), b"v").expect("put");
    }
    db.delete(&0u32.to_be_bytes()).expect("delete");
    assert!(db.get(&5u32.to_be_bytes()).expect("get").is_some());
    db.flush().expect("flush");
    let stats = db.stats();
    let named: std::collections::HashMap<String, u64> = stats.named().into_iter().collect();
    for name in [
        "puts",
        "gets",
        "deletes",
        "flushes",
        "compacts",
        "memtable_entries",
        "memtable_bytes",
        "immutable_count",
        "level_0_files",
        "level_0_bytes",
        "level_6_files",
        "write_stalls",
        "wal_bytes",
        "wal_syncs",
        "block_cache_hits",
        "block_cache_misses",
        "bloom_filter_skips",
    ] {
        assert!(named.contains_key(name), "missing stat {name}");
    }
    assert_eq!(named["puts"], 120);
    assert_eq!(named["deletes"], 1);
    assert_eq!(named["gets"], 1);
    assert!(named["flushes"] >= 3);
    assert!(named["wal_syncs"] >= 121);
    assert!(named["level_0_files"] >= 1 || named["level_1_files"] >= 1);
}
