//! Online backups over real HTTP and the real binary: `GET /api/_backup`, `minidb backup`,
//! `minidb restore-backup`, one backup at a time, damaged archives, scratch cleanup.
#![cfg(feature = "server")]

mod api;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use api::{command, expect_error, json, wait_until, Server};
use serde_json::{json, Value};

fn run(cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = command(cwd).args(args).output().expect("run minidb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `minidb backup` of `s` into `archive`; panics on failure. Returns its stderr.
fn backup(s: &Server, cwd: &Path, archive: &Path) -> String {
    let (ok, err) = run(
        cwd,
        &[
            "backup",
            "--url",
            &s.base,
            "--out",
            archive.to_str().unwrap(),
        ],
    );
    assert!(ok, "backup failed: {err}");
    err
}

/// `minidb restore-backup archive --data-dir target`: (success, stderr).
fn restore(cwd: &Path, archive: &Path, target: &Path) -> (bool, String) {
    run(
        cwd,
        &[
            "restore-backup",
            archive.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
    )
}

/// Every document of `col`, sorted by `_id`.
fn all(s: &Server, col: &str) -> Vec<Value> {
    let r = s.post(&format!("/api/{col}/_search?limit=1000"), &json!({}));
    assert_eq!(r.status(), 200);
    let mut docs = json(r)["documents"].as_array().cloned().unwrap_or_default();
    docs.sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
    docs
}

#[test]
fn a_backup_restores_exactly_the_writes_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    let docs: Vec<Value> = (0..400)
        .map(|i| json!({"_id": format!("d{i:03}"), "i": i, "pad": "x".repeat(100)}))
        .collect();
    assert_eq!(
        s.post("/api/b/_insertMany", &Value::Array(docs)).status(),
        200
    );
    // Some history: updates and deletes, and a compaction so tables and WAL both matter.
    for i in 0..50 {
        assert_eq!(
            s.put(&format!("/api/b/d{i:03}"), &json!({"i": -i}))
                .status(),
            200
        );
    }
    for i in 350..400 {
        assert_eq!(s.delete(&format!("/api/b/d{i:03}")).status(), 200);
    }
    assert_eq!(s.post("/api/_compact", &json!({})).status(), 202);
    assert_eq!(s.put("/api/other/one", &json!({"v": 1})).status(), 200);
    let before_b = all(&s, "b");
    let before_other = all(&s, "other");
    assert_eq!(before_b.len(), 350);

    let archive = tmp.path().join("b.tar");
    let err = backup(&s, tmp.path(), &archive);
    assert!(err.contains("backup of sequence"), "{err}");
    // Written after the backup: not in it.
    assert_eq!(s.put("/api/b/after", &json!({"late": true})).status(), 200);
    s.stop();

    let restored = tmp.path().join("restored");
    let (ok, err) = restore(tmp.path(), &archive, &restored);
    assert!(ok, "restore failed: {err}");
    assert!(err.contains("restored sequence"), "{err}");
    // A restore never overwrites: the same target again is refused.
    let (ok, err) = restore(tmp.path(), &archive, &restored);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");

    let r = Server::start(&restored, &[]);
    assert_eq!(all(&r, "b"), before_b);
    assert_eq!(all(&r, "other"), before_other);
    expect_error(r.get("/api/b/after"), 404);
    r.stop();
}

#[test]
fn a_damaged_or_cut_archive_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    let docs: Vec<Value> = (0..200)
        .map(|i| json!({"_id": format!("d{i:03}"), "pad": "y".repeat(200)}))
        .collect();
    assert_eq!(
        s.post("/api/b/_insertMany", &Value::Array(docs)).status(),
        200
    );
    assert_eq!(s.post("/api/_compact", &json!({})).status(), 202);
    // The compaction runs in the background: wait for its table, so the archive has one.
    wait_until("a table on disk", || {
        std::fs::read_dir(dir.join("sst")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        })
    });
    let archive = tmp.path().join("b.tar");
    backup(&s, tmp.path(), &archive);
    s.stop();
    let bytes = std::fs::read(&archive).unwrap();

    // Cut in the middle: the MANIFEST (last member) is missing.
    let cut = tmp.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let target = tmp.path().join("from-cut");
    let (ok, err) = restore(tmp.path(), &cut, &target);
    assert!(!ok, "a cut archive restored");
    assert!(err.contains("cannot restore"), "{err}");

    // One flipped byte inside a table: the verify step after unpacking catches it.
    let sst_at = bytes
        .windows(4)
        .position(|w| w == b".sst")
        .expect("a table member");
    // The member's data starts at the next 512-byte block after its header.
    let data_at = (sst_at / 512 + 1) * 512;
    let mut flipped = bytes.clone();
    flipped[data_at + 600] ^= 0x55;
    let bad = tmp.path().join("flipped.tar");
    std::fs::write(&bad, &flipped).unwrap();
    let target = tmp.path().join("from-flipped");
    let (ok, err) = restore(tmp.path(), &bad, &target);
    assert!(!ok, "a damaged archive restored");
    assert!(err.contains("cannot restore"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn one_backup_at_a_time_and_a_stalled_client_does_not_hold_it_after_it_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    // Far more than the socket buffers hold, so a client that stops reading keeps the
    // first backup running.
    let big = "z".repeat(1 << 20);
    for i in 0..48 {
        assert_eq!(
            s.put(&format!("/api/big/b{i}"), &json!({"pad": big}))
                .status(),
            200
        );
    }
    let mut first = TcpStream::connect(&s.addr).unwrap();
    write!(
        first,
        "GET /api/_backup HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let second = s.get("/api/_backup");
    assert_eq!(second.status(), 409);
    assert!(second.headers().get("retry-after").is_some());
    let body: Value = second.json().unwrap();
    assert_eq!(body["status"], 409);
    assert!(body["error"].as_str().unwrap().contains("already running"));

    // The first client goes away: the next backup may start.
    drop(first);
    wait_until("a backup to be accepted again", || {
        let r = s.get("/api/_backup");
        r.status() == 200 && r.bytes().is_ok()
    });
    // Finished backups leave no checkpoint behind in the data directory.
    wait_until("the scratch checkpoints to be removed", || {
        std::fs::read_dir(dir.join("backups"))
            .map(|d| d.count() == 0)
            .unwrap_or(false)
    });
    s.stop();
}

#[test]
fn checkpoints_left_by_a_crash_are_removed_at_startup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let s = Server::start(&dir, &[]);
    assert_eq!(s.put("/api/c/x", &json!({"v": 1})).status(), 200);
    s.stop();
    let stale = dir.join("backups").join("ckpt-12345-0");
    std::fs::create_dir_all(stale.join("sst")).unwrap();
    std::fs::write(stale.join("MANIFEST"), b"left by a crash").unwrap();
    let foreign = dir.join("backups").join("notes.txt");
    std::fs::write(&foreign, b"not ours").unwrap();

    let s = Server::start(&dir, &[]);
    assert!(!stale.exists(), "a stale checkpoint survived the restart");
    assert!(foreign.exists(), "a file that is not ours was removed");
    assert_eq!(json(s.get("/api/c/x"))["v"], 1);
    s.stop();
}
