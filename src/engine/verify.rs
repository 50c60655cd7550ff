//! Read-only verification of a data directory: every table checksum and every WAL record,
//! without writing anything (no lock file is created, no torn tail is cut).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::BlockCache;
use super::error::{Error, IoContext, Result};
use super::iter::Source;
use super::manifest;
use super::options::Options;
use super::sstable::{Table, TableIter};
use super::stats::Counters;
use super::storage::{read_all, EntryKind};
use super::{table_path, wal};

/// What [`verify_dir`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Live tables checked.
    pub tables: usize,
    /// Entries (versions) read from them, every block's checksum checked.
    pub table_entries: u64,
    /// WAL segments replayed.
    pub wal_segments: usize,
    /// WAL records read, every checksum checked.
    pub wal_records: u64,
    /// Torn WAL tails (a crash mid-write): the segment and the offset of the cut. The
    /// next open truncates them; no acknowledged write is in them.
    pub torn_tails: Vec<(PathBuf, u64)>,
}

/// Reads every block of `table`, checking each checksum; returns the entries seen.
pub(super) fn check_table(table: &Arc<Table>) -> Result<u64> {
    let mut it = TableIter::new(table.clone(), false);
    it.seek(&[])?;
    let mut n = 0;
    while it.current().is_some() {
        n += 1;
        it.advance()?;
    }
    Ok(n)
}

/// Verifies the database in `dir` without changing a byte of it. Fails with
/// [`Error::Locked`] while another process holds the directory, and with
/// [`Error::Corruption`] naming the file and offset of the first damage found.
pub fn verify_dir(dir: impl AsRef<Path>, opts: &Options) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let fs = &*opts.storage;
    if fs.kind(dir).ctx(|| format!("stat {}", dir.display()))? != Some(EntryKind::Dir) {
        return Err(Error::InvalidArgument(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let lock_path = dir.join("LOCK");
    // Only lock a directory that has a lock file: creating one would be a write.
    let _lock = match fs
        .kind(&lock_path)
        .ctx(|| format!("stat {}", lock_path.display()))?
    {
        Some(EntryKind::File) => match fs.lock(&lock_path) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(Error::io(format!("lock {}", lock_path.display()), e)),
        },
        _ => None,
    };
    let Some(state) = manifest::read(fs, dir)? else {
        return Err(Error::InvalidArgument(format!(
            "{} holds no MiniDB database (no MANIFEST)",
            dir.display()
        )));
    };
    let mut report = VerifyReport::default();
    let cache = Arc::new(BlockCache::new(1 << 20));
    let counters = Arc::new(Counters::default());
    let sst_dir = dir.join("sst");
    for rec in &state.tables {
        let path = table_path(&sst_dir, rec.id);
        let table = Arc::new(Table::open(
            fs,
            &path,
            rec.id,
            cache.clone(),
            counters.clone(),
        )?);
        if table.size() != rec.size {
            return Err(Error::corruption(
                &path,
                table.size(),
                format!(
                    "table is {} bytes, the manifest says {}",
                    table.size(),
                    rec.size
                ),
            ));
        }
        report.table_entries += check_table(&table)?;
        report.tables += 1;
    }
    let wal_dir = dir.join("wal");
    if fs.kind(&wal_dir).ok().flatten() == Some(EntryKind::Dir) {
        let segments: Vec<u64> = wal::list_segments(fs, &wal_dir)?
            .into_iter()
            .filter(|&s| s >= state.log_number)
            .collect();
        let mut datas = Vec::new();
        for &seg in &segments {
            let path = wal::segment_path(&wal_dir, seg);
            let len = fs
                .open(&path, false)
                .and_then(|f| f.size())
                .ctx(|| format!("stat {}", path.display()))?;
            datas.push((seg, path, len));
        }
        let last_real = datas
            .iter()
            .rev()
            .find(|(_, _, l)| *l >= 8)
            .map(|(s, _, _)| *s);
        let mut last_seq = state.last_seq;
        for (seg, path, _) in datas {
            let data = fs
                .open(&path, false)
                .and_then(|f| read_all(&*f))
                .ctx(|| format!("read {}", path.display()))?;
            let r = wal::replay(&path, &data, Some(seg) == last_real, last_seq, |_, _| {})?;
            last_seq = last_seq.max(r.max_seq);
            report.wal_segments += 1;
            report.wal_records += r.records;
            if let Some(at) = r.truncated_at {
                report.torn_tails.push((path, at));
            }
        }
    }
    Ok(report)
}
