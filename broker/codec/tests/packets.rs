//! Known byte vectors, one or more per packet type and version, built by hand from the
//! specification's packet layouts: each must decode to the given packet and encode back to the
//! same bytes.

use bytes::{Bytes, BytesMut};
use halyard_codec::*;

use ProtocolVersion::{V5, V311};

/// Decodes `bytes` as `version`, checks the packet, and checks that encoding gives `bytes`.
fn check(version: ProtocolVersion, bytes: &[u8], expected: Packet) {
    let mut buf = BytesMut::from(bytes);
    let got = decode(&mut buf, version, MAX_PACKET_SIZE)
        .expect("decodes")
        .expect("complete");
    assert_eq!(got, expected);
    assert!(buf.is_empty());
    let mut out = BytesMut::new();
    encode(&expected, version, &mut out).expect("encodes");
    assert_eq!(&out[..], bytes, "encoding of {expected:?}");
    assert_eq!(encoded_len(&expected, version), bytes.len());
}

fn decode_one(version: ProtocolVersion, bytes: &[u8]) -> Packet {
    let mut buf = BytesMut::from(bytes);
    decode(&mut buf, version, MAX_PACKET_SIZE)
        .expect("decodes")
        .expect("complete")
}

fn connect(version: ProtocolVersion) -> Connect {
    Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 60,
        client_id: MqttString::from_static("c1"),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties::default(),
    }
}

#[test]
fn connect_v311_minimal() {
    let bytes = [
        0x10,
        14,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        0b0000_0010,
        0,
        60,
        0,
        2,
        b'c',
        b'1',
    ];
    check(V311, &bytes, Packet::Connect(Box::new(connect(V311))));
    // CONNECT is decoded whatever version the connection assumes.
    assert_eq!(
        decode_one(V5, &bytes),
        Packet::Connect(Box::new(connect(V311)))
    );
}

