//! Power loss at every sync point, and at random points under random faults, on the
//! simulated file system (which keeps only what was fsynced).
//!
//! A workload crosses memtable rotation, flushes, manifest edits and compaction. Crashing
//! right after its sync number 1, 2, 3, … in turn, then reopening, must give: an open that
//! succeeds, every acknowledged write, no partial batch, no delete undone, and nothing of
//! a write that failed. A failing case names its seed, crash point and mode; the
//! `replay_one` test below reruns one such case.

mod common;

use std::collections::BTreeMap;

use minidb::engine::storage::{CrashMode, FaultKind, SimFs};
use minidb::engine::{Engine, Error, Options, WriteBatch};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum W {
    Put(u16, u16),
    Delete(u16),
    Batch(Vec<(u16, Option<u16>)>),
    Flush,
    Compact,
}

/// A small deterministic generator: the workload depends only on the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

fn key(k: u16) -> Vec<u8> {
    format!("k{:03}", k % 97).into_bytes()
}

fn value(k: u16, v: u16) -> Vec<u8> {
    format!("v{v}-").repeat(1 + usize::from(k % 4)).into_bytes()
}

fn workload(seed: u64, len: usize) -> Vec<W> {
    let mut r = Rng(seed);
    (0..len)
        .map(|i| match r.next() % 20 {
            0..=10 => W::Put(r.next() as u16, i as u16),
            11..=13 => W::Delete(r.next() as u16),
            14..=17 => W::Batch(
                (0..1 + r.next() % 6)
                    .map(|j| {
                        let k = r.next() as u16;
                        (
                            k,
                            (!r.next().is_multiple_of(4)).then_some(i as u16 * 10 + j as u16),
                        )
                    })
                    .collect(),
            ),
            18 => W::Flush,
            _ => W::Compact,
        })
        .collect()
}

fn apply(model: &mut Model, op: &W) {
    match op {
        W::Put(k, v) => {
            model.insert(key(*k), value(*k, *v));
        }
        W::Delete(k) => {
            model.remove(&key(*k));
        }
        W::Batch(items) => {
            for (k, v) in items {
                match v {
                    Some(v) => model.insert(key(*k), value(*k, *v)),
                    None => model.remove(&key(*k)),
                };
            }
        }
        W::Flush | W::Compact => {}
    }
}

fn exec(db: &Engine, op: &W) -> Result<(), Error> {
    match op {
        W::Put(k, v) => db.put(&key(*k), &value(*k, *v)),
        W::Delete(k) => db.delete(&key(*k)),
        W::Batch(items) => {
            let mut b = WriteBatch::new();
            for (k, v) in items {
                match v {
                    Some(v) => b.put(&key(*k), &value(*k, *v)),
                    None => b.delete(&key(*k)),
                };
            }
            db.write(b)
        }
        W::Flush => db.flush(),
        W::Compact => db.compact(),
    }
}

fn options(fs: &SimFs) -> Options {
    common::small_options(fs)
}

/// Runs the workload until the first failure; returns the acknowledged state and the
/// operation that failed, if any.
fn run(fs: &SimFs, ops: &[W]) -> (Model, Option<W>) {
    let mut model = Model::new();
    let Ok(db) = Engine::open(common::DB, options(fs)) else {
        // The power went during the first open: nothing was acknowledged.
        return (model, None);
    };
    let mut failed = None;
    for op in ops {
        match exec(&db, op) {
            Ok(()) => apply(&mut model, op),
            // The engine is gone or refuses every write from now on.
            Err(Error::Poisoned { .. } | Error::Closed) => {
                failed = Some(op.clone());
                break;
            }
            // The power is gone: everything fails from here on.
            Err(_) if fs.is_dead() => {
                failed = Some(op.clone());
                break;
            }
            // Any other failure must have stored nothing (the final check holds it to
            // that): go on, as a client that retries later would.
            Err(_) => failed = Some(op.clone()),
        }
    }
    drop(db);
    (model, failed)
}

