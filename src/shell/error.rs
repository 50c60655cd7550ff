//! The shell's error type: every variant prints as one line that says what to do.

use std::io;
use std::path::PathBuf;

use crate::store::import::ImportError;
use crate::store::StoreError;

/// Result alias for the shell.
pub type Result<T, E = ShellError> = std::result::Result<T, E>;

/// Everything a shell command or session can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// The line is not a command of the shell, or its arguments do not fit the command.
    #[error("{0}")]
    Usage(String),
    /// An argument is not valid JSON; `at` is where in the input ("column 12").
    #[error("invalid {what} JSON at {at}: {reason}")]
    Json {
        /// Which argument ("filter", "document", ...).
        what: &'static str,
        /// Where the parser stopped, in the whole input.
        at: String,
        /// The JSON parser's message.
        reason: String,
    },
    /// The store refused the command (bad filter, bad update, missing `_id`, ...).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// No document matched the filter of `findOne`, `updateOne` or `deleteOne`.
    #[error("no document in collection {collection:?} matches {filter}")]
    NoMatch {
        /// The collection searched.
        collection: String,
        /// The filter, as compact JSON (cut to a readable length).
        filter: String,
    },
    /// The server answered with an error.
    #[error("server answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's message (its `error` field), cut to a readable length.
        message: String,
    },
    /// The server could not be reached, or did not answer in time.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server's answer is not what its API promises.
    #[error("unexpected answer from the server: {0}")]
    BadResponse(String),
    /// The data directory is held by a running server.
    #[error(
        "data directory {} is in use by a running minidb server; stop it, or work through \
         it with `minidb shell --url http://HOST:PORT`",
        dir.display()
    )]
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// The data directory could not be opened.
    #[error("cannot open data directory {}: {source}", dir.display())]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// The engine's error.
        #[source]
        source: crate::engine::Error,
    },
    /// A file could not be read or written, or the terminal failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `restoreDB` failed; the message says how much was written.
    #[error("{0}")]
    Import(#[from] ImportError),
    /// The change feed was pruned past `since`: a deletion after it may be gone.
    #[error(
        "the change feed no longer holds every change after {since} (deletions past their \
         retention were pruned); the oldest usable since is {oldest}, or 0 to read it all again"
    )]
    ChangesGone {
        /// The `since` asked for.
        since: u64,
        /// The lowest `since` the feed can serve.
        oldest: u64,
    },
    /// Ctrl-C stopped the command.
    #[error("cancelled")]
    Cancelled,
}

impl ShellError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        ShellError::Io {
            context: context.into(),
            source,
        }
    }
}

/// `s` cut to `max` characters for an error message, with "..." when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}