#[test]
fn connect_v5_with_will_user_and_password() {
    let bytes = [
        0x10,
        40, //
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,           // protocol name, level
        0b1110_1110, // user, password, will retain, will qos 1, will, clean start
        0,
        30, // keep alive
        5,
        0x11,
        0,
        0,
        0,
        10, // properties: session expiry 10
        0,
        2,
        b'c',
        b'1', // client id
        5,
        0x18,
        0,
        0,
        0,
        5, // will properties: will delay 5
        0,
        1,
        b'w', // will topic
        0,
        2,
        b'b',
        b'y', // will payload
        0,
        1,
        b'u', // user name
        0,
        2,
        1,
        2, // password
    ];
    let mut c = connect(V5);
    c.keep_alive = 30;
    c.properties.session_expiry_interval = Some(10);
    c.will = Some(Will {
        topic: "w".into(),
        payload: Bytes::from_static(b"by"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: WillProperties {
            will_delay_interval: Some(5),
            ..Default::default()
        },
    });
    c.username = Some("u".into());
    c.password = Some(Bytes::from_static(&[1, 2]));
    check(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_v5_password_without_username_is_allowed() {
    // MQTT 5.0 dropped [MQTT-3.1.2-22]: a password without a user name is valid.
    let bytes = [
        0x10,
        18,
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        0b0100_0010,
        0,
        60,
        0,
        0,
        2,
        b'c',
        b'1',
        0,
        1,
        9,
    ];
    let mut c = connect(V5);
    c.password = Some(Bytes::from_static(&[9]));
    check(V5, &bytes, Packet::Connect(Box::new(c)));
}

#[test]
fn connack_both_versions() {
    let ok = |session_present| ConnAck {
        session_present,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    };
    check(V311, &[0x20, 2, 1, 0], Packet::ConnAck(Box::new(ok(true))));
    check(
        V5,
        &[0x20, 3, 0, 0, 0],
        Packet::ConnAck(Box::new(ok(false))),
    );
    // 3.1.1 return code 0x01 is 5.0 reason 0x84 (unsupported protocol version).
    let refused = ConnAck {
        session_present: false,
        reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        properties: ConnAckProperties::default(),
    };
    check(V311, &[0x20, 2, 0, 1], Packet::ConnAck(Box::new(refused)));
}

#[test]
fn connack_v5_properties() {
    let mut c = ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    };
    c.properties.assigned_client_identifier = Some("id".into());
    c.properties.maximum_qos = Some(QoS::AtLeastOnce);
    c.properties.server_keep_alive = Some(20);
    c.properties.user_properties = vec![("k".into(), "v".into()), ("k".into(), "w".into())];
    let bytes = [
        0x20, 27, 0, 0, 24, //
        0x24, 1, // maximum qos
        0x12, 0, 2, b'i', b'd', // assigned client id
        0x13, 0, 20, // server keep alive
        0x26, 0, 1, b'k', 0, 1, b'v', // user property
        0x26, 0, 1, b'k', 0, 1, b'w', // user property, same name again
    ];
    check(V5, &bytes, Packet::ConnAck(Box::new(c)));
}

#[test]
fn connack_v311_maps_reason_codes_to_return_codes() {
    for (reason, rc) in [
        (ReasonCode::SUCCESS, 0),
        (ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, 1),
        (ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, 2),
        (ReasonCode::SERVER_UNAVAILABLE, 3),
        (ReasonCode::SERVER_BUSY, 3),
        (ReasonCode::BAD_USER_NAME_OR_PASSWORD, 4),
        (ReasonCode::NOT_AUTHORIZED, 5),
        (ReasonCode::BANNED, 5),
    ] {
        assert_eq!(reason.v311_connack_return_code(), Some(rc), "{reason}");
    }
    assert_eq!(ReasonCode::PROTOCOL_ERROR.v311_connack_return_code(), None);
    let packet = Packet::ConnAck(Box::new(ConnAck {
        session_present: false,
        reason_code: ReasonCode::PROTOCOL_ERROR,
        properties: ConnAckProperties::default(),
    }));
    let mut out = BytesMut::new();
    assert_eq!(
        encode(&packet, V311, &mut out),
        Err(EncodeError::NoV311ConnAckCode(ReasonCode::PROTOCOL_ERROR))
    );
    assert!(out.is_empty(), "nothing written on error");
}

fn publish(qos: QoS, packet_id: u16) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: "a/b".into(),
        packet_id,
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties::default(),
    }
}

