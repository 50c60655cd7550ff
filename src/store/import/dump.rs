//! MiniDBGo's `dumpDB` files (FORMAT.md section 9), parsed as a stream.
//!
//! The whole dump is one JSON object `{"<collection>": [doc, ...], ...}` on one line. It
//! is never held in memory: a serde visitor receives each document as soon as it is
//! parsed. A counting reader under the parser knows the byte offset for errors and caps
//! the size of any single document or name.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::{ImportError, Result};

/// Largest single document (or collection name) accepted, in bytes of the dump.
pub(crate) const MAX_ITEM_BYTES: u64 = 256 << 20;

/// Counts the bytes the parser consumed and refuses an item larger than the cap.
struct Counting<R> {
    inner: R,
    pos: Rc<Cell<u64>>,
    item_start: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos.get() - self.item_start.get() > MAX_ITEM_BYTES {
            return Err(io::Error::other(format!(
                "a document or name larger than {MAX_ITEM_BYTES} bytes"
            )));
        }
        let n = self.inner.read(buf)?;
        self.pos.set(self.pos.get() + n as u64);
        Ok(n)
    }
}

/// Calls `f(collection, index, document)` for every document of the dump read from `r`
/// (buffered by the caller), in file order. An error from `f` stops the parse and is
/// returned as it is; malformed input is [`ImportError::Damaged`] at its offset.
pub(crate) fn for_each_document<R: Read>(
    path: &Path,
    r: R,
    f: &mut dyn FnMut(&str, u64, Value) -> Result<()>,
) -> Result<()> {
    let pos = Rc::new(Cell::new(0u64));
    let item_start = Rc::new(Cell::new(0u64));
    let reader = Counting {
        inner: r,
        pos: pos.clone(),
        item_start: item_start.clone(),
    };
    let stopped: RefCell<Option<ImportError>> = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let seed = TopSeed {
        f,
        item_start: &item_start,
        pos: &pos,
        stopped: &stopped,
    };
    let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
    if let Some(e) = stopped.into_inner() {
        return Err(e);
    }
    parsed.map_err(|e| {
        ImportError::damaged(
            path,
            pos.get(),
            format!("not a MiniDBGo dump ({{\"<collection>\": [<document>, ...], ...}}): {e}"),
        )
    })
}

struct TopSeed<'a> {
    f: &'a mut dyn FnMut(&str, u64, Value) -> Result<()>,
    item_start: &'a Cell<u64>,
    pos: &'a Cell<u64>,
    stopped: &'a RefCell<Option<ImportError>>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object mapping collection names to arrays of documents")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        loop {
            self.item_start.set(self.pos.get());
            let Some(collection) = map.next_key::<String>()? else {
                return Ok(());
            };
            map.next_value_seed(CollectionSeed {
                collection: &collection,
                f: &mut *self.f,
                item_start: self.item_start,
                pos: self.pos,
                stopped: self.stopped,
            })?;
        }
    }
}

struct CollectionSeed<'a> {
    collection: &'a str,
    f: &'a mut dyn FnMut(&str, u64, Value) -> Result<()>,
    item_start: &'a Cell<u64>,
    pos: &'a Cell<u64>,
    stopped: &'a RefCell<Option<ImportError>>,
}

impl<'de> DeserializeSeed<'de> for CollectionSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CollectionSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an array of documents for collection {:?}",
            self.collection
        )
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0u64;
        loop {
            self.item_start.set(self.pos.get());
            let Some(doc) = seq.next_element::<Value>()? else {
                return Ok(());
            };
            if let Err(e) = (self.f)(self.collection, index, doc) {
                *self.stopped.borrow_mut() = Some(e);
                return Err(de::Error::custom("import stopped"));
            }
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn collect(text: &[u8]) -> Result<Vec<(String, u64, Value)>> {
        let mut out = Vec::new();
        for_each_document(Path::new("dump_1.json"), text, &mut |c, i, d| {
            out.push((c.to_owned(), i, d));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn streams_every_document_in_order() {
        let text = br#"{"a":[{"_id":"1","n":12345678901234567890},{"_id":"2"}],"b":[],"c":[null,{"_id":"x","d":1,"d":2}]}
"#;
        let got = collect(text).unwrap_or_default();
        assert_eq!(
            got,
            vec![
                (
                    "a".into(),
                    0,
                    json!({"_id": "1", "n": 12345678901234567890u64})
                ),
                ("a".into(), 1, json!({"_id": "2"})),
                ("c".into(), 0, json!(null)),
                ("c".into(), 1, json!({"_id": "x", "d": 2})),
            ]
        );
        assert_eq!(collect(b"{}\n").ok(), Some(vec![]));
    }

    #[test]
    fn damage_is_reported_with_its_offset() {
        let cases: [(&[u8], u64); 5] = [
            (br#"{"a":[{"_id":"1"},{"_id":"2""#, 27),
            (br#"{"a":{"_id":"1"}}"#, 6),
            (br#"[{"a":1}]"#, 1),
            (br#"{"a":[{"_id":"1"}]} trailing"#, 21),
            (b"", 0),
        ];
        for (text, near) in cases {
            match collect(text) {
                Err(ImportError::Damaged { offset, file, .. }) => {
                    assert!(
                        offset.abs_diff(near) <= 2,
                        "{:?}: offset {offset}",
                        String::from_utf8_lossy(text)
                    );
                    assert!(file.ends_with("dump_1.json"));
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(text)),
            }
        }
    }

    #[test]
    fn an_error_of_the_callback_comes_back_as_it_is() {
        let mut calls = 0;
        let r = for_each_document(
            Path::new("d.json"),
            &br#"{"a":[{},{},{}]}"#[..],
            &mut |_, _, _| {
                calls += 1;
                if calls == 2 {
                    return Err(ImportError::TargetNotEmpty {
                        collections: 1,
                        documents: 9,
                    });
                }
                Ok(())
            },
        );
        assert!(matches!(
            r,
            Err(ImportError::TargetNotEmpty { documents: 9, .. })
        ));
        assert_eq!(calls, 2);
    }

    #[test]
    fn a_long_single_line_streams() {
        let mut text = String::from("{\"big\":[");
        for i in 0..5000 {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!(
                "{{\"_id\":\"{i}\",\"pad\":\"{}\"}}",
                "p".repeat(60)
            ));
        }
        text.push_str("]}\n");
        assert!(text.len() > 300_000);
        assert_eq!(collect(text.as_bytes()).map(|v| v.len()).ok(), Some(5000));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = collect(&data);
        }

        #[test]
        fn truncations_are_errors(cut in 0usize..40) {
            let text = br#"{"a":[{"_id":"1","v":[1,2,{"w":null}]}],"b":[{"_id":"2"}]}"#;
            let cut = cut.min(text.len() - 1);
            let damaged = matches!(collect(&text[..cut]), Err(ImportError::Damaged { .. }));
            prop_assert!(damaged, "cut at {}", cut);
        }
    }
}
