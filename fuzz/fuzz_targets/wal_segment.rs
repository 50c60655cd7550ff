//! Fuzz target: a WAL segment's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    minidb::engine::fuzzing::wal_segment(data);
});
