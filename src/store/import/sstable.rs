//! MiniDBGo's SSTables (FORMAT.md section 4), streamed in key order.
//!
//! A reader holds one data block and a small window of the index at a time, on one file
//! handle (positioned reads), so hundreds of tables can be merged at once. Every length
//! comes from the file and is checked against the region it must fit in before anything
//! is allocated; every block's CRC-32C is checked; keys must be strictly ascending (the
//! merge relies on it).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{ImportError, Result};

/// Footer size: five u64 and one u32.
const FOOTER: u64 = 44;
/// MiniDBGo refuses shorter files.
const MIN_FILE: u64 = 52;
/// Entry header: key length, value length, flag.
const ENTRY_HEADER: usize = 9;
/// Smallest index entry: key length, block offset, block length.
const INDEX_ENTRY_MIN: u64 = 20;
/// Bytes of the index read at a time.
const INDEX_WINDOW: u64 = 8 << 10;
/// Largest data block accepted: a block holds entries up to 4 KiB plus the one that
/// crosses it, so only a huge value makes a big block. Anything larger is refused rather
/// than allocated.
pub(crate) const MAX_BLOCK: u64 = (256 << 20) + (1 << 20);

/// Positioned reads: a file, or bytes in memory (tests).
pub(crate) trait ReadAt {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the source ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl ReadAt for File {
    #[cfg(unix)]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(self, buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ReadAt for &[u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// One entry: a key and its value, or `None` for a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableEntry {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A streaming reader of one SSTable.
pub(crate) struct TableReader<R> {
    path: PathBuf,
    src: R,
    /// A window of the index: `window` holds the bytes from `window_start`.
    window: Vec<u8>,
    window_start: u64,
    index_pos: u64,
    index_end: u64,
    blocks_left: u32,
    /// Where the next block must start (right after the previous block's CRC).
    next_block: u64,
    /// Where the index starts: no block may reach past it.
    data_end: u64,
    block: Vec<u8>,
    block_base: u64,
    pos: usize,
    block_last_key: Vec<u8>,
    declared: u32,
    read: u64,
    prev_key: Option<Vec<u8>>,
    done: bool,
}

impl TableReader<File> {
    /// Opens `path`.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| ImportError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ImportError::io("stat", path, e))?
            .len();
        TableReader::new(path, file, len)
    }
}

impl<R: ReadAt> TableReader<R> {
    /// A reader over a table of `len` bytes; `path` names it in errors.
    pub(crate) fn new(path: &Path, src: R, len: u64) -> Result<Self> {
        let damaged = |offset, reason: String| ImportError::damaged(path, offset, reason);
        if len < MIN_FILE {
            return Err(damaged(
                0,
                format!("{len} bytes, shorter than any MiniDBGo SSTable ({MIN_FILE} bytes)"),
            ));
        }
        let mut header = [0u8; 8];
        read_exact_at(path, &src, &mut header, 0)?;
        let declared = le_u32(&header[4..8]);
        let footer_at = len - FOOTER;
        let mut f = [0u8; FOOTER as usize];
        read_exact_at(path, &src, &mut f, footer_at)?;
        let index_offset = le_u64(&f[0..8]);
        let index_len = le_u64(&f[8..16]);
        let bloom_offset = le_u64(&f[16..24]);
        let bloom_len = le_u64(&f[24..32]);
        if index_offset < 8
            || index_len < 4
            || index_offset.checked_add(index_len) != Some(bloom_offset)
            || bloom_offset.checked_add(bloom_len) != Some(footer_at)
        {
            return Err(damaged(
                footer_at,
                format!(
                    "footer does not fit the file: index at {index_offset} ({index_len} bytes), \
                     bloom filter at {bloom_offset} ({bloom_len} bytes), footer at {footer_at}"
                ),
            ));
        }
        let mut count = [0u8; 4];
        read_exact_at(path, &src, &mut count, index_offset)?;
        let blocks = le_u32(&count);
        if u64::from(blocks) * INDEX_ENTRY_MIN > index_len - 4 {
            return Err(damaged(
                index_offset,
                format!("index claims {blocks} blocks, more than its {index_len} bytes can hold"),
            ));
        }
        Ok(TableReader {
            path: path.to_path_buf(),
            src,
            window: Vec::new(),
            window_start: 0,
            index_pos: index_offset + 4,
            index_end: bloom_offset,
            blocks_left: blocks,
            next_block: 8,
            data_end: index_offset,
            block: Vec::new(),
            block_base: 8,
            pos: 0,
            block_last_key: Vec::new(),
            declared,
            read: 0,
            prev_key: None,
            done: false,
        })
    }

