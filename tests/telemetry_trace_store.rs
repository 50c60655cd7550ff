//! With the real router, a request's store and engine spans arrive at an OTLP receiver as
//! children of the request span.
#![cfg(feature = "server")]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fake_opentelemetry_collector::FakeCollectorServer;
use minidb::engine::{Engine, Options};
use minidb::server::{router, AppState};
use minidb::telemetry::{Telemetry, TelemetryConfig};
use minidb::{Config, Store};
use tower::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_engine_spans_nest_under_the_request_span() {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            std::env::remove_var(k);
        }
    }
    let mut collector = FakeCollectorServer::start().await.expect("collector");
    let telemetry = Telemetry::init(TelemetryConfig {
        otlp_endpoint: Some(collector.endpoint()),
        otlp_protocol: Some("grpc".into()),
        memory_limit_bytes: Some(256 << 20),
        ..TelemetryConfig::default()
    })
    .expect("telemetry");
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Arc::new(Engine::open(dir.path(), Options::default()).expect("open"));
    let store = Arc::new(Store::new(engine));
    let mut app = router(AppState::new(
        store,
        Config::default(),
        Some(telemetry.clone()),
    ));

    let req = Request::post("/api/users")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"_id":"ada","name":"Ada"}"#))
        .expect("request");
    let status = match app.call(req).await {
        Ok(r) => r.status(),
        Err(e) => match e {},
    };
    assert_eq!(status, StatusCode::CREATED);

    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.flush_traces())
        .await
        .expect("join")
        .expect("flush");
    let spans = collector.exported_spans(3, Duration::from_secs(20)).await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in {names:?}"))
    };
    let request = spans
        .iter()
        .find(|s| s.name.contains("/api/{col}"))
        .unwrap_or_else(|| panic!("no request span in {names:?}"));
    let store_span = find("store.insert");
    let engine_span = find("engine.write");
    assert_eq!(store_span.trace_id, request.trace_id);
    assert_eq!(
        store_span.parent_span_id, request.span_id,
        "store under request"
    );
    assert_eq!(engine_span.trace_id, request.trace_id);
    assert_eq!(
        engine_span.parent_span_id, store_span.span_id,
        "engine under store"
    );
    assert!(
        store_span
            .attributes
            .get("collection")
            .is_some_and(|c| c.contains("users")),
        "collection attribute: {:?}",
        store_span.attributes
    );
}
