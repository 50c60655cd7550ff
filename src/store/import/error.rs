//! The importer's error type: damaged input names its file and byte offset.

use std::io;
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// Everything that stops an import from MiniDBGo. Records that are readable but not
/// importable are not errors: they are skipped and reported in the
/// [`Summary`](super::Summary).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file does not have MiniDBGo's format at `offset` (checksum, length, order, syntax).
    #[error("{} is damaged at byte offset {offset}: {reason}", file.display())]
    Damaged {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record, block or field.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// A file or directory could not be read.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("open", "read", "list", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file that MANIFEST names does not exist.
    #[error("{} names {}, which does not exist", named_in.display(), file.display())]
    MissingFile {
        /// The missing file.
        file: PathBuf,
        /// The file that names it.
        named_in: PathBuf,
    },
    /// The directory is not a MiniDBGo data directory.
    #[error("{} is not a MiniDBGo data directory: {reason}", dir.display())]
    NotADataDir {
        /// The directory given.
        dir: PathBuf,
        /// What is missing, with a hint where it may be.
        reason: String,
    },
    /// The target already holds documents and the import was not forced.
    #[error(
        "the target already holds {documents} documents in {collections} collections; \
         import-minidbgo fills an empty MiniDB (use --force to upsert into it: documents \
         with the same collection and _id are replaced, all others stay)"
    )]
    TargetNotEmpty {
        /// Collections in the target.
        collections: usize,
        /// Documents in the target.
        documents: u64,
    },
    /// The source failed during the write pass although the check pass had read it
    /// whole (it changed in between); chunks committed before stay written.
    #[error(
        "the source changed during the import, after {committed} documents were written: {source}"
    )]
    Interrupted {
        /// Documents committed before the failure.
        committed: u64,
        /// What failed.
        #[source]
        source: Box<ImportError>,
    },
    /// The caller asked the import to stop (Ctrl-C in the shell); chunks committed before
    /// stay written.
    #[error(
        "stopped after {committed} documents were written (each chunk of up to 1000 is \
         atomic; running the restore again is safe: documents are upserted)"
    )]
    Stopped {
        /// Documents committed before the stop.
        committed: u64,
    },
    /// Writing into MiniDB failed; chunks committed before it stay written.
    #[error("writing into MiniDB failed after {committed} documents: {source}")]
    Store {
        /// Documents committed before the failure.
        committed: u64,
        /// What failed.
        #[source]
        source: StoreError,
    },
}

impl ImportError {
    /// A [`ImportError::Damaged`] for `file` at `offset`.
    pub(crate) fn damaged(file: &Path, offset: u64, reason: impl Into<String>) -> Self {
        ImportError::Damaged {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// A [`ImportError::Io`] for `path`.
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        ImportError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// True for damaged input (as opposed to I/O or write failures).
    pub fn is_damaged(&self) -> bool {
        matches!(self, ImportError::Damaged { .. })
    }
}

/// The importer's result type.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;