/// Reopens after a power loss and checks the state against what was acknowledged.
fn check(fs: &SimFs, mode: CrashMode, model: &Model, in_doubt: Option<&W>, case: &str) {
    fs.stop_failing();
    fs.power_loss(mode);
    let db = Engine::open(common::DB, options(fs))
        .unwrap_or_else(|e| panic!("{case}: open after the crash failed: {e}"));
    let got = common::contents(&db);
    if &got != model {
        // Only a write cut off by the power loss itself may have reached the disk, and
        // only whole (a torn crash can keep some unsynced bytes).
        let mut with = model.clone();
        if let Some(op) = in_doubt {
            apply(&mut with, op);
        }
        let tolerated = matches!(mode, CrashMode::TearUnsynced { .. }) && got == with;
        assert!(
            tolerated,
            "{case}: after the crash the data differs from what was acknowledged\n\
             missing or changed: {:?}\nextra: {:?}\nin doubt: {in_doubt:?}",
            model
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
            got.keys()
                .filter(|k| !model.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>(),
        );
    }
    // The reopened engine takes writes and keeps them (once compaction has caught up
    // with the tables recovery flushed).
    let mut put = db.put(b"probe", b"after");
    if let Err(Error::Busy { .. }) = put {
        db.compact()
            .unwrap_or_else(|e| panic!("{case}: compaction after recovery failed: {e}"));
        put = db.put(b"probe", b"after");
    }
    put.unwrap_or_else(|e| panic!("{case}: write after recovery failed: {e}"));
    db.close()
        .unwrap_or_else(|e| panic!("{case}: close after recovery failed: {e}"));
    fs.power_loss(CrashMode::DropUnsynced);
    let db = Engine::open(common::DB, options(fs))
        .unwrap_or_else(|e| panic!("{case}: second open failed: {e}"));
    assert_eq!(
        db.get(b"probe").ok().flatten().as_deref(),
        Some(&b"after"[..]),
        "{case}: the write after recovery was lost"
    );
}

/// One crash-point case: power lost right after sync `k`. False once `k` is past the
/// workload's last sync.
fn crash_at_sync(seed: u64, k: u64, mode: CrashMode) -> bool {
    let fs = SimFs::new();
    fs.crash_after_sync(k);
    let (model, failed) = run(&fs, &workload(seed, 120));
    if !fs.is_dead() {
        return false;
    }
    let case = format!("seed {seed}, crash after sync {k}, {mode:?}");
    check(&fs, mode, &model, failed.as_ref(), &case);
    true
}

#[test]
fn power_loss_after_every_sync_point() {
    let seed = 7;
    let mut k = 1;
    while crash_at_sync(seed, k, CrashMode::DropUnsynced) {
        assert!(
            crash_at_sync(seed, k, CrashMode::TearUnsynced { seed: k }) || k > 1,
            "the torn run of sync {k} ended early"
        );
        k += 1;
    }
    // The workload must really cross rotations, flushes, manifest edits and compactions.
    assert!(k > 150, "only {k} sync points: the workload is too small");
}

/// Power lost at a random operation while random faults (EIO, ENOSPC, short writes) hit
/// random operations.
fn crash_with_faults(seed: u64) {
    let ops = workload(seed, 150);
    // A first run without a crash tells how many operations the workload performs.
    let probe = SimFs::new();
    probe.fail_randomly(
        seed,
        0.01,
        &[FaultKind::Eio, FaultKind::NoSpace, FaultKind::ShortWrite],
    );
    run(&probe, &ops);
    let total = probe.stats().ops.max(1);
    let crash_at = seed.wrapping_mul(2654435761) % total + 1;
    let fs = SimFs::new();
    fs.fail_randomly(
        seed,
        0.01,
        &[FaultKind::Eio, FaultKind::NoSpace, FaultKind::ShortWrite],
    );
    fs.crash_after_op(crash_at);
    let (model, _failed) = run(&fs, &ops);
    // Every failure poisons or rolls back, and nothing unsynced survives this crash, so
    // the state is exactly the acknowledged one.
    let case = format!("seed {seed}, faults p=0.01, crash after op {crash_at} of {total}");
    check(&fs, CrashMode::DropUnsynced, &model, None, &case);
}

#[test]
fn power_loss_at_random_points_under_random_faults() {
    for seed in 1..=60 {
        crash_with_faults(seed);
    }
}

/// Reruns one failing case: set `MINIDB_CRASH_CASE=seed,k` (crash after sync k, both
/// modes) or `MINIDB_CRASH_CASE=faults,seed`.
#[test]
fn replay_one() {
    let Ok(case) = std::env::var("MINIDB_CRASH_CASE") else {
        return;
    };
    let parts: Vec<&str> = case.split(',').collect();
    match parts.as_slice() {
        ["faults", seed] => crash_with_faults(seed.parse().unwrap_or(0)),
        [seed, k] => {
            let (seed, k) = (seed.parse().unwrap_or(0), k.parse().unwrap_or(1));
            crash_at_sync(seed, k, CrashMode::DropUnsynced);
            crash_at_sync(seed, k, CrashMode::TearUnsynced { seed: k });
        }
        _ => panic!("MINIDB_CRASH_CASE must be `seed,k` or `faults,seed`, got {case:?}"),
    }
}
