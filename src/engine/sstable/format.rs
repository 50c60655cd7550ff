//! On-disk framing shared by SSTable parts: block trailers, handles and the footer.

use super::super::coding::{get_u32, get_u64};

/// Identifies an SSTable (last 8 bytes of the file).
pub(crate) const TABLE_MAGIC: u64 = 0x4d44_4253_5354_0001; // "MDBSST" + 1
/// The SSTable format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Three handles, version, CRC, magic.
pub(crate) const FOOTER_LEN: usize = 3 * 12 + 4 + 4 + 8;

/// Compression byte values.
pub(crate) const COMPRESSION_NONE: u8 = 0;
pub(crate) const COMPRESSION_LZ4: u8 = 1;

/// Where a block lives in the file (size includes the trailer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Handle {
    pub offset: u64,
    pub size: u32,
}

impl Handle {
    /// Appends the 12-byte encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
    }

    /// Decodes 12 bytes at `pos`.
    pub fn decode(buf: &[u8], pos: usize) -> Option<Self> {
        Some(Handle {
            offset: get_u64(buf, pos)?,
            size: get_u32(buf, pos + 8)?,
        })
    }
}

/// Appends the trailer (compression byte, CRC over payload and that byte).
pub(crate) fn seal_block(mut payload: Vec<u8>, compression: u8) -> Vec<u8> {
    payload.push(compression);
    let crc = crc32fast::hash(&payload);
    payload.extend_from_slice(&crc.to_le_bytes());
    payload
}

/// Checks the trailer; returns the compression byte and payload, or `None` on mismatch.
pub(crate) fn open_block(raw: &[u8]) -> Option<(u8, &[u8])> {
    let body_len = raw.len().checked_sub(4)?;
    let crc = get_u32(raw, body_len)?;
    if crc32fast::hash(&raw[..body_len]) != crc {
        return None;
    }
    let (&ctype, payload) = raw[..body_len].split_last()?;
    Some((ctype, payload))
}

/// The fixed-size footer at the end of every table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Footer {
    pub index: Handle,
    pub filter: Handle,
    pub props: Handle,
}

impl Footer {
    /// Encodes the footer, ending with its CRC and the magic number.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FOOTER_LEN);
        self.index.encode(&mut out);
        self.filter.encode(&mut out);
        self.props.encode(&mut out);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        out
    }

    /// Decodes and checks magic, CRC and version; the error says which failed.
    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        if buf.len() != FOOTER_LEN {
            return Err("short footer".into());
        }
        if get_u64(buf, FOOTER_LEN - 8) != Some(TABLE_MAGIC) {
            return Err("bad magic number (not a MiniDB table)".into());
        }
        let crc_at = FOOTER_LEN - 12;
        if get_u32(buf, crc_at) != Some(crc32fast::hash(&buf[..crc_at])) {
            return Err("footer checksum mismatch".into());
        }
        let version = get_u32(buf, 36).unwrap_or(0);
        if version != FORMAT_VERSION {
            return Err(format!("unsupported table format version {version}"));
        }
        let h = |i: usize| Handle::decode(buf, i * 12).ok_or_else(|| "bad handle".to_string());
        Ok(Footer {
            index: h(0)?,
            filter: h(1)?,
            props: h(2)?,
        })
    }
}
