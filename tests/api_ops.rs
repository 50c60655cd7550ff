//! Operations over the real binary: `/api/stats` fields, logs (JSON lines, redaction, the
//! access log).

mod api;

use api::*;
use serde_json::Value;

fn start(env: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = Server::start(&tmp.path().join("data"), env);
    (tmp, s)
}

/// MiniDBGo's web dashboard plots these; a missing or non-numeric one shows as NaN.
#[test]
fn stats_carries_minidbgo_fields_as_finite_numbers() {
    let (_tmp, s) = start(&[]);
    // The second call computes the CPU figures from a delta, the first from totals.
    for round in 0..2 {
        let st = json(s.get("/api/stats"));
        let num = |k: &str| -> f64 {
            let v = &st[k];
            assert!(v.is_number(), "round {round}: {k} is {v} in {st}");
            let f = v.as_f64().unwrap_or(f64::NAN);
            assert!(f.is_finite() && f >= 0.0, "round {round}: {k} = {f}");
            f
        };
        let int = |k: &str| -> u64 {
            let v = &st[k];
            v.as_u64()
                .unwrap_or_else(|| panic!("round {round}: {k} is {v}, not an integer: {st}"))
        };
        let cpu = num("system_cpu_percent");
        assert!(cpu <= 100.0, "system_cpu_percent {cpu}");
        assert!(int("go_num_goroutine") >= 1, "this request runs in a task");
        let _ = int("go_num_gc");
        let (inuse, alloc, also_alloc, sys) = (
            num("go_heap_inuse_mb"),
            num("go_heap_alloc_mb"),
            num("go_alloc_mb"),
            num("go_sys_mb"),
        );
        // jemalloc: allocated <= active <= resident, and a running server allocates.
        assert!(alloc > 0.0, "{st}");
        assert_eq!(alloc, also_alloc);
        assert!(alloc <= inuse && inuse <= sys, "{st}");
        num("process_cpu_percent");
        num("process_rss_mb");
    }
    let _: Value = json(s.get("/api/health"));
    s.stop();
}
