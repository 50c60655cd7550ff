//! Regression: a panic in the flush (or compaction) thread was swallowed (`let _ =
//! t.join()`): writes then got `Busy` forever while readiness stayed green. It must poison
//! the engine with the panic's message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use minidb::engine::{Engine, Error, EventListener, Options};

struct PanicOnFlush;

impl EventListener for PanicOnFlush {
    fn on_flush(&self, _duration: Duration, _bytes: u64) {
        panic!("listener exploded");
    }
}

#[test]
fn a_panicking_flush_worker_poisons_the_engine_with_its_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = Options::default();
    opts.listener = Some(Arc::new(PanicOnFlush));
    opts.flush_size = 5;
    let db = Engine::open(dir.path(), opts).expect("open");
    for i in 0..6 {
        db.put(format!("k{i}").as_bytes(), b"v").expect("put");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !db.is_poisoned() {
        assert!(
            Instant::now() < deadline,
            "the worker's panic did not poison"
        );
        std::thread::yield_now();
    }
    let reason = db.stats().poison_reason.unwrap_or_default();
    assert!(
        reason.contains("minidb-flush") && reason.contains("listener exploded"),
        "{reason}"
    );
    match db.put(b"after", b"v") {
        Err(Error::Poisoned { reason }) => assert!(reason.contains("panicked")),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    // Reads go on.
    assert_eq!(db.get(b"k0").expect("get").as_deref(), Some(&b"v"[..]));
}
