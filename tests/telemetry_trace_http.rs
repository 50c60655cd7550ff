//! OTLP over HTTP/protobuf: spans reach a real HTTP receiver through the blocking client
//! (which must not panic on the exporter's runtime-less thread), and spans are dropped and
//! counted once the receiver is gone.
#![cfg(feature = "server")]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::routing::{post, put};
use axum::Router;
use minidb::telemetry::{Telemetry, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tower::Service;

async fn send(app: &mut Router, req: Request<Body>) -> StatusCode {
    match app.call(req).await {
        Ok(r) => r.status(),
        Err(e) => match e {},
    }
}

fn span_names(bodies: &[Bytes]) -> Vec<String> {
    let mut names = Vec::new();
    for b in bodies {
        let req = ExportTraceServiceRequest::decode(b.as_ref()).expect("OTLP protobuf body");
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                names.extend(ss.spans.into_iter().map(|s| s.name));
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_and_dropped_spans() {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") {
            std::env::remove_var(k);
        }
    }
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = bodies.clone();
    let receiver = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().expect("lock").push(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let telemetry = Telemetry::init(TelemetryConfig {
        otlp_endpoint: Some(format!("http://{addr}")),
        otlp_protocol: Some("http/protobuf".into()),
        memory_limit_bytes: Some(256 << 20),
        ..TelemetryConfig::default()
    })
    .expect("telemetry");
    let mut app = Router::new()
        .route("/api/{col}/{id}", put(|| async { StatusCode::CREATED }))
        .layer(telemetry.http_layer());

    let req = Request::put("/api/users/1")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&mut app, req).await, StatusCode::CREATED);
    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.flush_traces())
        .await
        .expect("join")
        .expect("flush");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let names = span_names(&bodies.lock().expect("lock"));
        if names.iter().any(|n| n == "HTTP PUT /api/{col}/{id}") {
            break;
        }
        assert!(Instant::now() < deadline, "span not received: {names:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(telemetry.spans_dropped(), 0);

    // The collector goes away: requests still succeed at once, spans are counted as dropped.
    server.abort();
    let _ = server.await;
    let start = Instant::now();
    for i in 0..5 {
        let req = Request::put(format!("/api/users/{i}"))
            .body(Body::empty())
            .expect("req");
        assert_eq!(send(&mut app, req).await, StatusCode::CREATED);
    }
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "requests waited for the exporter"
    );
    let t = telemetry.clone();
    let _ = tokio::task::spawn_blocking(move || t.flush_traces()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while telemetry.spans_dropped() < 5 {
        assert!(
            Instant::now() < deadline,
            "dropped = {}",
            telemetry.spans_dropped()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(telemetry
        .metrics()
        .render()
        .contains("minidb_otel_spans_dropped_total 5"));
    let t = telemetry.clone();
    let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
}
