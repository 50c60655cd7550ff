//! The space reserve: a preallocated `RESERVE` file released when the disk fills, so that a
//! flush and a manifest edit can still finish and free memory, and taken again once there
//! is room.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::error::Result;
use super::storage::Storage;
use super::Inner;

/// The reserve's file name in the data directory.
pub(crate) const RESERVE: &str = "RESERVE";

impl Inner {
    /// Bytes the reserve holds now.
    pub(super) fn reserve_held(&self) -> u64 {
        self.reserve_held.load(Ordering::SeqCst)
    }

    /// Takes the reserve if it is not held and the disk has room for it twice over.
    /// Best effort: a failure only means there is no reserve for now.
    pub(super) fn ensure_reserve(&self) {
        let want = self.opts.reserve_bytes;
        if want == 0 || self.reserve_held() >= want {
            return;
        }
        let path = self.dir.join(RESERVE);
        if let Ok(f) = self.fs.open(&path, false) {
            if f.size().is_ok_and(|l| l >= want) {
                self.reserve_held.store(want, Ordering::SeqCst);
                return;
            }
        }
        if let Ok(Some(avail)) = self.fs.available_bytes(&self.dir) {
            if avail < want.saturating_mul(2) {
                return;
            }
        }
        let made = (|| -> std::io::Result<()> {
            let f = match self.fs.create_new(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    self.fs.open(&path, true)?
                }
                Err(e) => return Err(e),
            };
            f.allocate(want)?;
            f.sync_data()?;
            self.fs.sync_dir(&self.dir)
        })();
        match made {
            Ok(()) => {
                self.reserve_held.store(want, Ordering::SeqCst);
                tracing::info!(bytes = want, "space reserve taken");
            }
            Err(e) => {
                let _ = self.fs.remove_file(&path);
                tracing::warn!(error = %e, bytes = want, "could not take the space reserve");
            }
        }
    }

    /// Gives the reserve's space back to the file system; false when none was held.
    pub(super) fn release_reserve(&self) -> bool {
        if self.reserve_held.swap(0, Ordering::SeqCst) == 0 {
            return false;
        }
        release_reserve_file(&*self.fs, &self.dir)
    }

    /// Runs `f`; on a full disk, releases the reserve (if held) and runs it once more.
    pub(super) fn with_reserve<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        match f() {
            Err(e) if e.is_no_space() && self.release_reserve() => f(),
            r => r,
        }
    }
}

/// Removes the `RESERVE` file of `dir`, if there is one; true when space was given back.
pub(super) fn release_reserve_file(fs: &dyn Storage, dir: &Path) -> bool {
    let path = dir.join(RESERVE);
    match fs.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => {
            tracing::warn!(error = %e, "could not release the space reserve");
            return false;
        }
    }
    // Not durable until the directory is synced, but the space is free at once.
    let _ = fs.sync_dir(dir);
    tracing::warn!("disk full: released the space reserve so flushes can finish");
    true
}
