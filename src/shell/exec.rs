//! Runs a parsed [`Command`] against a [`Backend`], printing MiniDBGo's messages
//! ("Inserted p1 into products") and the documents.
//!
//! Everything both backends share lives here: paging through matches (at most a page in
//! memory), the first match of a filter, the cap of `findMany` on a terminal.

use bytes::Bytes;
use serde_json::{json, Value};

use super::backend::{Backend, Compaction};
use super::cancel::Cancel;
use super::command::{spec, Command, Lifetime, Query, SPECS};
use super::dumpfile;
use super::error::{cut, Result, ShellError};
use super::output::Out;

/// Documents fetched per page by `findMany` and `dumpAll`.
const PAGE: usize = 100;
/// Feed entries fetched per page by `changes` (the server's most).
const CHANGES_PAGE: usize = 1000;
/// `updateOne`/`deleteOne` look for the first match again when it changed between the
/// search and the write (another client); this many times at most.
const WRITE_ATTEMPTS: usize = 5;
/// `findMany`/`dumpAll` on a terminal stop here without `--max-results` (MiniDBGo's cap).
pub(crate) const TERMINAL_CAP: u64 = 1000;

/// What the session does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Exit,
}

/// Session settings that commands read.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Most documents `findMany`/`dumpAll` print; `None` for all.
    pub max_results: Option<u64>,
}

/// The printing budget of one `findMany`/`dumpAll`.
struct Cap {
    max: Option<u64>,
    printed: u64,
    truncated: bool,
}

impl Cap {
    fn full(&self) -> bool {
        self.max.is_some_and(|m| self.printed >= m)
    }
}

/// Runs `cmd`.
pub(crate) fn run(
    cmd: Command,
    backend: &mut dyn Backend,
    out: &mut Out,
    cancel: &Cancel,
    settings: &Settings,
) -> Result<Flow> {
    match cmd {
        Command::InsertOne { collection, doc } => {
            backend.insert_one(&collection, &doc)?;
            let id = doc.get("_id").and_then(Value::as_str).unwrap_or_default();
            out.line(&format!("Inserted {id} into {collection}"))?;
        }
        Command::InsertMany { collection, docs } => {
            if docs.is_empty() {
                out.line("No documents to insert.")?;
            } else {
                let n = backend.insert_many(&collection, &docs)?;
                out.line(&format!(
                    "Inserted {n} of {} documents into {collection}",
                    docs.len()
                ))?;
            }
        }
        Command::FindOne { collection, query } => {
            let doc = match query.only_id() {
                Some(id) => backend.get(&collection, id)?,
                None => first_match(backend, &collection, &query, cancel)?,
            };
            match doc {
                Some(doc) => out.doc(&doc)?,
                None => return Err(no_match(&collection, &query)),
            }
        }
        Command::FindMany { collection, query } => {
            let mut cap = cap(settings);
            stream(backend, &collection, &query, out, cancel, &mut cap, None)?;
            truncated_note(out, &cap);
        }
        Command::DumpAll { collection } => {
            let mut cap = cap(settings);
            let all = Query::all();
            match collection {
                Some(c) => stream(backend, &c, &all, out, cancel, &mut cap, None)?,
                None => {
                    for c in backend.collections()? {
                        if cap.truncated {
                            break;
                        }
                        stream(backend, &c.name, &all, out, cancel, &mut cap, Some(&c.name))?;
                    }
                }
            }
            truncated_note(out, &cap);
        }
        Command::UpdateOne {
            collection,
            query,
            update,
        } => {
            let id = write_first(backend, &collection, &query, cancel, |b, id| {
                Ok(b.update_if_matches(&collection, id, &query, &update)?
                    .is_some())
            })?;
            out.line(&format!("Updated {id} in {collection}"))?;
        }
        Command::DeleteOne { collection, query } => {
            let id = write_first(backend, &collection, &query, cancel, |b, id| {
                b.delete_if_matches(&collection, id, &query)
            })?;
            out.line(&format!("Deleted {id} from {collection}"))?;
        }
        Command::Count { collection, query } => {
            let n = backend.count(&collection, &query)?;
            out.line(&n.to_string())?;
        }
        Command::Ttl { collection, change } => {
            let secs = match change {
                Lifetime::Show => backend.collection_ttl(&collection)?,
                Lifetime::Set(s) => backend.set_collection_ttl(&collection, Some(s))?,
                Lifetime::Off => backend.set_collection_ttl(&collection, None)?,
            };
            out.line(&match secs {
                Some(s) => format!("ttl {collection}: {s} s"),
                None => format!("ttl {collection}: none"),
            })?;
        }
        Command::Changes { collection, since } => {
            let mut cap = cap(settings);
            let last = feed(backend, collection.as_deref(), since, out, cancel, &mut cap)?;
            truncated_note(out, &cap);
            out.line(&format!("last_seq {last}"))?;
        }
        Command::Collections => {
            let list = backend.collections()?;
            out.value(&json!(list))?;
        }
        Command::Stats => {
            let stats = backend.stats()?;
            out.value(&stats)?;
        }
        Command::Compact => match backend.compact()? {
            Compaction::Done => out.line("Compaction complete")?,
            Compaction::Started(status) => {
                out.line(&format!("Server: {status} (it runs in the background)"))?
            }
        },
        Command::DumpDb { file } => {
            let file = file.unwrap_or_else(dumpfile::default_name);
            let d = dumpfile::write(backend, &file, cancel)?;
            out.line(&format!(
                "Dumped DB to {} ({} documents in {} collections)",
                file.display(),
                d.documents,
                d.collections
            ))?;
        }
        Command::RestoreDb { file } => {
            let summary = backend.restore(&file, cancel)?;
            out.line(&format!("Restored DB from {}", file.display()))?;
            for line in summary.to_string().lines() {
                out.line(line)?;
            }
        }
        Command::Help { topic } => help(out, topic.as_deref())?,
        Command::Exit => {
            out.line("Bye!")?;
            out.flush()?;
            return Ok(Flow::Exit);
        }
    }
    out.flush()?;
    Ok(Flow::Continue)
}

