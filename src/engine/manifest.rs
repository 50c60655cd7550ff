//! The manifest: which tables are live on which level, and what the WAL still owns.
//!
//! Each edit rewrites the whole (small) state: write `MANIFEST.tmp`, fsync it, rename it
//! over `MANIFEST`, fsync the directory. Layout: magic (8), payload length (u32),
//! CRC32 of the payload (u32), payload.

use std::path::Path;

use super::coding::{get_u32, get_u64};
use super::error::{fsync_ctx, Error, IoContext, Result};
use super::storage::{read_all, write_all_at, Storage};

const MAGIC: &[u8; 8] = b"MDBMANI1";
/// The manifest's file name.
pub(crate) const MANIFEST: &str = "MANIFEST";
/// The temporary name a new manifest is written under before the rename.
pub(crate) const MANIFEST_TMP: &str = "MANIFEST.tmp";

/// One live table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TableRecord {
    pub level: u8,
    pub id: u64,
    pub size: u64,
}

/// The durable state of the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ManifestState {
    /// Next id for a table or WAL segment.
    pub next_file_id: u64,
    /// Highest seqno persisted in tables.
    pub last_seq: u64,
    /// WAL segments with a smaller id are flushed and may be deleted.
    pub log_number: u64,
    pub tables: Vec<TableRecord>,
}

impl ManifestState {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(28 + self.tables.len() * 17);
        for v in [self.next_file_id, self.last_seq, self.log_number] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(&(self.tables.len() as u32).to_le_bytes());
        for t in &self.tables {
            p.push(t.level);
            p.extend_from_slice(&t.id.to_le_bytes());
            p.extend_from_slice(&t.size.to_le_bytes());
        }
        p
    }

    fn decode(p: &[u8]) -> Option<Self> {
        let n = get_u32(p, 24)? as usize;
        if p.len() != 28 + n.checked_mul(17)? {
            return None;
        }
        let tables = (0..n)
            .map(|i| {
                let at = 28 + i * 17;
                Some(TableRecord {
                    level: p[at],
                    id: get_u64(p, at + 1)?,
                    size: get_u64(p, at + 9)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ManifestState {
            next_file_id: get_u64(p, 0)?,
            last_seq: get_u64(p, 8)?,
            log_number: get_u64(p, 16)?,
            tables,
        })
    }
}

/// Fsyncs a directory so renames and creations in it are durable.
pub(crate) fn sync_dir(fs: &dyn Storage, dir: &Path) -> Result<()> {
    fsync_ctx(fs.sync_dir(dir), || format!("directory {}", dir.display()))
}

/// Why a manifest edit failed, and whether the new manifest may already be in place.
pub(crate) struct WriteFailure {
    pub error: Error,
    /// False when the failure came before the rename: the old manifest is certainly the
    /// live one, so files only the new one would name can be deleted.
    pub maybe_renamed: bool,
}

impl From<WriteFailure> for Error {
    fn from(f: WriteFailure) -> Error {
        f.error
    }
}

/// Atomically replaces the manifest in `dir` with `state`.
pub(crate) fn write(
    fs: &dyn Storage,
    dir: &Path,
    state: &ManifestState,
) -> std::result::Result<(), WriteFailure> {
    let before = |error| WriteFailure {
        error,
        maybe_renamed: false,
    };
    let payload = state.encode();
    let mut buf = Vec::with_capacity(16 + payload.len());
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    buf.extend_from_slice(&payload);
    let tmp = dir.join(MANIFEST_TMP);
    match fs.remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(before(Error::io(format!("remove {}", tmp.display()), e))),
    }
    let written = (|| {
        let f = fs
            .create_new(&tmp)
            .ctx(|| format!("create {}", tmp.display()))?;
        write_all_at(&*f, &buf, 0).ctx(|| format!("write {}", tmp.display()))?;
        fsync_ctx(f.sync_data(), || format!("manifest {}", tmp.display()))
    })();
    if let Err(e) = written {
        // Best effort: a full disk should get its bytes back.
        let _ = fs.remove_file(&tmp);
        return Err(before(e));
    }
    fs.rename(&tmp, &dir.join(MANIFEST))
        .ctx(|| format!("rename {}", tmp.display()))
        .map_err(before)?;
    sync_dir(fs, dir).map_err(|error| WriteFailure {
        error,
        maybe_renamed: true,
    })
}

/// Reads the manifest; `Ok(None)` when there is none.
pub(crate) fn read(fs: &dyn Storage, dir: &Path) -> Result<Option<ManifestState>> {
    let path = dir.join(MANIFEST);
    let buf = match fs.open(&path, false).and_then(|f| read_all(&*f)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    decode_file(&path, &buf).map(Some)
}

/// Checks and decodes a whole manifest file's bytes.
pub(crate) fn decode_file(path: &Path, buf: &[u8]) -> Result<ManifestState> {
    if buf.len() < 16 || &buf[..8] != MAGIC {
        return Err(Error::corruption(path, 0, "bad manifest header"));
    }
    let len = get_u32(buf, 8).unwrap_or(0) as usize;
    let crc = get_u32(buf, 12).unwrap_or(0);
    let payload = &buf[16..];
    if payload.len() != len {
        return Err(Error::corruption(path, 8, "manifest length mismatch"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(Error::corruption(path, 16, "manifest checksum mismatch"));
    }
    ManifestState::decode(payload).ok_or_else(|| Error::corruption(path, 16, "malformed manifest"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            with_header in any::<bool>(),
        ) {
            let mut buf = Vec::new();
            if with_header {
                buf.extend_from_slice(MAGIC);
                buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            }
            buf.extend_from_slice(&body);
            let _ = decode_file(Path::new("MANIFEST"), &buf);
        }
    }

    #[test]
    fn round_trip_and_detect_flips() {
        let fs = crate::engine::storage::SimFs::new();
        let dir = Path::new("/db");
        fs.create_dir(dir).expect("mkdir");
        let state = ManifestState {
            next_file_id: 9,
            last_seq: 77,
            log_number: 5,
            tables: vec![TableRecord {
                level: 1,
                id: 3,
                size: 4096,
            }],
        };
        assert!(write(&fs, dir, &state).is_ok());
        assert_eq!(read(&fs, dir).expect("read"), Some(state));
        let path = dir.join(MANIFEST);
        let good = fs.read_file(&path).expect("read bytes");
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            fs.write_file(&path, &bad).expect("write bytes");
            assert!(read(&fs, dir).is_err(), "flip at {i} not detected");
        }
    }
}
