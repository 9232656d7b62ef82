//! Protocol violations and hostile input: each must be a `DecodeError` with the right MQTT 5.0
//! reason code and specification statement, never a panic or an unbounded wait.

use bytes::BytesMut;
use halyard_codec::*;

use ProtocolVersion::{V5, V311};

fn err(version: ProtocolVersion, bytes: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, version, MAX_PACKET_SIZE) {
        Err(e) => e,
        other => panic!("expected an error for {bytes:02x?}, got {other:?}"),
    }
}

/// Asserts the error, its reason code and its specification reference.
fn assert_err(
    version: ProtocolVersion,
    bytes: &[u8],
    expected: DecodeError,
    reason: ReasonCode,
    spec: &str,
) {
    let e = err(version, bytes);
    assert_eq!(e, expected, "for {bytes:02x?}");
    assert_eq!(e.reason_code(), reason, "reason code of {e:?}");
    assert_eq!(e.spec(), spec, "spec of {e:?}");
}

const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
const PROTOCOL: ReasonCode = ReasonCode::PROTOCOL_ERROR;

/// A CONNECT with the given flags (and matching payload fields for will/user/password).
fn connect(level: u8, flags: u8) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
    if level == 5 {
        body.push(0);
    }
    body.extend_from_slice(&[0, 1, b'c']);
    if flags & 0x04 != 0 {
        if level == 5 {
            body.push(0);
        }
        body.extend_from_slice(&[0, 1, b't', 0, 0]);
    }
    if flags & 0x80 != 0 {
        body.extend_from_slice(&[0, 1, b'u']);
    }
    if flags & 0x40 != 0 {
        body.extend_from_slice(&[0, 1, b'p']);
    }
    let mut out = vec![0x10, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(&body);
    out
}

#[test]
fn huge_remaining_length_is_refused_from_the_header_alone() {
    // Remaining length 268,435,455 (the largest), max packet size 1 KiB: refused after 5 bytes,
    // nothing consumed, nothing buffered.
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let e = decode(&mut buf, V5, 1024).unwrap_err();
    assert_eq!(
        e,
        DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: 1024
        }
    );
    assert_eq!(e.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert_eq!(buf.len(), 5);
}

