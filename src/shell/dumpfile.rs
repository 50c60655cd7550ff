//! `dumpDB`: MiniDBGo's dump format, `{"<collection>":[<doc>,...],...}` on one line and a
//! newline (FORMAT.md section 9), collections by name and documents in `_id` order, as
//! MiniDBGo wrote it. Written page by page (memory does not grow with the database) to
//! `FILE.part`, then synced and renamed, so a failed or cancelled dump leaves no file
//! that looks complete. `restoreDB` and `minidb restore --format minidbgo` read it back.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::backend::Backend;
use super::cancel::Cancel;
use super::command::Query;
use super::error::{Result, ShellError};

/// Documents per page while dumping.
const PAGE: usize = 200;

/// What a dump wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dumped {
    pub documents: u64,
    pub collections: u64,
}

/// Writes every collection of `backend` to `path`.
pub(crate) fn write(backend: &mut dyn Backend, path: &Path, cancel: &Cancel) -> Result<Dumped> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = File::create(&part)
        .map_err(|e| ShellError::io(format!("cannot create {}", part.display()), e))?;
    let result = write_into(backend, file, &part, cancel).and_then(|d| {
        std::fs::rename(&part, path).map_err(|e| {
            ShellError::io(
                format!("cannot rename {} to {}", part.display(), path.display()),
                e,
            )
        })?;
        Ok(d)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

fn write_into(
    backend: &mut dyn Backend,
    file: File,
    part: &Path,
    cancel: &Cancel,
) -> Result<Dumped> {
    let io = |e| ShellError::io(format!("cannot write {}", part.display()), e);
    let mut w = BufWriter::with_capacity(256 << 10, file);
    let all = Query::all();
    let mut dumped = Dumped {
        documents: 0,
        collections: 0,
    };
    w.write_all(b"{").map_err(io)?;
    for (i, col) in backend.collections()?.iter().enumerate() {
        if i > 0 {
            w.write_all(b",").map_err(io)?;
        }
        serde_json::to_writer(&mut w, &col.name).map_err(|e| io(e.into()))?;
        w.write_all(b":[").map_err(io)?;
        let mut first = true;
        let mut after: Option<String> = None;
        loop {
            cancel.check()?;
            let page = backend.search(&col.name, &all, after.as_deref(), PAGE)?;
            for doc in &page.docs {
                if !first {
                    w.write_all(b",").map_err(io)?;
                }
                first = false;
                w.write_all(doc).map_err(io)?;
                dumped.documents += 1;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        w.write_all(b"]").map_err(io)?;
        dumped.collections += 1;
    }
    w.write_all(b"}\n").map_err(io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(dumped)
}

/// MiniDBGo's name for a dump taken now: `dump_<HHMMSS>_<DDMMYYYY>.json` (UTC here; Go
/// used local time).
pub(crate) fn default_name() -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(name_at(secs))
}

fn name_at(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "dump_{:02}{:02}{:02}_{day:02}{month:02}{year:04}.json",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_follow_minidbgo() {
        assert_eq!(name_at(0), "dump_000000_01011970.json");
        assert_eq!(name_at(1_796_155_141), "dump_195901_01122026.json");
        assert_eq!(name_at(951_825_599), "dump_115959_29022000.json");
    }
}
