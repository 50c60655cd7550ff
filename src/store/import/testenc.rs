//! Writers of MiniDBGo's formats for the unit tests (FORMAT.md sections 3-5).

use std::path::Path;

use super::sstable::TableEntry;

/// MiniDBGo closes a block after the entry that brings it to this size.
const BLOCK_TARGET: usize = 4096;

/// An SSTable holding `entries` (sorted by the caller), laid out as MiniDBGo does.
pub(crate) fn sstable(entries: &[TableEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let mut index: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let mut block = Vec::new();
    let mut last_key: &[u8] = &[];
    let close = |out: &mut Vec<u8>, block: &mut Vec<u8>, index: &mut Vec<_>, key: &[u8]| {
        let offset = out.len() as u64;
        out.extend_from_slice(block);
        out.extend_from_slice(&crc32c::crc32c(block).to_le_bytes());
        index.push((key.to_vec(), offset, block.len() as u64));
        block.clear();
    };
    for e in entries {
        block.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
        let value = e.value.as_deref().unwrap_or(&[]);
        block.extend_from_slice(&(value.len() as u32).to_le_bytes());
        block.push(u8::from(e.value.is_none()));
        block.extend_from_slice(&e.key);
        block.extend_from_slice(value);
        last_key = &e.key;
        if block.len() >= BLOCK_TARGET {
            close(&mut out, &mut block, &mut index, last_key);
        }
    }
    if !block.is_empty() {
        close(&mut out, &mut block, &mut index, last_key);
    }
    let index_offset = out.len() as u64;
    out.extend_from_slice(&(index.len() as u32).to_le_bytes());
    for (key, offset, len) in &index {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&offset.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    let bloom_offset = out.len() as u64;
    let bloom_bits = (entries.len() as u64 * 10).max(1);
    out.resize(out.len() + bloom_bits.div_ceil(8) as usize, 0);
    let bloom_len = out.len() as u64 - bloom_offset;
    for v in [
        index_offset,
        bloom_offset - index_offset,
        bloom_offset,
        bloom_len,
        bloom_bits,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&3u32.to_le_bytes());
    out
}

/// Number of data blocks in a table written by [`sstable`].
pub(crate) fn block_count(table: &[u8]) -> u32 {
    let footer = table.len() - 44;
    let mut a = [0u8; 8];
    a.copy_from_slice(&table[footer..footer + 8]);
    let index = u64::from_le_bytes(a) as usize;
    let mut n = [0u8; 4];
    n.copy_from_slice(&table[index..index + 4]);
    u32::from_le_bytes(n)
}

/// One WAL record: a put of `value`, or a delete for `None`.
pub(crate) fn wal_record(key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
    let flag = u8::from(value.is_none());
    let value = value.unwrap_or(&[]);
    let mut crc = crc32c::crc32c(&[flag]);
    crc = crc32c::crc32c_append(crc, key);
    crc = crc32c::crc32c_append(crc, value);
    let mut out = Vec::with_capacity(13 + key.len() + value.len());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.push(flag);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// The records of one WAL file: key and value (`None`: a delete).
pub(crate) type Records<'a> = &'a [(&'a str, Option<&'a str>)];

/// A table for a test directory: level, seq, entries.
pub(crate) struct Table<'a> {
    pub level: u32,
    pub seq: u64,
    pub entries: &'a [(&'a str, Option<&'a str>)],
}

/// Writes a MiniDBGo data directory under `dir`: the tables (registered in MANIFEST in
/// the order given), `unregistered` tables (only as files) and WAL files by name.
pub(crate) fn write_dir(
    dir: &Path,
    tables: &[Table<'_>],
    unregistered: &[Table<'_>],
    wals: &[(&str, Records<'_>)],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("sst"))?;
    std::fs::create_dir_all(dir.join("wal"))?;
    let mut levels: std::collections::BTreeMap<String, Vec<serde_json::Value>> = Default::default();
    for (t, registered) in tables
        .iter()
        .map(|t| (t, true))
        .chain(unregistered.iter().map(|t| (t, false)))
    {
        let entries: Vec<TableEntry> = t
            .entries
            .iter()
            .map(|(k, v)| TableEntry {
                key: k.as_bytes().to_vec(),
                value: v.map(|v| v.as_bytes().to_vec()),
            })
            .collect();
        let bytes = sstable(&entries);
        let name = format!("sst-L{}-{:06}.sst", t.level, t.seq);
        std::fs::write(dir.join("sst").join(&name), &bytes)?;
        if registered {
            levels
                .entry(t.level.to_string())
                .or_default()
                .push(serde_json::json!({
                    "level": t.level,
                    "path": format!("data/MiniDBGo/sst/{name}"),
                    "minKey": t.entries.first().map_or("", |e| e.0),
                    "maxKey": t.entries.last().map_or("", |e| e.0),
                    "fileSize": bytes.len(),
                    "keyCount": entries.len(),
                }));
        }
    }
    let manifest = serde_json::json!({ "levels": levels });
    std::fs::write(
        dir.join("MANIFEST"),
        serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n",
    )?;
    for (name, records) in wals {
        let mut bytes = Vec::new();
        for (k, v) in *records {
            bytes.extend(wal_record(k.as_bytes(), v.map(str::as_bytes)));
        }
        std::fs::write(dir.join("wal").join(name), bytes)?;
    }
    Ok(())
}
