//! Memory: a scan over 1M keys and a limited key listing keep allocation flat.
//! Measured in bytes with jemalloc's own statistics, never in time.
#![cfg(feature = "jemalloc")]

use minidb::engine::{Engine, Error, Options, SyncPolicy, WriteBatch};
use rand::RngCore;
use tikv_jemalloc_ctl::{epoch, stats};

fn allocated() -> u64 {
    let _ = epoch::advance();
    stats::allocated::read().map(|v| v as u64).unwrap_or(0)
}

#[test]
fn scans_keep_allocation_flat_over_a_million_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = {
        let mut o = Options::default();
        o.sync = SyncPolicy::None;
        o.memtable_bytes = 8 << 20;
        o.flush_size = 100_000;
        o.block_cache_bytes = 4 << 20;
        o
    };
    let db = Engine::open(dir.path(), opts).expect("open");
    // Random values: LZ4 must not shrink the data set below what the test claims.
    let mut rng = rand::rng();
    let mut value = vec![0u8; 100];
    for chunk in 0..1000u32 {
        let mut b = WriteBatch::new();
        for i in 0..1000u32 {
            rng.fill_bytes(&mut value);
            b.put(format!("user:{:08}", chunk * 1000 + i).as_bytes(), &value);
        }
        // A client honours Busy by waiting the hinted time.
        loop {
            match db.write(b.clone()) {
                Ok(()) => break,
                Err(Error::Busy { retry_after, .. }) => std::thread::sleep(retry_after),
                Err(e) => panic!("write: {e}"),
            }
        }
    }
    db.flush().expect("flush");
    let data_bytes = db.stats().sst_disk_bytes;
    let base = allocated();
    let mut peak = base;
    let mut n = 0u64;
    for kv in db.iter() {
        kv.expect("scan");
        n += 1;
        if n.is_multiple_of(10_000) {
            peak = peak.max(allocated());
        }
    }
    assert_eq!(n, 1_000_000);
    let growth = peak.saturating_sub(base);
    println!("full scan: data {data_bytes} B on disk, allocation growth {growth} B");
    // The block cache (4 MiB) plus one block per table and iterator state; nothing
    // proportional to the data, which is over 100 MB.
    assert!(
        data_bytes > 50 << 20,
        "test data too small to mean anything"
    );
    assert!(growth < 12 << 20, "scan allocation grew by {growth} bytes");

    let base = allocated();
    let listed: Vec<_> = db
        .scan_prefix(b"user:")
        .take(100)
        .collect::<Result<_, _>>()
        .expect("listing");
    let growth = allocated().saturating_sub(base);
    assert_eq!(listed.len(), 100);
    assert!(
        growth < 4 << 20,
        "a 100-key listing allocated {growth} bytes"
    );
}
