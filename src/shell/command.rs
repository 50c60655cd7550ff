//! The shell's commands: what each takes, its help text, and the parsed form.
//!
//! [`SPECS`] is the one table of commands: the parser, `help` and tab completion all read
//! it. A new command (index commands will come) is one entry here, one
//! [`Command`] variant built in `parse::build`, one arm in `exec::run`, and, when it needs
//! the database, one [`Backend`](super::backend::Backend) method.

use std::path::PathBuf;

use serde_json::Value;

use crate::store::{Filter, Update};

/// What kind of argument a command takes at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// A collection name (one word).
    Collection,
    /// A collection name that may be left out.
    OptCollection,
    /// A JSON value in the given role.
    Json(Role),
    /// A JSON value that may be left out.
    OptJson(Role),
    /// A file name: one word, or a JSON string for a name with spaces.
    File,
    /// A file name that may be left out.
    OptFile,
    /// A command name (for `help`) that may be left out.
    OptTopic,
    /// A lifetime in seconds, or `off`, that may be left out (`ttl`).
    OptLifetime,
    /// A feed sequence number that may be left out (`changes`).
    OptSince,
}

/// What a JSON argument is for: names it in usage and error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Document,
    Documents,
    Filter,
    Update,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Document => "document",
            Role::Documents => "documents",
            Role::Filter => "filter",
            Role::Update => "update",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Role::Document => "jsonDoc",
            Role::Documents => "jsonArrayOfDocs",
            Role::Filter => "jsonFilter",
            Role::Update => "jsonUpdate",
        }
    }
}

/// One command of the shell.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The name as shown (matched without regard to case, as MiniDBGo did).
    pub name: &'static str,
    /// Other names.
    pub aliases: &'static [&'static str],
    pub args: &'static [Arg],
    /// One line for `help`.
    pub summary: &'static str,
    /// A complete example line.
    pub example: &'static str,
}

impl Spec {
    /// `Usage: findMany <collection> [<jsonFilter>]`.
    pub(crate) fn usage(&self) -> String {
        let mut s = format!("Usage: {}", self.name);
        for a in self.args {
            s.push(' ');
            s.push_str(&match a {
                Arg::Collection => "<collection>".to_owned(),
                Arg::OptCollection => "[<collection>]".to_owned(),
                Arg::Json(r) => format!("<{}>", r.usage()),
                Arg::OptJson(r) => format!("[<{}>]", r.usage()),
                Arg::File => "<file.json>".to_owned(),
                Arg::OptFile => "[<file.json>]".to_owned(),
                Arg::OptTopic => "[<command>]".to_owned(),
                Arg::OptLifetime => "[<seconds>|off]".to_owned(),
                Arg::OptSince => "[<since>]".to_owned(),
            });
        }
        s
    }

    /// Whether the word after the command name is a collection (for completion).
    pub(crate) fn takes_collection(&self) -> bool {
        matches!(
            self.args.first(),
            Some(Arg::Collection | Arg::OptCollection)
        )
    }

    /// Whether the word after the command name is a file (for completion).
    pub(crate) fn takes_file(&self) -> bool {
        matches!(self.args.first(), Some(Arg::File | Arg::OptFile))
    }
}

use Arg::*;
use Role::*;

