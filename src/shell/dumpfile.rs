//! `dumpDB`: MiniDBGo's dump format, `{"<collection>":[<doc>,...],...}` on one line and a
//! newline (FORMAT.md section 9), collections by name and documents in `_id` order, as
//! MiniDBGo wrote it. Written page by page (memory does not grow with the database) to
//! `FILE.part`, then synced and renamed, so a failed or cancelled dump leaves no file
//! that looks complete. `restoreDB` and `minidb restore --format minidbgo` read it back.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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
    PathBuf::from(name_at(crate::utc::now_secs()))
}

fn name_at(secs: u64) -> String {
    let c = crate::utc::civil(secs);
    format!(
        "dump_{:02}{:02}{:02}_{:02}{:02}{:04}.json",
        c.hour, c.minute, c.second, c.day, c.month, c.year
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
