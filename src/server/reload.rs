//! Files the server re-reads while it runs: the API keys file and the TLS certificate and
//! key. Each is polled on a fixed interval, read on a blocking thread (bounded in bytes),
//! and applied only when its contents changed. Comparing contents rather than mtimes
//! catches every change: Kubernetes updates a mounted Secret by swapping a symlink (the
//! file's own mtime may not move), and a copy within one mtime tick changes nothing else.
//!
//! A version that fails to read or to apply is logged and counted once, and the previous
//! version stays in use; the next different version is tried again.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use xxhash_rust::xxh3::Xxh3;

use crate::telemetry::metrics::Metrics;

/// What a watched set of files is called in logs and in `minidb_reload_errors_total{file}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched {
    /// `auth.keys_file`.
    Keys,
    /// `tls.cert_file` and `tls.key_file`.
    Tls,
}

impl Watched {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Watched::Keys => "keys",
            Watched::Tls => "tls",
        }
    }
}

/// Reads `path`, at most `max` bytes (a larger file is an error, not a truncated read).
pub fn read_bounded(path: &std::path::Path, max: u64) -> Result<Vec<u8>, String> {
    let f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut out = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if out.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(out)
}

/// Reads every path (bounded); the contents and their fingerprint.
pub fn read_all(paths: &[PathBuf], max: u64) -> (Result<Vec<Vec<u8>>, String>, u64) {
    let mut h = Xxh3::new();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        match read_bounded(p, max) {
            Ok(bytes) => {
                h.update(&(bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
                out.push(bytes);
            }
            Err(e) => {
                h.update(b"error:");
                h.update(e.as_bytes());
                return (Err(e), h.digest());
            }
        }
    }
    (Ok(out), h.digest())
}

/// Applies a new version of the files; the error says why it was refused.
pub type Apply = Arc<dyn Fn(&[Vec<u8>]) -> Result<String, String> + Send + Sync>;

/// Polls `paths` every `interval` and calls `apply` with their contents when they differ
/// from the version with fingerprint `current` (the one loaded at start-up). Runs until
/// the runtime stops.
pub fn spawn(
    what: Watched,
    paths: Vec<PathBuf>,
    max: u64,
    interval: Duration,
    current: u64,
    apply: Apply,
    metrics: Option<Arc<Metrics>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut applied = current;
        let mut failed: Option<u64> = None;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let (paths, apply) = (paths.clone(), apply.clone());
            let skip = (applied, failed);
            let polled = tokio::task::spawn_blocking(move || {
                let (contents, fp) = read_all(&paths, max);
                if fp == skip.0 || Some(fp) == skip.1 {
                    return (fp, None);
                }
                (fp, Some(contents.and_then(|c| apply(&c))))
            })
            .await;
            let (fp, outcome) = match polled {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(file = what.as_str(), error = %e, "reload task failed");
                    continue;
                }
            };
            let failing = |on: bool| {
                if let Some(m) = &metrics {
                    m.set_reload_failing(what.as_str(), on);
                }
            };
            match outcome {
                // The version in force is on disk again: nothing is failing.
                None if fp == applied => {
                    failed = None;
                    failing(false);
                }
                None => {}
                Some(Ok(summary)) => {
                    applied = fp;
                    failed = None;
                    failing(false);
                    tracing::info!(file = what.as_str(), "reloaded: {summary}");
                }
                Some(Err(e)) => {
                    failed = Some(fp);
                    failing(true);
                    if let Some(m) = &metrics {
                        m.record_reload_error(what.as_str());
                    }
                    tracing::error!(
                        file = what.as_str(),
                        error = %e,
                        "reload refused; the previous version stays in use"
                    );
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_contents_and_reads_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        std::fs::write(&a, b"one").expect("write");
        let (c1, f1) = read_all(std::slice::from_ref(&a), 16);
        assert_eq!(c1, Ok(vec![b"one".to_vec()]));
        std::fs::write(&a, b"two").expect("write");
        let (_, f2) = read_all(std::slice::from_ref(&a), 16);
        assert_ne!(f1, f2);
        std::fs::write(&a, vec![b'x'; 17]).expect("write");
        assert!(read_all(std::slice::from_ref(&a), 16).0.is_err());
        let missing = dir.path().join("missing");
        let (r, _) = read_all(&[missing], 16);
        assert!(r.is_err_and(|e| e.contains("cannot open")));
    }
}
