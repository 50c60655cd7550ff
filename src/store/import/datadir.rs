//! A MiniDBGo data directory: which files make up the database, and their recency order
//! (FORMAT.md section 8).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::{ImportError, Result};
use super::manifest::{self, Manifest, TableRef, MAX_MANIFEST_BYTES};
use super::wal::{order_wals, WalName};

/// The files of a data directory, in the order that decides recency.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    /// WAL files to apply, oldest first (creation order); the newest record of a key wins.
    pub wals: Vec<PathBuf>,
    /// Registered SSTables, newest first: L0 from the last MANIFEST entry backwards, then
    /// L1 by seq (highest first), then L2 (and any deeper level) the same way.
    pub tables: Vec<(PathBuf, TableRef)>,
    /// Ignored files, overlaps and other things worth reporting.
    pub warnings: Vec<String>,
}

impl DataDir {
    /// Reads the MANIFEST and lists `sst/` and `wal/` of `dir`.
    pub(crate) fn open(dir: &Path) -> Result<DataDir> {
        if !dir.is_dir() {
            return Err(ImportError::NotADataDir {
                dir: dir.to_path_buf(),
                reason: "no such directory".into(),
            });
        }
        let mut warnings = Vec::new();
        let manifest_path = dir.join("MANIFEST");
        let wal_dir = dir.join("wal");
        let manifest = if manifest_path.is_file() {
            let bytes = read_capped(&manifest_path, MAX_MANIFEST_BYTES)?;
            manifest::parse(&manifest_path, &bytes)?
        } else if wal_dir.is_dir() {
            warnings.push(
                "no MANIFEST (MiniDBGo never flushed a memtable here): only the WAL is read"
                    .to_owned(),
            );
            Manifest::default()
        } else {
            let nested = dir.join("data").join("MiniDBGo");
            let hint = if nested.join("MANIFEST").is_file() {
                format!(
                    "; {} looks like one (MiniDBGo's default DB_PATH under this directory)",
                    nested.display()
                )
            } else {
                String::new()
            };
            return Err(ImportError::NotADataDir {
                dir: dir.to_path_buf(),
                reason: format!("it has neither a MANIFEST nor a wal/ directory{hint}"),
            });
        };
        warnings.extend(manifest.warnings.iter().cloned());
        if dir.join("MANIFEST.tmp").exists() {
            warnings.push(
                "MANIFEST.tmp exists (MiniDBGo stopped while replacing MANIFEST); MANIFEST, the \
                 state before that change, was used"
                    .to_owned(),
            );
        }

        let sst_dir = dir.join("sst");
        let mut tables = Vec::new();
        for (&level, list) in &manifest.levels {
            let mut list: Vec<&TableRef> = list.iter().collect();
            if level == 0 {
                // Flush order, oldest first: the last entry is the newest.
                list.reverse();
            } else {
                // MANIFEST keeps these lists by minKey, which says nothing about age.
                list.sort_by_key(|t| std::cmp::Reverse(t.seq));
            }
            for t in list {
                let path = sst_dir.join(&t.name);
                if !path.is_file() {
                    return Err(ImportError::MissingFile {
                        file: path,
                        named_in: manifest_path.clone(),
                    });
                }
                tables.push((path, t.clone()));
            }
        }
        overlap_warnings(&manifest, &mut warnings);
        unregistered_tables(&sst_dir, &manifest, &mut warnings)?;

        let mut names = Vec::new();
        if wal_dir.is_dir() {
            for name in list_files(&wal_dir)? {
                match WalName::parse(&name) {
                    Some(w) => names.push(w),
                    None => {
                        warnings.push(format!("wal/{name} ignored: not a MiniDBGo WAL file name"))
                    }
                }
            }
        }
        let (live, stale) = order_wals(names, manifest.max_seq());
        for (w, marker) in stale {
            warnings.push(format!(
                "wal/{} ignored: it predates the restart that created wal/{} and whose \
                 replay already flushed it into the SSTables (FORMAT.md section 5)",
                w.name, marker.name
            ));
        }
        let wals = live.into_iter().map(|w| wal_dir.join(w.name)).collect();
        Ok(DataDir {
            wals,
            tables,
            warnings,
        })
    }
}

/// An L1 file with a lower seq than an L2 file it overlaps may hold older *or* newer
/// versions, key by key; level order (L1 over L2), as MiniDBGo's reads assume, decides.
fn overlap_warnings(manifest: &Manifest, warnings: &mut Vec<String>) {
    const MAX: usize = 20;
    let mut n = 0;
    for (&level, upper) in manifest.levels.iter().filter(|(&l, _)| l >= 1) {
        for (_, lower) in manifest.levels.range(level + 1..) {
            for a in upper {
                for b in lower.iter().filter(|b| b.seq > a.seq) {
                    let lo = a.min_key.as_str().max(b.min_key.as_str());
                    let hi = a.max_key.as_str().min(b.max_key.as_str());
                    if lo > hi {
                        continue;
                    }
                    n += 1;
                    if n <= MAX {
                        warnings.push(format!(
                            "{} and the newer-numbered {} overlap (key ranges meet on \
                             {lo:?}..{hi:?}): level order decides (L{} over L{}), as in \
                             MiniDBGo's own reads",
                            a.name, b.name, a.level, b.level
                        ));
                    }
                }
            }
        }
    }
    if n > MAX {
        warnings.push(format!("... and {} more such overlaps", n - MAX));
    }
}

fn unregistered_tables(
    sst_dir: &Path,
    manifest: &Manifest,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if !sst_dir.is_dir() {
        return Ok(());
    }
    let registered: std::collections::HashSet<&str> = manifest
        .levels
        .values()
        .flatten()
        .map(|t| t.name.as_str())
        .collect();
    for name in list_files(sst_dir)? {
        if manifest::parse_table_name(&name).is_some() && !registered.contains(name.as_str()) {
            warnings.push(format!(
                "sst/{name} ignored: not in MANIFEST, so not part of the database"
            ));
        }
    }
    Ok(())
}

/// Names of the regular files in `dir`, sorted (for stable reports).
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ImportError::io("list", dir, e))?;
    for e in entries {
        let e = e.map_err(|e| ImportError::io("list", dir, e))?;
        let is_file = e
            .file_type()
            .map_err(|err| ImportError::io("stat", &e.path(), err))?
            .is_file();
        if is_file {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| ImportError::io("open", path, e))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImportError::io("read", path, e))?;
    if bytes.len() as u64 > max {
        return Err(ImportError::damaged(
            path,
            max,
            format!("larger than {max} bytes, far beyond any MiniDBGo MANIFEST"),
        ));
    }
    Ok(bytes)
}
