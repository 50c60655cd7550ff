//! Backups: an engine checkpoint streamed as a tar archive, and its restore.
//!
//! The checkpoint is taken into a scratch directory inside the data directory (so tables
//! are hard links: no full copy on the volume), streamed file by file through a bounded
//! channel, and removed. The archive holds `BACKUP.json` (what and when) first, then
//! `sst/*.sst`, `wal/*.wal` and `MANIFEST` last; a restore accepts exactly those names, so
//! an archive cannot write outside its target.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::engine::storage::{create_dir_all_durable, StdFs, Storage};
use crate::engine::{self, CheckpointInfo, Engine};

/// The scratch directory's name inside the data directory.
pub const SCRATCH_DIR: &str = "backups";
/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 << 10;
/// Chunks buffered between the archive writer and the connection.
const CHANNEL_CHUNKS: usize = 4;
/// How long the archive writer waits for the client to take a chunk before it gives up:
/// a client that stops reading must not pin the checkpoint (and its disk space) forever.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// The archive format this build writes and reads.
pub const FORMAT: &str = "minidb-checkpoint-v1";

/// What a backup or restore failed on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The checkpoint could not be taken.
    #[error("checkpoint: {0}")]
    Engine(#[from] engine::Error),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The archive is not a MiniDB backup, or is damaged.
    #[error("not a usable MiniDB backup: {0}")]
    BadArchive(String),
    /// The restore target is not empty.
    #[error("restore target {} exists and is not empty", .0.display())]
    TargetNotEmpty(PathBuf),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// `BACKUP.json`: what the archive holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupMeta {
    /// [`FORMAT`].
    pub format: String,
    /// The checkpoint holds exactly the writes up to this sequence number.
    pub sequence: u64,
    /// Tables in the checkpoint.
    pub tables: usize,
    /// When it was taken (seconds since the Unix epoch).
    pub created_unix: u64,
}

/// A `Write` that hands fixed-size chunks to an async receiver, waiting while it is full:
/// a slow client slows the archive down instead of growing a buffer.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// The server's runtime, for a send bounded by [`STALL_TIMEOUT`].
    rt: tokio::runtime::Handle,
    buf: Vec<u8>,
    sent: Arc<AtomicU64>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let n = chunk.len() as u64;
        let tx = &self.tx;
        match self
            .rt
            .block_on(async { tokio::time::timeout(STALL_TIMEOUT, tx.send(Ok(chunk))).await })
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the client went away",
                ))
            }
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the client took no data for {} s", STALL_TIMEOUT.as_secs()),
                ))
            }
        }
        self.sent.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A backup being streamed: what was checkpointed, and the archive's chunks.
pub struct BackupStream {
    /// The checkpoint.
    pub meta: BackupMeta,
    /// Archive bytes, in order; an `Err` ends the stream early.
    pub chunks: mpsc::Receiver<io::Result<Bytes>>,
}

/// Removes checkpoints a crash left in the scratch directory (they pin the space of
/// tables the engine has deleted since). Only our own `ckpt-*` names are touched.
pub fn clear_scratch(data_dir: &Path) {
    let scratch = data_dir.join(SCRATCH_DIR);
    let Ok(entries) = fs::read_dir(&scratch) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("ckpt-") {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "could not remove an old backup checkpoint");
            }
        }
    }
}