#[test]
fn publish_v311_qos0_and_qos1() {
    check(
        V311,
        &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'],
        Packet::Publish(publish(QoS::AtMostOnce, 0)),
    );
    let mut p = publish(QoS::AtLeastOnce, 10);
    p.dup = true;
    p.retain = true;
    check(
        V311,
        &[0x3B, 9, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i'],
        Packet::Publish(p),
    );
}

#[test]
fn publish_payload_is_zero_copy() {
    let mut buf = BytesMut::from(&[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i'][..]);
    let base = buf.as_ptr() as usize;
    let Packet::Publish(p) = decode(&mut buf, V311, 100).unwrap().unwrap() else {
        panic!()
    };
    assert_eq!(
        p.payload.as_ptr() as usize,
        base + 7,
        "payload points into the input buffer"
    );
    assert_eq!(
        p.topic.as_ptr() as usize,
        base + 4,
        "topic points into the input buffer"
    );
}

#[test]
fn publish_v5_properties() {
    let mut p = publish(QoS::ExactlyOnce, 0x0102);
    p.topic = MqttString::from_static("");
    p.properties.topic_alias = Some(3);
    p.properties.message_expiry_interval = Some(10);
    p.properties.subscription_identifiers = vec![1, 200];
    let bytes = [
        0x34, 20, 0, 0, 1, 2, // empty topic, packet id
        13, 0x02, 0, 0, 0, 10, // message expiry
        0x23, 0, 3, // topic alias
        0x0B, 1, 0x0B, 0xC8, 1, // subscription identifiers 1 and 200
        b'h', b'i',
    ];
    check(V5, &bytes, Packet::Publish(p));
}

#[test]
fn publish_with_wildcard_topic_is_decoded() {
    // Topic name rules belong to halyard-topics: the codec decodes, the session rejects.
    let Packet::Publish(p) = decode_one(V311, &[0x30, 5, 0, 3, b'a', b'/', b'+']) else {
        panic!()
    };
    assert_eq!(p.topic, "a/+");
}

#[test]
fn pub_responses_v311() {
    check(V311, &[0x40, 2, 0, 1], Packet::PubAck(PubResponse::new(1)));
    check(V311, &[0x50, 2, 0, 2], Packet::PubRec(PubResponse::new(2)));
    check(V311, &[0x62, 2, 0, 3], Packet::PubRel(PubResponse::new(3)));
    check(V311, &[0x70, 2, 0, 4], Packet::PubComp(PubResponse::new(4)));
}

#[test]
fn pub_responses_v5_short_and_long_forms() {
    check(V5, &[0x40, 2, 0, 1], Packet::PubAck(PubResponse::new(1)));
    let mut p = PubResponse::new(1);
    p.reason_code = ReasonCode::NO_MATCHING_SUBSCRIBERS;
    check(V5, &[0x40, 3, 0, 1, 0x10], Packet::PubAck(p.clone()));
    p.properties.reason_string = Some("x".into());
    check(
        V5,
        &[0x40, 8, 0, 1, 0x10, 4, 0x1F, 0, 1, b'x'],
        Packet::PubAck(p),
    );
    // Reason code present, property length 0: decodes, re-encodes in the short form.
    assert_eq!(
        decode_one(V5, &[0x70, 4, 0, 1, 0, 0]),
        Packet::PubComp(PubResponse::new(1))
    );
    let mut rel = PubResponse::new(9);
    rel.reason_code = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    check(V5, &[0x62, 3, 0, 9, 0x92], Packet::PubRel(rel));
}

#[test]
fn subscribe_v311() {
    let s = Subscribe {
        packet_id: 1,
        filters: vec![
            SubscribeFilter {
                filter: "a/#".into(),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            SubscribeFilter {
                filter: "b".into(),
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            },
        ],
        properties: SubscribeProperties::default(),
    };
    check(
        V311,
        &[0x82, 12, 0, 1, 0, 3, b'a', b'/', b'#', 1, 0, 1, b'b', 2],
        Packet::Subscribe(s),
    );
}

#[test]
fn subscribe_v5_options_and_identifier() {
    let s = Subscribe {
        packet_id: 7,
        filters: vec![SubscribeFilter {
            filter: "t".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        }],
        properties: SubscribeProperties {
            subscription_identifier: Some(128),
            ..Default::default()
        },
    };
    check(
        V5,
        &[0x82, 10, 0, 7, 3, 0x0B, 0x80, 1, 0, 1, b't', 0b0010_1101],
        Packet::Subscribe(s),
    );
}

#[test]
fn suback_v311_return_codes() {
    // 3.1.1 SUBACK carries 0x00/0x01/0x02/0x80 only; 5.0 failure codes become 0x80.
    let ack = SubAck {
        packet_id: 1,
        reason_codes: vec![
            ReasonCode(0),
            ReasonCode(1),
            ReasonCode(2),
            ReasonCode::UNSPECIFIED_ERROR,
        ],
        properties: AckProperties::default(),
    };
    check(V311, &[0x90, 6, 0, 1, 0, 1, 2, 0x80], Packet::SubAck(ack));
    let five = Packet::SubAck(SubAck {
        packet_id: 1,
        reason_codes: vec![ReasonCode::NOT_AUTHORIZED, ReasonCode::GRANTED_QOS_1],
        properties: AckProperties::default(),
    });
    let mut out = BytesMut::new();
    encode(&five, V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x90, 4, 0, 1, 0x80, 1]);
}

#[test]
fn suback_v5() {
    let ack = SubAck {
        packet_id: 1,
        reason_codes: vec![ReasonCode::GRANTED_QOS_2, ReasonCode::TOPIC_FILTER_INVALID],
        properties: AckProperties::default(),
    };
    check(V5, &[0x90, 5, 0, 1, 0, 2, 0x8F], Packet::SubAck(ack));
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = |properties| Unsubscribe {
        packet_id: 2,
        filters: vec!["a".into(), "b/c".into()],
        properties,
    };
    check(
        V311,
        &[0xA2, 10, 0, 2, 0, 1, b'a', 0, 3, b'b', b'/', b'c'],
        Packet::Unsubscribe(u(UnsubscribeProperties::default())),
    );
    check(
        V5,
        &[0xA2, 11, 0, 2, 0, 0, 1, b'a', 0, 3, b'b', b'/', b'c'],
        Packet::Unsubscribe(u(UnsubscribeProperties::default())),
    );
    let empty = UnsubAck {
        packet_id: 2,
        reason_codes: vec![],
        properties: AckProperties::default(),
    };
    check(V311, &[0xB0, 2, 0, 2], Packet::UnsubAck(empty));
    let five = UnsubAck {
        packet_id: 2,
        reason_codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        properties: AckProperties::default(),
    };
    check(V5, &[0xB0, 5, 0, 2, 0, 0, 0x11], Packet::UnsubAck(five));
}

#[test]
fn ping_disconnect_auth() {
    check(V311, &[0xC0, 0], Packet::PingReq);
    check(V5, &[0xD0, 0], Packet::PingResp);
    check(V311, &[0xE0, 0], Packet::Disconnect(Disconnect::default()));
    check(V5, &[0xE0, 0], Packet::Disconnect(Disconnect::default()));
    let d = Disconnect {
        reason_code: ReasonCode::SESSION_TAKEN_OVER,
        properties: DisconnectProperties::default(),
    };
    // The encoder always writes the Property Length after a non-success reason code (what
    // Mosquitto sends; rumqttc 0.25 cannot parse the reason code alone), and the decoder
    // accepts both forms [MQTT-3.14.2.1].
    check(V5, &[0xE0, 2, 0x8E, 0], Packet::Disconnect(d.clone()));
    assert_eq!(decode_one(V5, &[0xE0, 1, 0x8E]), Packet::Disconnect(d));
    let mut d = Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ..Default::default()
    };
    d.properties.session_expiry_interval = Some(0);
    check(
        V5,
        &[0xE0, 7, 0x04, 5, 0x11, 0, 0, 0, 0],
        Packet::Disconnect(d),
    );
    check(V5, &[0xF0, 0], Packet::Auth(Auth::default()));
    let mut a = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        ..Default::default()
    };
    a.properties.authentication_method = Some("m".into());
    check(V5, &[0xF0, 6, 0x18, 4, 0x15, 0, 1, b'm'], Packet::Auth(a));
    let mut out = BytesMut::new();
    assert_eq!(
        encode(&Packet::Auth(Auth::default()), V311, &mut out),
        Err(EncodeError::NotInVersion(PacketType::Auth))
    );
}

#[test]
fn v311_packets_never_carry_properties() {
    // The same PUBLISH with properties encodes without them in 3.1.1.
    let mut p = publish(QoS::AtMostOnce, 0);
    p.properties.content_type = Some("text/plain".into());
    let mut out = BytesMut::new();
    encode(&Packet::Publish(p), V311, &mut out).unwrap();
    assert_eq!(&out[..], &[0x30, 7, 0, 3, b'a', b'/', b'b', b'h', b'i']);
}

#[test]
fn peek_connect_version_reads_the_level() {
    let v5 = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0xFF];
    assert_eq!(peek_connect_version(&v5), Some(V5));
    assert_eq!(peek_connect_version(&v5[..8]), None);
    assert_eq!(peek_connect_version(&[0xC0, 0]), None);
}

