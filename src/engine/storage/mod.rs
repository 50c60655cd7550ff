//! The storage seam: every file operation of the engine goes through [`Storage`].
//!
//! Two implementations: [`StdFs`], the real file system, and [`SimFs`], an in-memory file
//! system for tests that keeps the durable state apart from the live one under strict POSIX
//! rules (a file's contents are durable once the file is synced; a name is durable once its
//! directory is synced), and can lose power, tear unsynced writes and fail any operation.
//!
//! The trait is deliberately small: what an LSM engine needs and nothing else. Paths are
//! full paths; files are addressed by positional reads and writes, so an append-only writer
//! keeps its own offset and can roll a failed append back with [`StorageFile::set_len`].

mod sim;
mod std_fs;

use std::fmt;
use std::io;
use std::path::Path;

pub use sim::{CrashMode, FaultKind, Gate, SimFs, SimOp, SimStats};
pub use std_fs::StdFs;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// Anything else (symlink, socket, ...): the engine leaves it alone.
    Other,
}

/// One entry of [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name within its directory.
    pub name: String,
    /// Its kind.
    pub kind: EntryKind,
}

/// An open file. Reads and writes are positional; `Send + Sync` so readers share it.
pub trait StorageFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes up to `buf.len()` bytes at `offset`; returns how many (a short write is
    /// possible, as with `pwrite(2)`).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// The file's current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the contents durable (`fdatasync`: data and the size, not other metadata).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file at least `len` bytes long with every block allocated (unlike
    /// [`StorageFile::set_len`], which may leave a hole): `ENOSPC` now rather than later.
    fn allocate(&self, len: u64) -> io::Result<()> {
        let cur = self.size()?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = cur;
        while at < len {
            let n = usize::try_from((len - at).min(zeros.len() as u64)).unwrap_or(zeros.len());
            write_all_at(self, &zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

impl fmt::Debug for dyn StorageFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageFile")
    }
}

/// Held while a directory lock is taken; dropping it releases the lock.
pub trait StorageLock: Send + Sync {}

/// The file operations the engine performs. All paths are full paths.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Creates one directory; fails with `AlreadyExists` if it exists, `NotFound` if its
    /// parent does not.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Lists a directory's entries (no order guaranteed).
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    /// What `path` is, or `None` when nothing is there.
    fn kind(&self, path: &Path) -> io::Result<Option<EntryKind>>;
    /// Creates a new, empty file for reading and writing; `AlreadyExists` if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn StorageFile>>;
    /// Opens an existing file, for reading only or for reading and writing.
    fn open(&self, path: &Path, writable: bool) -> io::Result<Box<dyn StorageFile>>;
    /// Renames a file within one directory, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes `to` a second name of the file `from`. Fails (e.g. `CrossesDevices`,
    /// `Unsupported`) where the file system cannot; callers then copy.
    fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file `path` (created if missing); `WouldBlock` while
    /// another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn StorageLock>>;
    /// Free bytes on the file system holding `path`, when the file system can tell.
    fn available_bytes(&self, path: &Path) -> io::Result<Option<u64>>;
}

/// True for a full disk (or quota): the error the engine treats as a state, not a failure.
pub fn is_no_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || e.raw_os_error() == Some(28)
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub(crate) fn read_exact_at(
    file: &dyn StorageFile,
    mut buf: &mut [u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ended before the expected bytes",
                ))
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset`, continuing after short writes.
pub(crate) fn write_all_at<F: StorageFile + ?Sized>(
    file: &F,
    mut buf: &[u8],
    mut offset: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the file system accepted no bytes",
                ))
            }
            Ok(n) => {
                buf = &buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a whole file.
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.size()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to read"))?;
    let mut buf = vec![0u8; len];
    read_exact_at(file, &mut buf, 0)?;
    Ok(buf)
}

/// Creates `dir` and any missing ancestors, fsyncing the parent of each directory it
/// creates so the new names survive a power cut. Existing directories are left alone.
pub fn create_dir_all_durable(fs: &dyn Storage, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        if p.as_os_str().is_empty() {
            break;
        }
        match fs.kind(p)? {
            Some(EntryKind::Dir) => break,
            Some(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            None => missing.push(p),
        }
        cur = p.parent();
    }
    for p in missing.into_iter().rev() {
        match fs.create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        let parent = match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        fs.sync_dir(parent)?;
    }
    Ok(())
}

/// Buffers appends to a new file and writes them in large positional writes; the file's
/// length is the offset reached.
pub(crate) struct Appender {
    file: Box<dyn StorageFile>,
    offset: u64,
    buf: Vec<u8>,
    capacity: usize,
}

impl Appender {
    /// An appender writing `file` from `offset`, buffering up to `capacity` bytes.
    pub fn new(file: Box<dyn StorageFile>, offset: u64, capacity: usize) -> Self {
        Appender {
            file,
            offset,
            buf: Vec::with_capacity(capacity.min(1 << 20)),
            capacity,
        }
    }

    /// Appends `data`, writing the buffer out when it is full.
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > self.capacity {
            self.flush()?;
        }
        if data.len() >= self.capacity {
            write_all_at(&*self.file, data, self.offset)?;
            self.offset += data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }

    /// Writes the buffer out.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            write_all_at(&*self.file, &self.buf, self.offset)?;
            self.offset += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Flushes and fsyncs; returns the file.
    pub fn finish(mut self) -> io::Result<Box<dyn StorageFile>> {
        self.flush()?;
        self.file.sync_data()?;
        Ok(self.file)
    }
}

#[cfg(test)]
mod tests;
