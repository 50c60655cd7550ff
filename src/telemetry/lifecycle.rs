//! The server's lifecycle lines (`listening on ADDR`, shutdown, a fatal error, a panic),
//! written through the log subscriber so that in JSON mode every line on stdout and stderr
//! is one JSON object.
//!
//! Tools find the server's address in its `listening on ADDR` line: in JSON mode
//! `{"level":"INFO","target":"minidb::lifecycle","message":"listening on ADDR","addr":"ADDR",...}`
//! (read `addr`); in text mode the line ends with `listening on ADDR addr=ADDR`. Lifecycle
//! lines are written at every log level.

use super::tracing::JsonLines;
use super::LogFormat;
use crate::redact::redact_urls;

/// The log target of lifecycle lines; the log filter always lets it through at `info`.
pub const LIFECYCLE_TARGET: &str = "minidb::lifecycle";

/// Logs that the server accepts connections on `addr`.
pub fn listening(addr: std::net::SocketAddr) {
    tracing::info!(target: LIFECYCLE_TARGET, addr = %addr, "listening on {addr}");
}

/// Logs that the server drained, closed the engine and exits 0.
pub fn shut_down() {
    tracing::info!(target: LIFECYCLE_TARGET, "shut down cleanly");
}

/// Logs a fatal error (secrets in URLs redacted): through the installed subscriber when
/// there is one, else as one line on stderr in `format` (before the subscriber exists,
/// e.g. for a configuration error).
pub fn fatal(message: &str, format: LogFormat) {
    let message = redact_urls(message);
    if tracing::dispatcher::has_been_set() {
        tracing::error!(target: LIFECYCLE_TARGET, "{message}");
        return;
    }
    match format {
        LogFormat::Text => eprintln!("minidb: {message}"),
        LogFormat::Json => {
            let subscriber = tracing_subscriber::fmt()
                .event_format(JsonLines)
                .with_writer(std::io::stderr)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!(target: LIFECYCLE_TARGET, "{message}");
            });
        }
    }
}

/// Routes panic messages through the log subscriber (one JSON object in JSON mode) instead
/// of the default hook's plain stderr text. The backtrace is included when `RUST_BACKTRACE`
/// asks for one.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = redact_urls(&info.to_string()).into_owned();
        let backtrace = std::backtrace::Backtrace::capture();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(target: LIFECYCLE_TARGET, thread, backtrace = %backtrace, "panic: {message}");
        } else {
            tracing::error!(target: LIFECYCLE_TARGET, thread, "panic: {message}");
        }
    }));
}
