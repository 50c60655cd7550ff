//! Documents over the engine: collections, `_id`, key encoding, filters, updates.
//!
//! The submodules are pure document logic; [`Store`] (in `db.rs`) puts them over the
//! engine, and `meta.rs` holds the stored value layouts (envelope, statistics shards).

pub mod cursor;
pub mod db;
pub mod document;
pub mod error;
pub mod feed;
pub mod filter;
pub mod import;
pub mod json;
pub mod jsonl;
pub mod key;
pub mod meta;
pub mod name;
pub mod path;
pub mod update;

pub use cursor::{decode_cursor, encode_cursor};
pub use db::{
    CollectionInfo, Hit, IfMatch, SearchCursor, SearchPage, Store, StoredDoc, MAX_BATCH_DOCS,
};
pub use error::{Result, StoreError};
pub use filter::Filter;
pub use jsonl::{encode_line, parse_line, DumpRecord};
pub use update::Update;