    /// Entries the header says the table holds (tombstones included).
    pub(crate) fn declared_entries(&self) -> u32 {
        self.declared
    }

    fn damaged(&self, offset: u64, reason: String) -> ImportError {
        ImportError::damaged(&self.path, offset, reason)
    }

    /// The next entry in key order, `None` at the end (after checking that the blocks,
    /// the index and the header agree).
    pub(crate) fn next_entry(&mut self) -> Result<Option<TableEntry>> {
        if self.done {
            return Ok(None);
        }
        while self.pos >= self.block.len() {
            if !self.block.is_empty() {
                self.check_block_end()?;
            }
            if self.blocks_left == 0 {
                self.finish()?;
                return Ok(None);
            }
            self.load_block()?;
        }
        self.parse_entry().map(Some)
    }

    fn check_block_end(&mut self) -> Result<()> {
        if self.prev_key.as_deref() != Some(&self.block_last_key[..]) {
            return Err(self.damaged(
                self.block_base,
                format!(
                    "the index says this block ends with key {}, its last entry is {}",
                    show(&self.block_last_key),
                    self.prev_key.as_deref().map_or("(none)".into(), show)
                ),
            ));
        }
        self.block.clear();
        self.pos = 0;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.done = true;
        if self.next_block != self.data_end {
            return Err(self.damaged(
                self.next_block,
                format!(
                    "{} bytes between the last indexed block and the index",
                    self.data_end.saturating_sub(self.next_block)
                ),
            ));
        }
        if self.index_pos != self.index_end {
            return Err(self.damaged(
                self.index_pos,
                format!(
                    "{} bytes left over at the end of the index",
                    self.index_end - self.index_pos
                ),
            ));
        }
        if self.read != u64::from(self.declared) {
            return Err(self.damaged(
                4,
                format!(
                    "the header says {} entries, the blocks hold {}",
                    self.declared, self.read
                ),
            ));
        }
        Ok(())
    }

    fn load_block(&mut self) -> Result<()> {
        let at = self.index_pos;
        if self.index_end - at < INDEX_ENTRY_MIN {
            return Err(self.damaged(
                at,
                format!(
                    "{} bytes left in the index, an entry needs at least {INDEX_ENTRY_MIN}",
                    self.index_end - at
                ),
            ));
        }
        let mut n = [0u8; 4];
        self.index_read(&mut n)?;
        let key_len = u64::from(le_u32(&n));
        if key_len + 16 > self.index_end - self.index_pos {
            return Err(self.damaged(
                at,
                format!("index entry with a {key_len}-byte key runs past the index"),
            ));
        }
        let mut key = vec![0u8; key_len as usize];
        self.index_read(&mut key)?;
        let mut pos = [0u8; 16];
        self.index_read(&mut pos)?;
        let offset = le_u64(&pos[0..8]);
        let len = le_u64(&pos[8..16]);
        if offset != self.next_block {
            return Err(self.damaged(
                at,
                format!(
                    "index entry places a block at {offset}; the previous block ends at {}",
                    self.next_block
                ),
            ));
        }
        let room = self.data_end.saturating_sub(offset);
        if len == 0 || len > MAX_BLOCK || len.checked_add(4).is_none_or(|l| l > room) {
            return Err(self.damaged(
                at,
                format!(
                    "index entry gives block length {len}; {room} bytes are left before the \
                     index (at most {MAX_BLOCK} accepted)"
                ),
            ));
        }
        let mut block = std::mem::take(&mut self.block);
        block.resize(len as usize, 0);
        read_exact_at(&self.path, &self.src, &mut block, offset)?;
        let mut crc = [0u8; 4];
        read_exact_at(&self.path, &self.src, &mut crc, offset + len)?;
        let stored = le_u32(&crc);
        let actual = crc32c::crc32c(&block);
        if stored != actual {
            return Err(self.damaged(
                offset,
                format!("block checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"),
            ));
        }
        self.block = block;
        self.block_base = offset;
        self.block_last_key = key;
        self.pos = 0;
        self.next_block = offset + len + 4;
        self.blocks_left -= 1;
        Ok(())
    }

