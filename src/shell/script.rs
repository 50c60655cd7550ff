//! Commands from `-c` or from a stdin that is not a terminal: no prompt, no history;
//! a line with an open `{`/`[` continues on the next, as interactively. Every failed
//! command is one `error:` line on stderr (with its line number when the script has
//! several lines); the run goes on, and the exit code says whether any failed.

use std::io::{BufRead, Read};

use super::backend::Backend;
use super::cancel::Cancel;
use super::error::{Result, ShellError};
use super::exec::Settings;
use super::output::Out;
use super::parse::{is_incomplete, MAX_INPUT_BYTES};
use super::{execute, Flow};

/// A script being run: the lines of a command still open, and the failures so far.
struct Script<'a> {
    backend: &'a mut dyn Backend,
    out: &'a mut Out,
    cancel: &'a Cancel,
    settings: &'a Settings,
    numbered: bool,
    pending: String,
    pending_from: usize,
    failed: u64,
}

impl Script<'_> {
    /// Takes line `no` (1-based); runs the command once it is complete.
    fn feed(&mut self, no: usize, line: &str) -> Flow {
        if self.pending.is_empty() {
            self.pending_from = no;
        } else {
            self.pending.push('\n');
        }
        self.pending.push_str(line);
        if is_incomplete(&self.pending) {
            return Flow::Continue;
        }
        self.run_pending()
    }

    fn run_pending(&mut self) -> Flow {
        let input = std::mem::take(&mut self.pending);
        match execute(&input, self.backend, self.out, self.cancel, self.settings) {
            Ok(flow) => flow,
            Err(e) => {
                self.fail(self.pending_from, &e);
                if is_broken_pipe(&e) {
                    Flow::Exit
                } else {
                    Flow::Continue
                }
            }
        }
    }

    fn fail(&mut self, no: usize, e: &ShellError) {
        self.failed += 1;
        if self.numbered {
            self.out.error(&format!("line {no}: {e}"));
        } else {
            self.out.error(&e.to_string());
        }
    }

    /// At the end: a command still open is run (and reports what is missing).
    fn finish(mut self) -> u64 {
        if !self.pending.trim().is_empty() {
            self.run_pending();
        }
        let _ = self.out.flush();
        self.failed
    }
}

fn is_broken_pipe(e: &ShellError) -> bool {
    matches!(e, ShellError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Runs the commands of `-c` (one, or several on separate lines).
pub(crate) fn run_text(
    text: &str,
    backend: &mut dyn Backend,
    out: &mut Out,
    cancel: &Cancel,
    settings: &Settings,
) -> u64 {
    let mut script = Script {
        backend,
        out,
        cancel,
        settings,
        numbered: text.trim().contains('\n'),
        pending: String::new(),
        pending_from: 1,
        failed: 0,
    };
    for (i, line) in text.lines().enumerate() {
        if script.feed(i + 1, line) == Flow::Exit {
            break;
        }
    }
    script.finish()
}

/// Runs the commands read from `input`, line by line (no line longer than the command
/// limit is held).
pub(crate) fn run_reader(
    mut input: impl BufRead,
    backend: &mut dyn Backend,
    out: &mut Out,
    cancel: &Cancel,
    settings: &Settings,
) -> Result<u64> {
    let mut script = Script {
        backend,
        out,
        cancel,
        settings,
        numbered: true,
        pending: String::new(),
        pending_from: 1,
        failed: 0,
    };
    let mut buf = Vec::new();
    let mut no = 0usize;
    loop {
        buf.clear();
        no += 1;
        let limit = (MAX_INPUT_BYTES + 1) as u64;
        let n = (&mut input)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .map_err(|e| ShellError::io("cannot read the commands from stdin", e))?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_INPUT_BYTES && !buf.ends_with(b"\n") {
            script.fail(
                no,
                &ShellError::Usage(format!("the line is longer than {MAX_INPUT_BYTES} bytes")),
            );
            script.pending.clear();
            skip_line(&mut input)?;
            continue;
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(l) => l.trim_end_matches(['\n', '\r']),
            Err(e) => {
                script.fail(
                    no,
                    &ShellError::Usage(format!(
                        "the line is not UTF-8 (byte {})",
                        e.valid_up_to() + 1
                    )),
                );
                continue;
            }
        };
        if script.feed(no, line) == Flow::Exit {
            break;
        }
    }
    Ok(script.finish())
}

/// Drops the rest of an over-long line.
fn skip_line(input: &mut impl BufRead) -> Result<()> {
    loop {
        let chunk = input
            .fill_buf()
            .map_err(|e| ShellError::io("cannot read the commands from stdin", e))?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                input.consume(n);
            }
        }
    }
}
