//! PUBLISH from the client: validation, acknowledgements, flow control, aliases.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use halyard_codec::{Auth, ConnectProperties, Packet, ProtocolVersion, QoS, ReasonCode, encode};

use super::util::{Pair, VERSIONS, connect, publish};
use crate::{CloseReason, Event, ProtocolError, SessionConfig};

fn publish_event(pair: &mut Pair) -> (Option<u16>, std::sync::Arc<crate::Message>) {
    match pair.event() {
        Event::Publish { packet_id, message } => (packet_id, message),
        other => panic!("expected Publish, got {other:?}"),
    }
}

#[test]
fn qos0_publish_is_emitted_without_acknowledgement() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.publish("a/b", QoS::AtMostOnce, 0);
        let (id, m) = publish_event(&mut pair);
        assert_eq!(id, None);
        assert_eq!(m.topic, "a/b");
        assert_eq!(m.payload, Bytes::from_static(b"hello"));
        assert_eq!(m.publisher.as_deref(), Some("client"));
        assert!(pair.recv().is_empty());
        assert_eq!(pair.conn.stats().publish_in, [1, 0, 0]);
    }
}

#[test]
fn qos1_is_acknowledged_only_by_the_server_with_its_reason_code() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.publish("a", QoS::AtLeastOnce, 7);
        let (id, _) = publish_event(&mut pair);
        assert_eq!(id, Some(7));
        assert!(pair.recv().is_empty(), "the session never acks on its own");
        pair.conn
            .complete_publish(pair.now, 7, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        match pair.recv_one() {
            Packet::PubAck(a) => {
                assert_eq!(a.packet_id, 7);
                let expected = match v {
                    ProtocolVersion::V5 => ReasonCode::NO_MATCHING_SUBSCRIBERS,
                    // 3.1.1 PUBACK carries no code.
                    ProtocolVersion::V311 => ReasonCode::SUCCESS,
                };
                assert_eq!(a.reason_code, expected);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn acknowledgements_leave_in_arrival_order_mqtt_4_6_0_2() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.publish("a", QoS::AtLeastOnce, 1);
    pair.publish("a", QoS::ExactlyOnce, 2);
    pair.publish("a", QoS::AtLeastOnce, 3);
    assert_eq!(pair.events().len(), 3);
    pair.conn.complete_publish(pair.now, 3, ReasonCode::SUCCESS);
    pair.conn.complete_publish(pair.now, 2, ReasonCode::SUCCESS);
    assert!(pair.recv().is_empty(), "PUBACK 1 must go first");
    pair.conn.complete_publish(pair.now, 1, ReasonCode::SUCCESS);
    let out = pair.recv();
    let ids: Vec<_> = out
        .iter()
        .map(|p| match p {
            Packet::PubAck(a) => ("puback", a.packet_id),
            Packet::PubRec(a) => ("pubrec", a.packet_id),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, [("puback", 1), ("pubrec", 2), ("puback", 3)]);
}

#[test]
fn qos2_exchange_and_duplicate_suppression_mqtt_4_3_3() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.publish("q2", QoS::ExactlyOnce, 9);
        assert_eq!(publish_event(&mut pair).0, Some(9));
        // A duplicate while the server has not answered: not emitted, no packet.
        let mut dup = publish("q2", QoS::ExactlyOnce, 9);
        dup.dup = true;
        pair.send(Packet::Publish(dup.clone()));
        assert!(pair.events().is_empty());
        pair.conn.complete_publish(pair.now, 9, ReasonCode::SUCCESS);
        assert!(matches!(pair.recv_one(), Packet::PubRec(r) if r.packet_id == 9));
        // A duplicate after PUBREC: not emitted again, PUBREC again.
        pair.send(Packet::Publish(dup));
        assert!(pair.events().is_empty());
        assert!(matches!(pair.recv_one(), Packet::PubRec(r) if r.packet_id == 9));
        assert_eq!(pair.conn.stats().qos2_duplicates, 2);
        // PUBREL releases the id: PUBCOMP.
        pair.ack(Packet::PubRel, 9);
        match pair.recv_one() {
            Packet::PubComp(c) => {
                assert_eq!((c.packet_id, c.reason_code), (9, ReasonCode::SUCCESS));
            }
            other => panic!("{other:?}"),
        }
        // The id can be reused for a new message.
        pair.publish("q2", QoS::ExactlyOnce, 9);
        assert_eq!(publish_event(&mut pair).0, Some(9));
    }
}

#[test]
fn v5_pubrel_for_unknown_id_gets_pubcomp_0x92() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.ack(Packet::PubRel, 4);
    match pair.recv_one() {
        Packet::PubComp(c) => assert_eq!(c.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
        other => panic!("{other:?}"),
    }
}

#[test]
fn v5_failed_qos2_pubrec_ends_the_exchange() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.publish("q2", QoS::ExactlyOnce, 3);
    pair.events();
    pair.conn
        .complete_publish(pair.now, 3, ReasonCode::NOT_AUTHORIZED);
    match pair.recv_one() {
        Packet::PubRec(r) => assert_eq!(r.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("{other:?}"),
    }
    // Not awaiting PUBREL: the same id is a new message.
    pair.publish("q2", QoS::ExactlyOnce, 3);
    assert_eq!(publish_event(&mut pair).0, Some(3));
}

#[test]
fn receive_maximum_exceeded_disconnects_with_0x93_mqtt_3_3_4_7() {
    let cfg = SessionConfig {
        receive_maximum: 2,
        ..SessionConfig::default()
    };
    for v in VERSIONS {
        let mut pair = Pair::connected(v, cfg.clone());
        pair.publish("a", QoS::AtLeastOnce, 1);
        pair.publish("a", QoS::ExactlyOnce, 2);
        assert_eq!(pair.events().len(), 2);
        // Acknowledging one frees one slot.
        pair.conn.complete_publish(pair.now, 1, ReasonCode::SUCCESS);
        pair.recv();
        pair.publish("a", QoS::AtLeastOnce, 3);
        assert_eq!(pair.events().len(), 1);
        // PUBREC does not free the QoS 2 slot (only PUBCOMP does): one more is too many.
        pair.conn.complete_publish(pair.now, 2, ReasonCode::SUCCESS);
        pair.recv();
        pair.publish("a", QoS::AtLeastOnce, 4);
        let reason = pair.expect_protocol_close(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        assert_eq!(
            reason,
            CloseReason::Protocol(ProtocolError::ReceiveMaximumExceeded)
        );
        assert_eq!(pair.conn.stats().receive_maximum_exceeded, 1);
    }
}

#[test]
fn qos_above_maximum_qos_disconnects_with_0x9b_mqtt_3_2_2_11() {
    let cfg = SessionConfig {
        maximum_qos: QoS::AtLeastOnce,
        ..SessionConfig::default()
    };
    for v in VERSIONS {
        let mut pair = Pair::connected(v, cfg.clone());
        pair.publish("a", QoS::ExactlyOnce, 1);
        pair.expect_protocol_close(ReasonCode::QOS_NOT_SUPPORTED);
    }
}

#[test]
fn retain_when_unavailable_disconnects_with_0x9a_mqtt_3_2_2_14() {
    let cfg = SessionConfig {
        retain_available: false,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    let mut p = publish("a", QoS::AtMostOnce, 0);
    p.retain = true;
    pair.send(Packet::Publish(p));
    pair.expect_protocol_close(ReasonCode::RETAIN_NOT_SUPPORTED);
}

#[test]
fn wildcard_in_topic_name_is_0x90_mqtt_3_3_2_2() {
    for v in VERSIONS {
        for topic in ["a/+", "a/#"] {
            let mut pair = Pair::connected(v, SessionConfig::default());
            pair.publish(topic, QoS::AtMostOnce, 0);
            let reason = pair.expect_protocol_close(ReasonCode::TOPIC_NAME_INVALID);
            assert!(matches!(
                reason,
                CloseReason::Protocol(ProtocolError::TopicNameInvalid(_))
            ));
        }
    }
}

#[test]
fn v311_empty_topic_is_invalid_mqtt_4_7_3_1() {
    let mut pair = Pair::connected(ProtocolVersion::V311, SessionConfig::default());
    pair.publish("", QoS::AtMostOnce, 0);
    pair.expect_protocol_close(ReasonCode::TOPIC_NAME_INVALID);
}

#[test]
fn v5_topic_alias_maps_and_resolves() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut p = publish("long/topic/name", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(3);
    pair.send(Packet::Publish(p.clone()));
    assert_eq!(publish_event(&mut pair).1.topic, "long/topic/name");
    p.topic = "".into();
    pair.send(Packet::Publish(p.clone()));
    assert_eq!(publish_event(&mut pair).1.topic, "long/topic/name");
    // Re-mapping the alias to another topic.
    p.topic = "other".into();
    pair.send(Packet::Publish(p.clone()));
    publish_event(&mut pair);
    p.topic = "".into();
    pair.send(Packet::Publish(p));
    assert_eq!(publish_event(&mut pair).1.topic, "other");
}

#[test]
fn v5_topic_alias_above_our_maximum_is_0x94_mqtt_3_3_2_10() {
    let cfg = SessionConfig {
        topic_alias_maximum: 2,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    let mut p = publish("t", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(3);
    pair.send(Packet::Publish(p));
    pair.expect_protocol_close(ReasonCode::TOPIC_ALIAS_INVALID);
}

#[test]
fn v5_unknown_topic_alias_is_a_protocol_error() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut p = publish("", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(1);
    pair.send(Packet::Publish(p));
    pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
    // Empty topic and no alias at all.
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.publish("", QoS::AtMostOnce, 0);
    pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn v5_topic_aliases_do_not_survive_the_connection_mqtt_3_3_2_7() {
    let cfg = SessionConfig::default();
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg.clone());
    let mut p = publish("t", QoS::AtMostOnce, 0);
    p.properties.topic_alias = Some(1);
    pair.send(Packet::Publish(p.clone()));
    publish_event(&mut pair);
    let mut c = connect(ProtocolVersion::V5, "client");
    c.clean_start = false;
    c.properties = ConnectProperties {
        session_expiry_interval: Some(60),
        ..ConnectProperties::default()
    };
    pair.send(Packet::Disconnect(Default::default()));
    pair.events();
    let mut next = Pair::new(cfg, ProtocolVersion::V5);
    next.establish(c, None);
    p.topic = "".into();
    next.send(Packet::Publish(p));
    next.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn message_expiry_interval_sets_expires_at() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut p = publish("t", QoS::AtMostOnce, 0);
    p.properties.message_expiry_interval = Some(30);
    pair.send(Packet::Publish(p));
    let m = publish_event(&mut pair).1;
    assert_eq!(m.expires_at, Some(pair.now + Duration::from_secs(30)));
    assert_eq!(m.remaining_expiry_secs(pair.now), Some(30));
}

#[test]
fn v5_subscription_identifier_from_client_is_a_protocol_error_mqtt_3_3_4_6() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut p = publish("t", QoS::AtMostOnce, 0);
    p.properties.subscription_identifiers = vec![5];
    pair.send(Packet::Publish(p));
    pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn v5_invalid_utf8_with_payload_format_indicator_gets_0x99() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut p = publish("t", QoS::AtLeastOnce, 1);
    p.payload = Bytes::from_static(&[0xff, 0xfe]);
    p.properties.payload_format_indicator = Some(true);
    pair.send(Packet::Publish(p));
    assert!(pair.events().is_empty(), "not forwarded");
    match pair.recv_one() {
        Packet::PubAck(a) => assert_eq!(a.reason_code, ReasonCode::PAYLOAD_FORMAT_INVALID),
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_packet_is_0x81() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        // PUBLISH with QoS 3 [MQTT-3.3.1-4].
        pair.send_raw(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]);
        let reason = pair.expect_protocol_close(ReasonCode::MALFORMED_PACKET);
        assert!(matches!(
            reason,
            CloseReason::Protocol(ProtocolError::Decode(_))
        ));
    }
}

#[test]
fn packet_larger_than_our_maximum_is_0x95_before_buffering() {
    let cfg = SessionConfig {
        max_packet_size: 64,
        ..SessionConfig::default()
    };
    for v in VERSIONS {
        let mut pair = Pair::connected(v, cfg.clone());
        let mut p = publish("t", QoS::AtMostOnce, 0);
        p.payload = Bytes::from(vec![b'x'; 100]);
        let mut buf = BytesMut::new();
        encode(&Packet::Publish(p), v, &mut buf).unwrap();
        // Only the fixed header arrives: the size is known, the body is never awaited.
        pair.send_raw(&buf[..3]);
        pair.expect_protocol_close(ReasonCode::PACKET_TOO_LARGE);
    }
}

#[test]
fn v5_auth_without_method_is_a_protocol_error() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.send(Packet::Auth(Auth::default()));
    let reason = pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
    assert_eq!(reason, CloseReason::Protocol(ProtocolError::UnexpectedAuth));
}

#[test]
fn server_only_packet_from_client_is_a_protocol_error() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.send(Packet::PingResp);
        pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
    }
}

