//! MiniDB: a document database on its own crash-safe, memory-bounded LSM engine.
//!
//! The layers (see the README): [`engine`] stores bytes; the store, server and
//! telemetry layers stand on it. With `default-features = false` the crate is the engine,
//! the document store and the configuration only (no HTTP, async runtime or telemetry).

pub mod config;
pub mod engine;
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub(crate) mod redact;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod shell;
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod utc;

pub use config::Config;
pub use engine::Engine;
pub use store::Store;
