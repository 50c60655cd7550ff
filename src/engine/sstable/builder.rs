//! Writes one SSTable from entries given in internal order.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::super::error::{fsync_ctx, IoContext, Result};
use super::super::options::Compression;
use super::super::storage::{Appender, Storage};
use super::block::BlockBuilder;
use super::bloom;
use super::format::{seal_block, Footer, Handle, COMPRESSION_LZ4, COMPRESSION_NONE};
use super::props::Props;

/// Streams entries into a new table file; memory is one block plus the index and key hashes.
pub(crate) struct TableBuilder {
    path: PathBuf,
    out: Appender,
    offset: u64,
    block: BlockBuilder,
    index: BlockBuilder,
    block_size: usize,
    compression: Compression,
    bloom_bits: usize,
    hashes: Vec<u64>,
    last_key: Vec<u8>,
    last_seq: u64,
    props: Props,
}

impl TableBuilder {
    /// Creates `path` (which must not exist).
    pub fn create(
        fs: &dyn Storage,
        path: &Path,
        block_size: usize,
        compression: Compression,
        bloom_bits: usize,
    ) -> Result<Self> {
        let file = fs
            .create_new(path)
            .ctx(|| format!("create table {}", path.display()))?;
        Ok(TableBuilder {
            path: path.to_path_buf(),
            out: Appender::new(file, 0, 256 << 10),
            offset: 0,
            block: BlockBuilder::default(),
            index: BlockBuilder::default(),
            block_size,
            compression,
            bloom_bits,
            hashes: Vec::new(),
            last_key: Vec::new(),
            last_seq: 0,
            props: Props {
                min_seq: u64::MAX,
                ..Props::default()
            },
        })
    }

    /// Adds an entry; entries must come in internal order (key asc, seq desc).
    pub fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) -> Result<()> {
        let first = self.props.entries == 0;
        if first || key != self.last_key.as_slice() {
            if self.bloom_bits > 0 {
                self.hashes.push(bloom::key_hash(key));
            }
            if first {
                self.props.smallest = Bytes::copy_from_slice(key);
            }
        }
        self.block.add(key, seq, value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last_seq = seq;
        self.props.entries += 1;
        self.props.tombstones += u64::from(value.is_none());
        self.props.min_seq = self.props.min_seq.min(seq);
        self.props.max_seq = self.props.max_seq.max(seq);
        if self.block.estimated_size() >= self.block_size {
            self.finish_data_block()?;
        }
        Ok(())
    }

    /// Entries added so far.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// Bytes written so far plus the open block.
    pub fn estimated_size(&self) -> u64 {
        self.offset + self.block.estimated_size() as u64
    }

    /// The last user key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    fn write_raw(&mut self, sealed: &[u8]) -> Result<Handle> {
        let handle = Handle {
            offset: self.offset,
            size: sealed.len() as u32,
        };
        let path = &self.path;
        self.out
            .write(sealed)
            .ctx(|| format!("write table {}", path.display()))?;
        self.offset += sealed.len() as u64;
        Ok(handle)
    }

    fn finish_data_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let raw = self.block.finish();
        let sealed = match self.compression {
            Compression::Lz4 => {
                let packed = lz4_flex::block::compress_prepend_size(&raw);
                // Incompressible blocks are stored raw so reads skip the decoder.
                if packed.len() + packed.len() / 8 < raw.len() {
                    seal_block(packed, COMPRESSION_LZ4)
                } else {
                    seal_block(raw, COMPRESSION_NONE)
                }
            }
            Compression::None => seal_block(raw, COMPRESSION_NONE),
        };
        let handle = self.write_raw(&sealed)?;
        let mut h = Vec::with_capacity(12);
        handle.encode(&mut h);
        self.index.add(&self.last_key, self.last_seq, Some(&h));
        Ok(())
    }

    /// Writes filter, properties, index and footer, then fsyncs. Returns the file size.
    pub fn finish(mut self) -> Result<u64> {
        self.finish_data_block()?;
        self.props.largest = Bytes::copy_from_slice(&self.last_key);
        if self.props.entries == 0 {
            self.props.min_seq = 0;
        }
        let filter = if self.bloom_bits > 0 {
            bloom::build(&self.hashes, self.bloom_bits)
        } else {
            Vec::new()
        };
        let filter = self.write_raw(&seal_block(filter, COMPRESSION_NONE))?;
        let props = self.write_raw(&seal_block(self.props.encode(), COMPRESSION_NONE))?;
        let index_raw = self.index.finish();
        let index = self.write_raw(&seal_block(index_raw, COMPRESSION_NONE))?;
        let footer = Footer {
            index,
            filter,
            props,
        }
        .encode();
        let path = self.path.clone();
        self.out
            .write(&footer)
            .ctx(|| format!("write table {}", path.display()))?;
        let size = self.offset + footer.len() as u64;
        self.out
            .flush()
            .ctx(|| format!("flush table {}", path.display()))?;
        // Flushed above, so whatever `finish` reports comes from the fsync.
        fsync_ctx(self.out.finish().map(drop), || {
            format!("table {}", path.display())
        })?;
        Ok(size)
    }
}
