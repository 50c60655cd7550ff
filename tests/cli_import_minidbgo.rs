//! `minidb import-minidbgo DIR` and `minidb restore --format minidbgo FILE` through the real
//! binary, on the data directories and dumps the original MiniDBGo wrote
//! (`tests/fixtures/minidbgo/`): every fixture imported and compared with its
//! `expected.jsonl` as JSON values, the skipped records with their reasons, exit codes,
//! summary lines, damaged input, a non-empty or server-held target.
#![cfg(feature = "server")]

mod api;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minidbgo")
}

/// Runs `minidb ARGS` in `cwd`; returns (exit code, stdout, stderr).
fn minidb(cwd: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = api::command(cwd).args(args).output().expect("run minidb");
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

type Docs = BTreeMap<(String, String), Value>;

/// Every document of the MiniDB data directory `data`, read back with `minidb dump`.
fn contents(data: &Path) -> Docs {
    let out = data.with_extension("dump.jsonl");
    let (code, _, err) = minidb(
        data.parent().expect("parent"),
        &["dump", "--out", s(&out), "--data-dir", s(data)],
    );
    assert_eq!(code, Some(0), "dump failed: {err}");
    let text = fs::read_to_string(&out).expect("read dump");
    let mut docs = Docs::new();
    for line in text.lines() {
        let rec: Value = serde_json::from_str(line).expect("dump line");
        let col = rec["collection"].as_str().expect("collection").to_owned();
        let id = rec["doc"]["_id"].as_str().expect("_id").to_owned();
        assert!(docs.insert((col, id), rec["doc"].clone()).is_none());
    }
    docs
}

/// The documents of `expected.jsonl` (the `minidbgo_*` members beside them ignored).
fn expected(fixture: &str) -> Docs {
    let text = fs::read_to_string(fixtures().join(fixture).join("expected.jsonl"))
        .expect("expected.jsonl");
    let mut docs = Docs::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: Value = serde_json::from_str(line).expect("expected line");
        let col = rec["collection"].as_str().expect("collection").to_owned();
        let id = rec["doc"]["_id"].as_str().expect("_id").to_owned();
        docs.insert((col, id), rec["doc"].clone());
    }
    docs
}

/// The keys `divergences.jsonl` says an importer must skip, with the reason.
fn expected_skips(fixture: &str) -> BTreeMap<String, String> {
    let text = fs::read_to_string(fixtures().join(fixture).join("divergences.jsonl"))
        .expect("divergences.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).expect("divergence line"))
        .filter(|d| {
            d["in_expected"] == false
                && matches!(
                    d["kind"].as_str(),
                    Some("not-an-object" | "not-importable-name")
                )
        })
        .map(|d| {
            (
                d["key"].as_str().expect("key").to_owned(),
                d["kind"].as_str().expect("kind").to_owned(),
            )
        })
        .collect()
}

/// JSON equality as the fixtures define it: member order irrelevant, numbers by value
/// (integers exactly), booleans are not numbers.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let int = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
            };
            match (int(x), int(y)) {
                (Some(p), Some(q)) => p == q,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

fn assert_same_docs(fixture: &str, got: &Docs, want: &Docs) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter_map(|(k, w)| got.get(k).filter(|g| !same(g, w)).map(|g| (k, g, w)))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{fixture}: {} missing (e.g. {:?}), {} extra (e.g. {:?}), {} differ (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        differ.len(),
        differ.first()
    );
}

/// The skipped records the summary lists: key -> reason.
fn listed_skips(summary: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut reason = None;
    for line in summary.lines() {
        if let Some(rest) = line.strip_prefix("  ").filter(|r| !r.starts_with(' ')) {
            reason = rest.split(':').next().map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix("    \"") {
            let key = rest.split("\": ").next().expect("key");
            out.insert(key.to_owned(), reason.clone().expect("a reason line first"));
        }
    }
    out
}

/// Checks the summary and the imported documents of one fixture.
fn check(fixture: &str, data: &Path, code: Option<i32>, out: &str, err: &str) {
    let want = expected(fixture);
    let skips = expected_skips(fixture);
    let want_code = if skips.is_empty() { 0 } else { 3 };
    assert_eq!(code, Some(want_code), "{fixture}: {out}\n{err}");
    let collections: std::collections::BTreeSet<&String> = want.keys().map(|(c, _)| c).collect();
    let first = format!(
        "imported {} documents into {} collections",
        want.len(),
        collections.len()
    );
    assert!(out.starts_with(&first), "{fixture}: {out}");
    assert!(
        out.contains(&format!("skipped {} records\n", skips.len())),
        "{fixture}: {out}"
    );
    // Every fixture skips fewer records per reason than the summary lists as examples.
    assert_eq!(listed_skips(out), skips, "{fixture}: {out}");
    assert_same_docs(fixture, &contents(data), &want);
}

#[test]
fn every_data_directory_fixture_imports_exactly_its_expected_documents() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for fixture in [
        "clean-shutdown",
        "crash-with-wal",
        "many-levels-with-deletes",
        "edge-cases",
    ] {
        let data = tmp.path().join(fixture);
        let source = fixtures().join(fixture).join("db");
        let (code, out, err) = minidb(
            tmp.path(),
            &["import-minidbgo", s(&source), "--data-dir", s(&data)],
        );
        check(fixture, &data, code, &out, &err);
        if fixture == "many-levels-with-deletes" {
            assert!(
                out.contains("warning: sst/sst-L1-000032.sst ignored: not in MANIFEST"),
                "{out}"
            );
            assert!(
                out.contains(
                    "warning: sst-L1-000016.sst and the newer-numbered sst-L2-000018.sst overlap"
                ),
                "{out}"
            );
        }
    }
}

