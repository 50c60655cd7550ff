//! The interactive session: rustyline for editing, history and completion.
//!
//! - Enter on input with an open `{`, `[` or string continues it on the next line.
//! - Tab completes command names, then collection names (fetched from the backend and
//!   kept [`CACHE_TTL`]; dropped after every command, which may have made one), and file
//!   names after `dumpDB`/`restoreDB`.
//! - Ctrl-C while typing drops the input; while a command runs, cancels it. Ctrl-D on an
//!   empty line leaves.
//! - History is saved after every command (file mode 0600), so a killed session keeps it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{ColorMode, CompletionType, Config, Context, Editor, Helper};

use super::backend::Backend;
use super::cancel::Cancel;
use super::command::{spec, SPECS};
use super::error::{Result, ShellError};
use super::exec::Settings;
use super::output::Out;
use super::parse::is_incomplete;
use super::{execute, Flow};

/// The prompt; tests wait for it.
pub(crate) const PROMPT: &str = "minidb> ";
/// How long fetched collection names serve completion.
const CACHE_TTL: Duration = Duration::from_secs(5);
/// Entries kept in the history file.
const HISTORY_SIZE: usize = 1000;
/// Longer inputs (a pasted insertMany) are run but not kept in the history.
const MAX_HISTORY_ENTRY: usize = 64 << 10;
/// Most collection names offered at once.
const MAX_CANDIDATES: usize = 1000;

/// The backend, shared by the session and the completer (which only runs while the
/// session waits for input).
pub(crate) type Shared = Rc<RefCell<Box<dyn Backend>>>;

/// Collection names for completion, fetched when needed.
#[derive(Default)]
struct NameCache {
    names: Vec<String>,
    fetched: Option<Instant>,
}

struct ShellHelper {
    backend: Shared,
    cache: RefCell<NameCache>,
    files: FilenameCompleter,
    color: bool,
}

impl ShellHelper {
    fn collections(&self) -> Vec<String> {
        let mut cache = self.cache.borrow_mut();
        let fresh = cache.fetched.is_some_and(|t| t.elapsed() < CACHE_TTL);
        if !fresh {
            // A backend busy elsewhere or a server that fails: no candidates, no error.
            if let Ok(mut b) = self.backend.try_borrow_mut() {
                if let Ok(names) = b.collection_names() {
                    cache.names = names;
                    cache.fetched = Some(Instant::now());
                }
            }
        }
        cache.names.clone()
    }

    fn invalidate(&self) {
        self.cache.borrow_mut().fetched = None;
    }
}

/// Candidates of `options` starting with `token`, case-insensitively (as MiniDBGo).
fn matching<'a>(options: impl Iterator<Item = &'a str>, token: &str) -> Vec<Pair> {
    let lower = token.to_ascii_lowercase();
    options
        .filter(|o| o.to_ascii_lowercase().starts_with(&lower))
        .take(MAX_CANDIDATES)
        .map(|o| Pair {
            display: o.to_owned(),
            replacement: o.to_owned(),
        })
        .collect()
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let Some(before) = line.get(..pos) else {
            return Ok((pos, Vec::new()));
        };
        let start = before
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        let token = &before[start..];
        let words: Vec<&str> = before[..start].split_whitespace().collect();
        let candidates = match words.as_slice() {
            [] => matching(
                SPECS
                    .iter()
                    .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied())),
                token,
            ),
            [cmd] => match spec(cmd) {
                Some(s) if s.takes_collection() => {
                    let names = self.collections();
                    matching(names.iter().map(String::as_str), token)
                }
                Some(s) if s.takes_file() => return self.files.complete_path(line, pos),
                Some(s) if s.name == "help" => matching(SPECS.iter().map(|s| s.name), token),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        Ok((start, candidates))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(
        &'s self,
        prompt: &'p str,
        _default: bool,
    ) -> Cow<'b, str> {
        if self.color {
            Cow::Owned(format!("\x1b[33m{prompt}\x1b[0m"))
        } else {
            Cow::Borrowed(prompt)
        }
    }
}

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        Ok(if is_incomplete(ctx.input()) {
            ValidationResult::Incomplete
        } else {
            ValidationResult::Valid(None)
        })
    }
}

impl Helper for ShellHelper {}

/// The history file, created with mode 0600 if it does not exist.
fn open_history(path: &Path) -> std::io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// Runs the interactive session; returns the number of commands that failed.
pub(crate) fn run(
    shared: &Shared,
    out: &mut Out,
    cancel: &Cancel,
    settings: &Settings,
    history: Option<PathBuf>,
) -> Result<u64> {
    let color = out.style.color;
    let config = Config::builder()
        .max_history_size(HISTORY_SIZE)
        .and_then(|b| b.history_ignore_dups(true))
        .map_err(|e| ShellError::io("line editor", std::io::Error::other(e)))?
        .history_ignore_space(true)
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .color_mode(if color {
            ColorMode::Enabled
        } else {
            ColorMode::Disabled
        })
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config)
        .map_err(|e| ShellError::io("cannot start the line editor", std::io::Error::other(e)))?;
    editor.set_helper(Some(ShellHelper {
        backend: shared.clone(),
        cache: RefCell::default(),
        files: FilenameCompleter::new(),
        color,
    }));
    let mut history = history;
    if let Some(path) = &history {
        let loaded = open_history(path)
            .map_err(ReadlineError::from)
            .and_then(|()| editor.load_history(path));
        if let Err(e) = loaded {
            out.note(&format!(
                "history is off: cannot use {}: {e}",
                path.display()
            ));
            history = None;
        }
    }
    let described = shared.borrow().describe();
    out.line(&format!(
        "MiniDB shell on {described}. Type help for the commands; exit or Ctrl-D leaves."
    ))?;
    out.flush()?;
    let mut failed = 0u64;
    loop {
        match editor.readline(PROMPT) {
            Ok(input) => {
                if input.trim().is_empty() {
                    continue;
                }
                if input.len() <= MAX_HISTORY_ENTRY {
                    let _ = editor.add_history_entry(input.as_str());
                    if let Some(path) = &history {
                        if let Err(e) = editor.append_history(path) {
                            out.note(&format!(
                                "history is off: cannot write {}: {e}",
                                path.display()
                            ));
                            history = None;
                        }
                    }
                }
                cancel.reset();
                let flow = {
                    let mut backend = shared.borrow_mut();
                    execute(&input, &mut **backend, out, cancel, settings)
                };
                if let Some(h) = editor.helper() {
                    h.invalidate();
                }
                match flow {
                    Ok(Flow::Exit) => break,
                    Ok(Flow::Continue) => {}
                    Err(e) => {
                        failed += 1;
                        out.error(&e.to_string());
                    }
                }
            }
            // Ctrl-C while typing: the input is dropped, a new prompt comes.
            Err(ReadlineError::Interrupted) => {}
            Err(ReadlineError::Eof) => {
                out.line("Bye!")?;
                break;
            }
            Err(e) => {
                return Err(ShellError::io(
                    "cannot read the terminal",
                    std::io::Error::other(e),
                ))
            }
        }
    }
    out.flush()?;
    Ok(failed)
}
