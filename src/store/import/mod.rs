//! Import from MiniDBGo: its data directory (`MANIFEST`, `sst/`, `wal/`) and its `dumpDB`
//! files, into a [`Store`].
//!
//! The formats and the recency rule are those of `tests/fixtures/minidbgo/FORMAT.md`:
//! `manifest`, `sstable`, `wal` and `dump` decode one format each, `datadir` decides which
//! files count and in which order, `merge` resolves every key to its newest version in
//! key order, `decode` turns a value into a document as Go did, `writer` commits chunks.
//!
//! Memory stays bounded whatever the database size: SSTables are streamed (one block and
//! a small index window each), the WAL is indexed by key only, a dump is parsed document
//! by document, and documents are written in chunks of at most [`CHUNK_DOCS`] documents
//! and about [`CHUNK_BYTES`] bytes.
//!
//! Every import reads its whole source twice: a check pass that writes nothing (so damaged
//! input is found before the first write, and the progress bar knows the total), then the
//! write pass. Each chunk is atomic; if writing fails midway (a full disk), the chunks
//! before stay written and [`ImportError::Store`] says how many documents that is.

mod datadir;
mod decode;
mod dump;
mod error;
mod manifest;
mod merge;
mod sstable;
mod summary;
#[cfg(test)]
mod testenc;
mod wal;
mod writer;

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use error::{ImportError, Result};
pub use summary::{
    SkipGroup, SkipReason, Skipped, SourceKind, Summary, EXAMPLES_PER_REASON, LISTED_COLLECTIONS,
    MAX_WARNINGS,
};
pub use writer::{CHUNK_BYTES, CHUNK_DOCS};

use super::Store;
use datadir::DataDir;
pub(crate) use decode::Outcome;
use merge::Merge;
use writer::Sink;

/// How an import treats the target.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Import into a target that already holds documents, as upserts (same collection
    /// and `_id`: replaced; everything else stays). Without it such a target is refused.
    pub force: bool,
}

/// Which pass a progress report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Reading and checking the source; nothing is written.
    Checking,
    /// Writing; `total` records will be seen in all.
    Importing {
        /// Records of the source (documents and skipped records).
        total: u64,
    },
}

/// Reads and checks a MiniDBGo data directory without writing anything: the summary of
/// what an import would do. `progress` gets the records seen so far.
pub fn check_dir(dir: &Path, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
    scan_dir(dir, None, progress)
}

/// Imports every live document of the MiniDBGo data directory `dir` into `store`.
///
/// Refuses a store that already holds documents unless `opts.force` is set. The whole
/// directory is checked before the first write.
pub fn import_dir(
    store: &Store,
    dir: &Path,
    opts: &ImportOptions,
    progress: &mut dyn FnMut(Phase, u64),
) -> Result<Summary> {
    ensure_target(store, opts)?;
    let checked = scan_dir(dir, None, &mut |n| progress(Phase::Checking, n))?;
    let total = checked.documents + checked.skipped_total();
    scan_dir(dir, Some(store), &mut |n| {
        progress(Phase::Importing { total }, n)
    })
}

/// Reads and checks a MiniDBGo dump without writing anything.
pub fn check_dump(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
    scan_dump(path, None, progress, &|| false)
}

/// Upserts every document of the MiniDBGo dump `path` into `store`, as MiniDBGo's
/// `restoreDB` did (existing documents with other ids stay). The whole file is checked
/// before the first write.
pub fn restore_dump(
    store: &Store,
    path: &Path,
    progress: &mut dyn FnMut(Phase, u64),
) -> Result<Summary> {
    restore_dump_until(store, path, progress, &|| false)
}

/// [`restore_dump`] that asks `stop` before every document and ends with
/// [`ImportError::Stopped`] once it says yes (the shell's Ctrl-C).
pub fn restore_dump_until(
    store: &Store,
    path: &Path,
    progress: &mut dyn FnMut(Phase, u64),
    stop: &dyn Fn() -> bool,
) -> Result<Summary> {
    let checked = scan_dump(path, None, &mut |n| progress(Phase::Checking, n), stop)?;
    let total = checked.documents + checked.skipped_total();
    scan_dump(
        path,
        Some(store),
        &mut |n| progress(Phase::Importing { total }, n),
        stop,
    )
}

/// [`check_dump`] that asks `stop` before every document.
pub fn check_dump_until(
    path: &Path,
    progress: &mut dyn FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> Result<Summary> {
    scan_dump(path, None, progress, stop)
}

/// Calls `f` with every record of the MiniDBGo dump `path`, decoded as [`restore_dump`]
/// decodes it, in file order: for a restore that writes elsewhere (the shell over HTTP).
pub(crate) fn for_each_dump_record(
    path: &Path,
    f: &mut dyn FnMut(Outcome) -> Result<()>,
) -> Result<()> {
    let file = File::open(path).map_err(|e| ImportError::io("open", path, e))?;
    let reader = BufReader::with_capacity(64 << 10, file);
    dump::for_each_document(path, reader, &mut |collection, index, doc| {
        f(decode::from_dump(collection, index, doc))
    })
}

fn ensure_target(store: &Store, opts: &ImportOptions) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    let existing = store.collections().map_err(|source| ImportError::Store {
        committed: 0,
        source,
    })?;
    if existing.is_empty() {
        return Ok(());
    }
    Err(ImportError::TargetNotEmpty {
        collections: existing.len(),
        documents: existing.iter().map(|c| c.doc_count).sum(),
    })
}

fn scan_dir(dir: &Path, store: Option<&Store>, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
    let dd = DataDir::open(dir)?;
    let mut sink = Sink::new(store, progress);
    for w in &dd.warnings {
        sink.summary.warn(w.clone());
    }
    let read = (|| {
        let mut merge = Merge::open(&dd, &mut |w| sink.summary.warn(w))?;
        while let Some(live) = merge.next_live()? {
            sink.accept(decode::from_record(&live.key, &live.value))?;
        }
        sink.summary.records = merge.stats.records;
        sink.summary.deleted = merge.stats.deleted;
        sink.summary.shadowed = merge.stats.shadowed;
        Ok(())
    })();
    finish(sink, read)
}

fn scan_dump(
    path: &Path,
    store: Option<&Store>,
    progress: &mut dyn FnMut(u64),
    stop: &dyn Fn() -> bool,
) -> Result<Summary> {
    // Opened here too, so that a missing file is reported as it is in either pass.
    File::open(path).map_err(|e| ImportError::io("open", path, e))?;
    let mut sink = Sink::new(store, progress);
    sink.summary.source = SourceKind::Dump;
    let read = for_each_dump_record(path, &mut |outcome| {
        if stop() {
            return Err(ImportError::Stopped {
                committed: sink.committed(),
            });
        }
        sink.summary.records += 1;
        sink.accept(outcome)
    });
    finish(sink, read)
}

/// Commits the rest, or reports a read failure of the write pass with what was written.
fn finish(sink: Sink<'_>, read: Result<()>) -> Result<Summary> {
    match read {
        Ok(()) => sink.finish(),
        Err(e @ (ImportError::Store { .. } | ImportError::Stopped { .. })) => Err(e),
        Err(e) if sink.writes() => Err(ImportError::Interrupted {
            committed: sink.committed(),
            source: Box::new(e),
        }),
        Err(e) => Err(e),
    }
}
