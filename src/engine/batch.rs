//! Atomic write batches and their WAL record encoding.

use super::coding::{get_len_prefixed, get_u32, get_u64, put_len_prefixed};
use super::error::{Error, Result};

/// Largest key the engine accepts.
pub const MAX_KEY_LEN: usize = 64 << 10;
/// Largest value the engine accepts.
pub const MAX_VALUE_LEN: usize = 256 << 20;
/// Largest encoded batch (one WAL record).
pub const MAX_BATCH_BYTES: usize = 1 << 30;

const KIND_DELETE: u8 = 0;
const KIND_PUT: u8 = 1;
/// Bytes before the first op: seqno (u64) and op count (u32).
pub(crate) const BATCH_HEADER: usize = 12;

/// A group of puts and deletes applied all or nothing, also across a crash.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Encoded as the WAL payload; the header's seqno is filled in at commit.
    rep: Vec<u8>,
    count: u32,
    puts: u64,
    deletes: u64,
    /// Set by an oversized key or value; `validate` then refuses the whole batch.
    oversized: bool,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch {
            rep: vec![0; BATCH_HEADER],
            count: 0,
            puts: 0,
            deletes: 0,
            oversized: false,
        }
    }

    /// Adds a put; later ops on the same key in one batch win.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.ensure_header();
        self.rep.push(KIND_PUT);
        put_len_prefixed(&mut self.rep, key);
        put_len_prefixed(&mut self.rep, value);
        self.count = self.count.saturating_add(1);
        self.puts += 1;
        self.check_sizes(key, Some(value));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ensure_header();
        self.rep.push(KIND_DELETE);
        put_len_prefixed(&mut self.rep, key);
        self.count = self.count.saturating_add(1);
        self.deletes += 1;
        self.check_sizes(key, None);
        self
    }

    /// An empty batch with room for `bytes` of keys and values, so single writes allocate once.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut rep = Vec::with_capacity(BATCH_HEADER + bytes + 16);
        rep.resize(BATCH_HEADER, 0);
        WriteBatch {
            rep,
            count: 0,
            puts: 0,
            deletes: 0,
            oversized: false,
        }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes (what the WAL record will carry).
    pub fn encoded_len(&self) -> usize {
        self.rep.len()
    }

    fn ensure_header(&mut self) {
        if self.rep.len() < BATCH_HEADER {
            self.rep.resize(BATCH_HEADER, 0);
        }
    }

    // Oversized items are recorded so `validate` refuses the batch without making `put`
    // fallible.
    fn check_sizes(&mut self, key: &[u8], value: Option<&[u8]>) {
        if key.len() > MAX_KEY_LEN || value.is_some_and(|v| v.len() > MAX_VALUE_LEN) {
            self.oversized = true;
        }
    }

    /// Refuses oversized batches, keys and values.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.oversized {
            return Err(Error::InvalidArgument(format!(
                "key over {MAX_KEY_LEN} bytes or value over {MAX_VALUE_LEN} bytes"
            )));
        }
        if self.rep.len() > MAX_BATCH_BYTES || self.count == u32::MAX {
            return Err(Error::InvalidArgument(format!(
                "batch of {} bytes is over the {MAX_BATCH_BYTES}-byte limit",
                self.rep.len()
            )));
        }
        Ok(())
    }

    /// Counts of puts and deletes, for stats.
    pub(crate) fn op_counts(&self) -> (u64, u64) {
        (self.puts, self.deletes)
    }

    /// Stamps the first seqno into the header and returns the payload.
    pub(crate) fn payload_with_seq(&mut self, first_seq: u64) -> &[u8] {
        self.ensure_header();
        self.rep[..8].copy_from_slice(&first_seq.to_le_bytes());
        self.rep[8..12].copy_from_slice(&self.count.to_le_bytes());
        &self.rep
    }
}

/// One decoded operation; `value` is `None` for a delete.
pub(crate) struct Op<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Calls `f(index, key, value)` for each op of a payload this process encoded itself,
/// without collecting them (the write path's hot loop).
pub(crate) fn for_each_op(payload: &[u8], mut f: impl FnMut(u64, &[u8], Option<&[u8]>)) {
    let mut pos = BATCH_HEADER;
    let mut i = 0;
    while pos < payload.len() {
        let kind = payload[pos];
        pos += 1;
        let Some(key) = get_len_prefixed(payload, &mut pos) else {
            return;
        };
        let value = if kind == KIND_PUT {
            match get_len_prefixed(payload, &mut pos) {
                Some(v) => Some(v),
                None => return,
            }
        } else {
            None
        };
        f(i, key, value);
        i += 1;
    }
}

/// Decodes a WAL payload into its first seqno and ops; `None` when malformed.
pub(crate) fn decode_payload(payload: &[u8]) -> Option<(u64, Vec<Op<'_>>)> {
    let seq = get_u64(payload, 0)?;
    let count = get_u32(payload, 8)? as usize;
    let mut pos = BATCH_HEADER;
    // Each op needs at least 2 bytes, so a lying count cannot make us allocate much.
    let mut ops = Vec::with_capacity(count.min(payload.len() / 2));
    for _ in 0..count {
        let kind = *payload.get(pos)?;
        pos += 1;
        let key = get_len_prefixed(payload, &mut pos)?;
        let value = match kind {
            KIND_PUT => Some(get_len_prefixed(payload, &mut pos)?),
            KIND_DELETE => None,
            _ => return None,
        };
        ops.push(Op { key, value });
    }
    (pos == payload.len()).then_some((seq, ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let mut b = WriteBatch::new();
        b.put(b"a", b"1").delete(b"b").put(b"", b"");
        let payload = b.payload_with_seq(42).to_vec();
        let (seq, ops) = decode_payload(&payload).expect("decodes");
        assert_eq!(seq, 42);
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].key, b"a");
        assert_eq!(ops[0].value, Some(&b"1"[..]));
        assert_eq!(ops[1].key, b"b");
        assert!(ops[1].value.is_none());
    }

    #[test]
    fn truncated_payload_is_rejected() {
        let mut b = WriteBatch::new();
        b.put(b"key", b"value");
        let payload = b.payload_with_seq(1).to_vec();
        for cut in 0..payload.len() {
            assert!(decode_payload(&payload[..cut]).is_none());
        }
    }

    #[test]
    fn oversized_key_is_refused() {
        let mut b = WriteBatch::new();
        b.put(&vec![0u8; MAX_KEY_LEN + 1], b"v");
        assert!(matches!(b.validate(), Err(Error::InvalidArgument(_))));
    }
}
