//! The request-head guard: every request head on a connection is read and checked here,
//! before hyper sees it, so that a head hyper's parser would refuse (with a bare status
//! and an empty body) gets the API's JSON error instead.
//!
//! Why in front of hyper: hyper answers its own parse errors (400 bad request line, bad
//! `Content-Length`, NUL in the path; 414; 431) by writing a response head itself, and
//! offers no hook to change it. Rewriting its output would mean parsing the response stream
//! (whose framing depends on every earlier response). Reading the requests is the simpler
//! side: [`HeadGuard`] wraps the connection's IO, holds each head back until it is complete,
//! checks it with the same parser hyper uses (`httparse`) and the same follow-up checks
//! (method, URI, header names, `Content-Length` and `Transfer-Encoding`), under limits
//! tighter than hyper's (so hyper never refuses a head itself), and passes accepted heads
//! and their bodies through unchanged. To find where the next head starts it follows each
//! body's framing (a length, or chunked encoding).
//!
//! A refused head never reaches hyper. In its place the guard hands hyper a fixed, valid
//! stand-in request, after everything accepted before it, and records its number on the
//! connection; [`ConnService`] counts the requests hyper dispatches and marks that one with
//! the refusal, which [`answer_refused`] (a layer in the router, so metrics and logs see it)
//! answers with the JSON error and `Connection: close`. Hyper so keeps its own ordering of
//! pipelined responses. When hyper then shuts the connection down, the guard lingers briefly,
//! reading (and dropping) what the client still sends, so that closing does not reset the
//! connection before the client has read the answer.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::error::ApiError;

/// Longest request target (path and query), in bytes; longer gets 414.
pub const MAX_URI_BYTES: usize = 8 << 10;
/// Largest request head (request line and headers), in bytes; larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// Most header fields in a request; more gets 431. Hyper is set to the same.
pub const MAX_HEADERS: usize = 100;
/// After a refusal, at most this much more of the request is read and dropped ...
const LINGER_BYTES: u64 = 4 << 20;
/// ... for at most this long.
const LINGER: Duration = Duration::from_secs(2);

/// An IO wrapper that checks request heads before hyper parses them (see the module
/// documentation).
pub struct HeadGuard<T> {
    inner: T,
    framing: Framing,
    /// Bytes of the head being received, held back from hyper.
    held: Vec<u8>,
    /// Checked bytes not yet handed to hyper.
    released: Vec<u8>,
    released_pos: usize,
    /// Heads handed to hyper so far.
    heads: u64,
    refusal: Arc<RefusalSlot>,
    /// After a refusal: the lingering close.
    linger: Option<Linger>,
}

/// The refused head of a connection: the number of its stand-in request, and why.
#[derive(Debug, Default)]
pub struct RefusalSlot(Mutex<Option<(u64, RefusedHead)>>);

/// The request hyper gets in place of a refused head.
const STAND_IN: &[u8] = b"GET /.refused-request HTTP/1.1\r\nhost: minidb\r\n\r\n";

/// Where the reader is in the request stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Receiving a head.
    Head,
    /// Inside a body of known length: bytes left.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunked),
    /// Framing lost (a malformed chunked body hyper will refuse): pass everything.
    Passthrough,
    /// A head was refused: nothing more goes to hyper.
    Refused,
}

/// Reading and dropping after a refusal, bounded in bytes and time.
struct Linger {
    shut: bool,
    drained: u64,
    timer: Pin<Box<Sleep>>,
}

