//! The server's phases: it listens at once, while the engine opens (and replays its WAL)
//! on a blocking thread; then it serves; then it shuts down.
//!
//! While the engine opens, `/api/health` answers 200, `/api/ready` answers 503 with the
//! phase and the replay's progress, and every other route 503 with `Retry-After`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::EventListener;

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The engine is opening: reading its manifest and tables, then replaying the WAL.
    Opening,
    /// The engine is open and requests are served.
    Serving,
    /// Shutdown began: readiness is 503, in-flight requests drain.
    ShuttingDown,
}

/// The phase and the WAL replay's progress, shared by the probes and the engine's listener.
#[derive(Debug)]
pub struct Startup {
    phase: Mutex<Phase>,
    replayed: AtomicU64,
    /// WAL bytes to replay; `u64::MAX` until the engine reports it.
    total: AtomicU64,
}

impl Default for Startup {
    fn default() -> Self {
        Startup {
            phase: Mutex::new(Phase::Opening),
            replayed: AtomicU64::new(0),
            total: AtomicU64::new(u64::MAX),
        }
    }
}

impl Startup {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.lock()
    }

    /// `(replayed, total)` WAL bytes once the replay started.
    pub fn progress(&self) -> Option<(u64, u64)> {
        match self.total.load(Ordering::Acquire) {
            u64::MAX => None,
            total => Some((self.replayed.load(Ordering::Acquire), total)),
        }
    }

    /// The name of the phase for probes: `opening`, `replaying_wal`, `serving`,
    /// `shutting_down`.
    pub fn phase_name(&self) -> &'static str {
        match self.phase() {
            Phase::Opening if self.progress().is_some() => "replaying_wal",
            Phase::Opening => "opening",
            Phase::Serving => "serving",
            Phase::ShuttingDown => "shutting_down",
        }
    }

    /// Moves from opening to serving, running `install` under the phase lock; `false` (and
    /// nothing run) if shutdown began first.
    pub fn serve_with(&self, install: impl FnOnce()) -> bool {
        let mut phase = self.phase.lock();
        if *phase != Phase::Opening {
            return false;
        }
        install();
        *phase = Phase::Serving;
        true
    }

    /// Begins shutdown; returns the phase it was in.
    pub fn shut_down(&self) -> Phase {
        std::mem::replace(&mut *self.phase.lock(), Phase::ShuttingDown)
    }

    /// An engine listener that records replay progress here and passes every event on to
    /// `inner` (the metrics).
    pub fn listener(
        self: &Arc<Self>,
        inner: Option<Arc<dyn EventListener>>,
    ) -> Arc<dyn EventListener> {
        Arc::new(ProgressListener {
            startup: self.clone(),
            inner,
        })
    }
}

struct ProgressListener {
    startup: Arc<Startup>,
    inner: Option<Arc<dyn EventListener>>,
}

impl EventListener for ProgressListener {
    fn on_wal_sync(&self, d: Duration) {
        if let Some(l) = &self.inner {
            l.on_wal_sync(d);
        }
    }

    fn on_flush(&self, d: Duration, bytes: u64) {
        if let Some(l) = &self.inner {
            l.on_flush(d, bytes);
        }
    }

    fn on_compaction(&self, d: Duration, bytes: u64) {
        if let Some(l) = &self.inner {
            l.on_compaction(d, bytes);
        }
    }

    fn on_recovery_progress(&self, replayed: u64, total: u64) {
        self.startup.replayed.store(replayed, Ordering::Release);
        self.startup.total.store(total, Ordering::Release);
        if let Some(l) = &self.inner {
            l.on_recovery_progress(replayed, total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_progress() {
        let s = Arc::new(Startup::default());
        assert_eq!(s.phase_name(), "opening");
        assert_eq!(s.progress(), None);
        let l = s.listener(None);
        l.on_recovery_progress(0, 100);
        assert_eq!(
            (s.phase_name(), s.progress()),
            ("replaying_wal", Some((0, 100)))
        );
        l.on_recovery_progress(40, 100);
        assert_eq!(s.progress(), Some((40, 100)));
        let mut installed = false;
        assert!(s.serve_with(|| installed = true));
        assert!(installed);
        assert_eq!(s.phase_name(), "serving");
        assert_eq!(s.shut_down(), Phase::Serving);
        assert!(!s.serve_with(|| unreachable!()));
        assert_eq!(s.phase_name(), "shutting_down");
    }
}