/// Takes a checkpoint of `engine` and starts streaming it as a tar archive. Blocking: call
/// it on the blocking pool, with the server's runtime `rt`. The scratch checkpoint is
/// removed when the stream ends, also when the client goes away or stops reading.
pub fn start(engine: Arc<Engine>, rt: tokio::runtime::Handle) -> Result<BackupStream, BackupError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch = engine.dir().join(SCRATCH_DIR);
    create_dir_all_durable(&StdFs, &scratch)
        .map_err(io_err(format!("create {}", scratch.display())))?;
    let dir = scratch.join(format!(
        "ckpt-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let info = match engine.checkpoint(&dir) {
        Ok(i) => i,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(e.into());
        }
    };
    let meta = BackupMeta {
        format: FORMAT.to_string(),
        sequence: info.sequence,
        tables: info.tables,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let sent = Arc::new(AtomicU64::new(0));
    let task_meta = meta.clone();
    std::thread::Builder::new()
        .name("minidb-backup".into())
        .spawn(move || {
            let mut w = ChannelWriter {
                tx: tx.clone(),
                rt: rt.clone(),
                buf: Vec::with_capacity(CHUNK),
                sent: sent.clone(),
            };
            let result = write_archive(&info, &task_meta, &mut w)
                .and_then(|()| w.flush().map_err(io_err("send the archive")));
            if let Err(e) = &result {
                tracing::warn!(error = %e, "backup stream ended early");
                // Ends the response with an error: the client sees a cut stream, not a
                // short archive that looks whole.
                let err = Err(io::Error::other(e.to_string()));
                let _ =
                    rt.block_on(async { tokio::time::timeout(STALL_TIMEOUT, tx.send(err)).await });
            } else {
                tracing::info!(
                    bytes = sent.load(Ordering::Relaxed),
                    sequence = task_meta.sequence,
                    "backup sent"
                );
            }
            if let Err(e) = fs::remove_dir_all(&info.dir) {
                tracing::warn!(error = %e, "could not remove the backup checkpoint");
            }
        })
        .map_err(io_err("start the backup thread"))?;
    Ok(BackupStream { meta, chunks: rx })
}

/// Writes the checkpoint at `info.dir` as a tar archive to `out`.
pub fn write_archive(
    info: &CheckpointInfo,
    meta: &BackupMeta,
    out: &mut impl Write,
) -> Result<(), BackupError> {
    let mut tar = tar::Builder::new(out);
    let meta_json = serde_json::to_vec_pretty(meta)
        .map_err(|e| BackupError::BadArchive(format!("metadata: {e}")))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(meta_json.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(meta.created_unix);
    header.set_cksum();
    tar.append_data(&mut header, "BACKUP.json", &meta_json[..])
        .map_err(io_err("write BACKUP.json"))?;
    // MANIFEST goes last: an archive cut short at a member boundary then has no manifest
    // and is refused, rather than restored without some of its tables.
    let mut names = Vec::new();
    for sub in ["sst", "wal"] {
        let mut files: Vec<PathBuf> = fs::read_dir(info.dir.join(sub))
            .map_err(io_err(format!("list {sub}")))?
            .flatten()
            .map(|e| Path::new(sub).join(e.file_name()))
            .collect();
        files.sort();
        names.extend(files);
    }
    names.push(PathBuf::from("MANIFEST"));
    for name in names {
        let path = info.dir.join(&name);
        let mut f = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
        tar.append_file(&name, &mut f)
            .map_err(io_err(format!("archive {}", name.display())))?;
    }
    tar.into_inner()
        .map_err(io_err("finish the archive"))?
        .flush()
        .map_err(io_err("send the archive"))?;
    Ok(())
}

/// What [`restore`] wrote and checked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestoreReport {
    /// The archive's metadata.
    pub meta: BackupMeta,
    /// Files written.
    pub files: usize,
    /// Bytes written.
    pub bytes: u64,
    /// The verification of the restored directory.
    pub verified: engine::VerifyReport,
}

/// The file an archive member may be written to, or why not: only `BACKUP.json`,
/// `MANIFEST`, `sst/<name>.sst` and `wal/<name>.wal`, no other component.
fn member_target(name: &Path) -> Result<PathBuf, BackupError> {
    let parts: Vec<&str> = name
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().ok_or(()),
            _ => Err(()),
        })
        .collect::<Result<_, _>>()
        .map_err(|()| {
            BackupError::BadArchive(format!("member {} has an unsafe path", name.display()))
        })?;
    let ok = match parts.as_slice() {
        ["BACKUP.json"] | ["MANIFEST"] => true,
        ["sst", f] => f.ends_with(".sst") && !f.starts_with('.'),
        ["wal", f] => f.ends_with(".wal") && !f.starts_with('.'),
        _ => false,
    };
    if !ok {
        return Err(BackupError::BadArchive(format!(
            "unexpected member {}",
            name.display()
        )));
    }
    Ok(parts.iter().collect())
}

