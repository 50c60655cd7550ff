//! The request-memory budget: what requests hold in memory besides the engine's own
//! memtables and cache, bounded by one semaphore of `limit / 4` (in KiB permits).
//!
//! * A request body holds [`BODY_FACTOR`] × its length while it is read, parsed and
//!   encoded (before the engine's own memory check can refuse the write).
//! * A read holds what it brings into memory: a GET about [`GET_FACTOR`] × the document
//!   (the block read from disk and its decoded copy), a search [`SEARCH_FACTOR`] × its
//!   largest document (the one being sent, the next one read, one block per level of the
//!   tree) plus its chunk buffers. A read does not know a document's size before reading
//!   it, so it reserves by the collection's size hint (the largest document read or
//!   written lately; for a collection not seen since start, the body limit), then adjusts
//!   to the real size: surplus is released; a shortfall it cannot cover answers 503 (GET)
//!   or waits (a search that is streaming).
//!
//! A request waits its turn for up to [`READ_WAIT`] (in order, so large requests are not
//! starved by a stream of small ones); past that it gets 503 with `Retry-After` (reason
//! `memory`). A request larger than the whole budget takes all of it and runs alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// A request body's footprint, in multiples of its length (bytes, parsed JSON, encoding).
pub const BODY_FACTOR: u64 = 4;
/// A GET's footprint while it reads, in multiples of the document (the block read from
/// disk and its decoded copy); while the answer is sent it holds the document once.
pub const GET_FACTOR: u64 = 2;
/// A PATCH's footprint, in multiples of the document (read, parsed, copied, encoded).
pub const PATCH_FACTOR: u64 = 4;
/// A search's footprint, in multiples of its largest document (measured with 8 MiB
/// documents in a two-level tree: about five documents at once).
pub const SEARCH_FACTOR: u64 = 5;
/// The least a search reserves: two chunk buffers.
pub const SEARCH_FLOOR: u64 = 2 * super::search::CHUNK_BYTES as u64;
/// How long a request waits for budget before it is refused.
pub const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Collections whose size hint is remembered; beyond, hints start over.
const MAX_HINTS: usize = 10_000;

/// The budget and the per-collection document size hints.
#[derive(Debug)]
pub struct RequestMemory {
    sem: Arc<Semaphore>,
    capacity_kib: u32,
    /// The size assumed for a collection not read yet.
    default_hint: u64,
    hints: Mutex<HashMap<String, u64>>,
}

/// The budget's size for a memory limit: a quarter (at least 4 MiB).
pub fn budget_kib(memory_limit: u64) -> u32 {
    u32::try_from((memory_limit / 4 / 1024).max(4096)).unwrap_or(u32::MAX)
}

impl RequestMemory {
    /// A budget of [`budget_kib`]`(memory_limit)`; unknown collections are assumed to hold
    /// documents of `default_doc_bytes` (the body limit).
    pub fn new(memory_limit: u64, default_doc_bytes: u64) -> Self {
        let capacity_kib = budget_kib(memory_limit);
        RequestMemory {
            sem: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
            default_hint: default_doc_bytes,
            hints: Mutex::new(HashMap::new()),
        }
    }

    /// The budget in KiB.
    pub fn capacity_kib(&self) -> u32 {
        self.capacity_kib
    }

    /// KiB reserved now.
    pub fn used_kib(&self) -> u32 {
        self.capacity_kib
            .saturating_sub(u32::try_from(self.sem.available_permits()).unwrap_or(u32::MAX))
    }

    fn kib(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_kib)
    }

    /// Reserves `bytes` (clamped to the whole budget) at once, or `None`.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let kib = self.kib(bytes);
        let permit = self.sem.clone().try_acquire_many_owned(kib).ok()?;
        Some(Reservation {
            permit,
            sem: self.sem.clone(),
        })
    }

    /// Resizes `r` to `bytes` (clamped): shrinks at once; grows only if the budget has
    /// room now. `false` when it could not grow.
    pub fn try_resize(&self, r: &mut Reservation, bytes: u64) -> bool {
        let want = self.kib(bytes);
        let have = r.kib();
        if want <= have {
            if want < have {
                drop(r.permit.split((have - want) as usize));
            }
            return true;
        }
        match self.sem.clone().try_acquire_many_owned(want - have) {
            Ok(more) => {
                r.permit.merge(more);
                true
            }
            Err(_) => false,
        }
    }

    /// The size assumed for `col`'s next document read, if `col` was seen.
    pub fn hint(&self, col: &str) -> Option<u64> {
        self.hints.lock().get(col).copied()
    }

    /// Reserves `factor` × the size hint of `col` (plus `floor`) for a read, waiting up to
    /// [`READ_WAIT`] for room. Waiters are served in order, so a large read is not starved
    /// by a stream of small ones; past the wait it is refused (503). For a collection not
    /// seen yet (written or read since start) the hint is the body limit: after a restart,
    /// the first reads of each collection queue, then the size is learnt.
    ///
    /// A request that already holds budget for its body passes it as `held`: it is grown
    /// (the body is parsed by now), so the request never waits for its own share.
    pub async fn reserve_read(
        &self,
        held: Option<Reservation>,
        col: &str,
        factor: u64,
        floor: u64,
        what: &str,
    ) -> Result<Reservation, ApiError> {
        let hint = self.hint(col).unwrap_or(self.default_hint);
        let bytes = factor.saturating_mul(hint).saturating_add(floor);
        match held {
            None => self.reserve(bytes, what).await,
            Some(mut r) => match tokio::time::timeout(READ_WAIT, r.grow_to(self, bytes)).await {
                Ok(()) => Ok(r),
                Err(_) => Err(over_budget(what)),
            },
        }
    }

    /// Reserves `bytes` (clamped to the whole budget), waiting up to [`READ_WAIT`] for
    /// room (in order), else 503.
    pub async fn reserve(&self, bytes: u64, what: &str) -> Result<Reservation, ApiError> {
        let acquire = self.sem.clone().acquire_many_owned(self.kib(bytes));
        match tokio::time::timeout(READ_WAIT, acquire).await {
            Ok(Ok(permit)) => Ok(Reservation {
                permit,
                sem: self.sem.clone(),
            }),
            _ => Err(over_budget(what)),
        }
    }

    /// Learns from a document of `len` bytes read or written in `col`: the hint follows the
    /// largest documents, and decays slowly (1/64 per document) when only smaller ones come.
    pub fn observe(&self, col: &str, len: u64) {
        let mut hints = self.hints.lock();
        if let Some(h) = hints.get_mut(col) {
            *h = len.max(*h - *h / 64);
            return;
        }
        if hints.len() >= MAX_HINTS {
            hints.clear();
        }
        hints.insert(col.to_owned(), len);
    }
}

