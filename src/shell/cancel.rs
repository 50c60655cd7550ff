//! Ctrl-C while a command runs.
//!
//! While the line editor reads, the terminal is raw and Ctrl-C is a key (it clears the
//! input). While a command runs, it is SIGINT: in an interactive session the handler only
//! sets a flag, which long commands check between pages and documents, and which an HTTP
//! request in flight is abandoned for. Scripts keep the default (Ctrl-C ends the process).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::{Result, ShellError};

/// The flag a running command checks; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag nothing sets (scripts; tests set it by hand).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `Cancelled` once Ctrl-C was pressed during the current command.
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_set() {
            Err(ShellError::Cancelled)
        } else {
            Ok(())
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Called before each command.
    pub(crate) fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    #[cfg(test)]
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// SIGINT sets a [`Cancel`] flag while this guard lives.
pub(crate) struct SigintGuard(signal_hook::SigId);

impl SigintGuard {
    pub(crate) fn install(cancel: &Cancel) -> Result<Self> {
        signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.0.clone())
            .map(SigintGuard)
            .map_err(|e| ShellError::io("cannot handle Ctrl-C", e))
    }
}

impl Drop for SigintGuard {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.0);
    }
}
