//! `minidb verify` reads and never writes: a torn WAL tail is reported as a warning with its
//! own exit code (3), and every byte of the data directory stays as it was (it used to cut
//! the tail off in place and report `ok`).
#![cfg(feature = "server")]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).expect("read"));
            }
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read fixture") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), dest).expect("copy");
        }
    }
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_minidb"))
        .args(["verify", "--data-dir"])
        .arg(dir)
        .env_remove("MINIDB_STORAGE__DATA_DIR")
        .env_remove("DB_PATH")
        .current_dir(dir.parent().unwrap_or(dir))
        .output()
        .expect("run minidb verify");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_reports_a_torn_tail_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine-v1/torn-tail"),
        &dir,
    );
    let before = snapshot(&dir);
    let (code, out) = verify(&dir);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("warning: torn WAL tail"), "{out}");
    assert_eq!(snapshot(&dir), before, "verify changed the data directory");
    // Still the same on a second run: nothing was repaired behind the report.
    assert_eq!(verify(&dir).0, Some(3));
}

#[test]
fn verify_of_an_intact_directory_exits_0_and_of_a_damaged_one_exits_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("db");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine-v1/tables-and-wal"),
        &dir,
    );
    let (code, out) = verify(&dir);
    assert_eq!(code, Some(0), "{out}");
    let table = fs::read_dir(dir.join("sst"))
        .expect("sst")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .next()
        .expect("a table");
    let mut bytes = fs::read(&table).expect("read");
    bytes[10] ^= 0xff;
    fs::write(&table, bytes).expect("damage");
    let (code, out) = verify(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAILED") && out.contains("corruption"),
        "{out}"
    );
}