#[test]
fn every_dump_fixture_restores_exactly_its_expected_documents() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for fixture in [
        "dump-clean-shutdown",
        "dump-crash-with-wal",
        "dump-many-levels-with-deletes",
        "dump-edge-cases",
    ] {
        let data = tmp.path().join(fixture);
        let dump = fs::read_dir(fixtures().join(fixture))
            .expect("fixture dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("dump_"))
            })
            .expect("a dump file");
        let (code, out, err) = minidb(
            tmp.path(),
            &[
                "restore",
                "--format",
                "minidbgo",
                s(&dump),
                "--data-dir",
                s(&data),
            ],
        );
        check(fixture, &data, code, &out, &err);
        assert!(out.contains("documents from the dump"), "{out}");
    }
}

#[test]
fn the_default_restore_format_is_still_json_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dump = fixtures().join("dump-edge-cases/dump_195856_01122026.json");
    let data = tmp.path().join("t");
    let (code, _, err) = minidb(tmp.path(), &["restore", s(&dump), "--data-dir", s(&data)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is not a valid dump") && err.contains("line 1"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
            let mut perm = fs::metadata(&dest).expect("meta").permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perm.set_readonly(false);
            fs::set_permissions(&dest, perm).expect("chmod");
        }
    }
}

/// Whether `data` holds no document (it may not even exist).
fn is_empty_target(data: &Path) -> bool {
    !data.exists() || contents(data).is_empty()
}

#[test]
fn a_damaged_sstable_is_refused_naming_file_and_offset_and_nothing_is_imported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("db");
    copy_dir(&fixtures().join("clean-shutdown/db"), &source);
    let table = source.join("sst/sst-L1-000015.sst");
    let mut bytes = fs::read(&table).expect("read");
    // Inside the first data block (it starts at offset 8).
    bytes[100] ^= 0x01;
    fs::write(&table, bytes).expect("damage");
    let data = tmp.path().join("t");
    let (code, out, err) = minidb(
        tmp.path(),
        &["import-minidbgo", s(&source), "--data-dir", s(&data)],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("sst-L1-000015.sst is damaged at byte offset 8: block checksum mismatch"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        is_empty_target(&data),
        "documents were imported from a damaged source"
    );
}

/// Offsets at which the records of a MiniDBGo WAL file start.
fn record_starts(wal: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at + 13 <= wal.len() {
        starts.push(at);
        let len =
            |i: usize| u32::from_le_bytes(wal[i..i + 4].try_into().expect("4 bytes")) as usize;
        at += 13 + len(at + 4) + len(at + 8);
    }
    assert_eq!(at, wal.len(), "fixture WAL does not parse");
    starts
}

#[test]
fn a_torn_wal_record_is_refused_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let source = tmp.path().join("db");
    copy_dir(&fixtures().join("crash-with-wal/db"), &source);
    let wal = fs::read_dir(source.join("wal"))
        .expect("wal dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("wal-99-"))
        .expect("wal-99");
    let bytes = fs::read(&wal).expect("read");
    let last = *record_starts(&bytes).last().expect("records");
    fs::write(&wal, &bytes[..bytes.len() - 5]).expect("tear");
    let data = tmp.path().join("t");
    let (code, _, err) = minidb(
        tmp.path(),
        &["import-minidbgo", s(&source), "--data-dir", s(&data)],
    );
    assert_eq!(code, Some(1), "{err}");
    let name = wal
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        err.contains(&format!(
            "{name} is damaged at byte offset {last}: record of"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("truncate -s {last}")), "{err}");
    assert!(is_empty_target(&data));
}