#[test]
fn variable_byte_integer_longer_than_four_bytes() {
    assert_err(
        V311,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
        DecodeError::VariableByteIntegerTooLong,
        MALFORMED,
        "MQTT-5.0-1.5.5",
    );
    // Inside the properties too.
    let e = err(V5, &[0x40, 8, 0, 1, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert_eq!(e, DecodeError::VariableByteIntegerTooLong);
}

#[test]
fn reserved_packet_types() {
    assert_err(
        V5,
        &[0x00, 0],
        DecodeError::ReservedPacketType(0),
        MALFORMED,
        "MQTT-5.0-2.1.2",
    );
    // AUTH does not exist in 3.1.1.
    assert_err(
        V311,
        &[0xF0, 0],
        DecodeError::ReservedPacketType(15),
        MALFORMED,
        "MQTT-5.0-2.1.2",
    );
}

#[test]
fn reserved_fixed_header_flags() {
    // [MQTT-2.1.3-1]: PUBREL, SUBSCRIBE and UNSUBSCRIBE need 0b0010, the others 0.
    for (first, packet) in [
        (0x60, PacketType::PubRel),
        (0x80, PacketType::Subscribe),
        (0xA0, PacketType::Unsubscribe),
        (0x41, PacketType::PubAck),
        (0xC2, PacketType::PingReq),
        (0x11, PacketType::Connect),
        (0xE8, PacketType::Disconnect),
    ] {
        let flags = first & 0x0F;
        assert_err(
            V311,
            &[first, 2, 0, 1],
            DecodeError::InvalidHeaderFlags { packet, flags },
            MALFORMED,
            "MQTT-2.1.3-1",
        );
    }
}

#[test]
fn publish_qos3_and_dup_on_qos0() {
    assert_err(
        V311,
        &[0x36, 5, 0, 1, b'a', 0, 1],
        DecodeError::InvalidQoS,
        MALFORMED,
        "MQTT-3.3.1-4",
    );
    assert_err(
        V5,
        &[0x38, 3, 0, 1, b'a'],
        DecodeError::DupOnQoS0,
        MALFORMED,
        "MQTT-3.3.1-2",
    );
}

#[test]
fn invalid_utf8_and_null_character() {
    assert_err(
        V311,
        &[0x30, 5, 0, 3, b'a', 0xFF, b'b'],
        DecodeError::InvalidUtf8,
        MALFORMED,
        "MQTT-1.5.4-1",
    );
    // A UTF-16 surrogate encoded in UTF-8 (U+D800) is not valid UTF-8 either.
    assert_eq!(
        err(V311, &[0x30, 5, 0, 3, 0xED, 0xA0, 0x80]),
        DecodeError::InvalidUtf8
    );
    assert_err(
        V311,
        &[0x30, 5, 0, 3, b'a', 0, b'b'],
        DecodeError::NullCharacter,
        MALFORMED,
        "MQTT-1.5.4-2",
    );
    // In a property string and in a user property.
    assert_eq!(
        err(V5, &[0x30, 9, 0, 1, b'a', 5, 0x03, 0, 2, b'x', 0]),
        DecodeError::NullCharacter
    );
}

#[test]
fn packet_identifier_zero() {
    assert_err(
        V311,
        &[0x32, 5, 0, 1, b'a', 0, 0],
        DecodeError::ZeroPacketId(PacketType::Publish),
        PROTOCOL,
        "MQTT-2.2.1-3",
    );
    assert_eq!(
        err(V311, &[0x40, 2, 0, 0]),
        DecodeError::ZeroPacketId(PacketType::PubAck)
    );
    assert_eq!(
        err(V311, &[0x82, 6, 0, 0, 0, 1, b'a', 0]),
        DecodeError::ZeroPacketId(PacketType::Subscribe)
    );
    assert_eq!(
        err(V5, &[0xA2, 6, 0, 0, 0, 0, 1, b'a']),
        DecodeError::ZeroPacketId(PacketType::Unsubscribe)
    );
}

#[test]
fn connect_reserved_flag() {
    assert_err(
        V311,
        &connect(4, 0x03),
        DecodeError::ConnectReservedFlag,
        MALFORMED,
        "MQTT-3.1.2-3",
    );
}

#[test]
fn connect_will_flags_consistency() {
    assert_err(
        V311,
        &connect(4, 0x0A),
        DecodeError::WillQoSWithoutWill,
        MALFORMED,
        "MQTT-3.1.2-11",
    );
    assert_err(
        V5,
        &connect(5, 0x1E),
        DecodeError::WillQoS3,
        MALFORMED,
        "MQTT-3.1.2-12",
    );
    assert_err(
        V311,
        &connect(4, 0x22),
        DecodeError::WillRetainWithoutWill,
        MALFORMED,
        "MQTT-3.1.2-13",
    );
    // The same flags with the will flag set are fine.
    let mut buf = BytesMut::from(&connect(4, 0x2E)[..]);
    assert!(decode(&mut buf, V311, MAX_PACKET_SIZE).unwrap().is_some());
}

#[test]
fn connect_password_without_username_in_v311() {
    assert_err(
        V311,
        &connect(4, 0x42),
        DecodeError::PasswordWithoutUsername,
        MALFORMED,
        "MQTT-3.1.2-22",
    );
    let mut buf = BytesMut::from(&connect(5, 0x42)[..]);
    assert!(
        decode(&mut buf, V311, MAX_PACKET_SIZE).unwrap().is_some(),
        "allowed in 5.0"
    );
}

#[test]
fn connect_protocol_name_and_level() {
    // MQTT 3.1 ("MQIsdp", level 3): unsupported; the server answers 3.1.1 return code 0x01.
    let mqisdp = [
        0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'c',
    ];
    let e = err(V311, &mqisdp);
    assert_eq!(e, DecodeError::UnsupportedProtocolVersion(3));
    assert_eq!(e.reason_code(), ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    assert_eq!(e.reason_code().v311_connack_return_code(), Some(0x01));
    assert_eq!(e.spec(), "MQTT-3.1.2-2");
    assert_eq!(
        err(V311, &connect(6, 2)),
        DecodeError::UnsupportedProtocolVersion(6)
    );
    assert_eq!(
        err(V311, &connect(3, 2)),
        DecodeError::UnsupportedProtocolVersion(3)
    );
    let mut bad_name = connect(4, 2);
    bad_name[4] = b'X';
    assert_err(
        V311,
        &bad_name,
        DecodeError::InvalidProtocolName,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        "MQTT-3.1.2-1",
    );
}

#[test]
fn subscribe_options_reserved_bits_and_retain_handling() {
    // 3.1.1: bits 2-7 reserved; 5.0: bits 6-7 reserved.
    assert_err(
        V311,
        &[0x82, 6, 0, 1, 0, 1, b'a', 0x04],
        DecodeError::InvalidSubscriptionOptions(0x04),
        MALFORMED,
        "MQTT-3-8.3-5",
    );
    assert_err(
        V5,
        &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x41],
        DecodeError::InvalidSubscriptionOptions(0x41),
        MALFORMED,
        "MQTT-3-8.3-5",
    );
    assert_eq!(
        err(V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x03]),
        DecodeError::InvalidQoS
    );
    let e = err(V5, &[0x82, 7, 0, 1, 0, 0, 1, b'a', 0x30]);
    assert_eq!(e, DecodeError::InvalidRetainHandling);
    assert_eq!(e.reason_code(), PROTOCOL);
}

#[test]
fn empty_subscribe_and_unsubscribe() {
    assert_err(
        V311,
        &[0x82, 2, 0, 1],
        DecodeError::EmptySubscribe,
        PROTOCOL,
        "MQTT-3.8.3-3",
    );
    assert_err(
        V5,
        &[0x82, 3, 0, 1, 0],
        DecodeError::EmptySubscribe,
        PROTOCOL,
        "MQTT-3.8.3-3",
    );
    assert_err(
        V311,
        &[0xA2, 2, 0, 1],
        DecodeError::EmptyUnsubscribe,
        PROTOCOL,
        "MQTT-3.10.3-2",
    );
    let mut out = BytesMut::new();
    let empty = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![],
        properties: Default::default(),
    });
    assert_eq!(
        encode(&empty, V5, &mut out),
        Err(EncodeError::EmptyPayload(PacketType::Subscribe))
    );
}