#[test]
fn pingreq_gets_pingresp() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.send(Packet::PingReq);
        assert!(matches!(pair.recv_one(), Packet::PingResp));
    }
}

#[test]
fn complete_publish_for_an_unknown_id_is_ignored() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.conn
        .complete_publish(pair.now, 99, ReasonCode::SUCCESS);
    assert!(pair.recv().is_empty());
    assert!(!pair.conn.is_closed());
}

#[test]
fn v5_server_codes_not_allowed_in_puback_become_0x80() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    pair.publish("a", QoS::AtLeastOnce, 1);
    pair.events();
    pair.conn
        .complete_publish(pair.now, 1, ReasonCode::PACKET_TOO_LARGE);
    match pair.recv_one() {
        Packet::PubAck(a) => assert_eq!(a.reason_code, ReasonCode::UNSPECIFIED_ERROR),
        other => panic!("{other:?}"),
    }
}

#[test]
fn qos2_completed_after_close_still_filters_the_resend() {
    // A durable store may answer after the socket died: the id must still be recorded so
    // the client's resend after reconnect is not routed twice.
    let cfg = SessionConfig::default();
    let mut pair = Pair::new(cfg.clone(), ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "late");
    c.clean_start = false;
    pair.establish(c.clone(), None);
    pair.publish("t", QoS::ExactlyOnce, 8);
    pair.events();
    pair.conn.socket_closed(pair.now);
    pair.conn.complete_publish(pair.now, 8, ReasonCode::SUCCESS);
    assert!(pair.recv().is_empty(), "nothing is sent once closed");
    let conn = std::mem::replace(
        &mut pair.conn,
        crate::Connection::new(std::sync::Arc::new(cfg.clone()), pair.now),
    );
    let session = conn.into_session().unwrap();
    assert_eq!(session.incoming_qos2_len(), 1);
    let mut next = Pair::new(cfg, ProtocolVersion::V311);
    next.establish(c, Some(session));
    let mut p = publish("t", QoS::ExactlyOnce, 8);
    p.dup = true;
    next.send(Packet::Publish(p));
    assert!(next.events().is_empty());
}

