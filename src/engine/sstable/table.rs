//! Reads one SSTable: footer, index and filter pinned in memory, data blocks via the cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::super::cache::BlockCache;
use super::super::error::{Error, IoContext, Result};
use super::super::iter::{Entry, Source};
use super::super::stats::{inc, Counters};
use super::super::storage::{read_exact_at, Storage, StorageFile};
use super::block::Block;
use super::bloom::{self, Bloom};
use super::format::{open_block, Footer, Handle, COMPRESSION_LZ4, COMPRESSION_NONE, FOOTER_LEN};
use super::props::Props;

/// Index entry: the last internal key of a data block and where the block is.
struct IndexEntry {
    key: Bytes,
    seq: u64,
    handle: Handle,
}

/// An open table; shared through `Arc` by versions and iterators.
pub(crate) struct Table {
    id: u64,
    path: PathBuf,
    file: Box<dyn StorageFile>,
    size: u64,
    index: Vec<IndexEntry>,
    bloom: Bloom,
    props: Props,
    cache: Arc<BlockCache>,
    counters: Arc<Counters>,
}

impl Table {
    /// Opens and checks a table: footer, index, filter and properties.
    pub fn open(
        fs: &dyn Storage,
        path: &Path,
        id: u64,
        cache: Arc<BlockCache>,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        let file = fs
            .open(path, false)
            .ctx(|| format!("open table {}", path.display()))?;
        let size = file
            .size()
            .ctx(|| format!("stat table {}", path.display()))?;
        let corrupt = |offset: u64, why: &str| {
            inc(&counters.corruption_errors);
            Error::corruption(path, offset, why)
        };
        if size < FOOTER_LEN as u64 {
            return Err(corrupt(0, "file shorter than a table footer"));
        }
        let footer_at = size - FOOTER_LEN as u64;
        let mut buf = vec![0u8; FOOTER_LEN];
        read_exact_at(&*file, &mut buf, footer_at)
            .ctx(|| format!("read footer of {}", path.display()))?;
        let footer = Footer::decode(&buf).map_err(|why| corrupt(footer_at, &why))?;
        for h in [footer.index, footer.filter, footer.props] {
            if h.offset.saturating_add(u64::from(h.size)) > footer_at {
                return Err(corrupt(footer_at, "block handle points past the footer"));
            }
        }
        let read_meta = |h: Handle, what: &str| -> Result<Vec<u8>> {
            let mut raw = vec![0u8; h.size as usize];
            read_exact_at(&*file, &mut raw, h.offset)
                .ctx(|| format!("read {what} of {}", path.display()))?;
            match open_block(&raw) {
                Some((COMPRESSION_NONE, payload)) => Ok(payload.to_vec()),
                _ => Err(corrupt(
                    h.offset,
                    &format!("{what} block checksum mismatch"),
                )),
            }
        };
        let props = Props::decode(&read_meta(footer.props, "properties")?)
            .ok_or_else(|| corrupt(footer.props.offset, "malformed properties block"))?;
        let filter_bytes = read_meta(footer.filter, "filter")?;
        let bloom = if filter_bytes.is_empty() {
            Bloom::all()
        } else {
            Bloom::new(filter_bytes)
                .ok_or_else(|| corrupt(footer.filter.offset, "malformed filter block"))?
        };
        let index_block = Block::parse(Bytes::from(read_meta(footer.index, "index")?))
            .ok_or_else(|| corrupt(footer.index.offset, "malformed index block"))?;
        let mut index = Vec::with_capacity(index_block.len());
        for i in 0..index_block.len() {
            let e = index_block
                .entry(i)
                .ok_or_else(|| corrupt(footer.index.offset, "malformed index entry"))?;
            let handle = e
                .value
                .as_ref()
                .and_then(|v| (v.len() == 12).then(|| Handle::decode(v, 0)).flatten())
                .filter(|h| h.offset.saturating_add(u64::from(h.size)) <= footer_at)
                .ok_or_else(|| corrupt(footer.index.offset, "bad block handle in index"))?;
            index.push(IndexEntry {
                key: e.key,
                seq: e.seq,
                handle,
            });
        }
        Ok(Table {
            id,
            path: path.to_path_buf(),
            file,
            size,
            index,
            bloom,
            props,
            cache,
            counters,
        })
    }

    /// The table's file id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Smallest user key.
    pub fn smallest(&self) -> &[u8] {
        &self.props.smallest
    }

    /// Largest user key.
    pub fn largest(&self) -> &[u8] {
        &self.props.largest
    }

    /// Highest seqno in the table.
    pub fn max_seq(&self) -> u64 {
        self.props.max_seq
    }

