//! Background threads: a panic in one poisons the engine with the panic's message instead of
//! vanishing (a dead flush worker would otherwise leave writes `Busy` forever).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::error::{IoContext, Result};
use super::Inner;

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Starts `body` on a named thread; a panic in it poisons the engine.
pub(crate) fn spawn(
    inner: &Arc<Inner>,
    name: &'static str,
    body: fn(&Inner),
) -> Result<JoinHandle<()>> {
    let inner = inner.clone();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| body(&inner))) {
                inner.poison(format!(
                    "background thread {name} panicked: {}",
                    panic_message(&*payload)
                ));
            }
        })
        .ctx(|| format!("spawn {name} thread"))
}

/// Waits for a worker; one that ended by panicking (outside the guard) poisons too.
pub(crate) fn join(inner: &Inner, handle: JoinHandle<()>) {
    let name = handle.thread().name().unwrap_or("worker").to_string();
    if let Err(payload) = handle.join() {
        inner.poison(format!(
            "background thread {name} panicked: {}",
            panic_message(&*payload)
        ));
    }
}
