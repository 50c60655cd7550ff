//! Helpers shared by the engine tests that run on the simulated file system.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use minidb::engine::storage::SimFs;
use minidb::engine::{Engine, Options};

/// Where the tests put the database inside a [`SimFs`].
pub const DB: &str = "/data/db";

/// Small memtables and tables, so a short workload crosses rotation, flush, manifest edits
/// and compaction; a small reserve.
pub fn small_options(fs: &SimFs) -> Options {
    let mut o = Options::default();
    o.storage = Arc::new(fs.clone());
    o.flush_size = 9;
    o.memtable_bytes = 4096;
    o.max_immutable_memtables = 2;
    o.level0_compaction_trigger = 2;
    o.level0_stop_writes = 8;
    o.level_base_bytes = 64 << 10;
    o.target_file_bytes = 64 << 10;
    o.block_size = 256;
    o.block_cache_bytes = 16 << 10;
    o.reserve_bytes = 8 << 10;
    o
}

/// Opens the engine at [`DB`] on `fs` with `opts`, panicking with the error.
pub fn open(opts: &Options) -> Engine {
    Engine::open(Path::new(DB), opts.clone()).unwrap_or_else(|e| panic!("open: {e}"))
}

/// Every live entry.
pub fn contents(db: &Engine) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("scan: {e}"))
}