    /// True when the user-key range overlaps `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.smallest() <= hi && self.largest() >= lo
    }

    /// Memory pinned by the index and filter.
    #[allow(dead_code)]
    pub fn pinned_bytes(&self) -> usize {
        self.bloom.size() + self.index.iter().map(|e| e.key.len() + 32).sum::<usize>()
    }

    fn corrupt(&self, offset: u64, why: &str) -> Error {
        inc(&self.counters.corruption_errors);
        Error::corruption(&self.path, offset, why)
    }

    /// Reads, checks and caches data block `i` of the index.
    fn block(&self, i: usize, fill_cache: bool) -> Result<Arc<Block>> {
        let h = self.index[i].handle;
        if let Some(b) = self.cache.get(self.id, h.offset) {
            inc(&self.counters.block_cache_hits);
            return Ok(b);
        }
        inc(&self.counters.block_cache_misses);
        let mut raw = vec![0u8; h.size as usize];
        read_exact_at(&*self.file, &mut raw, h.offset)
            .ctx(|| format!("read block of {} at {}", self.path.display(), h.offset))?;
        let data = match open_block(&raw) {
            Some((COMPRESSION_NONE, payload)) => Bytes::copy_from_slice(payload),
            Some((COMPRESSION_LZ4, payload)) => {
                match lz4_flex::block::decompress_size_prepended(payload) {
                    Ok(d) => Bytes::from(d),
                    Err(_) => return Err(self.corrupt(h.offset, "undecodable LZ4 block")),
                }
            }
            Some(_) => return Err(self.corrupt(h.offset, "unknown block compression")),
            None => return Err(self.corrupt(h.offset, "data block checksum mismatch")),
        };
        let block = Arc::new(
            Block::parse(data).ok_or_else(|| self.corrupt(h.offset, "malformed data block"))?,
        );
        if fill_cache {
            self.cache.insert(self.id, h.offset, block.clone());
        }
        Ok(block)
    }

    /// Index of the first data block whose last internal key is at or after `(key, seq)`.
    fn find_block(&self, key: &[u8], seq: u64) -> usize {
        self.index
            .partition_point(|e| match e.key.as_ref().cmp(key) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => e.seq > seq,
                std::cmp::Ordering::Greater => false,
            })
    }

    /// The newest version of `key` at or below `snapshot`, if the table has one.
    pub fn get(&self, key: &[u8], hash: u64, snapshot: u64) -> Result<Option<Entry>> {
        if key < self.smallest() || key > self.largest() {
            return Ok(None);
        }
        if !self.bloom.may_contain(hash) {
            inc(&self.counters.bloom_skips);
            return Ok(None);
        }
        let mut bi = self.find_block(key, snapshot);
        // Versions of one key may continue into the next block.
        while bi < self.index.len() {
            let block = self.block(bi, true)?;
            let i = block.seek(key, snapshot);
            if i < block.len() {
                let e = block
                    .entry(i)
                    .ok_or_else(|| self.corrupt(self.index[bi].handle.offset, "bad entry"))?;
                return Ok((e.key.as_ref() == key).then_some(e));
            }
            bi += 1;
        }
        Ok(None)
    }

    /// The filter hash for `key`.
    pub fn hash(key: &[u8]) -> u64 {
        bloom::key_hash(key)
    }
}

/// A cursor over one table, one block in memory at a time.
pub(crate) struct TableIter {
    table: Arc<Table>,
    fill_cache: bool,
    block_idx: usize,
    block: Option<Arc<Block>>,
    pos: usize,
    current: Option<Entry>,
}

impl TableIter {
    /// A cursor; `fill_cache` false keeps compaction from evicting hot blocks.
    pub fn new(table: Arc<Table>, fill_cache: bool) -> Self {
        TableIter {
            table,
            fill_cache,
            block_idx: 0,
            block: None,
            pos: 0,
            current: None,
        }
    }

    fn load(&mut self) -> Result<()> {
        loop {
            if self.block_idx >= self.table.index.len() {
                self.block = None;
                self.current = None;
                return Ok(());
            }
            if self.block.is_none() {
                self.block = Some(self.table.block(self.block_idx, self.fill_cache)?);
            }
            let Some(block) = &self.block else {
                continue;
            };
            if self.pos < block.len() {
                let e = block.entry(self.pos).ok_or_else(|| {
                    self.table
                        .corrupt(self.table.index[self.block_idx].handle.offset, "bad entry")
                })?;
                self.current = Some(e);
                return Ok(());
            }
            self.block_idx += 1;
            self.block = None;
            self.pos = 0;
        }
    }
}

impl Source for TableIter {
    fn current(&self) -> Option<&Entry> {
        self.current.as_ref()
    }

    fn seek(&mut self, key: &[u8]) -> Result<()> {
        self.block_idx = self.table.find_block(key, u64::MAX);
        self.block = None;
        self.pos = 0;
        if self.block_idx < self.table.index.len() {
            let block = self.table.block(self.block_idx, self.fill_cache)?;
            self.pos = block.seek(key, u64::MAX);
            self.block = Some(block);
        }
        self.load()
    }

    fn advance(&mut self) -> Result<()> {
        if self.current.is_some() {
            self.pos += 1;
            self.load()?;
        }
        Ok(())
    }
}
