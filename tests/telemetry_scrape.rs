//! `/metrics` gathers on a blocking thread: on a runtime with one worker thread, a scrape
//! whose gather is held (here: the collection statistics source blocks) must not stop the
//! server from answering other requests, and the scrape completes once released.
#![cfg(feature = "server")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use minidb::config::Config;
use minidb::engine::{Engine, Options};
use minidb::server::{self, AppState};
use minidb::store::Store;
use minidb::telemetry::{Telemetry, TelemetryConfig};

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_held_scrape_leaves_the_only_runtime_worker_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let telemetry = Telemetry::init(TelemetryConfig {
        install_subscriber: false,
        memory_limit_bytes: Some(256 << 20),
        ..TelemetryConfig::default()
    })
    .expect("telemetry");
    let engine = Arc::new(Engine::open(dir.path().join("data"), Options::default()).expect("open"));
    telemetry.attach_engine(engine.clone());
    let store = Arc::new(Store::new(engine));

    // The gather blocks in the collection source until `release` sends (or is dropped, so
    // that a failing test does not leave the server stuck).
    let (release, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let entered = Arc::new(AtomicU64::new(0));
    let e = entered.clone();
    telemetry
        .metrics()
        .set_collection_docs_source(Box::new(move || {
            e.fetch_add(1, Ordering::SeqCst);
            if let Ok(rx) = held.lock() {
                let _ = rx.recv();
            }
            vec![("held".into(), 7)]
        }));

    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt.block_on(server::bind(&config)).expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let state = AppState::new(store, config, Some(telemetry));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        rt.block_on(server::serve(listener, state, async {
            let _ = stopped.await;
        }))
    });

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let c = client.clone();
    let url = format!("{base}/metrics");
    let scrape = std::thread::spawn(move || {
        let r = c.get(url).send().expect("scrape");
        (r.status().as_u16(), r.text().unwrap_or_default())
    });
    wait_for("the gather to start", || {
        entered.load(Ordering::SeqCst) == 1
    });

    // The gather is held; the worker must still serve (a gather on the worker would leave
    // this request unanswered until the client's timeout).
    let health = client
        .get(format!("{base}/api/health"))
        .send()
        .expect("health answered while a scrape is held");
    assert_eq!(health.status().as_u16(), 200);

    release.send(()).expect("release");
    let (status, text) = scrape.join().expect("scrape thread");
    assert_eq!(status, 200);
    assert!(
        text.contains("minidb_collection_documents{collection=\"held\"} 7"),
        "{text}"
    );
    drop(release);
    let _ = stop.send(());
    server.join().expect("server thread").expect("serve");
}
