//! Atomic write batches and their WAL record encoding.

use bytes::Bytes;

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
    /// Offsets in `rep` of 8-byte places the commit fills with the batch's sequence number.
    stamps: Vec<usize>,
    /// Set by a stamp outside its key or value.
    bad_stamp: bool,
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
            stamps: Vec::new(),
            bad_stamp: false,
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

    /// Adds a put whose key and/or value carry the batch's commit sequence number: the 8
    /// bytes at `key_stamp` of the key (and at `value_stamp` of the value) are replaced,
    /// when the batch is written, by the sequence number of its first operation,
    /// big-endian, so such keys sort in commit order. See [`crate::engine::Engine::write_seq`].
    pub fn put_stamped(
        &mut self,
        key: &[u8],
        key_stamp: Option<usize>,
        value: &[u8],
        value_stamp: Option<usize>,
    ) -> &mut Self {
        self.ensure_header();
        self.rep.push(KIND_PUT);
        for (bytes, stamp) in [(key, key_stamp), (value, value_stamp)] {
            put_len_prefixed(&mut self.rep, bytes);
            if let Some(at) = stamp {
                match at.checked_add(8) {
                    Some(end) if end <= bytes.len() => {
                        self.stamps.push(self.rep.len() - bytes.len() + at);
                    }
                    _ => self.bad_stamp = true,
                }
            }
        }
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
            stamps: Vec::new(),
            bad_stamp: false,
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
        if self.bad_stamp {
            return Err(Error::InvalidArgument(
                "a sequence stamp lies outside its key or value".into(),
            ));
        }
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
        let stamp = first_seq.to_be_bytes();
        for &at in &self.stamps {
            self.rep[at..at + 8].copy_from_slice(&stamp);
        }
        &self.rep
    }

    /// The encoded batch, handed over without a copy (after `payload_with_seq`).
    pub(crate) fn into_payload(self) -> Bytes {
        Bytes::from(self.rep)
    }
}

/// One decoded operation; `value` is `None` for a delete.
pub(crate) struct Op<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// Calls `f(index, key, value)` for each op of a payload this process encoded itself,
/// without collecting or copying them (the write path's hot loop): the keys and values are
/// slices of `payload`, so the memtable shares the batch's one buffer.
pub(crate) fn for_each_op(payload: &Bytes, mut f: impl FnMut(u64, Bytes, Option<Bytes>)) {
    let mut pos = BATCH_HEADER;
    let mut i = 0;
    let slice_of = |pos: &mut usize| -> Option<Bytes> {
        get_len_prefixed(payload, pos).map(|s| payload.slice_ref(s))
    };
    while pos < payload.len() {
        let kind = payload[pos];
        pos += 1;
        let Some(key) = slice_of(&mut pos) else {
            return;
        };
        let value = if kind == KIND_PUT {
            match slice_of(&mut pos) {
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
    fn stamps_carry_the_commit_sequence() {
        let mut b = WriteBatch::new();
        b.put(b"plain", b"v");
        b.put_stamped(
            b"c\0\0\0\0\0\0\0\0/x",
            Some(1),
            b"at:\0\0\0\0\0\0\0\0",
            Some(3),
        );
        let payload = b.payload_with_seq(0x0102_0304_0506_0708).to_vec();
        let (_, ops) = decode_payload(&payload).expect("decodes");
        assert_eq!(ops[1].key, b"c\x01\x02\x03\x04\x05\x06\x07\x08/x");
        assert_eq!(
            ops[1].value,
            Some(&b"at:\x01\x02\x03\x04\x05\x06\x07\x08"[..])
        );
        let mut bad = WriteBatch::new();
        bad.put_stamped(b"short", Some(0), b"v", None);
        assert!(matches!(bad.validate(), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn oversized_key_is_refused() {
        let mut b = WriteBatch::new();
        b.put(&vec![0u8; MAX_KEY_LEN + 1], b"v");
        assert!(matches!(b.validate(), Err(Error::InvalidArgument(_))));
    }
}
