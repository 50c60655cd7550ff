//! What the shell prints: documents pretty and coloured on a terminal, one compact JSON
//! per line otherwise; messages on stdout, notes and errors on stderr.
//!
//! Documents are written one at a time (a page at most is held), so a huge result
//! streams. Colours follow MiniDBGo's: keys yellow, strings cyan, numbers green.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use serde_json::Value;

use super::error::{Result, ShellError};

const YELLOW: &[u8] = b"\x1b[33m";
const CYAN: &[u8] = b"\x1b[36m";
const GREEN: &[u8] = b"\x1b[32m";
const BLUE: &[u8] = b"\x1b[34m";
const RED: &str = "\x1b[31m";
const RESET: &[u8] = b"\x1b[0m";

/// How output looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Style {
    /// Indented JSON (stdout is a terminal).
    pub pretty: bool,
    /// ANSI colours on stdout.
    pub color: bool,
    /// ANSI colours on stderr.
    pub color_err: bool,
}

/// The shell's two output streams.
pub(crate) struct Out {
    out: Box<dyn Write>,
    err: Box<dyn Write>,
    pub style: Style,
}

impl Out {
    pub(crate) fn new(out: Box<dyn Write>, err: Box<dyn Write>, style: Style) -> Self {
        Out { out, err, style }
    }

    /// Stdout (buffered; flushed after each command and page) and stderr.
    pub(crate) fn stdio(style: Style) -> Self {
        Out::new(
            Box::new(io::BufWriter::with_capacity(64 << 10, io::stdout())),
            Box::new(io::stderr()),
            style,
        )
    }

    /// A document given as compact JSON.
    pub(crate) fn doc(&mut self, json: &[u8]) -> Result<()> {
        if !self.style.pretty {
            self.out.write_all(json).map_err(stdout_error)?;
            return self.out.write_all(b"\n").map_err(stdout_error);
        }
        match serde_json::from_slice::<Value>(json) {
            Ok(v) => self.value(&v),
            // Not JSON after all: shown as it is rather than hidden.
            Err(_) => {
                self.out.write_all(json).map_err(stdout_error)?;
                self.out.write_all(b"\n").map_err(stdout_error)
            }
        }
    }

    /// A JSON value.
    pub(crate) fn value(&mut self, v: &Value) -> Result<()> {
        let w = &mut self.out;
        let r = match (self.style.pretty, self.style.color) {
            (false, _) => serde_json::to_writer(&mut *w, v),
            (true, false) => {
                let mut ser =
                    serde_json::Serializer::with_formatter(&mut *w, PrettyFormatter::new());
                v.serialize(&mut ser)
            }
            (true, true) => {
                let mut ser = serde_json::Serializer::with_formatter(
                    &mut *w,
                    Colored {
                        pretty: PrettyFormatter::new(),
                        in_key: false,
                    },
                );
                v.serialize(&mut ser)
            }
        };
        r.map_err(|e| stdout_error(io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(stdout_error)
    }

    /// A message line on stdout ("Inserted p1 into products").
    pub(crate) fn line(&mut self, s: &str) -> Result<()> {
        writeln!(self.out, "{s}").map_err(stdout_error)
    }

    /// One change-feed entry: `seq  collection/id` and `  deleted` when it is, the seq
    /// green, the name cyan and `deleted` red on a colour terminal. An `_id` with blanks
    /// or control characters is printed as a JSON string, so it cannot break the line (or
    /// the terminal).
    pub(crate) fn change(
        &mut self,
        seq: u64,
        collection: &str,
        id: &str,
        deleted: bool,
    ) -> Result<()> {
        let quoted;
        let id = if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
            quoted = serde_json::to_string(id).unwrap_or_default();
            quoted.as_str()
        } else {
            id
        };
        let mark = if deleted { "  deleted" } else { "" };
        if self.style.color {
            let (g, c, r, x) = (
                String::from_utf8_lossy(GREEN),
                String::from_utf8_lossy(CYAN),
                RED,
                String::from_utf8_lossy(RESET),
            );
            let mark = if deleted {
                format!("  {r}deleted{x}")
            } else {
                String::new()
            };
            writeln!(self.out, "{g}{seq}{x}  {c}{collection}/{id}{x}{mark}")
        } else {
            writeln!(self.out, "{seq}  {collection}/{id}{mark}")
        }
        .map_err(stdout_error)
    }

    /// A note on stderr (truncation, hints); stdout stays data only.
    pub(crate) fn note(&mut self, s: &str) {
        let _ = self.out.flush();
        let _ = writeln!(self.err, "{s}");
    }

    /// An error line on stderr: `error: ...`, red on a colour terminal.
    pub(crate) fn error(&mut self, s: &str) {
        let _ = self.out.flush();
        let _ = if self.style.color_err {
            writeln!(self.err, "{RED}error: {s}\x1b[0m")
        } else {
            writeln!(self.err, "error: {s}")
        };
        let _ = self.err.flush();
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(stdout_error)
    }
}

fn stdout_error(e: io::Error) -> ShellError {
    ShellError::io("cannot write to stdout", e)
}

/// serde_json's pretty printer with ANSI colours around keys and scalar values.
struct Colored<'a> {
    pretty: PrettyFormatter<'a>,
    in_key: bool,
}

