//! The body of the `decode` fuzz target, public so that a plain unit test can replay the
//! committed corpus through exactly the same checks.

use bytes::BytesMut;

use crate::{MAX_PACKET_SIZE, ProtocolVersion, decode, encode, encoded_len};

/// Maximum packet sizes the fuzz target tries for every input.
pub const FUZZ_MAX_SIZES: [u32; 4] = [2, 64, 4096, MAX_PACKET_SIZE];

/// Decodes `data` as a stream with both protocol versions and several maximum packet sizes.
/// Every packet decoded is re-encoded (its length must equal [`encoded_len`]) and decoded
/// again, and must come back equal. Panics when an invariant breaks; never otherwise.
pub fn decode_roundtrip(data: &[u8]) {
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        for max in FUZZ_MAX_SIZES {
            let mut buf = BytesMut::from(data);
            // Each successful decode consumes at least the 2-byte fixed header, so the loop
            // ends after at most data.len() / 2 packets.
            while let Ok(Some(packet)) = decode(&mut buf, version, max) {
                let mut out = BytesMut::new();
                if let Err(e) = encode(&packet, version, &mut out) {
                    panic!("decoded packet does not encode: {e}: {packet:?}");
                }
                assert_eq!(
                    out.len(),
                    encoded_len(&packet, version),
                    "encoded_len: {packet:?}"
                );
                let again = decode(&mut out, version, MAX_PACKET_SIZE);
                assert_eq!(again, Ok(Some(packet)), "re-decode differs");
                assert!(out.is_empty(), "re-decode left bytes");
            }
        }
    }
}
