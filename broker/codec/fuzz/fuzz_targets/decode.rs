//! Decodes arbitrary bytes with both protocol versions and several maximum packet sizes;
//! every decoded packet must re-encode and decode to itself (see
//! `halyard_codec::fuzzing::decode_roundtrip`, which the unit tests also replay on the corpus).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    halyard_codec::fuzzing::decode_roundtrip(data);
});
