//! The memory limit's resolution (with fake cgroup files) and the budget's hysteresis.
#![cfg(feature = "server")]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use minidb::engine::MemoryBudget;
use minidb::telemetry::memory::{
    plan, resolve_limit, resolve_limit_with_source, LimitSource, MemoryGovernor, MemoryStats,
    MemoryStatsCell, DEFAULT_LIMIT_BYTES,
};

const MIB: u64 = 1 << 20;

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).expect("mkdir");
    }
    fs::write(p, text).expect("write");
}

#[test]
fn configured_limit_wins() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "memory.max", "1073741824\n");
    assert_eq!(resolve_limit(Some(64 * MIB), d.path()), 64 * MIB);
    // 0 means "not set".
    assert_eq!(resolve_limit(Some(0), d.path()), 1073741824 / 100 * 80);
}

#[test]
fn cgroup_v2_limit_is_taken_at_80_percent() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "memory.max", "1000000000\n");
    assert_eq!(
        resolve_limit_with_source(None, d.path()),
        (800_000_000, LimitSource::CgroupV2)
    );
}

#[test]
fn cgroup_v2_max_means_no_limit() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "memory.max", "max\n");
    assert_eq!(
        resolve_limit_with_source(None, d.path()),
        (DEFAULT_LIMIT_BYTES, LimitSource::Default)
    );
}

#[test]
fn cgroup_v1_limit_and_its_unlimited_value() {
    let d = tempfile::tempdir().expect("tempdir");
    write(d.path(), "memory/memory.limit_in_bytes", "536870912\n");
    assert_eq!(
        resolve_limit_with_source(None, d.path()),
        (536870912 / 100 * 80, LimitSource::CgroupV1)
    );
    // v1 reports "unlimited" as i64::MAX rounded down to a page.
    write(
        d.path(),
        "memory/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    assert_eq!(resolve_limit(None, d.path()), DEFAULT_LIMIT_BYTES);
}

#[test]
fn no_cgroup_files_or_garbage_give_the_default() {
    let d = tempfile::tempdir().expect("tempdir");
    assert_eq!(resolve_limit(None, d.path()), 512 * MIB);
    write(d.path(), "memory.max", "lots\n");
    assert_eq!(resolve_limit(None, d.path()), 512 * MIB);
    assert_eq!(resolve_limit(None, &d.path().join("missing")), 512 * MIB);
}

fn at(cell: &MemoryStatsCell, active: u64) {
    cell.store(MemoryStats {
        allocated: active,
        active,
        resident: active,
        ..MemoryStats::default()
    });
}

#[test]
fn hysteresis_between_80_and_90_percent() {
    let cell = Arc::new(MemoryStatsCell::default());
    let g = MemoryGovernor::new(100 * MIB, cell.clone());
    assert_eq!(
        (g.high_watermark(), g.low_watermark()),
        (90 * MIB, 80 * MIB)
    );

    let steps = [
        (50, false),
        (85, false), // between the marks, coming from below: still fine
        (90, false), // at the high mark: not above it
        (91, true),  // above: over budget
        (85, true),  // between the marks, coming from above: still over
        (80, true),  // at the low mark: not below it
        (79, false), // below: fine again
        (89, false),
        (95, true),
        (10, false),
    ];
    for (pct, want) in steps {
        at(&cell, pct * MIB);
        assert_eq!(g.over_budget(), want, "at {pct}%");
        assert_eq!(g.is_over(), want);
    }
}

#[test]
fn budget_is_measured_on_active_bytes() {
    let cell = Arc::new(MemoryStatsCell::default());
    let g = MemoryGovernor::new(100 * MIB, cell.clone());
    // Lots of resident (dirty pages not yet returned) but little active: not over.
    cell.store(MemoryStats {
        allocated: 10 * MIB,
        active: 12 * MIB,
        resident: 99 * MIB,
        metadata: MIB,
        retained: 200 * MIB,
    });
    assert!(!g.over_budget());
    assert_eq!(g.usage(), 12 * MIB);
}

#[test]
fn plan_stays_inside_the_limit() {
    let p = plan(64 * MIB);
    assert!(p.memtables_total() + p.block_cache_bytes as u64 <= 64 * MIB * 6 / 10);
    assert_eq!(p.max_immutable_memtables, 3);
}