fn cap(settings: &Settings) -> Cap {
    Cap {
        max: settings.max_results,
        printed: 0,
        truncated: false,
    }
}

fn truncated_note(out: &mut Out, cap: &Cap) {
    if cap.truncated {
        out.note(&format!(
            "... (results truncated at {}; --max-results N or 0 for all, or narrow the filter)",
            cap.printed
        ));
    }
}

fn no_match(collection: &str, query: &Query) -> ShellError {
    ShellError::NoMatch {
        collection: collection.to_owned(),
        filter: cut(&query.json.to_string(), 200),
    }
}

/// Prints every match of `query` in `col`, page by page, within `cap`. With `wrap`, each
/// document is printed as `{"collection": wrap, "doc": ...}` (MiniDB's dump lines).
fn stream(
    backend: &mut dyn Backend,
    col: &str,
    query: &Query,
    out: &mut Out,
    cancel: &Cancel,
    cap: &mut Cap,
    wrap: Option<&str>,
) -> Result<()> {
    let mut after: Option<String> = None;
    loop {
        cancel.check()?;
        let page = backend.search(col, query, after.as_deref(), PAGE)?;
        for doc in &page.docs {
            if cap.full() {
                cap.truncated = true;
                return Ok(());
            }
            match wrap {
                None => out.doc(doc)?,
                Some(name) => {
                    let doc: Value = serde_json::from_slice(doc).map_err(|e| {
                        ShellError::BadResponse(format!("a document is not JSON: {e}"))
                    })?;
                    out.value(&json!({"collection": name, "doc": doc}))?;
                }
            }
            cap.printed += 1;
        }
        out.flush()?;
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Prints the feed after `since` page by page, within `cap`; returns the `since` to
/// resume from. When the cap cuts the feed, that is just below the first entry left out,
/// so resuming never skips the rest of a batch sharing its sequence number (it may print
/// some of the batch again).
fn feed(
    backend: &mut dyn Backend,
    col: Option<&str>,
    mut since: u64,
    out: &mut Out,
    cancel: &Cancel,
    cap: &mut Cap,
) -> Result<u64> {
    loop {
        cancel.check()?;
        let page = backend.changes(col, since, CHANGES_PAGE)?;
        for row in &page.rows {
            if cap.full() {
                cap.truncated = true;
                out.flush()?;
                return Ok(row.seq.saturating_sub(1).max(since));
            }
            out.change(row.seq, &row.collection, &row.id, row.deleted)?;
            cap.printed += 1;
        }
        out.flush()?;
        // A server that says "more" without moving on would loop for ever.
        if !page.more || page.last_seq <= since {
            return Ok(page.last_seq.max(since));
        }
        since = page.last_seq;
    }
}

/// The first document (in `_id` order) matching `query`.
fn first_match(
    backend: &mut dyn Backend,
    col: &str,
    query: &Query,
    cancel: &Cancel,
) -> Result<Option<Bytes>> {
    let mut after: Option<String> = None;
    loop {
        cancel.check()?;
        let page = backend.search(col, query, after.as_deref(), 1)?;
        if let Some(doc) = page.docs.into_iter().next() {
            return Ok(Some(doc));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(None),
        }
    }
}

/// Finds the first match and applies `write` to it, looking again when the document
/// changed in between; returns its `_id`.
fn write_first(
    backend: &mut dyn Backend,
    col: &str,
    query: &Query,
    cancel: &Cancel,
    mut write: impl FnMut(&mut dyn Backend, &str) -> Result<bool>,
) -> Result<String> {
    for _ in 0..WRITE_ATTEMPTS {
        let id = match query.only_id() {
            Some(id) => id.to_owned(),
            None => match first_match(backend, col, query, cancel)? {
                Some(doc) => id_of(&doc)?,
                None => return Err(no_match(col, query)),
            },
        };
        if write(backend, &id)? {
            return Ok(id);
        }
        if query.only_id().is_some() {
            return Err(no_match(col, query));
        }
    }
    Err(ShellError::Usage(format!(
        "the first document matching {} kept changing under other writers; try again",
        cut(&query.json.to_string(), 200)
    )))
}

fn id_of(doc: &[u8]) -> Result<String> {
    let v: Value = serde_json::from_slice(doc)
        .map_err(|e| ShellError::BadResponse(format!("a document is not JSON: {e}")))?;
    v.get("_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| ShellError::BadResponse("a document without a string _id".into()))
}

/// `help` and `help <command>`.
fn help(out: &mut Out, topic: Option<&str>) -> Result<()> {
    if let Some(s) = topic.and_then(spec) {
        out.line(&s.usage())?;
        out.line(&format!("  {}", s.summary))?;
        out.line(&format!("  example: {}", s.example))?;
        if !s.aliases.is_empty() {
            out.line(&format!("  also: {}", s.aliases.join(", ")))?;
        }
        return Ok(());
    }
    out.line("Commands (names in any case; JSON may span lines):")?;
    for s in SPECS {
        out.line(&format!(
            "  {:<58} {}",
            s.usage().trim_start_matches("Usage: "),
            s.summary
        ))?;
    }
    out.line("Tab completes commands and collection names; Ctrl-C cancels, Ctrl-D exits.")?;
    out.line("help <command> shows an example.")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::shell::backend::{Change, Changes, Page};
    use crate::shell::command::UpdateArg;
    use crate::shell::output::testing::memory;
    use crate::shell::output::Style;
    use crate::shell::parse::parse;
    use crate::store::import::Summary;
    use crate::store::CollectionInfo;

    /// Documents in memory, in `_id` order, served a page of at most `page_cap` at a time.
    #[derive(Default)]
    struct Fake {
        cols: BTreeMap<String, BTreeMap<String, Value>>,
        searches: usize,
        /// Ctrl-C "arrives" during this search call (1-based).
        cancel_at: Option<(usize, Cancel)>,
        ttls: BTreeMap<String, u64>,
        /// The change feed, in sequence order, served `feed_page` entries at a time.
        feed: Vec<Change>,
        feed_page: usize,
        /// `since` below this (and above 0) is gone.
        floor: u64,
        feed_reads: usize,
    }

    impl Fake {
        fn with(col: &str, n: usize) -> Fake {
            let mut f = Fake::default();
            let docs = (0..n)
                .map(|i| {
                    (
                        format!("d{i:04}"),
                        json!({"_id": format!("d{i:04}"), "i": i}),
                    )
                })
                .collect();
            f.cols.insert(col.into(), docs);
            f
        }
    }

    impl Backend for Fake {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn insert_one(&mut self, col: &str, doc: &Value) -> Result<()> {
            let id = doc["_id"].as_str().unwrap_or_default().to_owned();
            self.cols
                .entry(col.into())
                .or_default()
                .insert(id, doc.clone());
            Ok(())
        }
        fn insert_many(&mut self, col: &str, docs: &[Value]) -> Result<usize> {
            for d in docs {
                self.insert_one(col, d)?;
            }
            Ok(docs.len())
        }
        fn get(&mut self, col: &str, id: &str) -> Result<Option<Bytes>> {
            Ok(self
                .cols
                .get(col)
                .and_then(|c| c.get(id))
                .map(|d| Bytes::from(d.to_string())))
        }
        fn search(
            &mut self,
            col: &str,
            query: &Query,
            after: Option<&str>,
            limit: usize,
        ) -> Result<Page> {
            self.searches += 1;
            if let Some((n, c)) = &self.cancel_at {
                if *n == self.searches {
                    c.set();
                }
            }
            let Some(docs) = self.cols.get(col) else {
                return Ok(Page::default());
            };
            let mut page = Page::default();
            for (id, d) in docs
                .iter()
                .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
            {
                if page.docs.len() == limit {
                    page.next = page.docs.last().map(|_| id.clone());
                    page.next = Some(
                        docs.range(..id.clone())
                            .next_back()
                            .map(|(k, _)| k.clone())
                            .unwrap_or_default(),
                    );
                    break;
                }
                if query.filter.matches(d) {
                    page.docs.push(Bytes::from(d.to_string()));
                }
            }
            Ok(page)
        }
        fn update_if_matches(
            &mut self,
            col: &str,
            id: &str,
            query: &Query,
            update: &UpdateArg,
        ) -> Result<Option<Bytes>> {
            let Some(d) = self.cols.get_mut(col).and_then(|c| c.get_mut(id)) else {
                return Ok(None);
            };
            if !query.filter.matches(d) {
                return Ok(None);
            }
            update.update.apply(d)?;
            Ok(Some(Bytes::from(d.to_string())))
        }
        fn delete_if_matches(&mut self, col: &str, id: &str, _: &Query) -> Result<bool> {
            Ok(self.cols.get_mut(col).and_then(|c| c.remove(id)).is_some())
        }
        fn count(&mut self, col: &str, query: &Query) -> Result<u64> {
            Ok(self.cols.get(col).map_or(0, |c| {
                c.values().filter(|d| query.filter.matches(d)).count()
            }) as u64)
        }
        fn collections(&mut self) -> Result<Vec<CollectionInfo>> {
            Ok(self
                .cols
                .iter()
                .filter(|(_, d)| !d.is_empty())
                .map(|(name, d)| CollectionInfo {
                    name: name.clone(),
                    doc_count: d.len() as u64,
                    byte_size: 0,
                })
                .collect())
        }
        fn collection_ttl(&mut self, col: &str) -> Result<Option<u64>> {
            Ok(self.ttls.get(col).copied())
        }
        fn set_collection_ttl(&mut self, col: &str, secs: Option<u64>) -> Result<Option<u64>> {
            match secs {
                Some(s) => self.ttls.insert(col.into(), s),
                None => self.ttls.remove(col),
            };
            Ok(secs)
        }
        fn changes(&mut self, col: Option<&str>, since: u64, limit: usize) -> Result<Changes> {
            self.feed_reads += 1;
            if let Some((n, c)) = &self.cancel_at {
                if *n == self.feed_reads {
                    c.set();
                }
            }
            if since > 0 && since < self.floor {
                return Err(ShellError::ChangesGone {
                    since,
                    oldest: self.floor,
                });
            }
            let rows: Vec<Change> = self
                .feed
                .iter()
                .filter(|c| c.seq > since && col.is_none_or(|n| c.collection == n))
                .take(limit.min(self.feed_page.max(1)) + 1)
                .cloned()
                .collect();
            let more = rows.len() > limit.min(self.feed_page.max(1));
            let rows: Vec<Change> = rows
                .into_iter()
                .take(limit.min(self.feed_page.max(1)))
                .collect();
            let last_seq = match (more, rows.last()) {
                (true, Some(r)) => r.seq,
                _ => self.feed.last().map_or(since, |r| r.seq.max(since)),
            };
            Ok(Changes {
                rows,
                last_seq,
                more,
            })
        }
        fn compact(&mut self) -> Result<Compaction> {
            Ok(Compaction::Done)
        }
        fn stats(&mut self) -> Result<Value> {
            Ok(json!({}))
        }
        fn restore(&mut self, _: &Path, _: &Cancel) -> Result<Summary> {
            Ok(Summary::default())
        }
        fn close(&mut self) -> Result<()> {
            Ok(())
        }
    }

    fn exec(
        fake: &mut Fake,
        line: &str,
        max: Option<u64>,
        cancel: &Cancel,
    ) -> (Result<Flow>, String, String) {
        let (mut out, o, e) = memory(Style::default());
        let settings = Settings { max_results: max };
        let r = match parse(line) {
            Ok(Some(cmd)) => run(cmd, fake, &mut out, cancel, &settings),
            Ok(None) => Ok(Flow::Continue),
            Err(e) => Err(e),
        };
        (r, o.text(), e.text())
    }

    #[test]
    fn find_many_streams_every_match_across_pages_and_caps_with_a_note() {
        let mut fake = Fake::with("c", 250);
        let (r, out, err) = exec(&mut fake, "findMany c", None, &Cancel::new());
        assert!(r.is_ok());
        assert_eq!(out.lines().count(), 250);
        assert!(out.ends_with("{\"_id\":\"d0249\",\"i\":249}\n"));
        assert_eq!(err, "");
        assert_eq!(fake.searches, 3);

        let (r, out, err) = exec(
            &mut fake,
            r#"findMany c {"i":{"$gte":10}}"#,
            Some(20),
            &Cancel::new(),
        );
        assert!(r.is_ok());
        assert_eq!(out.lines().count(), 20);
        assert!(out.starts_with("{\"_id\":\"d0010\""));
        assert!(err.contains("results truncated at 20"), "{err}");

        // Exactly at the cap: nothing was left out, so no note.
        let (_, out, err) = exec(
            &mut fake,
            r#"findMany c {"i":{"$lt":20}}"#,
            Some(20),
            &Cancel::new(),
        );
        assert_eq!(out.lines().count(), 20);
        assert_eq!(err, "");
    }

    #[test]
    fn ctrl_c_stops_find_many_between_pages() {
        let mut fake = Fake::with("c", 1000);
        let cancel = Cancel::new();
        fake.cancel_at = Some((2, cancel.clone()));
        let (r, out, _) = exec(&mut fake, "findMany c", None, &cancel);
        assert!(matches!(r, Err(ShellError::Cancelled)), "{r:?}");
        // The second page was fetched while Ctrl-C came; nothing after it.
        assert!(out.lines().count() <= 200, "{}", out.lines().count());
        assert_eq!(fake.searches, 2);
    }

    #[test]
    fn update_and_delete_take_the_first_match() {
        let mut fake = Fake::with("c", 5);
        let (r, out, _) = exec(
            &mut fake,
            r#"updateOne c {"i":{"$gte":2}} {"$set":{"hit":true}}"#,
            None,
            &Cancel::new(),
        );
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(out, "Updated d0002 in c\n");
        assert_eq!(fake.cols["c"]["d0002"]["hit"], true);
        assert!(fake.cols["c"]["d0003"].get("hit").is_none());

        let (r, out, _) = exec(
            &mut fake,
            r#"deleteOne c {"i":{"$gt":0}}"#,
            None,
            &Cancel::new(),
        );
        assert!(r.is_ok());
        assert_eq!(out, "Deleted d0001 from c\n");
        assert!(!fake.cols["c"].contains_key("d0001"));

        let (r, _, _) = exec(&mut fake, r#"deleteOne c {"i":99}"#, None, &Cancel::new());
        assert_eq!(
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            r#"no document in collection "c" matches {"i":99}"#
        );
        let (r, _, _) = exec(
            &mut fake,
            r#"findOne c {"_id":"d0001"}"#,
            None,
            &Cancel::new(),
        );
        assert!(matches!(r, Err(ShellError::NoMatch { .. })));
    }

    #[test]
    fn dump_all_without_a_collection_prints_dump_lines() {
        let mut fake = Fake::with("a", 2);
        fake.insert_one("b", &json!({"_id": "x"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let (r, out, _) = exec(&mut fake, "dumpAll", None, &Cancel::new());
        assert!(r.is_ok());
        assert_eq!(
            out,
            "{\"collection\":\"a\",\"doc\":{\"_id\":\"d0000\",\"i\":0}}\n\
             {\"collection\":\"a\",\"doc\":{\"_id\":\"d0001\",\"i\":1}}\n\
             {\"collection\":\"b\",\"doc\":{\"_id\":\"x\"}}\n"
        );
        let (_, out, err) = exec(&mut fake, "dumpAll", Some(2), &Cancel::new());
        assert_eq!(out.lines().count(), 2);
        assert!(err.contains("truncated at 2"));
    }

    #[test]
    fn dump_db_writes_minidbgo_format_and_cleans_up_when_cancelled() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut fake = Fake::with("a", 450);
        fake.insert_one("b", &json!({"_id": "x", "s": "é"}))
            .unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("d.json");
        let line = format!("dumpDB {}", file.display());
        let (r, out, _) = exec(&mut fake, &line, None, &Cancel::new());
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(
            out,
            format!(
                "Dumped DB to {} (451 documents in 2 collections)\n",
                file.display()
            )
        );
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(text.ends_with("]}\n") && text.lines().count() == 1);
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(v["a"].as_array().map(Vec::len), Some(450));
        assert_eq!(v["a"][449], json!({"_id": "d0449", "i": 449}));
        assert_eq!(v["b"], json!([{"_id": "x", "s": "é"}]));

        let cancel = Cancel::new();
        fake.searches = 0;
        fake.cancel_at = Some((2, cancel.clone()));
        let other = dir.path().join("e.json");
        let (r, _, _) = exec(
            &mut fake,
            &format!("dumpDB {}", other.display()),
            None,
            &cancel,
        );
        assert!(matches!(r, Err(ShellError::Cancelled)));
        assert!(!other.exists());
        assert!(!dir.path().join("e.json.part").exists());
    }

    /// A feed of `n` entries of collection `a` (every third deleted) and one of `b`.
    fn with_feed(n: u64, page: usize) -> Fake {
        let mut f = Fake {
            feed_page: page,
            ..Fake::default()
        };
        for seq in 1..=n {
            f.feed.push(Change {
                seq,
                collection: "a".into(),
                id: format!("d{seq}"),
                deleted: seq % 3 == 0,
            });
        }
        f.feed.push(Change {
            seq: n + 1,
            collection: "b".into(),
            id: "x y".into(),
            deleted: false,
        });
        f
    }

    #[test]
    fn changes_pages_through_the_whole_feed_and_prints_where_to_resume() {
        let mut fake = with_feed(25, 10);
        let (r, out, err) = exec(&mut fake, "changes", None, &Cancel::new());
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(err, "");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 27, "{out}");
        assert_eq!(lines[0], "1  a/d1");
        assert_eq!(lines[2], "3  a/d3  deleted");
        assert_eq!(lines[25], "26  b/\"x y\"");
        assert_eq!(lines[26], "last_seq 26");
        assert_eq!(fake.feed_reads, 3);

        fake.feed_reads = 0;
        let (_, out, _) = exec(&mut fake, "changes a 20", None, &Cancel::new());
        assert_eq!(
            out,
            "21  a/d21  deleted\n22  a/d22\n23  a/d23\n24  a/d24  deleted\n25  a/d25\n\
             last_seq 26\n"
        );
        // One word of digits is the since, of every collection.
        let (_, out, _) = exec(&mut fake, "changes 25", None, &Cancel::new());
        assert_eq!(out, "26  b/\"x y\"\nlast_seq 26\n");
    }

    #[test]
    fn changes_stops_at_the_cap_and_resumes_without_a_gap() {
        let mut fake = with_feed(25, 10);
        // d12, d13 and d14 were written in one batch: they share sequence number 12.
        for row in &mut fake.feed[11..14] {
            row.seq = 12;
        }
        let (r, out, err) = exec(&mut fake, "changes a", Some(12), &Cancel::new());
        assert!(r.is_ok());
        assert_eq!(out.lines().count(), 13);
        // The cap cut the batch after d12: resuming from 11 gets the whole batch.
        assert!(
            out.ends_with("11  a/d11\n12  a/d12  deleted\nlast_seq 11\n"),
            "{out}"
        );
        assert!(err.contains("results truncated at 12"), "{err}");
        let (_, out, _) = exec(&mut fake, "changes a 11", Some(3), &Cancel::new());
        assert_eq!(
            out,
            "12  a/d12  deleted\n12  a/d13\n12  a/d14\nlast_seq 14\n"
        );
        // Exactly at the cap, nothing was left out: no note.
        let (_, _, err) = exec(&mut fake, "changes a 20", Some(5), &Cancel::new());
        assert_eq!(err, "");
    }

    #[test]
    fn changes_below_the_floor_names_the_oldest_usable_since_and_ctrl_c_stops_it() {
        let mut fake = with_feed(25, 10);
        fake.floor = 7;
        let (r, out, _) = exec(&mut fake, "changes a 3", None, &Cancel::new());
        assert_eq!(out, "");
        assert_eq!(
            r.err().map(|e| e.to_string()).unwrap_or_default(),
            "the change feed no longer holds every change after 3 (deletions past their \
             retention were pruned); the oldest usable since is 7, or 0 to read it all again"
        );

        let cancel = Cancel::new();
        fake.cancel_at = Some((2, cancel.clone()));
        fake.feed_reads = 0;
        let (r, out, _) = exec(&mut fake, "changes", None, &cancel);
        assert!(matches!(r, Err(ShellError::Cancelled)), "{r:?}");
        assert_eq!(fake.feed_reads, 2);
        assert!(!out.contains("last_seq"), "{out}");
    }

    #[test]
    fn ttl_shows_sets_and_removes() {
        let mut fake = Fake::default();
        let c = Cancel::new();
        assert_eq!(exec(&mut fake, "ttl s", None, &c).1, "ttl s: none\n");
        assert_eq!(exec(&mut fake, "ttl s 3600", None, &c).1, "ttl s: 3600 s\n");
        assert_eq!(fake.ttls.get("s"), Some(&3600));
        assert_eq!(exec(&mut fake, "ttl s", None, &c).1, "ttl s: 3600 s\n");
        assert_eq!(exec(&mut fake, "ttl s OFF", None, &c).1, "ttl s: none\n");
        assert!(fake.ttls.is_empty());
        for bad in [
            "ttl s 0",
            "ttl s abc",
            "ttl s 315360001",
            "ttl s -5",
            "ttl s 1.5",
        ] {
            let (r, out, _) = exec(&mut fake, bad, None, &c);
            let e = r.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                e.starts_with("the lifetime must be a whole number of seconds from 1 to 315360000, or off; got "),
                "{bad}: {e}"
            );
            assert_eq!(out, "");
        }
        assert!(fake.ttls.is_empty());
        assert_eq!(
            exec(&mut fake, "ttl s 315360000", None, &c).1,
            "ttl s: 315360000 s\n"
        );
    }

    #[test]
    fn messages_match_minidbgo() {
        let mut fake = Fake::default();
        let c = Cancel::new();
        assert_eq!(
            exec(
                &mut fake,
                r#"insertOne products {"_id":"p1","name":"Laptop"}"#,
                None,
                &c
            )
            .1,
            "Inserted p1 into products\n"
        );
        assert_eq!(
            exec(
                &mut fake,
                r#"insertMany products [{"_id":"p2"},{"_id":"p3"}]"#,
                None,
                &c
            )
            .1,
            "Inserted 2 of 2 documents into products\n"
        );
        assert_eq!(
            exec(&mut fake, "insertMany products []", None, &c).1,
            "No documents to insert.\n"
        );
        assert_eq!(exec(&mut fake, "count products", None, &c).1, "3\n");
        assert_eq!(
            exec(&mut fake, "compact", None, &c).1,
            "Compaction complete\n"
        );
        let (r, out, _) = exec(&mut fake, "exit", None, &c);
        assert_eq!((r.ok(), out.as_str()), (Some(Flow::Exit), "Bye!\n"));
        let help = exec(&mut fake, "help", None, &c).1;
        for s in SPECS {
            assert!(help.contains(s.name), "{}", s.name);
        }
    }
}
