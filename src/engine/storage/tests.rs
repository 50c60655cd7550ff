//! The simulated file system keeps exactly the durable state across a power loss.

use std::path::Path;

use super::*;

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn write(fs: &SimFs, path: &str, data: &[u8]) -> Box<dyn StorageFile> {
    let f = match fs.create_new(p(path)) {
        Ok(f) => f,
        Err(e) => panic!("create {path}: {e}"),
    };
    if let Err(e) = write_all_at(&*f, data, 0) {
        panic!("write {path}: {e}");
    }
    f
}

fn ok<T>(r: std::io::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn unsynced_file_contents_are_lost() {
    let fs = SimFs::new();
    ok(fs.create_dir(p("/d")));
    ok(fs.sync_dir(p("/")));
    let f = write(&fs, "/d/a", b"hello");
    ok(fs.sync_dir(p("/d")));
    drop(f);
    fs.power_loss(CrashMode::DropUnsynced);
    // The name was made durable, the contents never were.
    assert_eq!(fs.read_file(p("/d/a")), Some(Vec::new()));
}

#[test]
fn a_name_needs_its_directory_synced() {
    let fs = SimFs::new();
    ok(fs.create_dir(p("/d")));
    // Without a sync of "/", "/d" itself is not durable.
    let f = write(&fs, "/d/a", b"x");
    ok(f.sync_data());
    ok(fs.sync_dir(p("/d")));
    fs.power_loss(CrashMode::DropUnsynced);
    assert_eq!(ok(fs.kind(p("/d"))), None);
    assert_eq!(fs.read_file(p("/d/a")), None);
}

#[test]
fn synced_file_in_synced_directory_survives() {
    let fs = SimFs::new();
    let f = write(&fs, "/a", b"durable");
    ok(f.sync_data());
    ok(fs.sync_dir(p("/")));
    ok(write_all_at(&*f, b" and more", 7));
    fs.power_loss(CrashMode::DropUnsynced);
    assert_eq!(fs.read_file(p("/a")).as_deref(), Some(&b"durable"[..]));
    // The old handle belongs to a dead process.
    assert!(f.size().is_err());
}

#[test]
fn rename_is_durable_only_after_the_directory_sync() {
    let fs = SimFs::new();
    let old = write(&fs, "/m", b"old");
    ok(old.sync_data());
    ok(fs.sync_dir(p("/")));
    let new = write(&fs, "/m.tmp", b"new");
    ok(new.sync_data());
    ok(fs.rename(p("/m.tmp"), p("/m")));
    assert_eq!(fs.read_file(p("/m")).as_deref(), Some(&b"new"[..]));
    fs.power_loss(CrashMode::DropUnsynced);
    assert_eq!(fs.read_file(p("/m")).as_deref(), Some(&b"old"[..]));
    assert_eq!(fs.read_file(p("/m.tmp")), None);
}

#[test]
fn crash_after_sync_freezes_the_durable_state() {
    let fs = SimFs::new();
    let f = write(&fs, "/a", b"1");
    let base = fs.stats().syncs;
    fs.crash_after_sync(base + 2);
    ok(f.sync_data()); // sync base+1
    ok(fs.sync_dir(p("/"))); // sync base+2: the power goes right after
    assert!(fs.is_dead());
    assert!(write_all_at(&*f, b"2", 1).is_err());
    assert!(fs.create_new(p("/b")).is_err());
    fs.power_loss(CrashMode::DropUnsynced);
    assert!(!fs.is_dead());
    assert_eq!(fs.read_file(p("/a")).as_deref(), Some(&b"1"[..]));
}

#[test]
fn tearing_keeps_a_prefix_of_unsynced_appends() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let fs = SimFs::new();
        let f = write(&fs, "/a", b"abc");
        ok(f.sync_data());
        ok(fs.sync_dir(p("/")));
        ok(write_all_at(&*f, b"defgh", 3));
        fs.power_loss(CrashMode::TearUnsynced { seed });
        let got = fs.read_file(p("/a")).unwrap_or_default();
        assert!(b"abcdefgh".starts_with(&got) && got.len() >= 3, "{got:?}");
        seen.insert(got.len());
    }
    assert!(seen.len() > 2, "tearing should vary: {seen:?}");
}

#[test]
fn faults_hit_the_named_operation() {
    let fs = SimFs::new();
    let f = write(&fs, "/a", b"abc");
    let next = fs.stats().ops + 1;
    fs.fail_op(next, FaultKind::Eio);
    assert!(f.sync_data().is_err());
    ok(f.sync_data());
    fs.fail_op(fs.stats().ops + 1, FaultKind::NoSpace);
    let e = match f.write_at(b"x", 3) {
        Err(e) => e,
        Ok(n) => panic!("wrote {n}"),
    };
    assert!(is_no_space(&e));
    fs.fail_op(fs.stats().ops + 1, FaultKind::ShortWrite);
    assert_eq!(ok(f.write_at(b"wxyz", 3)), 2);
}

#[test]
fn capacity_fails_writes_that_do_not_fit_and_frees_on_delete() {
    let fs = SimFs::new();
    fs.set_capacity(Some(10));
    let a = write(&fs, "/a", b"12345678");
    let b = ok(fs.create_new(p("/b")));
    // Two bytes fit: a short write, then ENOSPC.
    assert_eq!(ok(b.write_at(b"abcd", 0)), 2);
    assert!(b.write_at(b"cd", 2).is_err_and(|e| is_no_space(&e)));
    assert_eq!(ok(fs.available_bytes(p("/"))), Some(0));
    drop(a);
    ok(fs.remove_file(p("/a")));
    ok(write_all_at(&*b, b"cd", 2));
    assert_eq!(ok(fs.available_bytes(p("/"))), Some(6));
}

#[test]
fn locks_exclude_until_dropped_or_power_loss() {
    let fs = SimFs::new();
    let l = ok(fs.lock(p("/LOCK")));
    assert!(fs
        .lock(p("/LOCK"))
        .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock));
    drop(l);
    let l2 = ok(fs.lock(p("/LOCK")));
    fs.power_loss(CrashMode::DropUnsynced);
    ok(fs.lock(p("/LOCK")));
    drop(l2);
}

#[test]
fn create_dir_all_durable_syncs_each_new_parent() {
    let fs = SimFs::new();
    ok(create_dir_all_durable(&fs, p("/x/y/z")));
    fs.power_loss(CrashMode::DropUnsynced);
    assert_eq!(ok(fs.kind(p("/x/y/z"))), Some(EntryKind::Dir));
    // The real file system does the same.
    let dir = ok(tempfile::tempdir());
    let deep = dir.path().join("a/b");
    ok(create_dir_all_durable(&StdFs, &deep));
    assert!(deep.is_dir());
    ok(create_dir_all_durable(&StdFs, &deep));
}

#[test]
fn hard_links_share_contents() {
    let fs = SimFs::new();
    let f = write(&fs, "/a", b"t");
    ok(f.sync_data());
    ok(fs.hard_link(p("/a"), p("/b")));
    ok(fs.sync_dir(p("/")));
    ok(fs.remove_file(p("/a")));
    ok(fs.sync_dir(p("/")));
    drop(f);
    fs.power_loss(CrashMode::DropUnsynced);
    assert_eq!(fs.read_file(p("/b")).as_deref(), Some(&b"t"[..]));
    assert_eq!(fs.read_file(p("/a")), None);
}