impl<T> HeadGuard<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        HeadGuard {
            inner,
            framing: Framing::Head,
            held: Vec::new(),
            released: Vec::new(),
            released_pos: 0,
            heads: 0,
            refusal: Arc::default(),
            linger: None,
        }
    }

    /// Where the connection's refusal is recorded, for its [`ConnService`].
    pub fn refusal(&self) -> Arc<RefusalSlot> {
        self.refusal.clone()
    }

    /// Runs the framing over `data` (bytes from the client, in order): body bytes and
    /// accepted heads are released to hyper, a head in progress is held, and after a
    /// refused head the rest is dropped.
    fn feed(&mut self, data: &[u8]) {
        let mut pos = 0;
        while pos < data.len() {
            if self.framing == Framing::Refused {
                return;
            }
            if self.framing != Framing::Head {
                let n = self.advance_body(&data[pos..]);
                self.released.extend_from_slice(&data[pos..pos + n]);
                pos += n;
                continue;
            }
            let old = self.held.len();
            // The blank line that ends the head may straddle two reads.
            let from = old.saturating_sub(3);
            self.held.extend_from_slice(&data[pos..]);
            let Some(end) = head_end(&self.held, from) else {
                if let Some(r) = too_big(&self.held) {
                    self.refuse(r);
                }
                return;
            };
            self.held.truncate(end);
            pos += end - old;
            match check_head(&self.held) {
                Ok(next) => {
                    self.released.append(&mut self.held);
                    self.heads += 1;
                    self.framing = next;
                }
                Err(r) => {
                    self.refuse(r);
                    return;
                }
            }
        }
    }

    /// Follows the current body's framing over `data`; returns how many bytes belong to
    /// the body (the rest starts the next head).
    fn advance_body(&mut self, data: &[u8]) -> usize {
        match &mut self.framing {
            Framing::Body(left) => {
                let n = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                if *left == 0 {
                    self.framing = Framing::Head;
                }
                n
            }
            Framing::Chunked(c) => {
                let n = c.advance(data);
                match c.state {
                    ChunkState::Done => self.framing = Framing::Head,
                    ChunkState::Bad => self.framing = Framing::Passthrough,
                    _ => {}
                }
                n
            }
            Framing::Passthrough => data.len(),
            Framing::Head | Framing::Refused => 0,
        }
    }

    fn refuse(&mut self, r: RefusedHead) {
        tracing::debug!(status = r.status.as_u16(), reason = %r.message, "request head refused");
        self.framing = Framing::Refused;
        self.held = Vec::new();
        self.heads += 1;
        *self.refusal.0.lock() = Some((self.heads, r));
        self.released.extend_from_slice(STAND_IN);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.released_pos < this.released.len() {
                let n = out.remaining().min(this.released.len() - this.released_pos);
                out.put_slice(&this.released[this.released_pos..this.released_pos + n]);
                this.released_pos += n;
                if this.released_pos == this.released.len() {
                    this.released.clear();
                    this.released_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.framing {
                // Nothing more for hyper: it answers the stand-in and closes.
                Framing::Refused => return Poll::Pending,
                Framing::Head => {
                    let mut tmp = [0u8; 4096];
                    let mut buf = ReadBuf::new(&mut tmp);
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf))?;
                    if buf.filled().is_empty() {
                        // End of stream: a partial head is dropped, as hyper would.
                        this.held.clear();
                        return Poll::Ready(Ok(()));
                    }
                    this.feed(buf.filled());
                }
                // Bodies go straight into hyper's buffer; only what follows the body's end
                // is taken back out.
                Framing::Body(_) | Framing::Chunked(_) | Framing::Passthrough => {
                    let before = out.filled().len();
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                    let filled = out.filled().len();
                    if filled == before {
                        return Poll::Ready(Ok(()));
                    }
                    let n = this.advance_body(&out.filled()[before..]);
                    if before + n < filled {
                        let rest = out.filled()[before + n..].to_vec();
                        out.set_filled(before + n);
                        this.feed(&rest);
                    }
                    if n > 0 {
                        return Poll::Ready(Ok(()));
                    }
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// After a refusal, a lingering close: shut the write side, then read and drop what
    /// the client still sends (bounded), so that closing with unread data does not reset
    /// the connection before the client has read the answer.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.framing != Framing::Refused {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        let l = this.linger.get_or_insert_with(|| Linger {
            shut: false,
            drained: 0,
            timer: Box::pin(tokio::time::sleep(LINGER)),
        });
        if !l.shut {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            l.shut = true;
        }
        let mut tmp = [0u8; 4096];
        loop {
            if l.drained > LINGER_BYTES || l.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut tmp);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    l.drained += buf.filled().len() as u64;
                }
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Hyper's service for one connection: marks the stand-in of a refused head (by its number)
/// with the refusal, for [`answer_refused`].
pub struct ConnService<S> {
    inner: S,
    calls: std::sync::atomic::AtomicU64,
    refusal: Arc<RefusalSlot>,
}

