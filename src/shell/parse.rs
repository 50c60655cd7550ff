//! From an input line to a [`Command`], with MiniDBGo's syntax: the command name (any
//! case), then its arguments separated by blanks. Unlike MiniDBGo, a JSON argument ends
//! where its value ends, so filters and documents may contain spaces and newlines.
//!
//! The parser never panics (a proptest feeds it arbitrary text) and reports JSON errors
//! at their line and column in the whole input.

use std::path::PathBuf;

use serde_json::Value;

use super::command::{spec, Arg, Command, Lifetime, Query, Spec, UpdateArg};
use super::error::{cut, Result, ShellError};
use crate::store::document::prepare_insert;
use crate::store::name::validate_collection;
use crate::store::{Filter, Update, MAX_TTL_SECS};

/// Longest command accepted, in bytes (a document may be 10 MiB on the server).
pub(crate) const MAX_INPUT_BYTES: usize = 16 << 20;

/// Parses one command; `Ok(None)` for a blank line or a `#` comment.
pub(crate) fn parse(input: &str) -> Result<Option<Command>> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(ShellError::Usage(format!(
            "the command is {} bytes long, more than the limit of {MAX_INPUT_BYTES}",
            input.len()
        )));
    }
    let mut c = Cursor { input, pos: 0 };
    c.skip_blank();
    if c.at_end() || c.rest().starts_with('#') {
        return Ok(None);
    }
    let name = c.word();
    let Some(spec) = spec(name) else {
        return Err(ShellError::Usage(format!(
            "Unknown command: {} (type help for the list)",
            cut(name, 40)
        )));
    };
    let mut values = Vec::with_capacity(spec.args.len());
    for &arg in spec.args {
        c.skip_blank();
        values.push(c.arg(spec, arg)?);
    }
    c.skip_blank();
    if !c.at_end() {
        return Err(ShellError::Usage(format!(
            "unexpected text at {}: {:?}; {}",
            c.position(c.pos),
            cut(c.rest(), 30),
            spec.usage()
        )));
    }
    build(spec, values).map(Some)
}

/// Whether `input` stops inside a JSON value: an open `{` or `[`, or a string not closed.
/// The shell then reads another line and parses both together.
pub(crate) fn is_incomplete(input: &str) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in input.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => match depth.checked_sub(1) {
                Some(d) => depth = d,
                // More closing than opening: no further line can fix that.
                None => return false,
            },
            _ => {}
        }
    }
    (depth > 0 || in_string) && input.len() <= MAX_INPUT_BYTES
}

/// One parsed argument.
enum Given {
    Missing,
    Word(String),
    Json(Value),
    File(PathBuf),
    Lifetime(Lifetime),
    Since(u64),
}

struct Cursor<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.input[self.pos..]
    }

    fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn skip_blank(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Up to the next blank.
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    fn arg(&mut self, spec: &Spec, arg: Arg) -> Result<Given> {
        let missing = || ShellError::Usage(spec.usage());
        let optional = matches!(
            arg,
            Arg::OptCollection
                | Arg::OptJson(_)
                | Arg::OptFile
                | Arg::OptTopic
                | Arg::OptLifetime
                | Arg::OptSince
        );
        if self.at_end() {
            return if optional {
                Ok(Given::Missing)
            } else {
                Err(missing())
            };
        }
        match arg {
            Arg::Collection | Arg::OptCollection => {
                if self.rest().starts_with(['{', '[', '"']) {
                    return Err(ShellError::Usage(format!(
                        "expected a collection name at {}, found JSON; {}",
                        self.position(self.pos),
                        spec.usage()
                    )));
                }
                let name = self.word();
                validate_collection(name)?;
                Ok(Given::Word(name.to_owned()))
            }
            Arg::OptTopic => Ok(Given::Word(self.word().to_owned())),
            Arg::OptLifetime => {
                let w = self.word();
                if w.eq_ignore_ascii_case("off") {
                    return Ok(Given::Lifetime(Lifetime::Off));
                }
                match whole_number(w) {
                    Some(s @ 1..=MAX_TTL_SECS) => Ok(Given::Lifetime(Lifetime::Set(s))),
                    _ => Err(ShellError::Usage(format!(
                        "the lifetime must be a whole number of seconds from 1 to \
                         {MAX_TTL_SECS}, or off; got {:?}",
                        cut(w, 40)
                    ))),
                }
            }
            Arg::OptSince => {
                let w = self.word();
                whole_number(w).map(Given::Since).ok_or_else(|| {
                    ShellError::Usage(format!(
                        "since must be a sequence number (a whole number, as last_seq \
                         prints); got {:?}",
                        cut(w, 40)
                    ))
                })
            }
            Arg::Json(role) | Arg::OptJson(role) => self.json(role.name()).map(Given::Json),
            Arg::File | Arg::OptFile => {
                if self.rest().starts_with('"') {
                    match self.json("file name")? {
                        Value::String(s) if !s.is_empty() => Ok(Given::File(PathBuf::from(s))),
                        _ => Err(ShellError::Usage(format!(
                            "a quoted file name must be a non-empty JSON string; {}",
                            spec.usage()
                        ))),
                    }
                } else {
                    Ok(Given::File(PathBuf::from(self.word())))
                }
            }
        }
    }

    /// One JSON value starting here.
    fn json(&mut self, what: &'static str) -> Result<Value> {
        let start = self.pos;
        let mut values = serde_json::Deserializer::from_str(self.rest()).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                self.pos = start + values.byte_offset();
                Ok(v)
            }
            Some(Err(e)) => Err(self.json_error(what, start, &e)),
            None => Err(ShellError::Json {
                what,
                at: self.position(start),
                reason: "no value".into(),
            }),
        }
    }

    /// The error of parsing JSON from `start`, placed in the whole input.
    fn json_error(&self, what: &'static str, start: usize, e: &serde_json::Error) -> ShellError {
        let (base_line, base_col) = line_col(self.input, start);
        let (line, col) = if e.line() <= 1 {
            (base_line, base_col + e.column().saturating_sub(1))
        } else {
            (base_line + e.line() - 1, e.column())
        };
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        ShellError::Json {
            what,
            at: self.describe(line, col),
            reason,
        }
    }

    /// "column 12", or "line 2 column 3" when the input has several lines.
    fn position(&self, pos: usize) -> String {
        let (line, col) = line_col(self.input, pos);
        self.describe(line, col)
    }

    fn describe(&self, line: usize, col: usize) -> String {
        if self.input.trim_end().contains('\n') {
            format!("line {line} column {col}")
        } else {
            format!("column {col}")
        }
    }
}

