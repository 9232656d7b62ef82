//! Writes the seed corpus of the `decode` fuzz target: one real packet of every type for both
//! protocol versions, a few packets back to back, and a few malformed inputs.
//!
//! `cargo run -p halyard-codec --example fuzz_seeds -- broker/codec/fuzz/corpus/decode`

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use halyard_codec::*;

fn packets(v: ProtocolVersion) -> Vec<(&'static str, Packet)> {
    let v5 = v == ProtocolVersion::V5;
    let user = || {
        if v5 {
            vec![("k".into(), "v".into())]
        } else {
            vec![]
        }
    };
    let ack_props = || AckProperties {
        reason_string: v5.then(|| "why".into()),
        user_properties: user(),
    };
    let mut connect = Connect {
        protocol_version: v,
        clean_start: true,
        keep_alive: 60,
        client_id: "client-1".into(),
        will: Some(Will {
            topic: "last/will".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some("user".into()),
        password: Some(Bytes::from_static(b"secret")),
        properties: ConnectProperties::default(),
    };
    let mut connack = ConnAck {
        session_present: true,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties::default(),
    };
    let mut publish = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        topic: "sensors/1/temp".into(),
        packet_id: 42,
        payload: Bytes::from_static(b"21.5"),
        properties: PublishProperties::default(),
    };
    let mut subscribe = Subscribe {
        packet_id: 7,
        filters: vec![
            SubscribeFilter {
                filter: "a/+/c".into(),
                options: SubscriptionOptions::qos(QoS::AtLeastOnce),
            },
            SubscribeFilter {
                filter: "$share/g/d/#".into(),
                options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            },
        ],
        properties: SubscribeProperties::default(),
    };
    let mut disconnect = Disconnect::default();
    if v5 {
        connect.properties = ConnectProperties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            maximum_packet_size: Some(65_536),
            topic_alias_maximum: Some(10),
            request_response_information: Some(true),
            request_problem_information: Some(false),
            authentication_method: Some("SCRAM".into()),
            authentication_data: Some(Bytes::from_static(b"\x01\x02")),
            user_properties: user(),
        };
        if let Some(w) = connect.will.as_mut() {
            w.properties = WillProperties {
                will_delay_interval: Some(5),
                payload_format_indicator: Some(true),
                message_expiry_interval: Some(60),
                content_type: Some("text/plain".into()),
                response_topic: Some("reply".into()),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: user(),
            };
        }
        connack.properties = ConnAckProperties {
            session_expiry_interval: Some(0),
            receive_maximum: Some(100),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(true),
            maximum_packet_size: Some(1 << 20),
            assigned_client_identifier: Some("auto-1".into()),
            topic_alias_maximum: Some(16),
            reason_string: Some("ok".into()),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(true),
            shared_subscription_available: Some(false),
            server_keep_alive: Some(30),
            response_information: Some("resp/".into()),
            server_reference: Some("other:1883".into()),
            authentication_method: None,
            authentication_data: None,
            user_properties: user(),
        };
        publish.properties = PublishProperties {
            payload_format_indicator: Some(true),
            message_expiry_interval: Some(30),
            topic_alias: Some(3),
            response_topic: Some("reply/to".into()),
            correlation_data: Some(Bytes::from_static(b"id-1")),
            subscription_identifiers: vec![1, 300],
            content_type: Some("text/plain".into()),
            user_properties: user(),
        };
        subscribe.filters[0].options.no_local = true;
        subscribe.filters[0].options.retain_as_published = true;
        subscribe.filters[1].options.retain_handling = RetainHandling::DoNotSend;
        subscribe.properties.subscription_identifier = Some(1000);
        subscribe.properties.user_properties = user();
        disconnect.reason_code = ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        disconnect.properties.session_expiry_interval = Some(10);
        disconnect.properties.reason_string = Some("bye".into());
    }
    let pub_response = |id, code| PubResponse {
        packet_id: id,
        reason_code: if v5 { code } else { ReasonCode::SUCCESS },
        properties: ack_props(),
    };
    let mut list = vec![
        ("connect", Packet::Connect(Box::new(connect))),
        ("connack", Packet::ConnAck(Box::new(connack))),
        ("publish-qos2", Packet::Publish(publish)),
        (
            "publish-qos0",
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "t".into(),
                packet_id: 0,
                payload: Bytes::new(),
                properties: PublishProperties::default(),
            }),
        ),
        (
            "puback",
            Packet::PubAck(pub_response(1, ReasonCode::NO_MATCHING_SUBSCRIBERS)),
        ),
        (
            "pubrec",
            Packet::PubRec(pub_response(2, ReasonCode::QUOTA_EXCEEDED)),
        ),
        (
            "pubrel",
            Packet::PubRel(pub_response(3, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND)),
        ),
        (
            "pubcomp",
            Packet::PubComp(pub_response(4, ReasonCode::SUCCESS)),
        ),
        ("subscribe", Packet::Subscribe(subscribe)),
        (
            "suback",
            Packet::SubAck(SubAck {
                packet_id: 7,
                reason_codes: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR],
                properties: ack_props(),
            }),
        ),
        (
            "unsubscribe",
            Packet::Unsubscribe(Unsubscribe {
                packet_id: 8,
                filters: vec!["a/+/c".into(), "x".into()],
                properties: UnsubscribeProperties {
                    user_properties: user(),
                },
            }),
        ),
        (
            "unsuback",
            Packet::UnsubAck(UnsubAck {
                packet_id: 8,
                reason_codes: if v5 {
                    vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
                } else {
                    vec![]
                },
                properties: ack_props(),
            }),
        ),
        ("pingreq", Packet::PingReq),
        ("pingresp", Packet::PingResp),
        ("disconnect", Packet::Disconnect(disconnect)),
    ];
    if v5 {
        list.push((
            "auth",
            Packet::Auth(Auth {
                reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: AuthProperties {
                    authentication_method: Some("SCRAM".into()),
                    authentication_data: Some(Bytes::from_static(b"nonce")),
                    reason_string: None,
                    user_properties: user(),
                },
            }),
        ));
    }
    list
}

