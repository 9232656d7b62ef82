//! The encoder refuses what the decoder would reject, and leaves the buffer untouched.

use bytes::{Bytes, BytesMut};
use halyard_codec::*;

use ProtocolVersion::{V5, V311};

fn publish() -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t".into(),
        packet_id: 1,
        payload: Bytes::new(),
        properties: PublishProperties::default(),
    }
}

fn refuse(packet: Packet, version: ProtocolVersion, expected: EncodeError) {
    let mut out = BytesMut::from(&b"keep"[..]);
    assert_eq!(encode(&packet, version, &mut out), Err(expected));
    assert_eq!(&out[..], b"keep", "buffer unchanged on error");
}

#[test]
fn strings_with_null_or_too_long() {
    let mut p = publish();
    p.topic = "a\0b".into();
    refuse(Packet::Publish(p), V311, EncodeError::NullCharacter);
    let mut p = publish();
    p.topic = "x".repeat(65_536).into();
    refuse(Packet::Publish(p), V5, EncodeError::StringTooLong(65_536));
    let mut p = publish();
    p.properties.correlation_data = Some(Bytes::from(vec![0; 70_000]));
    refuse(Packet::Publish(p), V5, EncodeError::BinaryTooLong(70_000));
}

#[test]
fn zero_packet_id() {
    let mut p = publish();
    p.packet_id = 0;
    refuse(
        Packet::Publish(p),
        V5,
        EncodeError::ZeroPacketId(PacketType::Publish),
    );
    refuse(
        Packet::PubAck(PubResponse::new(0)),
        V311,
        EncodeError::ZeroPacketId(PacketType::PubAck),
    );
    // QoS 0 has no packet identifier: 0 is fine and not written.
    let mut p = publish();
    p.qos = QoS::AtMostOnce;
    p.packet_id = 0;
    let mut out = BytesMut::new();
    encode(&Packet::Publish(p), V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x30, 3, 0, 1, b't']);
}

#[test]
fn forbidden_property_values() {
    let mut p = publish();
    p.properties.topic_alias = Some(0);
    refuse(
        Packet::Publish(p),
        V5,
        EncodeError::InvalidPropertyValue(0x23),
    );
    let mut p = publish();
    p.properties.subscription_identifiers = vec![MAX_VARIABLE_BYTE_INTEGER + 1];
    refuse(
        Packet::Publish(p),
        V5,
        EncodeError::InvalidPropertyValue(0x0B),
    );
    let mut c = ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    };
    c.properties.maximum_qos = Some(QoS::ExactlyOnce);
    refuse(
        Packet::ConnAck(Box::new(c)),
        V5,
        EncodeError::InvalidPropertyValue(0x24),
    );
}

#[test]
fn reason_codes_not_allowed_in_the_packet() {
    let mut ack = PubResponse::new(1);
    ack.reason_code = ReasonCode::SESSION_TAKEN_OVER;
    refuse(
        Packet::PubAck(ack),
        V5,
        EncodeError::InvalidReasonCode {
            packet: PacketType::PubAck,
            code: ReasonCode::SESSION_TAKEN_OVER,
        },
    );
}

#[test]
fn v311_password_without_username() {
    let c = Connect {
        protocol_version: V311,
        clean_start: true,
        keep_alive: 0,
        client_id: "c".into(),
        will: None,
        username: None,
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties::default(),
    };
    refuse(
        Packet::Connect(Box::new(c)),
        V5,
        EncodeError::PasswordWithoutUsername,
    );
}

#[test]
fn mqtt_string_behaves_like_str() {
    use std::collections::HashSet;
    let s = MqttString::from("a/b");
    assert_eq!(s, "a/b");
    assert_eq!(s.len(), 3);
    let set: HashSet<MqttString> = [s.clone()].into_iter().collect();
    assert!(set.contains("a/b"), "Borrow<str> lookups hash like str");
    assert!(MqttString::from_utf8(Bytes::from_static(&[0xFF])).is_err());
    assert_eq!(format!("{s}"), "a/b");
}