/// Every command, in the order `help` lists them.
pub(crate) const SPECS: &[Spec] = &[
    Spec {
        name: "insertOne",
        aliases: &[],
        args: &[Collection, Json(Document)],
        summary: "insert a document (it needs a string _id; an existing _id is refused)",
        example: r#"insertOne products {"_id":"p1","name":"Laptop","price":1200}"#,
    },
    Spec {
        name: "insertMany",
        aliases: &[],
        args: &[Collection, Json(Documents)],
        summary: "insert an array of up to 1000 documents, all or none",
        example: r#"insertMany products [{"_id":"p2","name":"Mouse"},{"_id":"p3","name":"Pad"}]"#,
    },
    Spec {
        name: "findOne",
        aliases: &[],
        args: &[Collection, OptJson(Filter)],
        summary: "print the first document (in _id order) that matches the filter",
        example: r#"findOne products {"_id":"p1"}"#,
    },
    Spec {
        name: "findMany",
        aliases: &[],
        args: &[Collection, OptJson(Filter)],
        summary: "print every matching document (on a terminal, the first --max-results)",
        example: r#"findMany products {"price":{"$gt":1000}}"#,
    },
    Spec {
        name: "updateOne",
        aliases: &[],
        args: &[Collection, Json(Filter), Json(Update)],
        summary: "apply $set / $unset / $inc to the first matching document",
        example: r#"updateOne products {"_id":"p1"} {"$set":{"name":"Laptop Pro"}}"#,
    },
    Spec {
        name: "deleteOne",
        aliases: &[],
        args: &[Collection, Json(Filter)],
        summary: "delete the first matching document",
        example: r#"deleteOne products {"_id":"p1"}"#,
    },
    Spec {
        name: "count",
        aliases: &[],
        args: &[Collection, OptJson(Filter)],
        summary: "count the documents of a collection (exact), or those matching a filter",
        example: r#"count products {"category":"electronics"}"#,
    },
    Spec {
        name: "dumpAll",
        aliases: &[],
        args: &[OptCollection],
        summary: "print every document of a collection; without one, of every collection \
                  as {\"collection\":...,\"doc\":...} lines (minidb restore reads them)",
        example: "dumpAll products",
    },
    Spec {
        name: "dumpDB",
        aliases: &[],
        args: &[OptFile],
        summary: "write every collection to a file in MiniDBGo's dump format (default name \
                  dump_<HHMMSS>_<DDMMYYYY>.json)",
        example: "dumpDB backup.json",
    },
    Spec {
        name: "restoreDB",
        aliases: &[],
        args: &[File],
        summary: "upsert every document of a MiniDBGo dump file (checked whole first)",
        example: "restoreDB backup.json",
    },
    Spec {
        name: "ttl",
        aliases: &[],
        args: &[Collection, OptLifetime],
        summary: "show a collection's default lifetime, set it (1 to 315360000 seconds: \
                  later writes expire that long after), or remove it with off",
        example: "ttl sessions 3600",
    },
    Spec {
        name: "changes",
        aliases: &[],
        args: &[OptCollection, OptSince],
        summary: "print the change feed after a sequence number (default 0) of a collection \
                  or of all, then last_seq to resume from",
        example: "changes products 120",
    },
    Spec {
        name: "collections",
        aliases: &[],
        args: &[],
        summary: "list the collections with their document counts and sizes",
        example: "collections",
    },
    Spec {
        name: "stats",
        aliases: &[],
        args: &[],
        summary: "print the engine's counters",
        example: "stats",
    },
    Spec {
        name: "compact",
        aliases: &[],
        args: &[],
        summary: "run a full compaction (over a server: start one)",
        example: "compact",
    },
    Spec {
        name: "help",
        aliases: &[],
        args: &[OptTopic],
        summary: "list the commands, or explain one",
        example: "help findMany",
    },
    Spec {
        name: "exit",
        aliases: &["quit"],
        args: &[],
        summary: "leave the shell (so does Ctrl-D)",
        example: "exit",
    },
];

/// The command named `name` (any case), if there is one.
pub(crate) fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| {
        s.name.eq_ignore_ascii_case(name) || s.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// A filter argument: as given (sent to a server) and compiled (used locally).
#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub json: Value,
    pub filter: Filter,
}

impl Query {
    /// The filter that matches everything (`{}`).
    pub(crate) fn all() -> Self {
        Query {
            json: Value::Object(Default::default()),
            filter: Filter::all(),
        }
    }

    /// The `_id` when the filter is exactly `{"_id": "<string>"}` (a point lookup).
    pub(crate) fn only_id(&self) -> Option<&str> {
        match &self.json {
            Value::Object(m) if m.len() == 1 => m.get("_id").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// An update argument: as given and compiled.
#[derive(Debug, Clone)]
pub(crate) struct UpdateArg {
    pub json: Value,
    pub update: Update,
}

/// What `ttl` does to a collection's default lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// Prints it.
    Show,
    /// Sets it to this many seconds (1 to [`MAX_TTL_SECS`](crate::store::MAX_TTL_SECS)).
    Set(u64),
    /// Removes it.
    Off,
}

/// A parsed command line.
#[derive(Debug)]
pub(crate) enum Command {
    InsertOne {
        collection: String,
        doc: Value,
    },
    InsertMany {
        collection: String,
        docs: Vec<Value>,
    },
    FindOne {
        collection: String,
        query: Query,
    },
    FindMany {
        collection: String,
        query: Query,
    },
    UpdateOne {
        collection: String,
        query: Query,
        update: UpdateArg,
    },
    DeleteOne {
        collection: String,
        query: Query,
    },
    Count {
        collection: String,
        query: Query,
    },
    DumpAll {
        collection: Option<String>,
    },
    DumpDb {
        file: Option<PathBuf>,
    },
    RestoreDb {
        file: PathBuf,
    },
    Ttl {
        collection: String,
        change: Lifetime,
    },
    Changes {
        collection: Option<String>,
        since: u64,
    },
    Collections,
    Stats,
    Compact,
    Help {
        topic: Option<String>,
    },
    Exit,
}
