//! What an import read, wrote and skipped.

use std::collections::BTreeMap;
use std::fmt;

/// Most example records kept per skip reason.
pub const EXAMPLES_PER_REASON: usize = 5;
/// Most collections listed by name in a summary (all are counted).
pub const LISTED_COLLECTIONS: usize = 20;
/// Most warnings kept (all are counted).
pub const MAX_WARNINGS: usize = 50;

/// Why a record was not imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The value is valid JSON but not an object (MiniDBGo stores a PUT body of `null`).
    NotAnObject,
    /// The value is not JSON at all.
    InvalidJson,
    /// MiniDB's rules reject the collection name or the `_id` (MiniDBGo had none).
    NotImportableName,
    /// The key is not `<collection>:<id>` (no `:`, or not UTF-8).
    NotADocumentKey,
    /// A dump document without a string `_id`.
    MissingId,
    /// The document breaks another of MiniDB's limits (nesting depth, size).
    InvalidDocument,
}

impl SkipReason {
    /// A short stable name, as used in the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotAnObject => "not-an-object",
            SkipReason::InvalidJson => "invalid-json",
            SkipReason::NotImportableName => "not-importable-name",
            SkipReason::NotADocumentKey => "not-a-document-key",
            SkipReason::MissingId => "missing-id",
            SkipReason::InvalidDocument => "invalid-document",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One skipped record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// Why.
    pub reason: SkipReason,
    /// The MiniDBGo key (`<collection>:<id>`), or `<collection>[<index>]` for a dump
    /// document without a usable `_id`.
    pub key: String,
    /// The specific rule or error.
    pub detail: String,
}

/// The records skipped for one reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkipGroup {
    /// How many.
    pub count: u64,
    /// The first [`EXAMPLES_PER_REASON`] of them.
    pub examples: Vec<Skipped>,
}

/// What was imported from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// A data directory (MANIFEST, SSTables, WAL files).
    #[default]
    DataDirectory,
    /// A `dumpDB` file.
    Dump,
}

/// The outcome of an import (or of its check, which writes nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// What was read.
    pub source: SourceKind,
    /// A check only: nothing was written, `documents` is what an import would write.
    pub dry_run: bool,
    /// Documents imported (or, for a check, that would be).
    pub documents: u64,
    /// Collections that received at least one document.
    pub collections: u64,
    /// The first [`LISTED_COLLECTIONS`] of them with their document counts.
    pub listed_collections: Vec<(String, u64)>,
    /// Records not imported, by reason.
    pub skipped: BTreeMap<SkipReason, SkipGroup>,
    /// Versions read from the source: WAL records and SSTable entries (tombstones
    /// included), or the documents of a dump.
    pub records: u64,
    /// Keys whose newest version is a delete (data directories only).
    pub deleted: u64,
    /// Older versions hidden by a newer version or a delete of the same key.
    pub shadowed: u64,
    /// Things worth knowing that did not stop the import (ignored files, overlaps).
    pub warnings: Vec<String>,
    /// Warnings beyond [`MAX_WARNINGS`], counted only.
    pub more_warnings: u64,
}

impl Summary {
    /// Records skipped, all reasons together.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().map(|g| g.count).sum()
    }

    /// Records a skip, keeping the first few examples.
    pub(crate) fn skip(&mut self, s: Skipped) {
        let g = self.skipped.entry(s.reason).or_default();
        g.count += 1;
        if g.examples.len() < EXAMPLES_PER_REASON {
            g.examples.push(s);
        }
    }

    /// Records a warning, keeping the first [`MAX_WARNINGS`].
    pub(crate) fn warn(&mut self, w: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(w);
        } else {
            self.more_warnings += 1;
        }
    }

    /// Counts a finished collection run of `docs` documents.
    pub(crate) fn add_collection(&mut self, name: &str, docs: u64) {
        if docs == 0 {
            return;
        }
        self.collections += 1;
        if self.listed_collections.len() < LISTED_COLLECTIONS {
            self.listed_collections.push((name.to_owned(), docs));
        }
    }
}

/// The summary as the CLI prints it: one fact per line.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would import"
        } else {
            "imported"
        };
        write!(
            f,
            "{verb} {} documents into {} collections",
            self.documents, self.collections
        )?;
        if !self.listed_collections.is_empty() {
            let list: Vec<String> = self
                .listed_collections
                .iter()
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            let more = self.collections - self.listed_collections.len() as u64;
            write!(f, " ({}", list.join(", "))?;
            if more > 0 {
                write!(f, ", and {more} more")?;
            }
            write!(f, ")")?;
        }
        writeln!(f)?;
        if self.dry_run {
            writeln!(f, "dry run: nothing was written")?;
        }
        match self.source {
            SourceKind::DataDirectory => writeln!(
                f,
                "read {} versions (WAL records and SSTable entries): {} keys deleted, {} \
                 older versions shadowed",
                self.records, self.deleted, self.shadowed
            )?,
            SourceKind::Dump => writeln!(f, "read {} documents from the dump", self.records)?,
        }
        writeln!(f, "skipped {} records", self.skipped_total())?;
        for (reason, g) in &self.skipped {
            writeln!(f, "  {reason}: {}", g.count)?;
            for e in &g.examples {
                writeln!(f, "    {:?}: {}", e.key, e.detail)?;
            }
            if g.count > g.examples.len() as u64 {
                writeln!(f, "    ... and {} more", g.count - g.examples.len() as u64)?;
            }
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.more_warnings > 0 {
            writeln!(f, "warning: ... and {} more warnings", self.more_warnings)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_counts_examples_and_warnings() {
        let mut s = Summary {
            documents: 3,
            ..Summary::default()
        };
        s.add_collection("users", 2);
        s.add_collection("empty", 0);
        s.add_collection("orders", 1);
        for i in 0..7 {
            s.skip(Skipped {
                reason: SkipReason::NotAnObject,
                key: format!("docs:{i}"),
                detail: "the value is JSON null, not an object".into(),
            });
        }
        s.warn("sst/x.sst is not in MANIFEST".into());
        let text = s.to_string();
        assert!(
            text.starts_with("imported 3 documents into 2 collections (users 2, orders 1)\n"),
            "{text}"
        );
        assert!(
            text.contains("skipped 7 records\n  not-an-object: 7\n"),
            "{text}"
        );
        assert!(text.contains("\"docs:4\""), "{text}");
        assert!(!text.contains("\"docs:5\""), "{text}");
        assert!(text.contains("... and 2 more"), "{text}");
        assert!(
            text.contains("warning: sst/x.sst is not in MANIFEST"),
            "{text}"
        );
        assert_eq!(s.skipped_total(), 7);
    }

    #[test]
    fn lists_are_bounded() {
        let mut s = Summary::default();
        for i in 0..100 {
            s.add_collection(&format!("c{i}"), 1);
            s.warn(format!("w{i}"));
        }
        assert_eq!(s.collections, 100);
        assert_eq!(s.listed_collections.len(), LISTED_COLLECTIONS);
        assert_eq!(s.warnings.len(), MAX_WARNINGS);
        assert_eq!(s.more_warnings, 50);
        assert!(s.to_string().contains("and 80 more)"));
    }
}