/// Acknowledgements and pings are decoded in place (no shared frame); a stream mixing them
/// with other packets must still decode packet by packet, each consuming exactly its bytes.
#[test]
fn short_packets_in_a_stream() {
    for version in [V311, V5] {
        // PUBLISH QoS 0, topic "a", payload "x" (5.0: with an empty property length).
        let publish: &[u8] = if version == V5 {
            &[0x30, 5, 0, 1, b'a', 0, b'x']
        } else {
            &[0x30, 4, 0, 1, b'a', b'x']
        };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x40, 2, 0, 7]); // PUBACK 7
        buf.extend_from_slice(&[0xC0, 0]); // PINGREQ
        buf.extend_from_slice(&[0x50, 2, 0x12, 0x34]); // PUBREC 0x1234
        buf.extend_from_slice(&[0x62, 2, 0, 9]); // PUBREL 9
        buf.extend_from_slice(publish);
        buf.extend_from_slice(&[0x70, 2, 0xFF, 0xFF]); // PUBCOMP 65535
        buf.extend_from_slice(&[0xD0, 0]); // PINGRESP
        buf.extend_from_slice(&[0x40, 2, 0]); // PUBACK, incomplete
        let mut got = Vec::new();
        while let Some(p) = decode(&mut buf, version, MAX_PACKET_SIZE).expect("decodes") {
            got.push(p);
        }
        assert_eq!(buf.len(), 3, "the incomplete PUBACK stays buffered");
        let expected = vec![
            Packet::PubAck(PubResponse::new(7)),
            Packet::PingReq,
            Packet::PubRec(PubResponse::new(0x1234)),
            Packet::PubRel(PubResponse::new(9)),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: MqttString::from_static("a"),
                packet_id: 0,
                payload: Bytes::from_static(b"x"),
                properties: PublishProperties::default(),
            }),
            Packet::PubComp(PubResponse::new(0xFFFF)),
            Packet::PingResp,
        ];
        assert_eq!(got, expected, "{version:?}");
        buf.extend_from_slice(&[9]);
        assert_eq!(
            decode(&mut buf, version, MAX_PACKET_SIZE).expect("decodes"),
            Some(Packet::PubAck(PubResponse::new(9)))
        );
        assert!(buf.is_empty());
        // PUBREL with the wrong fixed-header flags and identifier 0 still fail.
        let mut bad = BytesMut::from(&[0x60, 2, 0, 1][..]);
        assert!(decode(&mut bad, version, MAX_PACKET_SIZE).is_err());
        let mut zero = BytesMut::from(&[0x70, 2, 0, 0][..]);
        assert_eq!(
            decode(&mut zero, version, MAX_PACKET_SIZE),
            Err(DecodeError::ZeroPacketId(PacketType::PubComp))
        );
    }
}