#[test]
fn a_damaged_dump_is_refused_naming_file_and_offset_and_nothing_is_imported() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let good =
        fs::read(fixtures().join("dump-clean-shutdown/dump_195901_01122026.json")).expect("dump");
    let dump = tmp.path().join("dump_cut.json");
    // Cut in the middle: most documents parse (and would be written by a one-pass
    // importer) before the parser meets the end.
    let cut = good.len() / 2;
    fs::write(&dump, &good[..cut]).expect("write");
    let data = tmp.path().join("t");
    let (code, _, err) = minidb(
        tmp.path(),
        &[
            "restore",
            "--format",
            "minidbgo",
            s(&dump),
            "--data-dir",
            s(&data),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("dump_cut.json is damaged at byte offset {cut}: ")),
        "{err}"
    );
    assert!(err.contains("EOF while parsing"), "{err}");
    assert!(
        is_empty_target(&data),
        "documents were imported from a damaged dump"
    );

    // Not a dump at all: a MiniDB JSON Lines dump given with --format minidbgo.
    let jsonl = tmp.path().join("lines.jsonl");
    fs::write(&jsonl, "{\"collection\":\"a\",\"doc\":{\"_id\":\"1\"}}\n").expect("write");
    let (code, _, err) = minidb(
        tmp.path(),
        &[
            "restore",
            "--format",
            "minidbgo",
            s(&jsonl),
            "--data-dir",
            s(&data),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("lines.jsonl is damaged at byte offset"),
        "{err}"
    );
    assert!(err.contains("an array of documents"), "{err}");
}

#[test]
fn a_target_with_documents_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("t");
    let edge = fixtures().join("edge-cases/db");
    let clean = fixtures().join("clean-shutdown/db");
    let (code, _, err) = minidb(
        tmp.path(),
        &["import-minidbgo", s(&edge), "--data-dir", s(&data)],
    );
    assert_eq!(code, Some(3), "{err}");
    let before = contents(&data);
    let (code, out, err) = minidb(
        tmp.path(),
        &["import-minidbgo", s(&clean), "--data-dir", s(&data)],
    );
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("already holds 23 documents in 4 collections") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        contents(&data),
        before,
        "a refused import changed the target"
    );

    let (code, out, err) = minidb(
        tmp.path(),
        &[
            "import-minidbgo",
            s(&clean),
            "--force",
            "--data-dir",
            s(&data),
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let mut want = expected("edge-cases");
    want.extend(expected("clean-shutdown"));
    assert_same_docs("edge-cases + clean-shutdown", &contents(&data), &want);
    // The store's exact counters agree with the documents.
    let server = api::Server::start(&data, &[]);
    let cols = api::json(server.get("/api/_collections"));
    let total: u64 = cols
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["docCount"].as_u64().expect("docCount"))
        .sum();
    assert_eq!(total, want.len() as u64, "{cols}");
    server.stop();

    // A forced re-import of the same source replaces documents without doubling counts.
    let (code, _, err) = minidb(
        tmp.path(),
        &[
            "import-minidbgo",
            s(&clean),
            "--force",
            "--data-dir",
            s(&data),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let server = api::Server::start(&data, &[]);
    let count = api::json(server.get("/api/users/_count"));
    assert_eq!(count["count"], 784, "{count}");
    server.stop();
}

#[test]
fn a_data_directory_held_by_a_server_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("t");
    let server = api::Server::start(&data, &[]);
    let edge = fixtures().join("edge-cases/db");
    let dump = fixtures().join("dump-edge-cases/dump_195856_01122026.json");
    for args in [
        vec!["import-minidbgo", s(&edge), "--data-dir", s(&data)],
        vec![
            "restore",
            "--format",
            "minidbgo",
            s(&dump),
            "--data-dir",
            s(&data),
        ],
    ] {
        let (code, _, err) = minidb(tmp.path(), &args);
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("in use by a running minidb server"), "{err}");
    }
    let cols = api::json(server.get("/api/_collections"));
    assert_eq!(cols, serde_json::json!([]));
    server.stop();
}

#[test]
fn dry_run_prints_the_summary_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("t");
    let source = fixtures().join("edge-cases/db");
    let (code, out, err) = minidb(
        tmp.path(),
        &[
            "import-minidbgo",
            s(&source),
            "--dry-run",
            "--data-dir",
            s(&data),
        ],
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(
        out.starts_with("would import 23 documents into 4 collections"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was written"), "{out}");
    assert!(!data.exists(), "a dry run created the target");
}

#[test]
fn a_directory_that_is_not_minidbgos_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let parent = tmp.path().join("app");
    copy_dir(
        &fixtures().join("edge-cases/db"),
        &parent.join("data/MiniDBGo"),
    );
    let data = tmp.path().join("t");
    let (code, _, err) = minidb(
        tmp.path(),
        &["import-minidbgo", s(&parent), "--data-dir", s(&data)],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("is not a MiniDBGo data directory"), "{err}");
    assert!(err.contains("data/MiniDBGo looks like one"), "{err}");
    fs::create_dir_all(&data).expect("mkdir");
    let (code, _, err) = minidb(
        tmp.path(),
        &["import-minidbgo", s(&data), "--data-dir", s(&data)],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("is both the MiniDBGo source and the MiniDB data directory"),
        "{err}"
    );
}
