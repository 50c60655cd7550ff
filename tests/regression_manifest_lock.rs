//! Regression: flush and compaction held the manifest lock across the whole manifest write
//! (write, fsync, rename, directory fsync), and memtable rotation waited for that lock under
//! the WAL mutex, so a slow disk stalled every writer behind up to four fsyncs. Here the
//! flush's manifest fsync is held; writers must still rotate memtables and finish.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use minidb::engine::storage::{SimFs, SimOp};

#[test]
fn writers_rotate_memtables_while_a_manifest_edit_is_held() {
    let fs = SimFs::new();
    let mut opts = common::small_options(&fs);
    opts.flush_size = 5;
    opts.memtable_bytes = 1 << 20;
    opts.max_immutable_memtables = 4;
    let db = Arc::new(common::open(&opts));
    let gate = fs.gate_next(SimOp::Sync, "MANIFEST.tmp");
    // Fill one memtable and rotate it: the flush worker starts and stops at the gate.
    for i in 0..6 {
        db.put(format!("a{i}").as_bytes(), b"v").expect("put");
    }
    assert!(
        gate.wait_until_held(Duration::from_secs(30)),
        "the flush never reached its manifest fsync"
    );
    // Two more rotations while the flush holds the manifest's edit lock.
    let (tx, rx) = mpsc::channel();
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let r: Result<(), String> = (0..11).try_for_each(|i| {
                db.put(format!("b{i}").as_bytes(), b"v")
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send(r);
        })
    };
    // A deadlock detector, not a timing assertion: the writes need no disk at all.
    let done = rx.recv_timeout(Duration::from_secs(30));
    gate.open();
    assert!(writer.join().is_ok());
    match done {
        Ok(r) => r.expect("writes while the manifest edit was held"),
        Err(_) => panic!("writers waited for the manifest I/O"),
    }
    assert!(db.stats().immutable_count >= 2 || db.stats().flushes >= 1);
    db.flush().expect("flush after the gate opened");
    for i in 0..11 {
        assert!(db.get(format!("b{i}").as_bytes()).expect("get").is_some());
    }
}