#[test]
fn duplicate_property_is_a_protocol_error() {
    // Two Message Expiry Intervals in a PUBLISH.
    let bytes = [0x30, 14, 0, 1, b'a', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
    assert_err(
        V5,
        &bytes,
        DecodeError::DuplicateProperty(0x02),
        PROTOCOL,
        "MQTT-5.0-2.2.2.2",
    );
    // User Property and Subscription Identifier (in PUBLISH) may repeat.
    let ok = [0x30, 13, 0, 1, b'a', 9, 0x0B, 1, 0x0B, 2, 0x26, 0, 0, 0, 0];
    let mut buf = BytesMut::from(&ok[..]);
    let Some(Packet::Publish(p)) = decode(&mut buf, V5, MAX_PACKET_SIZE).unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.subscription_identifiers, vec![1, 2]);
    // A second Subscription Identifier in SUBSCRIBE is not allowed.
    let sub = [0x82, 11, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0];
    assert_eq!(err(V5, &sub), DecodeError::DuplicateProperty(0x0B));
}

#[test]
fn property_not_allowed_in_packet() {
    // Session Expiry Interval (0x11) in a PUBLISH.
    let bytes = [0x30, 10, 0, 1, b'a', 5, 0x11, 0, 0, 0, 1, b'x'];
    assert_err(
        V5,
        &bytes,
        DecodeError::PropertyNotAllowed {
            id: 0x11,
            packet: PacketType::Publish,
        },
        MALFORMED,
        "MQTT-5.0-2.2.2.2",
    );
    // Unknown identifier 0x7F in a DISCONNECT.
    let e = err(V5, &[0xE0, 3, 0, 1, 0x7F]);
    assert_eq!(
        e,
        DecodeError::PropertyNotAllowed {
            id: 0x7F,
            packet: PacketType::Disconnect
        }
    );
}

