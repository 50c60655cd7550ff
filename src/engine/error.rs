//! The engine's error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a write was refused with [`Error::Busy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BusyReason {
    /// The queue of frozen memtables waiting for flush is full.
    FlushQueue,
    /// Level 0 holds too many files; compaction must catch up.
    Level0,
    /// The outside memory budget hook reported the budget spent.
    Memory,
}

impl BusyReason {
    /// A short stable name, used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BusyReason::FlushQueue => "flush_queue",
            BusyReason::Level0 => "level0",
            BusyReason::Memory => "memory",
        }
    }
}

impl fmt::Display for BusyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BusyReason::FlushQueue => "the flush queue is full",
            BusyReason::Level0 => "too many level-0 files",
            BusyReason::Memory => "the memory budget is spent",
        })
    }
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed; `context` says which file or step.
    #[error("{context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An fsync failed: the on-disk state is unknown, so the engine poisons itself.
    #[error("fsync failed: {context}: {source}")]
    Fsync {
        /// What was being synced.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Stored bytes failed a checksum or format check. Never returned as data.
    #[error("corruption in {} at offset {offset}: {reason}", file.display())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record or block.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The write was refused before touching the WAL or memtable; retry later.
    #[error("engine busy ({reason}); retry after {} ms", retry_after.as_millis())]
    Busy {
        /// A hint for when to retry.
        retry_after: Duration,
        /// What is full.
        reason: BusyReason,
    },
    /// The disk is full: the write was refused and nothing of it is stored. Writes
    /// resume by themselves once there is space again.
    #[error("no space left on the device ({context}); retry after {} s", retry_after.as_secs())]
    NoSpace {
        /// What needed the space.
        context: String,
        /// A hint for when to retry.
        retry_after: Duration,
    },
    /// A failed fsync (or a background worker's panic) left the on-disk state unknown;
    /// writes are refused, reads work.
    #[error("engine poisoned, writes refused: {reason}")]
    Poisoned {
        /// The failure that poisoned the engine.
        reason: String,
    },
    /// Another process (or engine) holds the data directory.
    #[error("data directory {} is locked by another process (lock file {})", dir.display(), dir.join("LOCK").display())]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The engine was shut down.
    #[error("engine is closed")]
    Closed,
    /// An argument is out of the allowed range (key or value too large, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The retry hint of [`Error::NoSpace`].
pub(crate) const NO_SPACE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what the engine was doing; a full disk becomes
    /// [`Error::NoSpace`].
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        if super::storage::is_no_space(&source) {
            return Error::NoSpace {
                context: format!("{}: {source}", context.into()),
                retry_after: NO_SPACE_RETRY_AFTER,
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True for [`Error::NoSpace`].
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }

    /// A corruption error for `file` at `offset`.
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True for checksum and format errors.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error to [`Error::Io`] with a lazily built context.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

/// Runs an fsync-like call, mapping failure to [`Error::Fsync`].
pub(crate) fn fsync_ctx<F: FnOnce() -> String>(r: io::Result<()>, f: F) -> Result<()> {
    r.map_err(|source| Error::Fsync {
        context: f(),
        source,
    })
}
