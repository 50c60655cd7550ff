//! Table properties: counts, seqno range and key range.

use bytes::Bytes;

use super::super::coding::{get_len_prefixed, get_u64, put_len_prefixed};

/// What a table holds; stored in its properties block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Props {
    pub entries: u64,
    pub tombstones: u64,
    pub min_seq: u64,
    pub max_seq: u64,
    pub smallest: Bytes,
    pub largest: Bytes,
}

impl Props {
    /// Encodes the properties.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.smallest.len() + self.largest.len());
        for v in [self.entries, self.tombstones, self.min_seq, self.max_seq] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        put_len_prefixed(&mut out, &self.smallest);
        put_len_prefixed(&mut out, &self.largest);
        out
    }

    /// Decodes the properties; `None` when malformed.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let mut pos = 32;
        let smallest = Bytes::copy_from_slice(get_len_prefixed(buf, &mut pos)?);
        let largest = Bytes::copy_from_slice(get_len_prefixed(buf, &mut pos)?);
        (pos == buf.len()).then_some(())?;
        Some(Props {
            entries: get_u64(buf, 0)?,
            tombstones: get_u64(buf, 8)?,
            min_seq: get_u64(buf, 16)?,
            max_seq: get_u64(buf, 24)?,
            smallest,
            largest,
        })
    }
}
