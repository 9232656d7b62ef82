//! Property tests: every valid packet of both versions survives encode -> decode unchanged,
//! `encoded_len` is exact, and streaming decode needs exactly the whole packet.

mod common;

use bytes::BytesMut;
use halyard_codec::*;
use proptest::prelude::*;

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out).expect("valid packet encodes");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity((version, packet) in common::versioned_packet()) {
        let mut buf = encoded(&packet, version);
        prop_assert_eq!(buf.len(), encoded_len(&packet, version));
        let decoded = decode(&mut buf, version, MAX_PACKET_SIZE).expect("decodes");
        prop_assert_eq!(decoded, Some(packet));
        prop_assert!(buf.is_empty(), "exactly one packet consumed");
    }

    #[test]
    fn every_prefix_needs_more_bytes((version, packet) in common::versioned_packet()) {
        let bytes = encoded(&packet, version).freeze();
        for split in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            prop_assert_eq!(decode(&mut buf, version, MAX_PACKET_SIZE), Ok(None), "split {}", split);
            prop_assert_eq!(buf.len(), split, "nothing consumed on Ok(None)");
            buf.extend_from_slice(&bytes[split..]);
            prop_assert_eq!(decode(&mut buf, version, MAX_PACKET_SIZE), Ok(Some(packet.clone())));
        }
    }

    #[test]
    fn back_to_back_packets_decode_in_order(
        (version, packets) in prop_oneof![
            proptest::collection::vec(common::packet(ProtocolVersion::V311), 1..5)
                .prop_map(|p| (ProtocolVersion::V311, p)),
            proptest::collection::vec(common::packet(ProtocolVersion::V5), 1..5)
                .prop_map(|p| (ProtocolVersion::V5, p)),
        ]
    ) {
        let mut buf = BytesMut::new();
        for p in &packets {
            encode(p, version, &mut buf).expect("valid packet encodes");
        }
        for p in &packets {
            prop_assert_eq!(decode(&mut buf, version, MAX_PACKET_SIZE), Ok(Some(p.clone())));
        }
        prop_assert_eq!(decode(&mut buf, version, MAX_PACKET_SIZE), Ok(None));
    }

    #[test]
    fn size_limit_is_exact((version, packet) in common::versioned_packet()) {
        let bytes = encoded(&packet, version);
        let len = u32::try_from(bytes.len()).unwrap();
        let mut ok = bytes.clone();
        prop_assert!(decode(&mut ok, version, len).unwrap().is_some());
        let mut too_big = bytes.clone();
        let err = decode(&mut too_big, version, len - 1).unwrap_err();
        prop_assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
        // Only the fixed header is needed to refuse it.
        let header = peek_header(&bytes).unwrap().unwrap();
        let mut head_only = BytesMut::from(&bytes[..header.header_len]);
        let refused = matches!(
            decode(&mut head_only, version, len - 1),
            Err(DecodeError::PacketTooLarge { .. })
        );
        prop_assert!(refused, "refused from the fixed header alone");
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        halyard_codec::fuzzing::decode_roundtrip(&data);
    }

    #[test]
    fn corrupted_valid_packets_never_panic(
        (version, packet) in common::versioned_packet(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encoded(&packet, version).to_vec();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] ^= b;
        }
        halyard_codec::fuzzing::decode_roundtrip(&bytes);
    }
}
