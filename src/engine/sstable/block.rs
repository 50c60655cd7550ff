//! Data and index blocks: sorted entries with an offset array for binary search.
//!
//! Layout: entries (`varint klen, varint vlen, u64 tag, key, value`; tag = seq << 1 | is_put),
//! then one u32 offset per entry, then the entry count as u32.

use std::cmp::Ordering;

use bytes::Bytes;

use super::super::coding::{get_u32, get_u64, get_varint, put_varint};
use super::super::iter::Entry;

/// Accumulates entries into one block.
#[derive(Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
}

impl BlockBuilder {
    /// Appends an entry; callers add entries in order.
    pub fn add(&mut self, key: &[u8], seq: u64, value: Option<&[u8]>) {
        self.offsets.push(self.buf.len() as u32);
        let v = value.unwrap_or(&[]);
        put_varint(&mut self.buf, key.len() as u64);
        put_varint(&mut self.buf, v.len() as u64);
        let tag = (seq << 1) | u64::from(value.is_some());
        self.buf.extend_from_slice(&tag.to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(v);
    }

    /// Bytes the finished block would take.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + self.offsets.len() * 4 + 4
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Returns the encoded block and resets the builder.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for o in &self.offsets {
            out.extend_from_slice(&o.to_le_bytes());
        }
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        self.offsets.clear();
        out
    }
}

/// A parsed, validated block.
pub(crate) struct Block {
    data: Bytes,
    offsets_at: usize,
    len: usize,
}

struct RawEntry {
    key: (usize, usize),
    value: (usize, usize),
    seq: u64,
    is_put: bool,
}

impl Block {
    /// Parses and validates every entry; `None` when malformed.
    pub fn parse(data: Bytes) -> Option<Self> {
        let n = get_u32(&data, data.len().checked_sub(4)?)? as usize;
        let offsets_at = data.len().checked_sub(4)?.checked_sub(n.checked_mul(4)?)?;
        let block = Block {
            data,
            offsets_at,
            len: n,
        };
        let mut prev_end = 0;
        for i in 0..n {
            let start = block.offset(i)?;
            if start != prev_end {
                return None;
            }
            prev_end = block.raw(i)?.value.1;
        }
        (prev_end == offsets_at).then_some(block)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held, for cache weighting.
    pub fn size(&self) -> usize {
        self.data.len()
    }

    fn offset(&self, i: usize) -> Option<usize> {
        Some(get_u32(&self.data, self.offsets_at + i * 4)? as usize)
    }

    fn raw(&self, i: usize) -> Option<RawEntry> {
        let mut pos = self.offset(i)?;
        let klen = usize::try_from(get_varint(&self.data, &mut pos)?).ok()?;
        let vlen = usize::try_from(get_varint(&self.data, &mut pos)?).ok()?;
        let tag = get_u64(&self.data, pos)?;
        let kstart = pos + 8;
        let vstart = kstart.checked_add(klen)?;
        let vend = vstart.checked_add(vlen)?;
        if vend > self.offsets_at {
            return None;
        }
        Some(RawEntry {
            key: (kstart, vstart),
            value: (vstart, vend),
            seq: tag >> 1,
            is_put: tag & 1 == 1,
        })
    }

    fn key_at(&self, i: usize) -> Option<(&[u8], u64)> {
        let r = self.raw(i)?;
        Some((&self.data[r.key.0..r.key.1], r.seq))
    }

    /// Entry `i` as shared slices of the block.
    pub fn entry(&self, i: usize) -> Option<Entry> {
        let r = self.raw(i)?;
        Some(Entry {
            key: self.data.slice(r.key.0..r.key.1),
            seq: r.seq,
            value: r.is_put.then(|| self.data.slice(r.value.0..r.value.1)),
        })
    }

    /// Index of the first entry at or after `(key, seq)` in internal order (`len()` if none).
    pub fn seek(&self, key: &[u8], seq: u64) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let less = match self.key_at(mid) {
                Some((k, s)) => match k.cmp(key) {
                    Ordering::Less => true,
                    Ordering::Equal => s > seq,
                    Ordering::Greater => false,
                },
                None => false,
            };
            if less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_parse_seek() {
        let mut b = BlockBuilder::default();
        b.add(b"a", 5, Some(b"x"));
        b.add(b"b", 9, None);
        b.add(b"b", 3, Some(b"old"));
        b.add(b"c", 1, Some(b""));
        let block = Block::parse(Bytes::from(b.finish())).expect("valid");
        assert_eq!(block.len(), 4);
        assert_eq!(block.seek(b"b", u64::MAX), 1);
        assert_eq!(block.seek(b"b", 4), 2);
        assert_eq!(block.seek(b"bb", 0), 3);
        assert_eq!(block.seek(b"z", 0), 4);
        let e = block.entry(1).expect("entry");
        assert_eq!((e.key.as_ref(), e.seq, e.value), (&b"b"[..], 9, None));
        assert_eq!(block.entry(3).and_then(|e| e.value), Some(Bytes::new()));
    }

    #[test]
    fn garbage_never_parses_into_bad_entries() {
        let mut b = BlockBuilder::default();
        b.add(b"key", 1, Some(b"value"));
        let good = b.finish();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            if let Some(block) = Block::parse(Bytes::from(bad)) {
                for j in 0..block.len() {
                    let _ = block.entry(j);
                }
            }
        }
    }
}
