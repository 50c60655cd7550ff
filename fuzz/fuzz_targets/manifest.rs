//! Fuzz target: a MANIFEST file's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    minidb::engine::fuzzing::manifest_file(data);
});