    /// Reads the next `out.len()` index bytes (the caller checked they are in the index).
    fn index_read(&mut self, out: &mut [u8]) -> Result<()> {
        let n = out.len() as u64;
        let at = self.index_pos;
        if n > self.index_end - at {
            return Err(self.damaged(at, format!("index read of {n} bytes runs past the index")));
        }
        let window_end = self.window_start + self.window.len() as u64;
        if at >= self.window_start && at + n <= window_end {
            let s = (at - self.window_start) as usize;
            out.copy_from_slice(&self.window[s..s + out.len()]);
        } else if n >= INDEX_WINDOW {
            read_exact_at(&self.path, &self.src, out, at)?;
        } else {
            let len = INDEX_WINDOW.min(self.index_end - at) as usize;
            self.window.resize(len, 0);
            read_exact_at(&self.path, &self.src, &mut self.window, at)?;
            self.window_start = at;
            out.copy_from_slice(&self.window[..out.len()]);
        }
        self.index_pos += n;
        Ok(())
    }

    fn parse_entry(&mut self) -> Result<TableEntry> {
        let at = self.block_base + self.pos as u64;
        let rest = &self.block[self.pos..];
        if rest.len() < ENTRY_HEADER {
            return Err(self.damaged(
                at,
                format!(
                    "{} bytes left in the block, an entry header needs 9",
                    rest.len()
                ),
            ));
        }
        let key_len = le_u32(&rest[0..4]) as usize;
        let value_len = le_u32(&rest[4..8]) as usize;
        let flag = rest[8];
        let body = &rest[ENTRY_HEADER..];
        if key_len > body.len() || value_len > body.len() - key_len {
            return Err(self.damaged(
                at,
                format!(
                    "entry of {key_len}+{value_len} bytes runs past the end of its block \
                     ({} bytes left)",
                    body.len()
                ),
            ));
        }
        let key = body[..key_len].to_vec();
        let value = &body[key_len..key_len + value_len];
        let value = match flag {
            0 => Some(value.to_vec()),
            1 => None,
            other => return Err(self.damaged(at, format!("entry flag {other}, expected 0 or 1"))),
        };
        if let Some(prev) = &self.prev_key {
            if key <= *prev {
                return Err(self.damaged(
                    at,
                    format!(
                        "key {} is not after the previous key {}: the entries are not sorted",
                        show(&key),
                        show(prev)
                    ),
                ));
            }
        }
        match &mut self.prev_key {
            Some(prev) => {
                prev.clear();
                prev.extend_from_slice(&key);
            }
            None => self.prev_key = Some(key.clone()),
        }
        self.pos += ENTRY_HEADER + key_len + value_len;
        self.read += 1;
        Ok(TableEntry { key, value })
    }
}

/// A key for an error message, cut to a readable length.
pub(crate) fn show(key: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(&key[..key.len().min(MAX)]);
    if key.len() > MAX {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

/// A positioned read, where running out of bytes is damage at `at` (the file is shorter
/// than its own lengths say) and anything else an I/O error.
fn read_exact_at<R: ReadAt>(path: &Path, src: &R, buf: &mut [u8], at: u64) -> Result<()> {
    src.read_exact_at(buf, at)
        .map_err(|e| eof_is_damage(path, e, buf.len(), at))
}

/// `read_exact` on a stream, with the same error mapping.
pub(crate) fn read_exact<R: io::Read>(
    path: &Path,
    r: &mut R,
    buf: &mut [u8],
    at: u64,
) -> Result<()> {
    r.read_exact(buf)
        .map_err(|e| eof_is_damage(path, e, buf.len(), at))
}

fn eof_is_damage(path: &Path, e: io::Error, n: usize, at: u64) -> ImportError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            ImportError::damaged(path, at, format!("file ends inside a {n}-byte read"))
        }
        _ => ImportError::io("read", path, e),
    }
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::super::testenc;
    use super::*;
    use proptest::prelude::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<TableEntry>> {
        let path = Path::new("sst/sst-L1-000007.sst");
        let mut r = TableReader::new(path, bytes, bytes.len() as u64)?;
        let mut out = Vec::new();
        while let Some(e) = r.next_entry()? {
            out.push(e);
        }
        Ok(out)
    }

