//! Regression: open deleted every file in `sst/` that was not a live table (a `.DS_Store`,
//! an operator's copy), and a stray subdirectory made open fail.

use std::fs;

use minidb::engine::{Engine, Options};

#[test]
fn open_leaves_files_it_does_not_own_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Engine::open(dir.path(), Options::default()).expect("open");
    db.put(b"k", b"v").expect("put");
    db.flush().expect("flush");
    db.close().expect("close");
    let foreign = [
        dir.path().join("sst/.DS_Store"),
        dir.path().join("sst/backup-copy.sst"),
        dir.path().join("sst/123.sst"),
        dir.path().join("wal/notes.txt"),
        dir.path().join("wal/7.wal"),
        dir.path().join("operator-notes.md"),
    ];
    for f in &foreign {
        fs::write(f, b"not MiniDB's").expect("write foreign file");
    }
    fs::create_dir(dir.path().join("sst/old")).expect("mkdir");
    fs::write(dir.path().join("sst/old/x.sst"), b"x").expect("write");
    for _ in 0..2 {
        let db = Engine::open(dir.path(), Options::default()).expect("open with foreign files");
        assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&b"v"[..]));
        db.put(b"k2", b"v2").expect("put");
        db.compact().expect("compact");
        db.close().expect("close");
    }
    for f in &foreign {
        assert!(f.exists(), "{} was deleted", f.display());
    }
    assert!(dir.path().join("sst/old/x.sst").exists());
}
