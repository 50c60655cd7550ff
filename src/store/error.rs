//! The store layer's error type.

/// Result alias for the store layer.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Client JSON refused by [`super::json::parse`]; `what` names the input
    /// ("request body", "filter", ...).
    #[error("{what}: {source}")]
    InvalidJson {
        /// Which input.
        what: &'static str,
        /// Why it was refused.
        #[source]
        source: super::json::JsonError,
    },
    /// A collection name is not valid; `reason` says why.
    #[error("invalid collection name {}: {reason}", preview(.name))]
    InvalidCollection {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An `_id` is not valid.
    #[error("invalid _id: {0}")]
    InvalidId(String),
    /// A document is not valid (not an object, too deep, bad `_id`, ...).
    #[error("invalid document: {0}")]
    InvalidDocument(String),
    /// A `_search` filter could not be compiled.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// An update could not be parsed or applied.
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// A pagination cursor is malformed.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A dump line could not be parsed (1-based line number).
    #[error("line {line}: {reason}")]
    InvalidDumpLine {
        /// 1-based line number in the dump.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A key read back from the engine is not a valid store key (corruption or a bug).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The document does not exist.
    #[error("document {} not found in collection {}", preview(.id), preview(.collection))]
    NotFound {
        /// The collection searched.
        collection: String,
        /// The missing `_id`.
        id: String,
    },
    /// The document already exists (insert of an existing `_id`).
    #[error("document {} already exists in collection {}", preview(.id), preview(.collection))]
    Conflict {
        /// The collection written to.
        collection: String,
        /// The conflicting `_id`.
        id: String,
    },
    /// A conditional write's precondition did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// Too many documents in one batch (`_insertMany`).
    #[error("too many documents: {got}, at most {max} per batch")]
    TooMany {
        /// Documents sent.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// One document of a batch is invalid; `index` is its 0-based position.
    #[error("document at index {index}: {source}")]
    AtIndex {
        /// 0-based position in the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<StoreError>,
    },
    /// A stored value could not be decoded (corruption or a bug); never returned as data.
    #[error("corrupt stored value: {0}")]
    CorruptValue(String),
    /// Reading or writing a dump file failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed or refused the operation.
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::Error),
}

/// Quotes `s` for an error message, cut to a readable length.
pub(crate) fn preview(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{:?}...", &s[..cut]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_context() {
        let e = StoreError::InvalidCollection {
            name: "_x".into(),
            reason: "must not start with '_' or '.'".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"invalid collection name "_x": must not start with '_' or '.'"#
        );
        let e = StoreError::InvalidDumpLine {
            line: 7,
            reason: "bad".into(),
        };
        assert_eq!(e.to_string(), "line 7: bad");
    }

    #[test]
    fn long_names_are_cut_in_messages() {
        let name = "é".repeat(1000);
        let e = StoreError::NotFound {
            collection: name.clone(),
            id: name,
        };
        assert!(e.to_string().len() < 400);
    }
}