    fn sample() -> (Vec<TableEntry>, Vec<u8>) {
        let entries: Vec<TableEntry> = (0..300u32)
            .map(|i| TableEntry {
                key: format!("users:u{i:05}").into_bytes(),
                value: (i % 7 != 3)
                    .then(|| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(40)).into_bytes()),
            })
            .collect();
        let bytes = testenc::sstable(&entries);
        (entries, bytes)
    }

    #[test]
    fn reads_back_what_was_written_across_blocks() {
        let (entries, bytes) = sample();
        assert!(testenc::block_count(&bytes) > 3);
        assert_eq!(read_all(&bytes).ok(), Some(entries));
        let empty = testenc::sstable(&[]);
        assert_eq!(read_all(&empty).ok(), Some(vec![]));
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let (_, bytes) = sample();
        for cut in 0..bytes.len() {
            match read_all(&bytes[..cut]) {
                Err(ImportError::Damaged { file, .. }) => {
                    assert!(file.ends_with("sst-L1-000007.sst"))
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_flipped_block_byte_is_a_checksum_error_at_the_block() {
        let (_, mut bytes) = sample();
        bytes[5000] ^= 0x40;
        match read_all(&bytes) {
            Err(ImportError::Damaged { offset, reason, .. }) => {
                assert!(reason.contains("checksum"), "{reason}");
                assert!(offset <= 5000 && offset > 4000, "{offset}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsorted_keys_and_a_wrong_count_are_refused() {
        let e = |k: &str| TableEntry {
            key: k.as_bytes().to_vec(),
            value: Some(b"{}".to_vec()),
        };
        let unsorted = testenc::sstable(&[e("a:2"), e("a:1")]);
        assert!(
            matches!(read_all(&unsorted), Err(ImportError::Damaged { reason, .. }) if reason.contains("not sorted"))
        );
        let mut wrong = testenc::sstable(&[e("a:1"), e("a:2")]);
        wrong[4] = 3;
        assert!(matches!(
            read_all(&wrong),
            Err(ImportError::Damaged { offset: 4, .. })
        ));
    }

    #[test]
    fn every_single_byte_flip_gives_an_error_or_entries_never_a_panic() {
        let (_, good) = sample();
        for i in (0..good.len()).step_by(7) {
            let mut bad = good.clone();
            bad[i] ^= 0xA5;
            let _ = read_all(&bad);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = read_all(&data);
        }

        #[test]
        fn arbitrary_tails_after_a_valid_footer_shape_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            index_offset in 0u64..400,
            index_len in 0u64..400,
        ) {
            // A footer that passes the shape checks, so the index and blocks get parsed.
            let mut bytes = body.clone();
            let total = bytes.len() as u64 + 44;
            let bloom = total - 44;
            let idx_len = index_len.min(bloom.saturating_sub(index_offset));
            for v in [index_offset, idx_len, index_offset + idx_len, bloom.saturating_sub(index_offset + idx_len), 8] {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
            bytes.extend_from_slice(&3u32.to_le_bytes());
            let _ = read_all(&bytes);
        }
    }
}
