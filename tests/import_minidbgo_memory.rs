//! The importer's memory does not grow with the database: a generated MiniDBGo data
//! directory (FORMAT.md: L2, overlapping L1, L0 with tombstones, a WAL) of 100k and of 1M
//! documents is imported in a child process, which prints its peak RSS (`VmHWM`).
//!
//! `make bench-import` runs it (ignored in `make test`: generating and importing 1M
//! documents takes a minute). The child re-runs this test binary with `child_import`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use minidb::store::import::{self, ImportOptions, Phase};
use minidb::store::Store;
use minidb::{Config, Engine};

const COLLECTIONS: u64 = 4;

/// Writes one MiniDBGo SSTable as a stream (entries in key order).
struct SstWriter {
    out: BufWriter<File>,
    name: String,
    block: Vec<u8>,
    index: Vec<(Vec<u8>, u64, u64)>,
    offset: u64,
    count: u32,
    first: Option<Vec<u8>>,
    last: Vec<u8>,
}

impl SstWriter {
    fn create(dir: &Path, level: u32, seq: u64) -> SstWriter {
        let name = format!("sst-L{level}-{seq:06}.sst");
        let mut out = BufWriter::new(File::create(dir.join("sst").join(&name)).expect("create"));
        out.write_all(&[1, 0, 0, 0, 0, 0, 0, 0]).expect("header");
        SstWriter {
            out,
            name,
            block: Vec::new(),
            index: Vec::new(),
            offset: 8,
            count: 0,
            first: None,
            last: Vec::new(),
        }
    }

    fn add(&mut self, key: &[u8], value: Option<&[u8]>) {
        let v = value.unwrap_or(&[]);
        self.block
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.block
            .extend_from_slice(&(v.len() as u32).to_le_bytes());
        self.block.push(u8::from(value.is_none()));
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(v);
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(key.to_vec());
        }
        self.last.clear();
        self.last.extend_from_slice(key);
        if self.block.len() >= 4096 {
            self.close_block();
        }
    }

    fn close_block(&mut self) {
        self.out.write_all(&self.block).expect("block");
        self.out
            .write_all(&crc32c::crc32c(&self.block).to_le_bytes())
            .expect("crc");
        self.index
            .push((self.last.clone(), self.offset, self.block.len() as u64));
        self.offset += self.block.len() as u64 + 4;
        self.block.clear();
    }

    /// Index, bloom filter (zeros: a scanning reader ignores it), footer; the MANIFEST entry.
    fn finish(mut self, level: u32) -> serde_json::Value {
        if !self.block.is_empty() {
            self.close_block();
        }
        let index_offset = self.offset;
        let mut index = Vec::new();
        index.extend_from_slice(&(self.index.len() as u32).to_le_bytes());
        for (key, off, len) in &self.index {
            index.extend_from_slice(&(key.len() as u32).to_le_bytes());
            index.extend_from_slice(key);
            index.extend_from_slice(&off.to_le_bytes());
            index.extend_from_slice(&len.to_le_bytes());
        }
        self.out.write_all(&index).expect("index");
        let bloom_offset = index_offset + index.len() as u64;
        let bloom_bits = (u64::from(self.count) * 10).max(1);
        let bloom_len = bloom_bits.div_ceil(8);
        self.out
            .write_all(&vec![0u8; bloom_len as usize])
            .expect("bloom");
        for v in [
            index_offset,
            index.len() as u64,
            bloom_offset,
            bloom_len,
            bloom_bits,
        ] {
            self.out.write_all(&v.to_le_bytes()).expect("footer");
        }
        self.out.write_all(&3u32.to_le_bytes()).expect("footer");
        self.out.seek(SeekFrom::Start(4)).expect("seek");
        self.out
            .write_all(&self.count.to_le_bytes())
            .expect("count");
        self.out.flush().expect("flush");
        let size = bloom_offset + bloom_len + 44;
        let key = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        serde_json::json!({
            "level": level,
            "path": format!("data/MiniDBGo/sst/{}", self.name),
            "minKey": key(self.first.as_deref().unwrap_or_default()),
            "maxKey": key(&self.last),
            "fileSize": size,
            "keyCount": self.count,
        })
    }
}

fn key(col: u64, i: u64) -> Vec<u8> {
    format!("bench{col}:d{i:07}").into_bytes()
}

fn doc(i: u64, src: &str) -> Vec<u8> {
    format!(
        r#"{{"_id":"d{i:07}","src":"{src}","n":{i},"pad":"{}"}}"#,
        "x".repeat(80)
    )
    .into_bytes()
}