/// 1-based line and column (in bytes) of byte offset `pos`.
fn line_col(input: &str, pos: usize) -> (usize, usize) {
    let before = &input.as_bytes()[..pos.min(input.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, pos - line_start + 1)
}

/// Digits only (no sign, no exponent), within `u64`.
fn whole_number(w: &str) -> Option<u64> {
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    w.parse().ok()
}

fn word(v: Given) -> Option<String> {
    match v {
        Given::Word(w) => Some(w),
        _ => None,
    }
}

fn file(v: Given) -> Option<PathBuf> {
    match v {
        Given::File(f) => Some(f),
        _ => None,
    }
}

fn query(v: Given) -> Result<Query> {
    match v {
        Given::Json(json) => {
            let filter = Filter::parse(&json)?;
            Ok(Query { json, filter })
        }
        _ => Ok(Query::all()),
    }
}

fn update(v: Given) -> Result<UpdateArg> {
    match v {
        Given::Json(json) => {
            let update = Update::parse(&json)?;
            Ok(UpdateArg { json, update })
        }
        _ => Err(ShellError::Usage("an update is needed".into())),
    }
}

/// The command from its parsed arguments (one per [`Spec::args`] entry, in order).
fn build(spec: &'static Spec, values: Vec<Given>) -> Result<Command> {
    let usage = || ShellError::Usage(spec.usage());
    let mut it = values.into_iter();
    let mut next = || it.next().unwrap_or(Given::Missing);
    let mut collection = || word(next()).ok_or_else(usage);
    Ok(match spec.name {
        "insertOne" => {
            let collection = collection()?;
            let Given::Json(doc) = next() else {
                return Err(usage());
            };
            prepare_insert(&doc)?;
            Command::InsertOne { collection, doc }
        }
        "insertMany" => {
            let collection = collection()?;
            let docs = match next() {
                Given::Json(Value::Array(docs)) => docs,
                Given::Json(other) => {
                    return Err(ShellError::Usage(format!(
                        "insertMany needs a JSON array of documents, got {}",
                        crate::store::document::type_name(&other)
                    )))
                }
                _ => return Err(usage()),
            };
            Command::InsertMany { collection, docs }
        }
        "findOne" => Command::FindOne {
            collection: collection()?,
            query: query(next())?,
        },
        "findMany" => Command::FindMany {
            collection: collection()?,
            query: query(next())?,
        },
        "updateOne" => Command::UpdateOne {
            collection: collection()?,
            query: query(next())?,
            update: update(next())?,
        },
        "deleteOne" => Command::DeleteOne {
            collection: collection()?,
            query: query(next())?,
        },
        "count" => Command::Count {
            collection: collection()?,
            query: query(next())?,
        },
        "dumpAll" => Command::DumpAll {
            collection: word(next()),
        },
        "dumpDB" => Command::DumpDb { file: file(next()) },
        "restoreDB" => Command::RestoreDb {
            file: file(next()).ok_or_else(usage)?,
        },
        "ttl" => Command::Ttl {
            collection: collection()?,
            change: match next() {
                Given::Lifetime(l) => l,
                _ => Lifetime::Show,
            },
        },
        "changes" => {
            let collection = word(next());
            match (collection, next()) {
                (c, Given::Since(since)) => Command::Changes {
                    collection: c,
                    since,
                },
                // One word of digits is the since: `changes 120` reads every collection.
                (Some(w), _) => match whole_number(&w) {
                    Some(since) => Command::Changes {
                        collection: None,
                        since,
                    },
                    None => Command::Changes {
                        collection: Some(w),
                        since: 0,
                    },
                },
                (None, _) => Command::Changes {
                    collection: None,
                    since: 0,
                },
            }
        }
        "collections" => Command::Collections,
        "stats" => Command::Stats,
        "compact" => Command::Compact,
        "help" => {
            let topic = word(next());
            if let Some(t) = &topic {
                if super::command::spec(t).is_none() {
                    return Err(ShellError::Usage(format!(
                        "no command named {} (type help for the list)",
                        cut(t, 40)
                    )));
                }
            }
            Command::Help { topic }
        }
        "exit" => Command::Exit,
        _ => return Err(ShellError::Usage(format!("{} is not built", spec.name))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ok(line: &str) -> Command {
        match parse(line) {
            Ok(Some(c)) => c,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    fn err(line: &str) -> String {
        match parse(line) {
            Err(e) => e.to_string(),
            other => panic!("{line:?} should fail: {other:?}"),
        }
    }

    #[test]
    fn minidbgo_lines_parse() {
        match ok(r#"insertOne products {"_id":"p1","name":"Laptop","price":1200}"#) {
            Command::InsertOne { collection, doc } => {
                assert_eq!(collection, "products");
                assert_eq!(doc, json!({"_id":"p1","name":"Laptop","price":1200}));
            }
            other => panic!("{other:?}"),
        }
        match ok(r#"INSERTMANY products [{"_id":"p1"},{"_id":"p2"}]"#) {
            Command::InsertMany { docs, .. } => assert_eq!(docs.len(), 2),
            other => panic!("{other:?}"),
        }
        match ok("  updateOne  products {\"_id\": \"p1\"}   {\"$set\": {\"name\": \"X Y\"}}  ") {
            Command::UpdateOne { query, update, .. } => {
                assert_eq!(query.only_id(), Some("p1"));
                assert_eq!(update.json, json!({"$set": {"name": "X Y"}}));
            }
            other => panic!("{other:?}"),
        }
        match ok(r#"findMany products {"price":{"$gt":1000}}"#) {
            Command::FindMany { query, .. } => {
                assert!(query.filter.matches(&json!({"price": 1001})));
                assert!(!query.filter.matches(&json!({"price": 1000})));
                assert_eq!(query.only_id(), None);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ok("findMany products"),
            Command::FindMany { query, .. } if query.filter.is_all()
        ));
        assert!(matches!(
            ok("dumpAll"),
            Command::DumpAll { collection: None }
        ));
        assert!(matches!(
            ok("dumpAll products"),
            Command::DumpAll { collection: Some(c) } if c == "products"
        ));
        assert!(matches!(ok("dumpDB"), Command::DumpDb { file: None }));
        assert!(matches!(
            ok(r#"restoreDB "my dump.json""#),
            Command::RestoreDb { file } if file == std::path::Path::new("my dump.json")
        ));
        assert!(matches!(ok("quit"), Command::Exit));
        assert!(matches!(ok("Exit"), Command::Exit));
        assert!(matches!(
            ok("help findmany"),
            Command::Help { topic: Some(_) }
        ));
        assert!(matches!(parse("   "), Ok(None)));
        assert!(matches!(parse("# a comment"), Ok(None)));
    }

    #[test]
    fn multi_line_json_parses_and_errors_name_line_and_column() {
        match ok("insertOne c {\n  \"_id\": \"a\",\n  \"n\": [1,\n 2]\n}") {
            Command::InsertOne { doc, .. } => assert_eq!(doc, json!({"_id":"a","n":[1,2]})),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err(r#"findMany products {"price" 5}"#),
            "invalid filter JSON at column 28: expected `:`"
        );
        assert_eq!(
            err("findMany products {\n\"a\": 1,\n\"b\" 2}"),
            "invalid filter JSON at line 3 column 5: expected `:`"
        );
        assert!(err(r#"insertOne c {"_id":"x""#).starts_with("invalid document JSON at column"));
    }

    #[test]
    fn bad_lines_get_one_clear_line() {
        assert_eq!(
            err("frobnicate x"),
            "Unknown command: frobnicate (type help for the list)"
        );
        assert_eq!(err("insertOne"), "Usage: insertOne <collection> <jsonDoc>");
        assert_eq!(
            err("insertOne c"),
            "Usage: insertOne <collection> <jsonDoc>"
        );
        assert_eq!(
            err("updateOne c {}"),
            "Usage: updateOne <collection> <jsonFilter> <jsonUpdate>"
        );
        assert!(err(r#"insertOne c {"name":"no id"}"#).contains("_id"));
        assert!(err(r#"insertOne _bad {"_id":"1"}"#).contains("invalid collection name"));
        assert!(err(r#"findMany {"a":1}"#).contains("expected a collection name"));
        assert!(err(r#"findMany c {"a":{"$regex":1}}"#).contains("$regex"));
        assert!(err(r#"updateOne c {} {"name":"x"}"#).starts_with("invalid update"));
        assert!(err(r#"findMany c {} extra"#).starts_with("unexpected text at column 15"));
        assert!(err(r#"insertMany c {"_id":"1"}"#).contains("JSON array"));
        assert!(err("help nothing").starts_with("no command named nothing"));
        for e in [err("insertOne"), err(r#"findMany c {"a" 1}"#)] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn ttl_and_changes_parse_their_words() {
        use super::super::command::Lifetime;
        assert!(matches!(
            ok("ttl s"),
            Command::Ttl { collection, change: Lifetime::Show } if collection == "s"
        ));
        assert!(matches!(
            ok("TTL s 315360000"),
            Command::Ttl {
                change: Lifetime::Set(315_360_000),
                ..
            }
        ));
        assert!(matches!(
            ok("ttl s off"),
            Command::Ttl {
                change: Lifetime::Off,
                ..
            }
        ));
        assert!(matches!(
            ok("changes"),
            Command::Changes {
                collection: None,
                since: 0
            }
        ));
        assert!(matches!(
            ok("changes c"),
            Command::Changes { collection: Some(c), since: 0 } if c == "c"
        ));
        assert!(matches!(
            ok("changes 42"),
            Command::Changes {
                collection: None,
                since: 42
            }
        ));
        assert!(matches!(
            ok("changes c 42"),
            Command::Changes {
                collection: Some(_),
                since: 42
            }
        ));
        assert_eq!(err("ttl"), "Usage: ttl <collection> [<seconds>|off]");
        assert_eq!(
            err("ttl c 0"),
            "the lifetime must be a whole number of seconds from 1 to 315360000, or off; \
             got \"0\""
        );
        assert!(err("ttl c +5").ends_with("got \"+5\""));
        assert!(err("ttl c 99999999999999999999999").contains("from 1 to 315360000"));
        assert_eq!(
            err("changes c x"),
            "since must be a sequence number (a whole number, as last_seq prints); got \"x\""
        );
        assert!(err("changes c -1").starts_with("since must be"));
        assert!(err("changes c 1 2").starts_with("unexpected text at column 13"));
        assert!(err("changes _bad").contains("invalid collection name"));
    }

    #[test]
    fn incomplete_input_is_recognised() {
        assert!(is_incomplete("insertOne c {"));
        assert!(is_incomplete(r#"insertOne c {"a": "}"#));
        assert!(is_incomplete("insertMany c [{\"_id\":\"1\"},"));
        assert!(!is_incomplete(r#"insertOne c {"a": "}{"}"#));
        assert!(!is_incomplete(r#"insertOne c {"a": "\"}"}"#));
        assert!(!is_incomplete("findMany c {}}"));
        assert!(!is_incomplete("findMany c"));
    }

    fn command_like() -> impl Strategy<Value = String> {
        let names = prop::sample::select(
            super::super::command::SPECS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>(),
        );
        (names, "[a-z_.]{0,6}", r#"[ \n{}\[\]":,a-z0-9$._\\-]{0,60}"#)
            .prop_map(|(n, c, rest)| format!("{n} {c} {rest}"))
    }

    proptest! {
        #[test]
        fn any_text_parses_or_fails_without_panicking(line in any::<String>()) {
            // Text with more closing than opening brackets is never taken as incomplete.
            if is_incomplete(&line) {
                prop_assert!(line.contains(['{', '[', '"']), "{:?}", line);
            }
            if let Err(e) = parse(&line) {
                prop_assert!(!e.to_string().is_empty());
            }
        }

        #[test]
        fn command_like_text_parses_or_fails_with_one_line(line in command_like()) {
            match parse(&line) {
                Ok(_) => {}
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(!msg.is_empty());
                    prop_assert!(!msg.contains('\n'), "{}", msg);
                }
            }
            let _ = is_incomplete(&line);
        }
    }
}
