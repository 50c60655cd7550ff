//! Fuzz target: a data or index block.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    minidb::engine::fuzzing::block(data);
});