/// What the source holds for key `i` by FORMAT.md's rule: `Some(file)` of the winning
/// version, `None` if deleted.
fn winner(i: u64) -> Option<String> {
    // WAL (newest): updates, deletes, re-creations of ids an L0 file deleted.
    if i % 1000 == 500 || i % 2000 == 7 {
        return Some("wal".into());
    }
    if i % 1000 == 501 {
        return None;
    }
    // L0, newest (seq 43) first.
    for k in (0..3).rev() {
        if i % 100 == 10 * k + 3 {
            return Some(format!("l0-{k}"));
        }
        if i % 1000 == 7 + k {
            return None;
        }
    }
    // L1 by seq, highest first; files j and j+1 overlap.
    for j in (0..5).rev() {
        if i % 10 == j || i % 10 == j + 1 {
            return Some(format!("l1-{j}"));
        }
    }
    Some("l2".into())
}

/// Writes a MiniDBGo data directory of `docs` documents (before deletes) under `dir`;
/// returns the number of live documents.
fn generate(dir: &Path, docs: u64) -> u64 {
    std::fs::create_dir_all(dir.join("sst")).expect("mkdir");
    std::fs::create_dir_all(dir.join("wal")).expect("mkdir");
    let per = docs / COLLECTIONS;
    let mut levels: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    // L2: one file per collection (no overlap), seqs 10..13.
    for c in 0..COLLECTIONS {
        let mut w = SstWriter::create(dir, 2, 10 + c);
        for i in 0..per {
            w.add(&key(c, i), Some(&doc(i, "l2")));
        }
        levels.entry("2".into()).or_default().push(w.finish(2));
    }
    // L1: five overlapping files, seqs 20, 25, ..., listed by minKey as MiniDBGo does.
    for j in 0..5u64 {
        let mut w = SstWriter::create(dir, 1, 20 + 5 * j);
        for c in 0..COLLECTIONS {
            for i in (0..per).filter(|i| i % 10 == j || i % 10 == j + 1) {
                w.add(&key(c, i), Some(&doc(i, &format!("l1-{j}"))));
            }
        }
        levels.entry("1".into()).or_default().push(w.finish(1));
    }
    // L0: three files, seqs 41..43 in flush order, with tombstones.
    for k in 0..3u64 {
        let mut w = SstWriter::create(dir, 0, 41 + k);
        for c in 0..COLLECTIONS {
            for i in 0..per {
                if i % 100 == 10 * k + 3 {
                    w.add(&key(c, i), Some(&doc(i, &format!("l0-{k}"))));
                } else if i % 1000 == 7 + k {
                    w.add(&key(c, i), None);
                }
            }
        }
        levels.entry("0".into()).or_default().push(w.finish(0));
    }
    let manifest = serde_json::json!({ "levels": levels });
    std::fs::write(
        dir.join("MANIFEST"),
        serde_json::to_string_pretty(&manifest).expect("json") + "\n",
    )
    .expect("MANIFEST");
    // The WAL: records in arrival order, not key order.
    let mut wal =
        BufWriter::new(File::create(dir.join("wal/wal-44-1796155115374227231.log")).expect("wal"));
    for i in (0..per).rev() {
        for c in 0..COLLECTIONS {
            let value = if i % 1000 == 500 || i % 2000 == 7 {
                Some(doc(i, "wal"))
            } else if i % 1000 == 501 {
                None
            } else {
                continue;
            };
            let k = key(c, i);
            let flag = u8::from(value.is_none());
            let v = value.unwrap_or_default();
            let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&[flag]), &k), &v);
            wal.write_all(&crc.to_le_bytes()).expect("wal");
            wal.write_all(&(k.len() as u32).to_le_bytes()).expect("wal");
            wal.write_all(&(v.len() as u32).to_le_bytes()).expect("wal");
            wal.write_all(&[flag]).expect("wal");
            wal.write_all(&k).expect("wal");
            wal.write_all(&v).expect("wal");
        }
    }
    wal.flush().expect("wal");
    (0..per).filter(|&i| winner(i).is_some()).count() as u64 * COLLECTIONS
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for sub in ["sst", "wal"] {
        for e in std::fs::read_dir(dir.join(sub)).expect("list").flatten() {
            total += e.metadata().map(|m| m.len()).unwrap_or_default();
        }
    }
    total
}

