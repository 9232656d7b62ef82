//! Arbitrary input scripts (bytes, time, deliveries, closes) against one session Connection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_session::fuzzing::session_input(data);
});
