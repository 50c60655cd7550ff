//! Entry points for fuzz targets and decoder property tests (`fuzz/`, `tests/`): each feeds
//! arbitrary bytes to one on-disk decoder. Not part of the supported API.

use std::path::Path;
use std::sync::Arc;

use super::batch::decode_payload;
use super::cache::BlockCache;
use super::iter::Source;
use super::manifest;
use super::sstable::block::Block;
use super::sstable::format::Footer;
use super::sstable::{Table, TableIter};
use super::stats::Counters;
use super::storage::{write_all_at, SimFs, Storage};
use super::wal;

/// A WAL segment's bytes, replayed as the last segment and as an earlier one.
pub fn wal_segment(data: &[u8]) {
    for last in [true, false] {
        let _ = wal::replay(Path::new("fuzz.wal"), data, last, 0, |_, ops| {
            for op in ops {
                let _ = (op.key.len(), op.value.map(<[u8]>::len));
            }
        });
    }
    let _ = decode_payload(data);
}

/// A manifest file's bytes.
pub fn manifest_file(data: &[u8]) {
    let _ = manifest::decode_file(Path::new("MANIFEST"), data);
}

/// A table's footer bytes.
pub fn table_footer(data: &[u8]) {
    let _ = Footer::decode(data);
}

/// A data or index block's bytes: parsed, every entry read, a few seeks.
pub fn block(data: &[u8]) {
    if let Some(b) = Block::parse(bytes::Bytes::copy_from_slice(data)) {
        for i in 0..b.len() {
            let _ = b.entry(i);
        }
        for key in [&b""[..], b"a", b"\xff\xff"] {
            let _ = b.seek(key, u64::MAX);
        }
    }
}

/// A whole table file: opened (footer, index, filter, properties), scanned, probed.
pub fn table_file(data: &[u8]) {
    let fs = SimFs::new();
    let path = Path::new("/t.sst");
    let Ok(f) = fs.create_new(path) else { return };
    if write_all_at(&*f, data, 0).is_err() {
        return;
    }
    let cache = Arc::new(BlockCache::new(1 << 20));
    let Ok(t) = Table::open(&fs, path, 1, cache, Arc::new(Counters::default())) else {
        return;
    };
    let t = Arc::new(t);
    for key in [&b""[..], b"a", b"key", b"\xff"] {
        let _ = t.get(key, Table::hash(key), u64::MAX);
    }
    let mut it = TableIter::new(t, false);
    if it.seek(&[]).is_err() {
        return;
    }
    for _ in 0..10_000 {
        if it.current().is_none() || it.advance().is_err() {
            break;
        }
    }
}
