//! MiniDB: a document database on its own crash-safe, memory-bounded LSM engine.
//!
//! The layers (see `docs/DESIGN.md`): [`engine`] stores bytes; the store, server and
//! telemetry layers stand on it.

pub mod engine;
pub mod store;
