//! The background task that deletes expired documents and prunes old deletions from the
//! change feed, every `expiry.sweep_interval_ms`.
//!
//! Each pass runs on the blocking pool and deletes at most `expiry.sweep_batch`
//! documents, in write batches of up to 64 under their stripe locks, so foreground writes
//! interleave with it; a backlog larger than one pass is worked off pass by pass without waiting
//! for the interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::startup::Phase;
use super::AppState;
use crate::store::expiry::now_ms;
use crate::store::Store;

/// The backlog gauge counts at most this many due documents (a bounded scan).
const BACKLOG_CAP: u64 = 100_000;

/// Starts the sweeper for `store`; it stops when the server shuts down.
pub fn spawn(state: Arc<AppState>, store: Arc<Store>) {
    let interval = Duration::from_millis(state.config.expiry.sweep_interval_ms);
    let batch = state.config.expiry.sweep_batch;
    let retention_ms = state.config.changes.retention_secs.saturating_mul(1000);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.startup.phase() != Phase::Serving {
                return;
            }
            let s = store.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let now = now_ms();
                let sweep = s.sweep_expired(now, batch)?;
                let pruned = s.prune_changes(now.saturating_sub(retention_ms), batch)?;
                let backlog = s.expiry_backlog(now, BACKLOG_CAP)?;
                Ok::<_, crate::store::StoreError>((sweep, pruned, backlog, started.elapsed()))
            })
            .await;
            match pass {
                Ok(Ok((sweep, pruned, backlog, took))) => {
                    if let Some(t) = &state.telemetry {
                        t.metrics().record_sweep(sweep.expired, took, backlog);
                        t.metrics().record_pruned(pruned.pruned);
                    }
                    if sweep.expired > 0 || pruned.pruned > 0 {
                        tracing::debug!(
                            expired = sweep.expired,
                            pruned = pruned.pruned,
                            backlog,
                            "expiry sweep"
                        );
                    }
                    if sweep.more || pruned.more {
                        // More is due: the next pass at once, after other tasks had a turn.
                        tick.reset_immediately();
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "expiry sweep failed; retrying next interval")
                }
                Err(e) => tracing::error!(error = %e, "expiry sweep task failed"),
            }
        }
    });
}
