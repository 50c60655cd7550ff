//! The bounded block cache, weighted by block bytes.

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::sstable::block::Block;

#[derive(Clone)]
struct BlockWeighter;

impl Weighter<(u64, u64), Arc<Block>> for BlockWeighter {
    fn weight(&self, _key: &(u64, u64), val: &Arc<Block>) -> u64 {
        // Parsed-block bookkeeping is counted with the bytes.
        val.size() as u64 + 64
    }
}

/// Caches parsed blocks by (table id, offset).
pub(crate) struct BlockCache {
    cache: Option<Cache<(u64, u64), Arc<Block>, BlockWeighter>>,
}

impl BlockCache {
    /// A cache of at most `bytes` bytes; 0 disables caching.
    pub fn new(bytes: usize) -> Self {
        let cache = (bytes > 0).then(|| {
            let items = (bytes / 4096).max(16);
            Cache::with_weighter(items, bytes as u64, BlockWeighter)
        });
        BlockCache { cache }
    }

    /// A cached block.
    pub fn get(&self, table: u64, offset: u64) -> Option<Arc<Block>> {
        self.cache.as_ref()?.get(&(table, offset))
    }

    /// Caches a block.
    pub fn insert(&self, table: u64, offset: u64, block: Arc<Block>) {
        if let Some(c) = &self.cache {
            c.insert((table, offset), block);
        }
    }

    /// Bytes in use.
    pub fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }
}