/// `take_short_ack` consumes exactly the 4-byte acknowledgements and leaves everything else
/// (other packets, longer 5.0 acknowledgements, bad flags, incomplete bytes) to `decode`.
#[test]
fn take_short_ack_takes_only_bare_acknowledgements() {
    let mut buf = BytesMut::from(&[0x40, 2, 0, 7, 0x62, 2, 1, 0, 0x70, 2, 0xFF, 0xFF][..]);
    assert_eq!(take_short_ack(&mut buf), Some(Ok((PacketType::PubAck, 7))));
    assert_eq!(
        take_short_ack(&mut buf),
        Some(Ok((PacketType::PubRel, 256)))
    );
    assert_eq!(
        take_short_ack(&mut buf),
        Some(Ok((PacketType::PubComp, 0xFFFF)))
    );
    assert!(buf.is_empty());
    for rest in [
        &[0xC0, 0][..],                   // PINGREQ
        &[0x40, 3, 0, 7, 0x10][..],       // 5.0 PUBACK with a reason code
        &[0x60, 2, 0, 1][..],             // PUBREL with the wrong flags
        &[0x50, 2, 0][..],                // incomplete
        &[0x30, 4, 0, 1, b'a', b'x'][..], // PUBLISH
    ] {
        let mut buf = BytesMut::from(rest);
        assert_eq!(take_short_ack(&mut buf), None, "{rest:?}");
        assert_eq!(&buf[..], rest, "nothing consumed");
    }
    let mut zero = BytesMut::from(&[0x50, 2, 0, 0][..]);
    assert_eq!(
        take_short_ack(&mut zero),
        Some(Err(DecodeError::ZeroPacketId(PacketType::PubRec)))
    );
}