#[test]
fn forbidden_property_values() {
    // Receive Maximum 0 in CONNECT.
    let mut c = vec![
        0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 3, 0x21, 0, 0,
    ];
    c.extend_from_slice(&[0, 0]);
    c[1] = u8::try_from(c.len() - 2).unwrap();
    let e = err(V5, &c);
    assert_eq!(e, DecodeError::InvalidPropertyValue(0x21));
    assert_eq!(e.reason_code(), PROTOCOL);
    // Topic Alias 0, Subscription Identifier 0, Payload Format Indicator 2.
    assert_eq!(
        err(V5, &[0x30, 7, 0, 1, b'a', 3, 0x23, 0, 0]),
        DecodeError::InvalidPropertyValue(0x23)
    );
    assert_eq!(
        err(V5, &[0x30, 6, 0, 1, b'a', 2, 0x0B, 0]),
        DecodeError::InvalidPropertyValue(0x0B)
    );
    assert_eq!(
        err(V5, &[0x30, 6, 0, 1, b'a', 2, 0x01, 2]),
        DecodeError::InvalidPropertyValue(0x01)
    );
}

#[test]
fn remaining_length_mismatch() {
    // Trailing bytes after a 3.1.1 PUBACK.
    assert_err(
        V311,
        &[0x40, 3, 0, 1, 0],
        DecodeError::TrailingBytes(1),
        MALFORMED,
        "MQTT-5.0-2.1.4",
    );
    assert_eq!(err(V311, &[0xC0, 1, 0]), DecodeError::TrailingBytes(1));
    // A topic length running past the remaining length (even with more bytes buffered).
    assert_err(
        V311,
        &[0x30, 3, 0, 3, b'a', b'b', b'c'],
        DecodeError::UnexpectedEnd,
        MALFORMED,
        "MQTT-5.0-2.1.4",
    );
    // Property length running past the packet.
    assert_eq!(err(V5, &[0x40, 4, 0, 1, 0, 9]), DecodeError::UnexpectedEnd);
}

#[test]
fn invalid_reason_codes() {
    assert_eq!(
        err(V5, &[0x40, 3, 0, 1, 0x04]),
        DecodeError::InvalidReasonCode {
            packet: PacketType::PubAck,
            code: 0x04
        }
    );
    assert_eq!(
        err(V311, &[0x20, 2, 0, 6]),
        DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code: 6
        }
    );
    assert_eq!(
        err(V311, &[0x90, 3, 0, 1, 0x03]),
        DecodeError::InvalidReasonCode {
            packet: PacketType::SubAck,
            code: 3
        }
    );
    assert_eq!(
        err(V311, &[0x20, 2, 2, 0]),
        DecodeError::InvalidConnAckFlags(2)
    );
}

#[test]
fn incomplete_input_consumes_nothing() {
    for bytes in [&[][..], &[0x30], &[0x30, 0x80], &[0x30, 5, 0, 3]] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(decode(&mut buf, V5, MAX_PACKET_SIZE), Ok(None));
        assert_eq!(buf.len(), bytes.len());
    }
}
