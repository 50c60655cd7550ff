//! Regression: the data directory the engine creates (and its parents) must survive a power
//! cut. `create_dir_all` without an fsync of each new directory's parent lost every
//! acknowledged write of a fresh `./data` in a simulated power cut.

mod common;

use std::path::Path;

use minidb::engine::storage::{CrashMode, SimFs};
use minidb::engine::Engine;

#[test]
fn a_new_nested_data_directory_survives_a_power_cut() {
    let fs = SimFs::new();
    let opts = common::small_options(&fs);
    let dir = Path::new("/srv/minidb/data");
    let db = Engine::open(dir, opts.clone()).expect("open");
    db.put(b"acked", b"1").expect("put");
    drop(db);
    fs.power_loss(CrashMode::DropUnsynced);
    let db = Engine::open(dir, opts).expect("reopen");
    assert_eq!(db.get(b"acked").expect("get").as_deref(), Some(&b"1"[..]));
}