impl<S> ConnService<S> {
    /// Wraps the connection's service; `refusal` comes from its [`HeadGuard`].
    pub fn new(inner: S, refusal: Arc<RefusalSlot>) -> Self {
        ConnService {
            inner,
            calls: std::sync::atomic::AtomicU64::new(0),
            refusal,
        }
    }
}

impl<S, B> hyper::service::Service<axum::http::Request<B>> for ConnService<S>
where
    S: hyper::service::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, mut req: axum::http::Request<B>) -> S::Future {
        // Hyper dispatches a connection's requests one at a time, in order.
        let n = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some((at, r)) = &*self.refusal.0.lock() {
            if *at == n {
                req.extensions_mut().insert(r.clone());
            }
        }
        self.inner.call(req)
    }
}

/// Answers a refused head's stand-in request (see the module documentation).
pub async fn answer_refused(req: Request, next: Next) -> Response {
    match req.extensions().get::<RefusedHead>() {
        Some(r) => r.clone().into_response(),
        None => next.run(req).await,
    }
}

/// Index just past the blank line ending a head in `buf`, searching from `from`. Like
/// httparse, a bare `\n` ends a line too.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let next = i + 1;
            if buf.get(next) == Some(&b'\n') {
                return Some(next + 1);
            }
            if buf.get(next) == Some(&b'\r') && buf.get(next + 1) == Some(&b'\n') {
                return Some(next + 2);
            }
        }
        i += 1;
    }
    None
}

/// The refusal for an unfinished head that is already over a limit.
fn too_big(held: &[u8]) -> Option<RefusedHead> {
    // Leading blank lines are allowed before the request line; skip them.
    let start = held
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(held.len());
    let line = &held[start..];
    let line_len = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    if line_len > MAX_URI_BYTES + 64 {
        return Some(RefusedHead::uri_too_long());
    }
    (held.len() > MAX_HEAD_BYTES).then(RefusedHead::head_too_large)
}

/// Checks a complete head as hyper would parse it; returns the framing of its body.
fn check_head(head: &[u8]) -> Result<Framing, RefusedHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(RefusedHead::bad("the request head is incomplete".into()))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(RefusedHead::too_many_headers()),
        Err(httparse::Error::Token) if req.method.is_some() => {
            return Err(RefusedHead::bad(
                "the request target has a character not allowed in a URI".into(),
            ))
        }
        Err(e) => return Err(RefusedHead::bad(format!("malformed request head ({e})"))),
    }
    let path = req.path.unwrap_or("");
    if path.len() > MAX_URI_BYTES {
        return Err(RefusedHead::uri_too_long());
    }
    if head.len() > MAX_HEAD_BYTES {
        return Err(RefusedHead::head_too_large());
    }
    if Method::from_bytes(req.method.unwrap_or("").as_bytes()).is_err() {
        return Err(RefusedHead::bad("invalid method".into()));
    }
    if path.parse::<Uri>().is_err() {
        return Err(RefusedHead::bad("invalid request target".into()));
    }
    let http11 = req.version == Some(1);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in req.headers.iter() {
        if HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            return Err(RefusedHead::bad("invalid header name".into()));
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(RefusedHead::bad(
                    "Transfer-Encoding is not allowed in HTTP/1.0".into(),
                ));
            }
            // Only the last coding of the last field counts, as in hyper.
            let last = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim);
            chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case("chunked")));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Some(n) = digits(h.value) else {
                return Err(RefusedHead::bad(format!(
                    "invalid Content-Length {}",
                    crate::store::error::preview(&String::from_utf8_lossy(h.value))
                )));
            };
            if length.is_some_and(|prev| prev != n) {
                return Err(RefusedHead::bad(
                    "several Content-Length fields with different values".into(),
                ));
            }
            length = Some(n);
        }
    }
    match (chunked, length) {
        (Some(false), _) => Err(RefusedHead::bad(
            "Transfer-Encoding must end with chunked".into(),
        )),
        (Some(true), _) => Ok(Framing::Chunked(Chunked::default())),
        (None, Some(n)) if n > 0 => Ok(Framing::Body(n)),
        (None, _) => Ok(Framing::Head),
    }
}

