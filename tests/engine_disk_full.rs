//! A full disk is a state, not a failure: writes are refused with `NoSpace` and nothing of
//! them is stored, the engine is not poisoned, flushes and compactions retry, the reserve
//! lets a flush finish, writes resume by themselves once there is space, and an open on a
//! full volume serves reads.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minidb::engine::storage::{CrashMode, SimFs};
use minidb::engine::{Engine, Error, Options};

/// Bytes LZ4 cannot shrink.
fn noise(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// Retries `f` on `NoSpace` and `Busy` until it succeeds or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> Result<(), Error>) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Err(Error::NoSpace { .. } | Error::Busy { .. }) if Instant::now() < deadline => {
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

/// Writes until the disk is full; returns the acknowledged keys.
fn fill(db: &Engine, from: usize) -> (Vec<usize>, usize) {
    let mut acked = Vec::new();
    for i in from.. {
        match db.put(&key(i), &[7u8; 200]) {
            Ok(()) => acked.push(i),
            Err(Error::Busy { .. }) => {}
            Err(Error::NoSpace { .. }) => return (acked, i),
            Err(e) => panic!("unexpected error at {i}: {e}"),
        }
        assert!(i < from + 100_000, "the disk never filled");
    }
    unreachable!()
}

#[test]
fn writes_get_no_space_then_resume_without_a_restart() {
    let fs = SimFs::new();
    let opts = common::small_options(&fs);
    let db = common::open(&opts);
    for i in 0..50 {
        eventually(Duration::from_secs(30), || db.put(&key(i), b"before")).expect("put");
    }
    fs.set_capacity(Some(fs.stats().used_bytes + 6_000));
    let (acked, refused) = fill(&db, 50);
    assert!(!db.is_poisoned(), "a full disk must not poison the engine");
    assert!(db.stats().no_space_errors >= 1);
    // Reads go on, and the refused write left nothing.
    assert_eq!(
        db.get(&key(0)).expect("get").as_deref(),
        Some(&b"before"[..])
    );
    assert_eq!(db.get(&key(refused)).expect("get"), None);
    // Space comes back: writes resume by themselves.
    fs.set_capacity(None);
    eventually(Duration::from_secs(30), || db.put(&key(refused), b"later")).expect("resumed");
    assert!(!db.is_poisoned());
    drop(db);
    fs.power_loss(CrashMode::DropUnsynced);
    let db = common::open(&opts);
    for i in acked {
        assert!(
            db.get(&key(i)).expect("get").is_some(),
            "acknowledged {i} lost"
        );
    }
    assert_eq!(
        db.get(&key(refused)).expect("get").as_deref(),
        Some(&b"later"[..])
    );
}

#[test]
fn group_commit_on_a_full_disk_stores_nothing_of_the_refused_writes() {
    let fs = SimFs::new();
    let mut opts = common::small_options(&fs);
    // Few rotations: the disk fills on WAL appends shared by a group of writers.
    opts.flush_size = 100_000;
    opts.memtable_bytes = 4 << 20;
    let db = Arc::new(common::open(&opts));
    db.put(b"warm", b"up").expect("put");
    fs.set_capacity(Some(fs.stats().used_bytes + 40_000));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (db, acked, refused) = (db.clone(), acked.clone(), refused.clone());
            std::thread::spawn(move || {
                for i in 0..400 {
                    let k = format!("t{t}-{i:04}").into_bytes();
                    match db.put(&k, &[1u8; 300]) {
                        Ok(()) => acked.lock().map(|mut a| a.push(k)).unwrap_or(()),
                        Err(Error::NoSpace { .. }) => {
                            refused.lock().map(|mut r| r.push(k)).unwrap_or(())
                        }
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        assert!(t.join().is_ok(), "a writer panicked");
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let refused = refused.lock().map(|r| r.clone()).unwrap_or_default();
    assert!(
        !acked.is_empty() && !refused.is_empty(),
        "the disk filled mid-run"
    );
    assert!(!db.is_poisoned());
    // A later durable write moves visibility past the refused writes' sequence numbers.
    fs.set_capacity(None);
    eventually(Duration::from_secs(30), || db.put(b"after", b"space")).expect("resumed");
    for k in &refused {
        assert_eq!(db.get(k).expect("get"), None, "a refused write is visible");
    }
    let Ok(db) = Arc::try_unwrap(db) else {
        panic!("engine still shared")
    };
    // Nothing of a refused write survives a restart (page cache kept) or a power cut.
    drop(db);
    for crash in [false, true] {
        if crash {
            fs.power_loss(CrashMode::DropUnsynced);
        }
        let db = common::open(&opts);
        for k in &acked {
            assert!(db.get(k).expect("get").is_some(), "acknowledged write lost");
        }
        for k in &refused {
            assert_eq!(db.get(k).expect("get"), None, "a refused write came back");
        }
        db.close().expect("close");
    }
}

#[test]
fn the_reserve_lets_a_flush_finish_on_a_full_disk() {
    let fs = SimFs::new();
    let mut opts = common::small_options(&fs);
    opts.flush_size = 100_000;
    opts.memtable_bytes = 1 << 20;
    opts.reserve_bytes = 64 << 10;
    let db = common::open(&opts);
    assert_eq!(db.stats().reserve_bytes, 64 << 10);
    for i in 0..100 {
        db.put(&key(i), &[3u8; 200]).expect("put");
    }
    // No room for the table, but the reserve is enough for it and the manifest.
    fs.set_capacity(Some(fs.stats().used_bytes + 100));
    db.flush().expect("flush finishes with the reserve");
    assert_eq!(db.stats().reserve_bytes, 0, "the reserve was used");
    assert_eq!(db.stats().levels[0].files, 1);
    // Once space is back, the next flush takes the reserve again.
    fs.set_capacity(None);
    db.put(b"more", b"x").expect("put");
    db.flush().expect("flush");
    assert_eq!(db.stats().reserve_bytes, 64 << 10);
}

#[test]
fn open_on_a_full_disk_serves_reads_and_writes_wait_for_space() {
    let fs = SimFs::new();
    let mut opts = common::small_options(&fs);
    opts.flush_size = 100_000;
    opts.memtable_bytes = 1 << 20;
    opts.reserve_bytes = 0;
    let mut want = BTreeMap::new();
    {
        let db = common::open(&opts);
        for i in 0..200 {
            db.put(&key(i), format!("v{i}").as_bytes()).expect("put");
            want.insert(key(i), format!("v{i}").into_bytes());
        }
        // A crash: the data is only in the WAL.
    }
    fs.power_loss(CrashMode::DropUnsynced);
    fs.set_capacity(Some(fs.stats().used_bytes));
    let db = common::open(&opts);
    assert_eq!(
        common::contents(&db),
        want,
        "reads are served from the replayed WAL"
    );
    assert!(matches!(db.put(b"x", b"y"), Err(Error::NoSpace { .. })));
    assert!(!db.is_poisoned());
    fs.set_capacity(None);
    eventually(Duration::from_secs(30), || db.put(b"x", b"y")).expect("writes resume");
    db.flush()
        .expect("the replayed memtable is flushed once there is room");
    want.insert(b"x".to_vec(), b"y".to_vec());
    drop(db);
    fs.power_loss(CrashMode::DropUnsynced);
    let db = common::open(&opts);
    assert_eq!(common::contents(&db), want);
}

/// The reported case: compaction output fills the disk, the next WAL write fails, and the
/// engine used to poison itself until a restart.
#[test]
fn compaction_filling_the_disk_does_not_poison_writes() {
    let fs = SimFs::new();
    let mut opts: Options = common::small_options(&fs);
    opts.background_compaction = false;
    opts.reserve_bytes = 0;
    opts.flush_size = 100;
    opts.memtable_bytes = 1 << 20;
    let db = common::open(&opts);
    for i in 0..300 {
        eventually(Duration::from_secs(30), || {
            db.put(&key(i % 100), &noise(i, 100))
        })
        .expect("put");
    }
    db.flush().expect("flush");
    // Room for a little WAL, not for a full compaction output.
    fs.set_capacity(Some(fs.stats().used_bytes + 4_000));
    assert!(matches!(db.compact(), Err(Error::NoSpace { .. })));
    assert!(!db.is_poisoned());
    let (_acked, refused) = fill(&db, 1000);
    assert!(
        !db.is_poisoned(),
        "the failed WAL write poisoned the engine"
    );
    fs.set_capacity(None);
    eventually(Duration::from_secs(30), || db.put(&key(refused), b"ok")).expect("resumed");
    db.compact()
        .expect("compaction finishes once there is room");
    for i in 0..100 {
        assert!(db.get(&key(i)).expect("get").is_some());
    }
}
