//! Request spans reach a real OTLP/gRPC receiver (fake-opentelemetry-collector) with their
//! names, attributes, and the W3C parent from `traceparent`.
#![cfg(feature = "server")]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use minidb::telemetry::{Telemetry, TelemetryConfig};
use tower::Service;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn clear_otel_env() {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            std::env::remove_var(k);
        }
    }
}

fn attr<'a>(s: &'a ExportedSpan, key: &str) -> &'a str {
    s.attributes.get(key).map(String::as_str).unwrap_or("")
}

async fn send(app: &mut Router, req: Request<Body>) -> StatusCode {
    match app.call(req).await {
        Ok(r) => r.status(),
        Err(e) => match e {},
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_arrive_with_route_method_status_and_parent() {
    clear_otel_env();
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let telemetry = Telemetry::init(TelemetryConfig {
        otlp_endpoint: Some(collector.endpoint()),
        otlp_protocol: Some("grpc".into()),
        memory_limit_bytes: Some(256 << 20),
        ..TelemetryConfig::default()
    })
    .expect("telemetry");

    let mut app = Router::new()
        .route(
            "/api/{col}/{id}",
            get(|| async {
                // A child span, as the store and engine layers create.
                let _s = tracing::info_span!("store.get").entered();
                tracing::info!("reading");
                "doc"
            }),
        )
        .route("/boom", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .merge(telemetry.metrics_router())
        .layer(telemetry.http_layer());

    let req = Request::get("/api/users/42")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&mut app, req).await, StatusCode::OK);
    let req = Request::get("/boom").body(Body::empty()).expect("request");
    assert_eq!(send(&mut app, req).await, StatusCode::INTERNAL_SERVER_ERROR);
    let req = Request::get("/no/such/path")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&mut app, req).await, StatusCode::NOT_FOUND);

    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.flush_traces())
        .await
        .expect("join")
        .expect("flush");
    let spans = collector.exported_spans(4, Duration::from_secs(20)).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    let get = spans
        .iter()
        .find(|s| s.name == "HTTP GET /api/{col}/{id}")
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    assert_eq!(get.trace_id, TRACE_ID, "traceparent honoured");
    assert_eq!(get.parent_span_id, PARENT_ID);
    assert_eq!(get.kind, "SPAN_KIND_SERVER");
    assert!(
        attr(get, "http.route").contains("\"/api/{col}/{id}\""),
        "{get:?}"
    );
    assert!(
        attr(get, "http.request.method").contains("\"GET\""),
        "{get:?}"
    );
    assert!(
        attr(get, "http.response.status_code").contains("IntValue(200)"),
        "{get:?}"
    );

    let child = spans
        .iter()
        .find(|s| s.name == "store.get")
        .unwrap_or_else(|| panic!("no child span in {names:?}"));
    assert_eq!(child.trace_id, TRACE_ID);
    assert_eq!(child.parent_span_id, get.span_id);

    let boom = spans
        .iter()
        .find(|s| s.name == "HTTP GET /boom")
        .unwrap_or_else(|| panic!("no /boom span in {names:?}"));
    assert!(attr(boom, "http.response.status_code").contains("500"));
    assert!(
        format!("{:?}", boom.status).contains("STATUS_CODE_ERROR"),
        "{boom:?}"
    );
    assert_ne!(boom.trace_id, TRACE_ID, "a new trace without traceparent");

    let unmatched = spans
        .iter()
        .find(|s| s.name == "HTTP GET unmatched")
        .unwrap_or_else(|| panic!("no unmatched span in {names:?}"));
    assert!(attr(unmatched, "http.route").contains("unmatched"));

    // The same requests in the metrics, by route template.
    let text = telemetry.metrics().render();
    for line in [
        "minidb_http_requests_total{method=\"GET\",route=\"/api/{col}/{id}\",status_class=\"2xx\"} 1",
        "minidb_http_requests_total{method=\"GET\",route=\"/boom\",status_class=\"5xx\"} 1",
        "minidb_http_requests_total{method=\"GET\",route=\"unmatched\",status_class=\"4xx\"} 1",
        "minidb_http_requests_in_flight 0",
        "minidb_otel_spans_dropped_total 0",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    assert!(
        !text.contains("/api/users/42"),
        "raw paths never become labels"
    );

    let req = Request::get("/metrics")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&mut app, req).await, StatusCode::OK);
    telemetry.shutdown();
    collector.abort();
}
