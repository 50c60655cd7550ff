//! Corruption: flipped bytes in WAL segments, tables and the manifest give a corruption
//! error or a recovered torn tail; never wrong data, never a panic.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use minidb::engine::{Engine, Error, Options};
use rand::Rng;

fn expected() -> BTreeMap<Vec<u8>, Vec<u8>> {
    (0..2000u32)
        .map(|i| {
            (
                format!("key{i:06}").into_bytes(),
                format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    for sub in ["", "wal", "sst"] {
        fs::create_dir_all(to.join(sub)).expect("mkdir");
        for e in fs::read_dir(from.join(sub)).expect("list") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_file() {
                fs::copy(e.path(), to.join(sub).join(e.file_name())).expect("copy");
            }
        }
    }
}

fn files_in(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// Builds a database whose tables hold the first 1,900 keys and whose WAL holds the rest.
fn build(dir: &Path) {
    let want = expected();
    let db = Engine::open(dir, Options::default()).expect("open");
    for (k, v) in want.iter().take(1900) {
        db.put(k, v).expect("put");
    }
    db.flush().expect("flush");
    for (k, v) in want.iter().skip(1900) {
        db.put(k, v).expect("put");
    }
    db.close().expect("close");
}

/// Opens a damaged copy; whatever it returns must be right or a corruption error.
/// Returns the keys it read back when nothing reported corruption.
fn check(dir: &Path, allow_torn_tail: bool) -> Option<usize> {
    let want = expected();
    let db = match Engine::open(dir, Options::default()) {
        Ok(db) => db,
        Err(e) => {
            assert!(
                e.is_corruption(),
                "open failed without a corruption error: {e}"
            );
            return None;
        }
    };
    let mut found = 0;
    for (k, v) in &want {
        match db.get(k) {
            Ok(Some(got)) => {
                assert_eq!(got.as_ref(), v.as_slice(), "wrong data for {k:?}");
                found += 1;
            }
            Ok(None) => assert!(allow_torn_tail, "key {k:?} silently missing"),
            Err(e) => assert!(e.is_corruption(), "get failed without corruption: {e}"),
        }
    }
    let scanned: Result<Vec<_>, Error> = db.iter().collect();
    match scanned {
        Ok(entries) => {
            for (k, v) in &entries {
                assert_eq!(want.get(k.as_ref()).map(Vec::as_slice), Some(v.as_ref()));
            }
            if !allow_torn_tail {
                assert_eq!(entries.len(), want.len(), "scan lost entries silently");
            }
        }
        Err(e) => assert!(e.is_corruption(), "scan failed without corruption: {e}"),
    }
    Some(found)
}

fn flip(path: &Path, at: usize) {
    let mut data = fs::read(path).expect("read");
    data[at] ^= 0x5a;
    fs::write(path, data).expect("write");
}

/// A built database, and the path (relative to it) and length of its newest `sub/*suffix`.
fn build_and_pick(sub: &str, suffix: &str) -> (tempfile::TempDir, PathBuf, usize) {
    let base = tempfile::tempdir().expect("tempdir");
    build(base.path());
    let file = files_in(&base.path().join(sub), suffix)
        .pop()
        .expect("a file to damage");
    let rel = Path::new(sub).join(file.file_name().expect("name"));
    let len = fs::metadata(base.path().join(&rel)).expect("stat").len() as usize;
    (base, rel, len)
}

/// A copy of `base` with the byte at `at` of `rel` flipped.
fn flipped_copy(base: &Path, rel: &Path, at: usize) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(base, copy.path());
    flip(&copy.path().join(rel), at);
    copy
}

#[test]
fn flipped_table_bytes_are_detected() {
    let (base, table, len) = build_and_pick("sst", ".sst");
    let mut rng = rand::rng();
    // Every footer byte, the start (first data block) and random bytes everywhere else
    // (data, filter, properties and index blocks).
    let mut positions: Vec<usize> = (len - 52..len).collect();
    positions.extend(0..16);
    positions.extend((0..120).map(|_| rng.random_range(0..len)));
    let mut detected = 0;
    for at in positions {
        let copy = flipped_copy(base.path(), &table, at);
        if check(copy.path(), false).is_none_or(|n| n < 2000) {
            detected += 1;
        }
    }
    assert!(detected > 0);
}

#[test]
fn flipped_wal_bytes_in_the_middle_are_corruption() {
    let (base, seg, len) = build_and_pick("wal", ".wal");
    let mut rng = rand::rng();
    for _ in 0..40 {
        // Inside the records, well before the last one.
        let at = rng.random_range(8..len * 3 / 4);
        let copy = flipped_copy(base.path(), &seg, at);
        match Engine::open(copy.path(), Options::default()) {
            Err(Error::Corruption { file, offset, .. }) => {
                assert!(file.ends_with(seg.file_name().expect("name")));
                assert!(offset as usize <= at);
            }
            Err(e) => panic!("expected corruption for a flip at {at}, got {e}"),
            Ok(_) => panic!("a flip at {at} in the middle of the WAL went unnoticed"),
        }
    }
}

#[test]
fn torn_or_flipped_wal_tail_recovers_a_prefix() {
    let (base, seg, len) = build_and_pick("wal", ".wal");
    for cut in [1usize, 5, 20, 40] {
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), copy.path());
        let path = copy.path().join(&seg);
        let data = fs::read(&path).expect("read");
        fs::write(&path, &data[..len - cut]).expect("truncate");
        let found = check(copy.path(), true).expect("a torn tail recovers");
        // Only the last record (one put) may be lost.
        assert_eq!(found, 1999, "cut of {cut} bytes");
    }
    for back in [1usize, 10, 30] {
        let copy = flipped_copy(base.path(), &seg, len - back);
        let found = check(copy.path(), true).expect("a damaged last record is a torn tail");
        assert_eq!(found, 1999, "flip {back} bytes from the end");
    }
}

#[test]
fn flipped_manifest_bytes_are_corruption() {
    let (base, manifest, len) = build_and_pick(".", "MANIFEST");
    for at in 0..len {
        let copy = flipped_copy(base.path(), &manifest, at);
        match Engine::open(copy.path(), Options::default()) {
            Err(e) => assert!(e.is_corruption(), "flip at {at}: {e}"),
            Ok(_) => panic!("manifest flip at {at} went unnoticed"),
        }
    }
}

#[test]
fn missing_table_file_is_an_error_not_an_empty_database() {
    let base = tempfile::tempdir().expect("tempdir");
    build(base.path());
    for t in files_in(&base.path().join("sst"), ".sst") {
        fs::remove_file(t).expect("remove");
    }
    assert!(Engine::open(base.path(), Options::default()).is_err());
}

#[test]
fn verify_reads_every_block() {
    let base = tempfile::tempdir().expect("tempdir");
    build(base.path());
    let db = Engine::open(base.path(), Options::default()).expect("open");
    // 1,900 flushed at build time, 100 more replayed from the WAL into a table at open.
    assert_eq!(db.verify().expect("verify"), 2000);
}
