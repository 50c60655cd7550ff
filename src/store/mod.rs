//! Documents over the engine: collections, `_id`, key encoding, filters, updates.
//!
//! Everything here is pure document logic; nothing touches the engine yet.

pub mod cursor;
pub mod document;
pub mod error;
pub mod filter;
pub mod jsonl;
pub mod key;
pub mod name;
pub mod path;
pub mod update;

pub use cursor::{decode_cursor, encode_cursor};
pub use error::{Result, StoreError};
pub use filter::Filter;
pub use jsonl::{encode_line, parse_line, DumpRecord};
pub use update::Update;
