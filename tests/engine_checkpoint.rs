//! Online checkpoints: a checkpoint opened as a database holds exactly the writes
//! acknowledged before it was taken, whole batches only, while writers go on.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use minidb::engine::storage::{CrashMode, SimFs};
use minidb::engine::{Engine, Error, Options, WriteBatch};

/// What the writers did: keys acknowledged, and keys whose write began only after the
/// checkpoint had returned.
#[derive(Default)]
struct Log {
    acked: Vec<Vec<u8>>,
    started_after: Vec<Vec<u8>>,
}

fn run_checkpoint_under_writes(db: Arc<Engine>, target: &Path) -> (Vec<Vec<u8>>, Log) {
    let log = Arc::new(Mutex::new(Log::default()));
    let after = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (db, log, after, stop) = (db.clone(), log.clone(), after.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let began_after = after.load(Ordering::SeqCst);
                    // Every third write is a batch of three keys sharing one stem.
                    let stem = format!("t{t}/{i:06}");
                    let result = if i.is_multiple_of(3) {
                        let mut b = WriteBatch::new();
                        for j in 0..3 {
                            b.put(format!("{stem}/{j}").as_bytes(), stem.as_bytes());
                        }
                        db.write(b)
                    } else {
                        db.put(stem.as_bytes(), stem.as_bytes())
                    };
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    if began_after {
                        l.started_after.push(stem.clone().into_bytes());
                    }
                    match result {
                        Ok(()) => l.acked.push(stem.into_bytes()),
                        Err(Error::Busy { .. }) => {}
                        Err(e) => panic!("write failed: {e}"),
                    }
                    i += 1;
                    if began_after && l.started_after.len() > 200 {
                        return;
                    }
                }
            })
        })
        .collect();
    // Let some writes through first.
    while log.lock().map(|l| l.acked.len()).unwrap_or(0) < 300 {
        std::thread::yield_now();
    }
    let before: Vec<Vec<u8>> = log.lock().map(|l| l.acked.clone()).unwrap_or_default();
    let info = db.checkpoint(target).expect("checkpoint");
    after.store(true, Ordering::SeqCst);
    assert!(info.tables + usize::from(info.wal_bytes > 0) > 0);
    while log.lock().map(|l| l.started_after.len()).unwrap_or(0) < 200 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        assert!(w.join().is_ok(), "a writer panicked");
    }
    let log = Arc::try_unwrap(log)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();
    (before, log)
}

/// Checks a checkpoint's contents against what the writers did.
fn check_checkpoint(cp: &BTreeMap<Vec<u8>, Vec<u8>>, before: &[Vec<u8>], log: &Log) {
    let has = |stem: &[u8]| {
        let s = String::from_utf8_lossy(stem);
        let parts: Vec<bool> = (0..3)
            .map(|j| cp.contains_key(format!("{s}/{j}").as_bytes()))
            .collect();
        assert!(
            parts.iter().all(|p| *p) || parts.iter().all(|p| !*p),
            "batch {s} is partly in the checkpoint"
        );
        cp.contains_key(stem) || parts[0]
    };
    for stem in before {
        assert!(
            has(stem),
            "{} was acknowledged before the checkpoint but is missing",
            String::from_utf8_lossy(stem)
        );
    }
    for stem in &log.started_after {
        assert!(
            !has(stem),
            "{} was written after the checkpoint but is in it",
            String::from_utf8_lossy(stem)
        );
    }
}

#[test]
fn checkpoint_under_concurrent_writes_on_the_real_file_system() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    opts.flush_size = 200;
    opts.level0_compaction_trigger = 2;
    opts.reserve_bytes = 0;
    let db = Arc::new(Engine::open(dir.path().join("db"), opts.clone()).expect("open"));
    let target = dir.path().join("checkpoint");
    let (before, log) = run_checkpoint_under_writes(db.clone(), &target);
    let cp = Engine::open(&target, opts).expect("open the checkpoint");
    check_checkpoint(&common::contents(&cp), &before, &log);
    assert!(cp.verify().is_ok());
    // The source keeps everything, including what was written after the checkpoint.
    let all = common::contents(&db);
    for stem in &log.acked {
        let batch_key = [stem.as_slice(), b"/0"].concat();
        assert!(all.contains_key(stem) || all.contains_key(&batch_key));
    }
}

#[test]
fn checkpoint_on_the_simulated_file_system_is_durable_and_links_tables() {
    let fs = SimFs::new();
    let mut opts = common::small_options(&fs);
    opts.flush_size = 50;
    opts.memtable_bytes = 1 << 20;
    opts.level0_stop_writes = 40;
    let db = Arc::new(common::open(&opts));
    let target = Path::new("/backups/cp1");
    let (before, log) = run_checkpoint_under_writes(db.clone(), target);
    let Ok(db) = Arc::try_unwrap(db) else {
        panic!("engine still shared")
    };
    drop(db);
    // The checkpoint was made durable before `checkpoint` returned.
    fs.power_loss(CrashMode::DropUnsynced);
    let cp = Engine::open(target, opts.clone()).expect("open the checkpoint");
    check_checkpoint(&common::contents(&cp), &before, &log);
}

#[test]
fn checkpoint_hard_links_tables_and_refuses_a_non_empty_target() {
    let fs = SimFs::new();
    let opts = common::small_options(&fs);
    let db = common::open(&opts);
    for i in 0..30 {
        let mut r = db.put(format!("k{i}").as_bytes(), b"v");
        while let Err(Error::Busy { .. }) = r {
            db.flush().expect("flush");
            r = db.put(format!("k{i}").as_bytes(), b"v");
        }
        r.expect("put");
    }
    db.flush().expect("flush");
    let info = db.checkpoint("/cp").expect("checkpoint");
    assert!(info.tables > 0);
    assert_eq!(
        info.tables_copied, 0,
        "tables are hard links on one file system"
    );
    match db.checkpoint("/cp") {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("not empty"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let cp = Engine::open("/cp", opts).expect("open the checkpoint");
    assert_eq!(common::contents(&cp), common::contents(&db));
}
