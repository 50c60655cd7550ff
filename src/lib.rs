//! MiniDB: a document database on its own crash-safe, memory-bounded LSM engine.
//!
//! The layers (see the README): [`engine`] stores bytes; the store, server and
//! telemetry layers stand on it.

pub mod config;
pub mod engine;
pub mod server;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use engine::Engine;
pub use store::Store;
