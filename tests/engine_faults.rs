//! Backpressure, poisoning, flush retries and the directory lock; faults come from the
//! simulated file system, so plain `cargo test` runs them all.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use minidb::engine::storage::{CrashMode, FaultKind, SimFs, SimOp, Storage};
use minidb::engine::{BusyReason, Engine, Error, MemoryBudget, Options};

fn small() -> Options {
    let mut o = Options::default();
    o.flush_size = 10;
    o.max_immutable_memtables = 2;
    o
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

#[test]
fn full_flush_queue_refuses_writes_before_touching_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), small()).expect("open");
    let hold = db.pause_flush();
    let mut acked = 0;
    let refused = loop {
        match db.put(&key(acked), b"v") {
            Ok(()) => acked += 1,
            Err(Error::Busy {
                reason: BusyReason::FlushQueue,
                retry_after,
            }) => {
                assert!(!retry_after.is_zero());
                break acked;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
        assert!(acked <= 31, "writes were never refused");
    };
    // Three memtables of ten (two frozen, one active) fill the budget exactly.
    assert_eq!(refused, 30);
    assert_eq!(db.get(&key(refused)).expect("get"), None);
    assert_eq!(db.stats().busy_flush_queue, 1);
    assert_eq!(db.stats().immutable_count, 2);
    drop(hold);
    db.flush().expect("flush");
    db.put(&key(refused), b"later")
        .expect("accepted after the flush");
    db.close().expect("close");
    let db = Engine::open(dir.path(), small()).expect("reopen");
    for i in 0..refused {
        assert_eq!(db.get(&key(i)).expect("get").as_deref(), Some(&b"v"[..]));
    }
    assert_eq!(
        db.get(&key(refused)).expect("get").as_deref(),
        Some(&b"later"[..])
    );
}

#[test]
fn level0_pileup_refuses_writes_until_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    opts.background_compaction = false;
    opts.level0_compaction_trigger = 2;
    opts.level0_stop_writes = 3;
    let db = Engine::open(dir.path(), opts).expect("open");
    for i in 0..3 {
        db.put(&key(i), b"v").expect("put");
        db.flush().expect("flush");
    }
    match db.put(b"x", b"v") {
        Err(Error::Busy {
            reason: BusyReason::Level0,
            ..
        }) => {}
        other => panic!("expected Busy(Level0), got {other:?}"),
    }
    assert_eq!(db.get(b"x").expect("get"), None);
    db.compact().expect("compact");
    assert_eq!(db.stats().levels[0].files, 0);
    db.put(b"x", b"v").expect("accepted after compaction");
}

struct Switch(AtomicBool);

impl MemoryBudget for Switch {
    fn over_budget(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn memory_hook_refuses_writes_but_not_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let budget = Arc::new(Switch(AtomicBool::new(false)));
    let mut opts = Options::default();
    opts.memory_budget = Some(budget.clone());
    let db = Engine::open(dir.path(), opts).expect("open");
    db.put(b"a", b"1").expect("put");
    budget.0.store(true, Ordering::SeqCst);
    assert!(matches!(
        db.put(b"b", b"2"),
        Err(Error::Busy {
            reason: BusyReason::Memory,
            ..
        })
    ));
    assert_eq!(
        db.get(b"a").expect("reads still work").as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(db.get(b"b").expect("get"), None);
    assert_eq!(db.stats().busy_memory, 1);
    budget.0.store(false, Ordering::SeqCst);
    db.put(b"b", b"2").expect("accepted again");
}

#[test]
fn failed_wal_fsync_poisons_writes_but_reads_go_on() {
    let fs = SimFs::new();
    let opts = common::small_options(&fs);
    let db = common::open(&opts);
    db.put(b"before", b"1").expect("put");
    fs.fail_next(SimOp::Sync, ".wal", FaultKind::Eio, 1);
    assert!(matches!(db.put(b"during", b"2"), Err(Error::Fsync { .. })));
    assert!(matches!(
        db.put(b"after", b"3"),
        Err(Error::Poisoned { .. })
    ));
    assert!(db.is_poisoned());
    let stats = db.stats();
    assert!(stats.poisoned && stats.poison_reason.is_some());
    assert_eq!(db.get(b"before").expect("read").as_deref(), Some(&b"1"[..]));
    // The failed write was never acknowledged, nor made visible.
    assert_eq!(db.get(b"during").expect("read"), None);
    drop(db);
    fs.power_loss(CrashMode::DropUnsynced);
    let db = common::open(&opts);
    assert_eq!(db.get(b"before").expect("read").as_deref(), Some(&b"1"[..]));
    assert_eq!(db.get(b"during").expect("read"), None);
    db.put(b"after", b"3").expect("writes work after restart");
}

#[test]
fn failed_wal_write_poisons_and_leaves_nothing_behind() {
    let fs = SimFs::new();
    let opts = common::small_options(&fs);
    let db = common::open(&opts);
    db.put(b"before", b"1").expect("put");
    fs.fail_next(SimOp::Write, ".wal", FaultKind::Eio, 1);
    assert!(matches!(db.put(b"during", b"2"), Err(Error::Io { .. })));
    assert!(db.is_poisoned());
    assert_eq!(db.get(b"during").expect("read"), None);
    // A restart without a power loss (the page cache survives) must not find it either:
    // the failed write was cut back off the log.
    drop(db);
    let db = common::open(&opts);
    assert_eq!(db.get(b"during").expect("read"), None);
    assert_eq!(db.get(b"before").expect("read").as_deref(), Some(&b"1"[..]));
}

#[test]
fn failed_flush_is_retried_and_counted() {
    let fs = SimFs::new();
    let mut opts = common::small_options(&fs);
    opts.flush_size = 1000;
    opts.memtable_bytes = 1 << 20;
    let db = common::open(&opts);
    for i in 0..100 {
        db.put(&key(i), b"v").expect("put");
    }
    fs.fail_next(SimOp::Write, ".sst", FaultKind::Eio, 2);
    db.flush().expect("flush succeeds after retries");
    let stats = db.stats();
    assert_eq!(stats.flush_errors, 2);
    assert_eq!(stats.flushes, 1);
    assert!(!stats.poisoned);
    assert_eq!(stats.levels[0].files, 1);
    for i in 0..100 {
        assert_eq!(db.get(&key(i)).expect("get").as_deref(), Some(&b"v"[..]));
    }
    // The failed attempts left no table behind.
    let sst = std::path::Path::new(common::DB).join("sst");
    let files: Vec<String> = fs
        .list(&sst)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), Options::default()).expect("open");
    match Engine::open(dir.path(), Options::default()) {
        Err(e @ Error::Locked { .. }) => assert!(e.to_string().contains("LOCK")),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
    db.close().expect("close");
    Engine::open(dir.path(), Options::default()).expect("open after close");
}

#[test]
fn writes_after_shutdown_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), Options::default()).expect("open");
    db.put(b"a", b"1").expect("put");
    db.shutdown().expect("shutdown");
    assert!(matches!(db.put(b"b", b"2"), Err(Error::Closed)));
    assert_eq!(
        db.get(b"a").expect("reads still work").as_deref(),
        Some(&b"1"[..])
    );
}

#[test]
fn invalid_options_are_refused_with_the_option_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    opts.flush_size = 0;
    match Engine::open(dir.path(), opts) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("flush_size")),
        other => panic!("expected InvalidArgument, got {:?}", other.err()),
    }
}