#[test]
fn counters_taken_in_place_start_again_from_zero() {
    let mut pair = Pair::connected(ProtocolVersion::V311, SessionConfig::default());
    pair.publish("a", QoS::AtMostOnce, 0);
    let _ = publish_event(&mut pair);
    let first = pair.conn.take_stats_kept();
    assert_eq!(first.publish_in, [1, 0, 0]);
    assert!(first.bytes_in > 0);
    // Zeroed, not gone: the next count adds to zero.
    assert_eq!(pair.conn.stats().publish_in, [0, 0, 0]);
    pair.publish("a", QoS::AtMostOnce, 0);
    let _ = publish_event(&mut pair);
    assert_eq!(pair.conn.take_stats_kept().publish_in, [1, 0, 0]);
    // Taking them the freeing way afterwards gives what is left (nothing) and frees them.
    assert_eq!(pair.conn.take_stats(), crate::ConnectionStats::default());
    assert_eq!(
        pair.conn.take_stats_kept(),
        crate::ConnectionStats::default()
    );
}

/// A busy publisher's event queue holds one `Event` per PUBLISH of a read and is grown from
/// empty for each read: the rare variants are boxed so that an event stays a few words.
#[test]
fn events_stay_small() {
    let size = std::mem::size_of::<crate::Event>();
    assert!(size <= 64, "Event is {size} B");
}