/// Inputs the decoder must reject (each breaks one rule).
const MALFORMED: &[(&str, &[u8])] = &[
    ("bad-huge-length", &[0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
    ("bad-vbi-5-bytes", &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    ("bad-pubrel-flags", &[0x60, 2, 0, 1]),
    ("bad-publish-qos3", &[0x36, 5, 0, 1, b'a', 0, 1]),
    ("bad-utf8-topic", &[0x30, 5, 0, 3, b'a', 0xFF, b'b']),
    ("bad-null-topic", &[0x30, 5, 0, 3, b'a', 0, b'b']),
    (
        "bad-mqisdp",
        &[
            0x10, 15, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 1, b'c',
        ],
    ),
    ("bad-empty-subscribe", &[0x82, 2, 0, 1]),
    (
        "bad-dup-property",
        &[0x30, 14, 0, 1, b'a', 10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2],
    ),
    ("bad-trailing", &[0xC0, 1, 0]),
];

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus/decode".into()),
    );
    std::fs::create_dir_all(&dir).expect("create corpus directory");
    let mut count = 0;
    for (v, tag) in [(ProtocolVersion::V311, "v311"), (ProtocolVersion::V5, "v5")] {
        let mut stream = BytesMut::new();
        for (name, packet) in packets(v) {
            let mut out = BytesMut::new();
            encode(&packet, v, &mut out).expect("seed packet encodes");
            stream.extend_from_slice(&out);
            std::fs::write(dir.join(format!("{tag}-{name}")), &out).expect("write seed");
            count += 1;
        }
        std::fs::write(dir.join(format!("{tag}-stream")), &stream).expect("write seed");
        count += 1;
    }
    for (name, bytes) in MALFORMED {
        std::fs::write(dir.join(name), bytes).expect("write seed");
        count += 1;
    }
    println!("wrote {count} seeds to {}", dir.display());
}
