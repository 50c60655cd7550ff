//! `minidb shell`: MiniDBGo's interactive shell (its commands and their syntax, with
//! completion and history), over a running server or embedded on a data directory.
//!
//! - `command` is the table of commands, `parse` turns a line into a [`command`] value,
//!   `exec` runs it against a `backend` (HTTP or embedded), `output` prints.
//! - `repl` is the interactive session (rustyline), `script` runs `-c` and stdin.
//!
//! # Adding a command
//!
//! Index, TTL and change-feed commands will come. Each is: an entry in
//! `command::SPECS` (name, arguments, help; completion and `help` follow from it), a
//! `Command` variant built in `parse::build`, an arm in `exec::run` that prints its result,
//! and, when it needs the database, a method of `backend::Backend` implemented by
//! `backend::http` (the REST route) and `backend::embedded` (the store call). The parser
//! proptest covers the new syntax without change.

mod backend;
mod cancel;
mod command;
mod dumpfile;
mod error;
mod exec;
mod output;
mod parse;
mod repl;
mod script;

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

pub use error::{Result, ShellError};

use backend::embedded::Embedded;
use backend::http::{Http, HttpOptions};
use backend::Backend;
use cancel::{Cancel, SigintGuard};
use exec::{Flow, Settings, TERMINAL_CAP};
use output::{Out, Style};

/// Where the shell works.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Target {
    /// A running server, through its REST API.
    Server {
        /// Base URL, e.g. `http://127.0.0.1:6866`.
        url: String,
        /// Sent as `Authorization: Bearer <key>` when given.
        api_key: Option<String>,
        /// Whole-request timeout.
        timeout: Duration,
    },
    /// A data directory opened in this process (refused while a server holds it).
    DataDir {
        /// The data directory.
        dir: PathBuf,
        /// Engine options (from the configuration).
        options: crate::engine::Options,
    },
}

/// How a shell session runs.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Where the commands go.
    pub target: Target,
    /// Commands to run instead of a session (`-c`; several on separate lines).
    pub commands: Option<String>,
    /// The history file of interactive sessions; `None` keeps no history.
    pub history: Option<PathBuf>,
    /// No ANSI colours even on a terminal (`--no-color`; `NO_COLOR` is read too).
    pub no_color: bool,
    /// Most documents `findMany`/`dumpAll` print; `Some(0)` for all. Without it: 1000 on
    /// a terminal, all otherwise.
    pub max_results: Option<u64>,
}

impl Options {
    /// Interactive (or stdin script) defaults for `target`.
    pub fn new(target: Target) -> Self {
        Options {
            target,
            commands: None,
            history: None,
            no_color: false,
            max_results: None,
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Commands that failed (each printed one `error:` line).
    pub failed: u64,
}

/// Runs a session: `-c` commands, a script on stdin (when it is not a terminal), or the
/// interactive shell. Fails only when the target cannot be reached or opened.
pub fn run(opts: Options) -> Result<Report> {
    let stdout_tty = std::io::stdout().is_terminal();
    let colors_allowed =
        !opts.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let style = Style {
        pretty: stdout_tty,
        color: stdout_tty && colors_allowed,
        color_err: std::io::stderr().is_terminal() && colors_allowed,
    };
    let settings = Settings {
        max_results: match opts.max_results {
            Some(0) => None,
            Some(n) => Some(n),
            None if stdout_tty => Some(TERMINAL_CAP),
            None => None,
        },
    };
    let interactive = opts.commands.is_none() && std::io::stdin().is_terminal();
    let cancel = Cancel::new();
    // Only a session at a terminal turns Ctrl-C into "cancel the command".
    let _sigint = if interactive {
        Some(SigintGuard::install(&cancel)?)
    } else {
        None
    };
    let mut backend: Box<dyn Backend> = match &opts.target {
        Target::Server {
            url,
            api_key,
            timeout,
        } => Box::new(Http::connect(
            &HttpOptions {
                url: url.clone(),
                api_key: api_key.clone(),
                timeout: *timeout,
            },
            cancel.clone(),
        )?),
        Target::DataDir { dir, options } => {
            Box::new(Embedded::open(dir, options.clone(), cancel.clone())?)
        }
    };
    let mut out = Out::stdio(style);
    let failed = if let Some(text) = &opts.commands {
        script::run_text(text, &mut *backend, &mut out, &cancel, &settings)
    } else if interactive {
        let shared: repl::Shared = Rc::new(RefCell::new(backend));
        let failed = repl::run(&shared, &mut out, &cancel, &settings, opts.history.clone());
        let closed = shared.borrow_mut().close();
        let failed = failed?;
        closed?;
        return Ok(Report { failed });
    } else {
        let stdin = std::io::stdin();
        script::run_reader(stdin.lock(), &mut *backend, &mut out, &cancel, &settings)?
    };
    backend.close()?;
    Ok(Report { failed })
}

/// Parses and runs one complete input.
fn execute(
    input: &str,
    backend: &mut dyn Backend,
    out: &mut Out,
    cancel: &Cancel,
    settings: &Settings,
) -> Result<Flow> {
    match parse::parse(input)? {
        Some(cmd) => exec::run(cmd, backend, out, cancel, settings),
        None => Ok(Flow::Continue),
    }
}
