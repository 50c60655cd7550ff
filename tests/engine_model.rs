//! Model test: random operation sequences against a `BTreeMap`, including flushes,
//! compactions, clean reopens and power losses, on the simulated file system: a crash keeps
//! only what was fsynced (or, torn, a random part of the rest), so a missing fsync fails it.

mod common;

use std::collections::BTreeMap;

use minidb::engine::storage::{CrashMode, SimFs};
use minidb::engine::{Engine, Error, Options, WriteBatch};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Batch(Vec<(u8, Option<u8>)>),
    Get(u8),
    Scan(u8, u8),
    Flush,
    Compact,
    Reopen,
    /// A power loss; torn (some unsynced appends and directory entries kept) when odd.
    Crash(u64),
    /// Toggles a hold on the flush worker, so frozen memtables pile up.
    HoldFlush,
}

fn key(k: u8) -> Vec<u8> {
    // Shared prefixes and different lengths exercise key ordering.
    format!("key{}", k % 40)
        .repeat(1 + usize::from(k % 3))
        .into_bytes()
}

fn value(k: u8, v: u8) -> Vec<u8> {
    vec![v; 1 + usize::from(k % 5) * 30]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => any::<u8>().prop_map(Op::Delete),
        2 => proptest::collection::vec((any::<u8>(), proptest::option::of(any::<u8>())), 1..8)
            .prop_map(Op::Batch),
        4 => any::<u8>().prop_map(Op::Get),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Scan(a, b)),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(Op::Crash),
        2 => Just(Op::HoldFlush),
    ]
}

fn options(fs: &SimFs) -> Options {
    let mut o = common::small_options(fs);
    o.level0_stop_writes = 6;
    o
}

fn open(fs: &SimFs) -> Engine {
    common::open(&options(fs))
}

fn crash(fs: &SimFs, db: Engine, seed: u64) -> Engine {
    // The engine's threads stop before the power goes (see SimFs's docs).
    drop(db);
    let mode = if seed % 2 == 1 {
        CrashMode::TearUnsynced { seed }
    } else {
        CrashMode::DropUnsynced
    };
    fs.power_loss(mode);
    open(fs)
}

/// Applies a write; `Busy` is a clean refusal, so the model does not change.
fn accepted(r: Result<(), Error>) -> bool {
    match r {
        Ok(()) => true,
        Err(Error::Busy { .. }) => false,
        Err(e) => panic!("write failed: {e}"),
    }
}

fn check_all(db: &Engine, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    assert_eq!(
        &common::contents(db),
        model,
        "full scan differs from the model"
    );
    for (k, v) in model {
        assert_eq!(db.get(k).expect("get").as_deref(), Some(v.as_slice()));
    }
}

fn run(ops: Vec<Op>) {
    let fs = SimFs::new();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut db = open(&fs);
    let mut hold = None;
    for op in ops {
        match op {
            Op::Put(k, v) => {
                if accepted(db.put(&key(k), &value(k, v))) {
                    model.insert(key(k), value(k, v));
                }
            }
            Op::Delete(k) => {
                if accepted(db.delete(&key(k))) {
                    model.remove(&key(k));
                }
            }
            Op::Batch(items) => {
                let mut b = WriteBatch::new();
                for (k, v) in &items {
                    match v {
                        Some(v) => b.put(&key(*k), &value(*k, *v)),
                        None => b.delete(&key(*k)),
                    };
                }
                if accepted(db.write(b)) {
                    for (k, v) in items {
                        match v {
                            Some(v) => model.insert(key(k), value(k, v)),
                            None => model.remove(&key(k)),
                        };
                    }
                }
            }
            Op::Get(k) => {
                let got = db.get(&key(k)).expect("get");
                assert_eq!(got.as_deref(), model.get(&key(k)).map(Vec::as_slice));
            }
            Op::Scan(a, b) => {
                let (lo, hi) = (key(a).min(key(b)), key(a).max(key(b)));
                let got: Vec<Vec<u8>> = db
                    .scan(lo.clone()..hi.clone())
                    .map(|r| r.map(|(k, _)| k.to_vec()))
                    .collect::<Result<_, _>>()
                    .expect("scan");
                let want: Vec<Vec<u8>> = model.range(lo..hi).map(|(k, _)| k.clone()).collect();
                assert_eq!(got, want);
            }
            Op::Flush => {
                hold = None;
                db.flush().expect("flush")
            }
            Op::Compact => {
                hold = None;
                db.compact().expect("compact")
            }
            Op::HoldFlush => {
                hold = match hold {
                    Some(_) => None,
                    None => Some(db.pause_flush()),
                }
            }
            Op::Reopen => {
                hold = None;
                db.close().expect("close");
                db = open(&fs);
            }
            Op::Crash(seed) => {
                hold = None;
                db = crash(&fs, db, seed);
            }
        }
    }
    check_all(&db, &model);
    drop(hold);
    db.close().expect("close");
    fs.power_loss(CrashMode::DropUnsynced);
    let db = open(&fs);
    check_all(&db, &model);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..250)) {
        run(ops);
    }
}

/// Regression: a key overwritten in a newer memtable must not be answered from an older one.
#[test]
fn newer_memtable_wins_over_older() {
    let mut ops = Vec::new();
    for i in 0..30u8 {
        ops.push(Op::Put(1, i));
        ops.push(Op::Put(i, i));
    }
    ops.push(Op::Get(1));
    run(ops);
}

/// Regression: a delete must survive compaction into a level below older versions.
#[test]
fn deleted_key_stays_deleted_through_compaction() {
    let mut ops = vec![
        Op::Put(7, 1),
        Op::Flush,
        Op::Compact,
        Op::Put(7, 2),
        Op::Flush,
    ];
    ops.extend([
        Op::Delete(7),
        Op::Flush,
        Op::Compact,
        Op::Get(7),
        Op::Crash(0),
        Op::Get(7),
    ]);
    run(ops);
}

/// Regression: overlapping level-0 tables are all consulted, newest first.
#[test]
fn overlapping_level0_tables_newest_first() {
    let fs = SimFs::new();
    let mut opts = options(&fs);
    opts.background_compaction = false;
    opts.flush_size = 1000;
    opts.level0_stop_writes = 20;
    let db = common::open(&opts);
    for round in 0..4u8 {
        for k in 0..20u8 {
            db.put(&key(k), &[round]).expect("put");
        }
        db.flush().expect("flush");
    }
    assert!(db.stats().levels[0].files >= 4);
    for k in 0..20u8 {
        assert_eq!(db.get(&key(k)).expect("get").as_deref(), Some(&[3u8][..]));
    }
}

/// Regression: with flushes held, frozen memtables are read newest first.
#[test]
fn frozen_memtables_are_read_newest_first() {
    let fs = SimFs::new();
    let mut opts = options(&fs);
    opts.flush_size = 3;
    opts.max_immutable_memtables = 3;
    let db = common::open(&opts);
    let hold = db.pause_flush();
    for round in 0..3u8 {
        db.put(b"k", &[round]).expect("put");
        db.put(b"filler-a", &[round]).expect("put");
        db.put(b"filler-b", &[round]).expect("put");
    }
    // The fourth write rotates the last full memtable: three frozen, one key in each.
    db.put(b"filler-c", b"x").expect("put");
    assert_eq!(db.stats().immutable_count, 3);
    assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&[2u8][..]));
    drop(hold);
    db.flush().expect("flush");
    assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&[2u8][..]));
}