impl Colored<'_> {
    fn paint<W: ?Sized + Write>(
        w: &mut W,
        color: &[u8],
        f: impl FnOnce(&mut W) -> io::Result<()>,
    ) -> io::Result<()> {
        w.write_all(color)?;
        f(w)?;
        w.write_all(RESET)
    }
}

impl Formatter for Colored<'_> {
    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        Self::paint(w, BLUE, |w| w.write_all(b"null"))
    }

    fn write_bool<W: ?Sized + Write>(&mut self, w: &mut W, value: bool) -> io::Result<()> {
        Self::paint(w, BLUE, |w| {
            w.write_all(if value { b"true" } else { b"false" })
        })
    }

    fn write_i64<W: ?Sized + Write>(&mut self, w: &mut W, value: i64) -> io::Result<()> {
        Self::paint(w, GREEN, |w| write!(w, "{value}"))
    }

    fn write_u64<W: ?Sized + Write>(&mut self, w: &mut W, value: u64) -> io::Result<()> {
        Self::paint(w, GREEN, |w| write!(w, "{value}"))
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        Self::paint(w, GREEN, |w| w.write_all(float_text(value).as_bytes()))
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(if self.in_key { YELLOW } else { CYAN })?;
        w.write_all(b"\"")
    }

    fn end_string<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\"")?;
        w.write_all(RESET)
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_array(w)
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array(w)
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_array_value(w)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object(w)
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object(w)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.in_key = true;
        self.pretty.begin_object_key(w, first)
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.in_key = false;
        self.pretty.end_object_key(w)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.pretty.end_object_value(w)
    }
}

/// A float as serde_json writes it (shortest round-trip form).
fn float_text(value: f64) -> String {
    serde_json::Number::from_f64(value)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "null".into())
}

#[cfg(test)]
pub(crate) mod testing {
    //! An [`Out`] that writes into memory, for tests of what commands print.
    use std::cell::RefCell;
    use std::io::{self, Write};
    use std::rc::Rc;

    use super::{Out, Style};

    #[derive(Clone, Default)]
    pub(crate) struct Buf(pub Rc<RefCell<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Buf {
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.borrow()).into_owned()
        }
    }

    /// The output and its stdout and stderr buffers.
    pub(crate) fn memory(style: Style) -> (Out, Buf, Buf) {
        let (o, e) = (Buf::default(), Buf::default());
        (
            Out::new(Box::new(o.clone()), Box::new(e.clone()), style),
            o,
            e,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::memory;
    use super::*;
    use serde_json::json;

    #[test]
    fn compact_pretty_and_coloured() {
        let doc = br#"{"_id":"p1","n":12,"f":1.5,"ok":true,"x":null,"a":["s"]}"#;
        let (mut out, o, _) = memory(Style::default());
        out.doc(doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.text(), format!("{}\n", String::from_utf8_lossy(doc)));

        let style = Style {
            pretty: true,
            ..Style::default()
        };
        let (mut out, o, _) = memory(style);
        out.doc(doc).unwrap_or_else(|e| panic!("{e}"));
        let v: Value = serde_json::from_str(&o.text()).unwrap_or_default();
        assert_eq!(v, serde_json::from_slice::<Value>(doc).unwrap_or_default());
        assert!(o.text().contains("\n  \"_id\": \"p1\",\n"), "{}", o.text());
        assert!(!o.text().contains('\x1b'));

        let style = Style {
            pretty: true,
            color: true,
            color_err: true,
        };
        let (mut out, o, e) = memory(style);
        out.value(&json!({"k": "v", "n": 1, "f": 0.25, "b": false}))
            .unwrap_or_else(|e| panic!("{e}"));
        let t = o.text();
        assert!(
            t.contains("\x1b[33m\"k\"\x1b[0m: \x1b[36m\"v\"\x1b[0m"),
            "{t:?}"
        );
        assert!(t.contains("\x1b[32m1\x1b[0m"), "{t:?}");
        assert!(t.contains("\x1b[32m0.25\x1b[0m"), "{t:?}");
        assert!(t.contains("\x1b[34mfalse\x1b[0m"), "{t:?}");
        out.error("bad");
        assert_eq!(e.text(), "\x1b[31merror: bad\x1b[0m\n");
    }
}