/// Budget held by one request; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    sem: Arc<Semaphore>,
}

impl Reservation {
    fn kib(&self) -> u32 {
        u32::try_from(self.permit.num_permits()).unwrap_or(u32::MAX)
    }

    /// Grows to `bytes` (clamped to `mem`'s budget), waiting for room.
    pub async fn grow_to(&mut self, mem: &RequestMemory, bytes: u64) {
        let want = mem.kib(bytes);
        let have = self.kib();
        if want > have {
            if let Ok(more) = self.sem.clone().acquire_many_owned(want - have).await {
                self.permit.merge(more);
            }
        }
    }
}

/// The 503 for a request over the budget.
pub fn over_budget(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what} would take the server over its memory budget; retry later"),
    )
    .with_retry_after(1)
    .rejected("memory")
}

/// The body's reservation, put in the request's extensions by the admission layer, for
/// handlers that turn it into their read reservation ([`RequestMemory::reserve_read`]).
#[derive(Clone, Default)]
pub struct BodyReservation(Arc<Mutex<Option<Reservation>>>);

impl BodyReservation {
    /// Holds `r` for the request.
    pub fn new(r: Option<Reservation>) -> Self {
        BodyReservation(Arc::new(Mutex::new(r)))
    }

    /// Takes the reservation (the handler now owns it).
    pub fn take(&self) -> Option<Reservation> {
        self.0.lock().take()
    }
}

/// A response body that keeps its reservation until it has been sent (or dropped).
pub struct Held<B> {
    body: B,
    _reservation: Reservation,
}

impl<B> Held<B> {
    /// `body`, holding `reservation`.
    pub fn new(body: B, reservation: Reservation) -> Self {
        Held {
            body,
            _reservation: reservation,
        }
    }
}

impl<B: axum::body::HttpBody + Unpin> axum::body::HttpBody for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_quarter_of_the_limit_with_a_floor() {
        assert_eq!(budget_kib(512 << 20), 128 << 10);
        assert_eq!(budget_kib(64 << 20), 16 << 10);
        assert_eq!(budget_kib(1 << 20), 4 << 10);
    }

    #[test]
    fn reservations_clamp_resize_and_release() {
        let m = RequestMemory::new(64 << 20, 10 << 20);
        let all = m.capacity_kib();
        let mut a = m.try_reserve(1 << 40).expect("clamped to the budget");
        assert_eq!(m.used_kib(), all);
        assert!(m.try_reserve(1).is_none(), "nothing left");
        assert!(m.try_resize(&mut a, 1 << 20));
        assert_eq!(m.used_kib(), 1024);
        let b = m.try_reserve(10 << 20).expect("room again");
        assert!(
            !m.try_resize(&mut a, 8 << 20),
            "cannot grow past the budget"
        );
        drop(b);
        assert!(m.try_resize(&mut a, 8 << 20));
        assert_eq!(m.used_kib(), 8 << 10);
        drop(a);
        assert_eq!(m.used_kib(), 0);
    }

    #[test]
    fn hints_follow_large_documents_and_decay() {
        let m = RequestMemory::new(64 << 20, 10 << 20);
        assert_eq!(m.hint("c"), None);
        m.observe("c", 1000);
        assert_eq!(m.hint("c"), Some(1000));
        m.observe("c", 8 << 20);
        assert_eq!(m.hint("c"), Some(8 << 20));
        for _ in 0..1000 {
            m.observe("c", 1000);
        }
        assert_eq!(m.hint("c"), Some(1000));
    }
}