/// Unpacks a backup archive into `dest` (created; it must not exist or be empty), makes
/// every file and directory durable, and verifies the result read-only. On failure the
/// directory is removed again if this call created it.
pub fn restore(
    archive: impl Read,
    dest: &Path,
    mut progress: impl FnMut(u64),
) -> Result<RestoreReport, BackupError> {
    let created = match fs::read_dir(dest) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::TargetNotEmpty(dest.to_path_buf()));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_err(format!("read {}", dest.display()))(e)),
    };
    let result = unpack(archive, dest, &mut progress);
    if result.is_err() && created {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn unpack(
    archive: impl Read,
    dest: &Path,
    progress: &mut impl FnMut(u64),
) -> Result<RestoreReport, BackupError> {
    for d in [dest.to_path_buf(), dest.join("sst"), dest.join("wal")] {
        create_dir_all_durable(&StdFs, &d).map_err(io_err(format!("create {}", d.display())))?;
    }
    let mut ar = tar::Archive::new(archive);
    let mut meta: Option<BackupMeta> = None;
    let (mut files, mut bytes) = (0usize, 0u64);
    let entries = ar.entries().map_err(io_err("read the archive"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| BackupError::BadArchive(format!("damaged archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            return Err(BackupError::BadArchive(
                "archive members must be plain files".into(),
            ));
        }
        let name = entry
            .path()
            .map_err(|e| BackupError::BadArchive(format!("member name: {e}")))?
            .into_owned();
        let rel = member_target(&name)?;
        if rel == Path::new("BACKUP.json") {
            let mut text = Vec::new();
            entry
                .by_ref()
                .take(64 << 10)
                .read_to_end(&mut text)
                .map_err(|e| BackupError::BadArchive(format!("BACKUP.json: {e}")))?;
            let m: BackupMeta = serde_json::from_slice(&text)
                .map_err(|e| BackupError::BadArchive(format!("BACKUP.json: {e}")))?;
            if m.format != FORMAT {
                return Err(BackupError::BadArchive(format!(
                    "archive format {:?}, this build reads {FORMAT:?}",
                    m.format
                )));
            }
            meta = Some(m);
            continue;
        }
        let path = dest.join(&rel);
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(format!("create {}", path.display())))?;
        let n = io::copy(&mut entry, &mut f)
            .map_err(|e| BackupError::BadArchive(format!("{}: {e}", name.display())))?;
        f.sync_all()
            .map_err(io_err(format!("fsync {}", path.display())))?;
        files += 1;
        bytes += n;
        progress(bytes);
    }
    let meta =
        meta.ok_or_else(|| BackupError::BadArchive("no BACKUP.json in the archive".into()))?;
    for d in [dest.join("sst"), dest.join("wal"), dest.to_path_buf()] {
        StdFs
            .sync_dir(&d)
            .map_err(io_err(format!("fsync {}", d.display())))?;
    }
    let verified = engine::verify_dir(dest, &engine::Options::default())?;
    Ok(RestoreReport {
        meta,
        files,
        bytes,
        verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_engine_files_may_be_restored() {
        for ok in [
            "MANIFEST",
            "BACKUP.json",
            "sst/00000000000000000001.sst",
            "wal/00000000000000000002.wal",
        ] {
            assert!(member_target(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "sst/../../x.sst",
            "sst/x.txt",
            "a/b/c",
            "wal/.x.wal",
            "LOCK",
            "",
        ] {
            assert!(member_target(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