/// A `Content-Length` value: ASCII digits only, no sign, within u64 (as hyper reads it).
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| match b {
        b'0'..=b'9' => acc.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// A refused head: its status and message.
#[derive(Debug, Clone)]
pub struct RefusedHead {
    status: StatusCode,
    message: String,
}

impl IntoResponse for RefusedHead {
    fn into_response(self) -> Response {
        let mut resp = ApiError::new(self.status, self.message).into_response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

impl RefusedHead {
    fn bad(message: String) -> Self {
        RefusedHead {
            status: StatusCode::BAD_REQUEST,
            message,
        }
    }

    fn uri_too_long() -> Self {
        RefusedHead {
            status: StatusCode::URI_TOO_LONG,
            message: format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        }
    }

    fn head_too_large() -> Self {
        RefusedHead {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!("the request head is larger than {MAX_HEAD_BYTES} bytes"),
        }
    }

    fn too_many_headers() -> Self {
        RefusedHead {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!("the request has more than {MAX_HEADERS} header fields"),
        }
    }
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    /// In a chunk-size line, `digits` hex digits read so far.
    #[default]
    Size,
    /// After the size: extensions, up to the end of the line.
    Ext,
    /// Inside chunk data.
    Data,
    /// After chunk data: its line end.
    DataEnd,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// The body ended.
    Done,
    /// Not chunked encoding: framing is lost.
    Bad,
}

/// Follows chunked encoding (RFC 9112 section 7.1) to find the end of a body, leniently
/// about line ends (a bare `\n` is accepted); what it calls bad, hyper refuses too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Chunked {
    state: ChunkState,
    size: u64,
    digits: u32,
}

impl Chunked {
    /// Consumes bytes of `data` up to the end of the body (or all of it).
    fn advance(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                ChunkState::Done | ChunkState::Bad => return i,
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.digits += 1;
                        match self.size.checked_mul(16) {
                            Some(v) if self.digits <= 16 => self.size = v + u64::from(d),
                            _ => self.state = ChunkState::Bad,
                        }
                    }
                    b'\n' => self.end_of_size_line(),
                    _ if self.digits == 0 => self.state = ChunkState::Bad,
                    _ => self.state = ChunkState::Ext,
                },
                ChunkState::Ext => {
                    if b == b'\n' {
                        self.end_of_size_line();
                    }
                }
                ChunkState::Data => {
                    let n = (data.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                    continue;
                }
                ChunkState::DataEnd => match b {
                    b'\r' => {}
                    b'\n' => {
                        self.state = ChunkState::Size;
                        self.digits = 0;
                    }
                    _ => self.state = ChunkState::Bad,
                },
                ChunkState::TrailerStart => match b {
                    b'\r' => {}
                    b'\n' => self.state = ChunkState::Done,
                    _ => self.state = ChunkState::Trailer,
                },
                ChunkState::Trailer => {
                    if b == b'\n' {
                        self.state = ChunkState::TrailerStart;
                    }
                }
            }
            i += 1;
        }
        i
    }

    fn end_of_size_line(&mut self) {
        self.state = match (self.digits, self.size) {
            (0, _) => ChunkState::Bad,
            (_, 0) => ChunkState::TrailerStart,
            _ => ChunkState::Data,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `input` in pieces cut at `cuts`; returns what is released and the refusal.
    fn run(input: &[u8], cuts: &[usize]) -> (Vec<u8>, u64, Option<(u64, RefusedHead)>) {
        let mut g = HeadGuard::new(());
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([input.len()]) {
            g.feed(&input[at..c.max(at)]);
            at = c.max(at);
        }
        let refusal = g.refusal.0.lock().clone();
        (g.released, g.heads, refusal)
    }

    const PIPELINE: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
        POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        3\r\nabc\r\nA;x=\"y\"\r\n0123456789\r\n0\r\nT: 1\r\n\r\n\
        \r\nGET /d HTTP/1.0\n\n";

    #[test]
    fn accepted_requests_pass_unchanged_however_they_are_split() {
        let (out, heads, refusal) = run(PIPELINE, &[]);
        assert_eq!(out, PIPELINE);
        assert_eq!(heads, 4);
        assert!(refusal.is_none());
        for cut in 0..PIPELINE.len() {
            let (out, heads, _) = run(PIPELINE, &[cut]);
            assert_eq!((out.as_slice(), heads), (PIPELINE, 4), "cut at {cut}");
        }
    }

    #[test]
    fn a_refused_head_becomes_the_stand_in_after_the_accepted_ones() {
        let mut input = PIPELINE.to_vec();
        input.extend_from_slice(b"GET /\0 HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
        let (out, heads, refusal) = run(&input, &[]);
        let mut want = PIPELINE.to_vec();
        want.extend_from_slice(STAND_IN);
        assert_eq!(out, want);
        assert_eq!(heads, 5);
        let (at, r) = refusal.expect("refused");
        assert_eq!((at, r.status), (5, StatusCode::BAD_REQUEST));
    }

    #[test]
    fn limits_and_framing_checks() {
        let status = |head: &[u8]| check_head(head).err().map(|r| r.status.as_u16());
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(status(b"GET /\x7f HTTP/1.1\r\n\r\n"), Some(400));
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status(b"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Some(400)
        );
        assert_eq!(
            check_head(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").ok(),
            Some(Framing::Head)
        );
        let uri = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_URI_BYTES));
        assert_eq!(status(uri.as_bytes()), Some(414));
        assert!(too_big(&vec![b'a'; MAX_URI_BYTES + 100])
            .is_some_and(|r| r.status == StatusCode::URI_TOO_LONG));
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b"X: y\r\n".as_slice(), MAX_HEAD_BYTES / 6 + 1).flatten());
        assert!(
            too_big(&big).is_some_and(|r| r.status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let mut c = Chunked::default();
        let body = b"4\r\nwxyz\r\n0\r\n\r\nNEXT";
        assert_eq!(c.advance(body), body.len() - 4);
        assert_eq!(c.state, ChunkState::Done);
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"4\r\nwxyzQ",
            b"11111111111111111\r\n",
        ] {
            let mut c = Chunked::default();
            c.advance(bad);
            assert_eq!(
                c.state,
                ChunkState::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn any_split_of_any_input_never_panics(
            input in prop::collection::vec(prop::sample::select(
                b"GET POST / HTTP/1.1\r\n:Content-Length: 3Transfer-Encoding chunked0a\0".to_vec()), 0..300),
            cuts in prop::collection::vec(any::<usize>(), 0..6),
        ) {
            let (out, heads, refusal) = run(&input, &cuts);
            // Released bytes are always a prefix of the input, then perhaps the stand-in.
            match refusal {
                None => prop_assert!(input.starts_with(&out)),
                Some((at, _)) => {
                    prop_assert_eq!(at, heads);
                    prop_assert!(out.ends_with(STAND_IN));
                    prop_assert!(input.starts_with(&out[..out.len() - STAND_IN.len()]));
                }
            }
        }

        #[test]
        fn pipelines_survive_any_split(cuts in prop::collection::vec(any::<usize>(), 0..8)) {
            let (out, heads, refusal) = run(PIPELINE, &cuts);
            prop_assert_eq!(out.as_slice(), PIPELINE);
            prop_assert_eq!(heads, 4);
            prop_assert!(refusal.is_none());
        }
    }
}
