//! The access log (one line per request, target `minidb::access`) and the request fields
//! (`route`, `method`, `status`) that every log line inside a request carries.
//!
//! The access line is written when the response body is dropped, that is once its last
//! byte went to the connection or the client went away, so `bytes` counts what was really
//! sent, streamed responses included. It names the route template (bounded) and the raw
//! path truncated to [`MAX_LOGGED_PATH`] bytes; it never logs headers or bodies.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};
use opentelemetry::trace::TraceContextExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The log target of access lines.
pub const ACCESS_TARGET: &str = "minidb::access";
/// The name of the request span (see `HttpService`).
pub const REQUEST_SPAN: &str = "HTTP request";
/// Raw paths longer than this (in bytes) are cut in the access log.
pub const MAX_LOGGED_PATH: usize = 256;

/// `path` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate_path(path: &str, max: usize) -> String {
    if path.len() <= max {
        return path.to_string();
    }
    let mut end = max;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// What the access line says about one request, known when the response head is ready.
#[derive(Debug)]
pub(crate) struct AccessRecord {
    pub(crate) span: tracing::Span,
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) path: String,
    pub(crate) status: u16,
    pub(crate) start: Instant,
}

impl AccessRecord {
    fn emit(&self, bytes: u64) {
        let duration_ms = (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        let cx = self.span.context();
        let sc = cx.span().span_context().clone();
        let trace_id = sc.is_valid().then(|| sc.trace_id().to_string());
        let _enter = self.span.enter();
        tracing::info!(
            target: ACCESS_TARGET,
            method = %self.method,
            route = %self.route,
            path = %self.path,
            status = self.status,
            duration_ms,
            bytes,
            trace_id = trace_id.as_deref(),
            "{} {} {}",
            self.method,
            self.path,
            self.status
        );
    }
}

/// A response body that counts the bytes sent and writes the access line when dropped.
#[derive(Debug)]
pub struct AccessBody<B> {
    inner: B,
    bytes: u64,
    record: Option<AccessRecord>,
}

impl<B> AccessBody<B> {
    /// Wraps `inner`; `record` is `None` when the access log is off.
    pub(crate) fn new(inner: B, record: Option<AccessRecord>) -> AccessBody<B> {
        AccessBody {
            inner,
            bytes: 0,
            record,
        }
    }
}

impl<B: Body + Unpin> Body for AccessBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.remaining() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for AccessBody<B> {
    fn drop(&mut self) {
        if let Some(r) = self.record.take() {
            r.emit(self.bytes);
        }
    }
}

/// The request span's route, method and (once known) status, kept in the span's
/// extensions by [`RequestFieldsLayer`] for the JSON formatter.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestFields {
    pub(crate) route: Option<String>,
    pub(crate) method: Option<String>,
    pub(crate) status: Option<u64>,
}

impl Visit for RequestFields {
    fn record_str(&mut self, f: &Field, v: &str) {
        self.set(f, v.to_string());
    }
    fn record_u64(&mut self, f: &Field, v: u64) {
        if f.name() == "http.response.status_code" {
            self.status = Some(v);
        }
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        if f.name() == "http.response.status_code" {
            self.status = u64::try_from(v).ok();
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        // `%value` fields arrive here as Display wrapped in Debug.
        self.set(f, format!("{v:?}"));
    }
}

impl RequestFields {
    fn set(&mut self, f: &Field, v: String) {
        match f.name() {
            "http.route" => self.route = Some(v),
            "http.request.method" => self.method = Some(v),
            _ => {}
        }
    }
}

/// Records [`RequestFields`] of every request span, so that each log line inside a request
/// (an ERROR from a handler included) names its route and method.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFieldsLayer;

impl<S> Layer<S> for RequestFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() != REQUEST_SPAN {
            return;
        }
        let mut fields = RequestFields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<RequestFields>() {
                values.record(fields);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_paths_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_path("/api/a", 10), "/api/a");
        let long = format!("/api/{}", "é".repeat(300));
        let cut = truncate_path(&long, MAX_LOGGED_PATH);
        assert!(
            cut.len() <= MAX_LOGGED_PATH + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(cut.ends_with('…') && cut.starts_with("/api/é"));
    }
}
