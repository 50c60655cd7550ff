//! The baseline of `make bench-http`: axum on the same runtime shape as MiniDB (tokio
//! multi-thread, jemalloc), answering every request with an empty 200. Whatever MiniDB
//! does on top of this (routing, middleware, telemetry, JSON, storage) is the gap the
//! benchmark's "vs baseline" column shows.

use std::io::Write;

use axum::routing::{get, post};
use axum::Router;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let app = Router::new()
        .route("/", get(|| async {}))
        .route("/post", post(|| async {}));
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("bind");
    println!("listening on {}", listener.local_addr().expect("addr"));
    let _ = std::io::stdout().flush();
    axum::serve(listener, app).await.expect("serve");
}
