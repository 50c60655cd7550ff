//! Fuzz target: a whole table file (footer, index, filter, properties, data blocks).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    minidb::engine::fuzzing::table_file(data);
});
