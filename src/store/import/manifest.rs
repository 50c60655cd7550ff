//! MiniDBGo's MANIFEST (FORMAT.md section 3): the SSTables that make up the database.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{ImportError, Result};

/// Largest MANIFEST read (it lists a few hundred tables at most; this is far beyond).
pub(crate) const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// One registered SSTable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableRef {
    /// The level of the MANIFEST list it is in.
    pub level: u32,
    /// The seq of its file name.
    pub seq: u64,
    /// Its base name, `sst-L<level>-<seq>.sst`.
    pub name: String,
    pub min_key: String,
    pub max_key: String,
    pub key_count: Option<u64>,
}

/// The parsed MANIFEST: the tables per level, each list in MANIFEST order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub levels: BTreeMap<u32, Vec<TableRef>>,
    /// Problems that do not stop the import.
    pub warnings: Vec<String>,
}

impl Manifest {
    /// Highest seq among the registered tables.
    pub(crate) fn max_seq(&self) -> Option<u64> {
        self.levels.values().flatten().map(|t| t.seq).max()
    }
}

#[derive(Deserialize)]
struct RawManifest {
    levels: BTreeMap<String, Option<Vec<RawTable>>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTable {
    path: String,
    #[serde(default)]
    min_key: String,
    #[serde(default)]
    max_key: String,
    #[serde(default)]
    key_count: Option<u64>,
}

/// Parses the MANIFEST bytes; `path` names the file in errors.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<Manifest> {
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| {
        ImportError::damaged(
            path,
            offset_of(bytes, e.line(), e.column()),
            format!("not a MiniDBGo MANIFEST ({{\"levels\": {{\"0\": [...], ...}}}}): {e}"),
        )
    })?;
    let mut m = Manifest::default();
    for (key, tables) in raw.levels {
        let level: u32 = key.parse().map_err(|_| {
            ImportError::damaged(
                path,
                find(bytes, &format!("\"{key}\"")),
                format!("level {key:?} is not a level number"),
            )
        })?;
        let mut list = Vec::new();
        for t in tables.unwrap_or_default() {
            // The path is where MiniDBGo ran (`data/MiniDBGo/sst/...`, or with `\` on
            // Windows); only the base name means anything.
            let name = t
                .path
                .rsplit(['/', '\\'])
                .next()
                .unwrap_or_default()
                .to_owned();
            let Some((name_level, seq)) = parse_table_name(&name) else {
                return Err(ImportError::damaged(
                    path,
                    find(bytes, &t.path),
                    format!(
                        "table path {:?} does not end in sst-L<level>-<seq>.sst",
                        t.path
                    ),
                ));
            };
            if name_level != level {
                m.warnings.push(format!(
                    "MANIFEST lists {name} under level {level}; the level of the list is used"
                ));
            }
            list.push(TableRef {
                level,
                seq,
                name,
                min_key: t.min_key,
                max_key: t.max_key,
                key_count: t.key_count,
            });
        }
        m.levels.entry(level).or_default().extend(list);
    }
    Ok(m)
}

/// `sst-L<level>-<seq>.sst` → (level, seq).
pub(crate) fn parse_table_name(name: &str) -> Option<(u32, u64)> {
    let core = name.strip_prefix("sst-L")?.strip_suffix(".sst")?;
    let (level, seq) = core.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(level) || !digits(seq) {
        return None;
    }
    Some((level.parse().ok()?, seq.parse().ok()?))
}

/// Byte offset of 1-based `line` and `column` (serde_json counts bytes in a line).
fn offset_of(bytes: &[u8], line: usize, column: usize) -> u64 {
    let mut start = 0usize;
    for _ in 1..line {
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    (start + column.saturating_sub(1)).min(bytes.len()) as u64
}

/// Offset of the first occurrence of `needle` (for errors found after parsing).
fn find(bytes: &[u8], needle: &str) -> u64 {
    let n = needle.as_bytes();
    if n.is_empty() {
        return 0;
    }
    bytes.windows(n.len()).position(|w| w == n).unwrap_or(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"{
  "levels": {
    "0": [
      {
        "level": 0,
        "path": "data/MiniDBGo/sst/sst-L0-000038.sst",
        "minKey": "accounts:acc-0000",
        "maxKey": "kfill:0119",
        "fileSize": 14510,
        "keyCount": 200
      }
    ],
    "1": [
      { "level": 1, "path": "/data/MiniDBGo/sst/sst-L1-000027.sst", "minKey": "a:1", "maxKey": "z:9", "fileSize": 1, "keyCount": 3 },
      { "level": 1, "path": "C:\\db\\sst\\sst-L1-000016.sst", "minKey": "b:1", "maxKey": "c:9", "fileSize": 1, "keyCount": 4 }
    ],
    "2": []
  }
}
"#;

    #[test]
    fn reads_levels_in_manifest_order_with_base_names() {
        let m = parse(Path::new("MANIFEST"), SAMPLE.as_bytes()).unwrap_or_default();
        assert_eq!(m.levels.len(), 3);
        assert_eq!(m.levels[&0][0].name, "sst-L0-000038.sst");
        assert_eq!(m.levels[&0][0].key_count, Some(200));
        let l1: Vec<(&str, u64)> = m.levels[&1]
            .iter()
            .map(|t| (t.name.as_str(), t.seq))
            .collect();
        assert_eq!(l1, [("sst-L1-000027.sst", 27), ("sst-L1-000016.sst", 16)]);
        assert!(m.levels[&2].is_empty());
        assert_eq!(m.max_seq(), Some(38));
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn errors_name_the_offset() {
        let bad = SAMPLE.replace("\"fileSize\": 14510,", "\"fileSize\": 14510,,");
        match parse(Path::new("MANIFEST"), bad.as_bytes()) {
            Err(ImportError::Damaged { offset, .. }) => {
                let at = bad.find(",,").unwrap_or(0) as u64;
                assert!(offset.abs_diff(at) <= 2, "{offset} vs {at}");
            }
            other => panic!("{other:?}"),
        }
        let bad = SAMPLE.replace("sst-L0-000038.sst", "table.dat");
        assert!(matches!(
            parse(Path::new("MANIFEST"), bad.as_bytes()),
            Err(ImportError::Damaged { reason, .. }) if reason.contains("table.dat")
        ));
        let bad = SAMPLE.replace("\"2\": []", "\"two\": []");
        assert!(parse(Path::new("MANIFEST"), bad.as_bytes()).is_err());
    }

    #[test]
    fn table_names() {
        assert_eq!(parse_table_name("sst-L2-000018.sst"), Some((2, 18)));
        for bad in [
            "sst-L2-.sst",
            "sst-L-1.sst",
            "sst-L1-1x.sst",
            "x.sst",
            "sst-L1-000018",
        ] {
            assert_eq!(parse_table_name(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(Path::new("MANIFEST"), &data);
        }

        #[test]
        fn truncations_are_errors(cut in 0usize..SAMPLE.trim_end().len()) {
            prop_assert!(parse(Path::new("MANIFEST"), &SAMPLE.as_bytes()[..cut]).is_err());
        }
    }
}
