//! Fault-injection points for tests (fail-rs); compiled out without the `failpoints` feature.

use std::io;

/// Returns an injected I/O error when the fail point `name` is set to `return`.
pub(crate) fn fail_sync(name: &str) -> io::Result<()> {
    let _ = name;
    fail::fail_point!(name, |_| Err(io::Error::other(format!(
        "injected failure at {name}"
    ))));
    Ok(())
}
