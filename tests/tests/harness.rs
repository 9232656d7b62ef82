//! Cross-checks the harness's hand-built packets (`halyard_tests::raw`) against the project's
//! codec (`halyard-codec`), in both directions, without a broker: a disagreement means either
//! the test client or the codec misreads the specification. Also checks that the packets the
//! raw tests send on purpose as malformed are malformed for the codec too, with the reason
//! code the tests expect from the broker.
//!
//! Needs no broker: passes the same with `HALYARD_TEST_AGAINST=mosquitto`.

use bytes::{Bytes, BytesMut};
use halyard_codec::{
    self as codec, ConnAckProperties, ProtocolVersion, PublishProperties, QoS, ReasonCode,
};
use halyard_tests::raw::{self, Connect, Packet, Prop, Props, Publish, Version, prop};

const MAX: u32 = 1 << 20;

fn codec_decode(bytes: &[u8], v: ProtocolVersion) -> Result<codec::Packet, codec::DecodeError> {
    let mut buf = BytesMut::from(bytes);
    let p = codec::decode(&mut buf, v, MAX)?.expect("a whole packet");
    assert!(buf.is_empty(), "the codec consumed exactly one packet");
    Ok(p)
}

fn harness_decode(p: &codec::Packet, v: ProtocolVersion) -> Packet {
    let mut out = BytesMut::new();
    codec::encode(p, v, &mut out).expect("codec encodes");
    let (first, rest) = out.split_first().expect("non-empty");
    let mut len = 0usize;
    let mut i = 0;
    loop {
        let b = rest[i];
        len |= usize::from(b & 0x7F) << (7 * i);
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(rest.len() - i, len, "remaining length");
    let version = match v {
        ProtocolVersion::V5 => Version::V5,
        _ => Version::V311,
    };
    raw::decode(version, *first, &rest[i..]).expect("harness decodes")
}

#[test]
fn connect_v5_with_will_and_properties() {
    let mut c = Connect::new(Version::V5, "xcheck");
    c.clean = false;
    c.keepalive = 42;
    c.props = Props::new()
        .with(Prop::U32(prop::SESSION_EXPIRY, 300))
        .with(Prop::U16(prop::RECEIVE_MAXIMUM, 7))
        .with(Prop::U32(prop::MAXIMUM_PACKET_SIZE, 4096))
        .with(Prop::U16(prop::TOPIC_ALIAS_MAXIMUM, 5))
        .with(Prop::Pair(prop::USER_PROPERTY, "k".into(), "v".into()));
    c.will = Some(raw::Will {
        topic: "will/t".into(),
        payload: b"bye".to_vec(),
        qos: 1,
        retain: true,
        props: Props::new().with(Prop::U32(prop::WILL_DELAY, 9)),
    });
    c.username = Some("user".into());
    c.password = Some(b"pw".to_vec());
    let codec::Packet::Connect(got) = codec_decode(&c.encode(), ProtocolVersion::V5).expect("ok")
    else {
        panic!("not a CONNECT")
    };
    assert_eq!(got.protocol_version, ProtocolVersion::V5);
    assert!(!got.clean_start);
    assert_eq!(got.keep_alive, 42);
    assert_eq!(&*got.client_id, "xcheck");
    assert_eq!(got.properties.session_expiry_interval, Some(300));
    assert_eq!(got.properties.receive_maximum, Some(7));
    assert_eq!(got.properties.maximum_packet_size, Some(4096));
    assert_eq!(got.properties.topic_alias_maximum, Some(5));
    assert_eq!(got.properties.user_properties.len(), 1);
    let w = got.will.as_ref().expect("will");
    assert_eq!(
        (&*w.topic, &w.payload[..], w.qos, w.retain),
        ("will/t", &b"bye"[..], QoS::AtLeastOnce, true)
    );
    assert_eq!(w.properties.will_delay_interval, Some(9));
    assert_eq!(got.username.as_deref(), Some("user"));
    assert_eq!(got.password.as_deref(), Some(&b"pw"[..]));
}

#[test]
fn connect_v311() {
    let c = Connect::new(Version::V311, "old");
    let codec::Packet::Connect(got) = codec_decode(&c.encode(), ProtocolVersion::V311).expect("ok")
    else {
        panic!("not a CONNECT")
    };
    assert_eq!(got.protocol_version, ProtocolVersion::V311);
    assert!(got.clean_start);
    assert_eq!(&*got.client_id, "old");
}

#[test]
fn publish_v5_with_properties() {
    let p = Publish::new("a/b", b"payload").qos(2, 77).retain().props(
        Props::new()
            .with(Prop::Byte(prop::PAYLOAD_FORMAT, 1))
            .with(Prop::U32(prop::MESSAGE_EXPIRY, 60))
            .with(Prop::U16(prop::TOPIC_ALIAS, 3))
            .with(Prop::Str(prop::RESPONSE_TOPIC, "r".into()))
            .with(Prop::Bin(prop::CORRELATION_DATA, vec![0, 1]))
            .with(Prop::Str(prop::CONTENT_TYPE, "text/plain".into()))
            .with(Prop::Pair(prop::USER_PROPERTY, "a".into(), "1".into())),
    );
    let codec::Packet::Publish(got) =
        codec_decode(&p.encode(Version::V5), ProtocolVersion::V5).expect("ok")
    else {
        panic!("not a PUBLISH")
    };
    assert_eq!((&*got.topic, &got.payload[..]), ("a/b", &b"payload"[..]));
    assert_eq!(
        (got.qos, got.retain, got.dup, got.packet_id),
        (QoS::ExactlyOnce, true, false, 77)
    );
    let pp = &got.properties;
    assert_eq!(pp.payload_format_indicator, Some(true));
    assert_eq!(pp.message_expiry_interval, Some(60));
    assert_eq!(pp.topic_alias, Some(3));
    assert_eq!(pp.response_topic.as_deref(), Some("r"));
    assert_eq!(pp.correlation_data.as_deref(), Some(&[0u8, 1][..]));
    assert_eq!(pp.content_type.as_deref(), Some("text/plain"));
    assert_eq!(pp.user_properties.len(), 1);
}

#[test]
fn subscribe_unsubscribe_and_acks() {
    let id = Props::new().with(Prop::VarInt(prop::SUBSCRIPTION_ID, 300));
    let bytes = raw::subscribe(
        Version::V5,
        5,
        &[("x/#", raw::sub_opts(2, true, true, 2)), ("$share/g/y", 1)],
        &id,
    );
    let codec::Packet::Subscribe(s) = codec_decode(&bytes, ProtocolVersion::V5).expect("ok") else {
        panic!("not a SUBSCRIBE")
    };
    assert_eq!(s.packet_id, 5);
    assert_eq!(s.properties.subscription_identifier, Some(300));
    assert_eq!(s.filters.len(), 2);
    let o = &s.filters[0].options;
    assert_eq!(
        (o.qos, o.no_local, o.retain_as_published),
        (QoS::ExactlyOnce, true, true)
    );
    assert_eq!(o.retain_handling, codec::RetainHandling::DoNotSend);
    assert_eq!(&*s.filters[1].filter, "$share/g/y");

    let bytes = raw::unsubscribe(Version::V311, 6, &["a", "b/+"]);
    let codec::Packet::Unsubscribe(u) = codec_decode(&bytes, ProtocolVersion::V311).expect("ok")
    else {
        panic!("not an UNSUBSCRIBE")
    };
    assert_eq!((u.packet_id, u.filters.len()), (6, 2));

    for (first, v) in [(0x40u8, 4u8), (0x50, 5), (0x62, 6), (0x70, 7)] {
        let p = codec_decode(&raw::ack(first, 9), ProtocolVersion::V5).expect("ack decodes");
        let (kind, pid) = match p {
            codec::Packet::PubAck(a) => (4, a.packet_id),
            codec::Packet::PubRec(a) => (5, a.packet_id),
            codec::Packet::PubRel(a) => (6, a.packet_id),
            codec::Packet::PubComp(a) => (7, a.packet_id),
            other => panic!("{other:?}"),
        };
        assert_eq!((kind, pid), (v, 9));
    }
    assert_eq!(
        codec_decode(&raw::pingreq(), ProtocolVersion::V5),
        Ok(codec::Packet::PingReq)
    );
    let d = codec_decode(
        &raw::disconnect(Version::V5, 0x04, &Props::new()),
        ProtocolVersion::V5,
    );
    assert!(matches!(d, Ok(codec::Packet::Disconnect(d)) if d.reason_code == ReasonCode(0x04)));
    let a = codec_decode(
        &raw::auth(
            0x19,
            &Props::new().with(Prop::Str(prop::AUTH_METHOD, "m".into())),
        ),
        ProtocolVersion::V5,
    );
    assert!(matches!(a, Ok(codec::Packet::Auth(a)) if a.reason_code == ReasonCode(0x19)));
}

#[test]
fn server_packets_read_by_the_harness() {
    let v5 = ProtocolVersion::V5;
    let connack = codec::Packet::ConnAck(Box::new(codec::ConnAck {
        session_present: true,
        reason_code: ReasonCode(0),
        properties: ConnAckProperties {
            receive_maximum: Some(10),
            assigned_client_identifier: Some("auto-1".into()),
            server_keep_alive: Some(30),
            topic_alias_maximum: Some(4),
            maximum_packet_size: Some(2048),
            ..Default::default()
        },
    }));
    match harness_decode(&connack, v5) {
        Packet::ConnAck {
            session_present,
            code,
            props,
        } => {
            assert!(session_present);
            assert_eq!(code, 0);
            assert_eq!(props.int(prop::RECEIVE_MAXIMUM), Some(10));
            assert_eq!(props.str(prop::ASSIGNED_CLIENT_ID), Some("auto-1"));
            assert_eq!(props.int(prop::SERVER_KEEP_ALIVE), Some(30));
            assert_eq!(props.int(prop::TOPIC_ALIAS_MAXIMUM), Some(4));
            assert_eq!(props.int(prop::MAXIMUM_PACKET_SIZE), Some(2048));
        }
        other => panic!("{other:?}"),
    }
    let publish = codec::Packet::Publish(codec::Publish {
        dup: true,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "t/1".into(),
        packet_id: 3,
        payload: Bytes::from_static(b"hi"),
        properties: PublishProperties {
            subscription_identifiers: vec![1, 300],
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        },
    });
    match harness_decode(&publish, v5) {
        Packet::Publish {
            topic,
            payload,
            qos,
            retain,
            dup,
            pid,
            props,
        } => {
            assert_eq!(
                (topic.as_str(), payload.as_slice(), qos, retain, dup, pid),
                ("t/1", &b"hi"[..], 1, false, true, 3)
            );
            assert_eq!(props.subscription_ids(), vec![1, 300]);
            assert_eq!(props.user(), vec![("k".to_string(), "v".to_string())]);
        }
        other => panic!("{other:?}"),
    }
    let disconnect = codec::Packet::Disconnect(codec::Disconnect {
        reason_code: ReasonCode(0x8E),
        properties: Default::default(),
    });
    assert!(matches!(
        harness_decode(&disconnect, v5),
        Packet::Disconnect { reason: 0x8E, .. }
    ));
}

/// The packets the raw tests send as malformed are malformed for the codec too, with the
/// reason code the raw tests expect.
#[test]
fn deliberately_malformed_packets() {
    let v5 = ProtocolVersion::V5;
    let qos3 = Publish::new("a", b"x").qos(3, 1).encode(Version::V5);
    let e = codec_decode(&qos3, v5).expect_err("QoS 3 is malformed");
    assert_eq!(e.reason_code(), ReasonCode(0x81), "{e}");

    let mut c = Connect::new(Version::V5, "r");
    c.reserved_flag = true;
    assert!(
        codec_decode(&c.encode(), v5).is_err(),
        "reserved CONNECT flag"
    );

    let pubrel_flags0 = [0x60, 0x02, 0x00, 0x01];
    let e = codec_decode(&pubrel_flags0, v5).expect_err("PUBREL with flags 0");
    assert_eq!(e.reason_code(), ReasonCode(0x81), "{e}");

    let no_filter = [0x82, 0x03, 0x00, 0x01, 0x00];
    assert!(
        codec_decode(&no_filter, v5).is_err(),
        "SUBSCRIBE without a filter"
    );
}