/// `VmHWM` (peak resident set) of this process, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The child: imports `MINIDBGO_MEM_SOURCE` into `MINIDBGO_MEM_TARGET` as the CLI would
/// (default configuration), checks the result, prints `peak_rss_kib=N`.
#[test]
#[ignore = "run by import_bounded_memory in a child process"]
fn child_import() {
    let (Some(source), Some(target), Some(live)) = (
        std::env::var_os("MINIDBGO_MEM_SOURCE"),
        std::env::var_os("MINIDBGO_MEM_TARGET"),
        std::env::var("MINIDBGO_MEM_LIVE").ok(),
    ) else {
        return;
    };
    let live: u64 = live.parse().expect("MINIDBGO_MEM_LIVE");
    let before = peak_rss_kib();
    // The reading side alone first (VmHWM only grows, so this is its own peak).
    let checked = import::check_dir(Path::new(&source), &mut |_| {}).expect("check");
    assert_eq!(checked.documents, live);
    let reading = peak_rss_kib();
    let engine = Engine::open(PathBuf::from(&target), Config::default().engine_options())
        .expect("open target");
    let store = Store::new(Arc::new(engine));
    let started = std::time::Instant::now();
    let summary = import::import_dir(
        &store,
        Path::new(&source),
        &ImportOptions::default(),
        &mut |_: Phase, _| {},
    )
    .expect("import");
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(summary.documents, live, "{summary}");
    assert_eq!(summary.collections, COLLECTIONS);
    let per = live / COLLECTIONS + 1;
    for i in (0..per).step_by(997) {
        let got = store.get("bench1", &format!("d{i:07}"));
        match winner(i) {
            Some(src) => {
                let doc: serde_json::Value =
                    serde_json::from_slice(&got.expect("document").json).expect("json");
                assert_eq!(doc["src"], src.as_str(), "d{i:07}");
            }
            None => assert!(got.is_err(), "d{i:07} should be deleted"),
        }
    }
    let counted: u64 = store
        .collections()
        .expect("collections")
        .iter()
        .map(|c| c.doc_count)
        .sum();
    assert_eq!(counted, live);
    store.engine().shutdown().expect("shutdown");
    println!(
        "peak_rss_kib={} baseline_kib={before} reading_kib={reading} seconds={seconds:.1} records={}",
        peak_rss_kib(),
        summary.records
    );
}

#[test]
#[ignore = "generates and imports 1.1M documents; make bench-import"]
fn import_bounded_memory() {
    let exe = std::env::current_exe().expect("test binary");
    // MINIDBGO_MEM_SIZES=100000,1000000,3000000 adds points.
    let sizes: Vec<u64> = std::env::var("MINIDBGO_MEM_SIZES")
        .unwrap_or_else(|_| "100000,1000000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("MINIDBGO_MEM_SIZES: numbers"))
        .collect();
    let mut peaks = Vec::new();
    for &docs in &sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = tmp.path().join("minidbgo");
        let live = generate(&source, docs);
        let out = Command::new(&exe)
            .args(["--exact", "child_import", "--ignored", "--nocapture"])
            .env("MINIDBGO_MEM_SOURCE", &source)
            .env("MINIDBGO_MEM_TARGET", tmp.path().join("minidb"))
            .env("MINIDBGO_MEM_LIVE", live.to_string())
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("peak_rss_kib="))
            .expect("the child's figures");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name))
                .unwrap_or_default()
                .to_owned()
        };
        let peak: u64 = field("peak_rss_kib=").parse().expect("peak");
        println!(
            "import-minidbgo of {live} live documents ({} records, {} MiB of MiniDBGo files): \
             peak RSS {} MiB (reading and resolving alone: {} MiB; at start {} MiB), {} s",
            field("records="),
            dir_bytes(&source) >> 20,
            peak >> 10,
            field("reading_kib=").parse::<u64>().unwrap_or_default() >> 10,
            field("baseline_kib=").parse::<u64>().unwrap_or_default() >> 10,
            field("seconds=")
        );
        peaks.push(peak);
    }
    // Ten times the data may not take much more memory: what grows is the target
    // engine filling its fixed allowances (a 16 MiB memtable, the block cache) and the
    // WAL index (0.25% of the keys here); one block per table and one chunk are fixed.
    for pair in peaks.windows(2) {
        assert!(
            pair[1] < pair[0] + (64 << 10),
            "peak RSS grew from {} to {} KiB",
            pair[0],
            pair[1]
        );
    }
}
