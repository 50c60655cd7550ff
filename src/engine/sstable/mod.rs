//! Sorted string tables: immutable files of sorted, versioned entries.
//!
//! File layout: data blocks (~4 KiB, optionally LZ4), a bloom filter block, a properties
//! block, an index block (last key of each data block and its handle), and a fixed footer
//! (handles, format version, CRC, magic). Every block ends with a compression byte and a
//! CRC32 of its stored bytes.

pub(crate) mod block;
pub(crate) mod bloom;
pub(crate) mod builder;
pub(crate) mod format;
pub(crate) mod props;
pub(crate) mod table;

pub(crate) use builder::TableBuilder;
pub(crate) use table::{Table, TableIter};
