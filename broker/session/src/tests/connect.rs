//! CONNECT, CONNACK, keep alive.

use std::time::Duration;

use bytes::BytesMut;
use halyard_codec::{
    ConnectProperties, MqttString, Packet, ProtocolVersion, QoS, ReasonCode, encode,
};

use super::util::{Pair, VERSIONS, connect, wire_will};
use crate::{CloseReason, Event, ProtocolError, SESSION_NEVER_EXPIRES, Session, SessionConfig};

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    for v in VERSIONS {
        let mut pair = Pair::new(SessionConfig::default(), v);
        pair.send(Packet::PingReq);
        assert!(pair.recv().is_empty());
        assert!(pair.conn.is_closed());
        let (will, reason) = pair.closed();
        assert_eq!(will, None);
        assert_eq!(
            reason,
            CloseReason::Protocol(ProtocolError::FirstPacketNotConnect)
        );
    }
}

#[test]
fn second_connect_is_a_protocol_error_mqtt_3_1_0_2() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.send(Packet::Connect(Box::new(connect(v, "client"))));
        let reason = pair.expect_protocol_close(ReasonCode::PROTOCOL_ERROR);
        assert_eq!(reason, CloseReason::Protocol(ProtocolError::SecondConnect));
    }
}

#[test]
fn v311_empty_client_id_with_clean_session_0_gets_0x02_mqtt_3_1_3_8() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "");
    c.clean_start = false;
    pair.send(Packet::Connect(Box::new(c)));
    match pair.recv_one() {
        // The 3.1.1 return code 0x02 decodes back as 0x85.
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        other => panic!("{other:?}"),
    }
    let (_, reason) = pair.closed();
    assert_eq!(
        reason,
        CloseReason::ConnectRefused(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
    );
}

#[test]
fn v311_empty_client_id_with_clean_session_1_gets_an_internal_id_mqtt_3_1_3_6() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
    let req = pair.connect_request(connect(ProtocolVersion::V311, ""));
    assert!(!req.client_id.is_empty());
    assert!(
        !req.client_id_assigned,
        "3.1.1 has no Assigned Client Identifier"
    );
}

#[test]
fn v5_empty_client_id_is_assigned_and_announced_mqtt_3_2_2_16() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let req = pair.connect_request(connect(ProtocolVersion::V5, ""));
    assert!(req.client_id_assigned);
    assert!(req.client_id.starts_with("halyard-"));
    pair.conn.accept_connect(pair.now, None, false);
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(
            a.properties.assigned_client_identifier.as_deref(),
            Some(&*req.client_id)
        ),
        other => panic!("{other:?}"),
    }
    // Two connections get different identifiers.
    let mut other = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let req2 = other.connect_request(connect(ProtocolVersion::V5, ""));
    assert_ne!(req.client_id, req2.client_id);
}

#[test]
fn client_id_longer_than_the_limit_is_refused() {
    let cfg = SessionConfig {
        max_client_id_len: 4,
        ..SessionConfig::default()
    };
    for v in VERSIONS {
        let mut pair = Pair::new(cfg.clone(), v);
        pair.send(Packet::Connect(Box::new(connect(v, "toolong"))));
        match pair.recv_one() {
            Packet::ConnAck(a) => {
                assert_eq!(a.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
            }
            other => panic!("{other:?}"),
        }
        assert!(pair.conn.is_closed());
    }
}

#[test]
fn v5_authentication_method_is_refused_with_0x8c() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "c");
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    pair.send(Packet::Connect(Box::new(c)));
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD),
        other => panic!("{other:?}"),
    }
    let (_, reason) = pair.closed();
    assert_eq!(
        reason,
        CloseReason::ConnectRefused(ReasonCode::BAD_AUTHENTICATION_METHOD)
    );
}

/// A CONNECT encoded for `v` with its protocol level byte replaced by `level`.
fn connect_with_level(v: ProtocolVersion, level: u8) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(Box::new(connect(v, "c"))), v, &mut buf).unwrap();
    // Fixed header (2 bytes for a short packet), then 00 04 'M' 'Q' 'T' 'T' level.
    assert_eq!(&buf[2..8], b"\0\x04MQTT");
    buf[8] = level;
    buf
}

#[test]
fn unsupported_protocol_level_gets_connack_0x01_mqtt_3_1_2_2() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
    pair.send_raw(&connect_with_level(ProtocolVersion::V311, 3));
    // 3.1.1 CONNACK: 20 02 00 01 (unacceptable protocol version).
    let mut out = BytesMut::new();
    pair.conn.poll_transmit(&mut out);
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x01]);
    assert!(pair.conn.is_closed());
}

#[test]
fn connect_reserved_flag_closes_without_connack_mqtt_3_1_2_3() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
    let mut buf = connect_with_level(ProtocolVersion::V311, 4);
    buf[9] |= 0x01;
    pair.send_raw(&buf);
    assert!(pair.recv().is_empty());
    assert!(pair.conn.is_closed());
    let (_, reason) = pair.closed();
    assert!(matches!(
        reason,
        CloseReason::Protocol(ProtocolError::Decode(_))
    ));
}

#[test]
fn v5_malformed_connect_gets_connack_with_the_reason_code() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let mut buf = connect_with_level(ProtocolVersion::V5, 5);
    buf[9] |= 0x01; // reserved flag [MQTT-3.1.2-3]
    pair.send_raw(&buf);
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::MALFORMED_PACKET),
        other => panic!("{other:?}"),
    }
    assert!(pair.conn.is_closed());
}

#[test]
fn connect_timeout_closes_silently() {
    let cfg = SessionConfig {
        connect_timeout: Duration::from_secs(5),
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V311);
    pair.advance(Duration::from_secs(4));
    assert!(!pair.conn.is_closed());
    pair.advance(Duration::from_secs(1));
    assert!(pair.conn.is_closed());
    assert!(pair.recv().is_empty());
    assert_eq!(pair.closed().1, CloseReason::ConnectTimeout);
    assert_eq!(pair.conn.poll_timeout(), None);
}

#[test]
fn keepalive_closes_after_one_and_a_half_times_mqtt_3_1_2_24_and_5_0_mqtt_3_1_2_22() {
    for v in VERSIONS {
        let mut pair = Pair::new(SessionConfig::default(), v);
        let mut c = connect(v, "ka");
        c.keep_alive = 10;
        c.will = Some(wire_will("will/ka"));
        pair.establish(c, None);
        // Any packet restarts the period.
        pair.advance(Duration::from_secs(14));
        pair.send(Packet::PingReq);
        assert!(matches!(pair.recv_one(), Packet::PingResp));
        pair.advance(Duration::from_millis(14_999));
        assert!(!pair.conn.is_closed());
        pair.advance(Duration::from_millis(1));
        assert!(pair.conn.is_closed());
        let out = pair.recv();
        match v {
            ProtocolVersion::V5 => match out.as_slice() {
                [Packet::Disconnect(d)] => {
                    assert_eq!(d.reason_code, ReasonCode::KEEP_ALIVE_TIMEOUT);
                }
                other => panic!("{other:?}"),
            },
            ProtocolVersion::V311 => assert!(out.is_empty()),
        }
        let (will, reason) = pair.closed();
        assert_eq!(reason, CloseReason::KeepAliveTimeout);
        assert_eq!(will.unwrap().topic, "will/ka");
        assert_eq!(pair.conn.stats().keepalive_timeouts, 1);
    }
}

#[test]
fn keepalive_zero_never_times_out() {
    let mut pair = Pair::connected(ProtocolVersion::V311, SessionConfig::default());
    assert_eq!(pair.conn.poll_timeout(), None);
    pair.advance(Duration::from_secs(1_000_000));
    assert!(!pair.conn.is_closed());
}

#[test]
fn v5_server_keep_alive_caps_the_client_mqtt_3_2_2_21() {
    let cfg = SessionConfig {
        max_keepalive: 30,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "ka");
    c.keep_alive = 60;
    let req = pair.connect_request(c);
    assert_eq!(req.keep_alive, 30);
    pair.conn.accept_connect(pair.now, None, false);
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.properties.server_keep_alive, Some(30)),
        other => panic!("{other:?}"),
    }
    pair.advance(Duration::from_secs(45));
    assert!(pair.conn.is_closed(), "the server keep alive is enforced");
}

#[test]
fn v5_required_keepalive_replaces_zero() {
    let cfg = SessionConfig {
        max_keepalive: 20,
        require_keepalive: true,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    let req = pair.connect_request(connect(ProtocolVersion::V5, "ka"));
    assert_eq!(req.keep_alive, 20);
}

#[test]
fn v311_keepalive_above_the_maximum_is_refused() {
    let cfg = SessionConfig {
        max_keepalive: 30,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "ka");
    c.keep_alive = 60;
    pair.send(Packet::Connect(Box::new(c)));
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        other => panic!("{other:?}"),
    }
}

#[test]
fn session_present_only_without_clean_start_mqtt_3_2_2_2() {
    for v in VERSIONS {
        for clean_start in [false, true] {
            let cfg = SessionConfig::default();
            let mut pair = Pair::new(cfg.clone(), v);
            let mut c = connect(v, "sp");
            c.clean_start = clean_start;
            pair.connect_request(c);
            let session = Session::new("sp".into(), 100, &cfg);
            pair.conn.accept_connect(pair.now, Some(session), true);
            match pair.recv_one() {
                Packet::ConnAck(a) => assert_eq!(a.session_present, !clean_start),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn session_expiry_interval_per_version() {
    // 3.1.1: Clean Session 0 = never expires, 1 = ends with the connection.
    for (clean, expected) in [(false, SESSION_NEVER_EXPIRES), (true, 0)] {
        let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
        let mut c = connect(ProtocolVersion::V311, "x");
        c.clean_start = clean;
        assert_eq!(pair.connect_request(c).session_expiry_interval, expected);
    }
    // 5.0: the property, absent = 0 (MQTT 5.0 §3.1.2.11.2).
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "x");
    c.properties = ConnectProperties {
        session_expiry_interval: Some(77),
        ..ConnectProperties::default()
    };
    assert_eq!(pair.connect_request(c).session_expiry_interval, 77);
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    assert_eq!(
        pair.connect_request(connect(ProtocolVersion::V5, "x"))
            .session_expiry_interval,
        0
    );
}

#[test]
fn reject_connect_maps_the_reason_code_per_version() {
    for (v, expected) in [
        // 0x86 is 3.1.1 return code 4, which decodes back as 0x86.
        (ProtocolVersion::V311, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        (ProtocolVersion::V5, ReasonCode::BAD_USER_NAME_OR_PASSWORD),
    ] {
        let mut pair = Pair::new(SessionConfig::default(), v);
        pair.connect_request(connect(v, "c"));
        pair.conn
            .reject_connect(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        match pair.recv_one() {
            Packet::ConnAck(a) => assert_eq!(a.reason_code, expected),
            other => panic!("{other:?}"),
        }
        let (will, reason) = pair.closed();
        assert_eq!(will, None);
        assert_eq!(
            reason,
            CloseReason::ConnectRefused(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
    }
    // 3.1.1 raw bytes: return code 4.
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
    pair.connect_request(connect(ProtocolVersion::V311, "c"));
    pair.conn
        .reject_connect(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let mut out = BytesMut::new();
    pair.conn.poll_transmit(&mut out);
    assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x04]);
}

#[test]
fn packets_after_connect_wait_for_the_decision_mqtt_3_1_4_5() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    pair.send(Packet::Connect(Box::new(connect(ProtocolVersion::V5, "c"))));
    pair.publish("a/b", QoS::AtMostOnce, 0);
    let events = pair.events();
    assert_eq!(events.len(), 1, "only the Connect event: {events:?}");
    pair.conn.accept_connect(pair.now, None, false);
    assert!(matches!(pair.recv_one(), Packet::ConnAck(_)));
    match pair.event() {
        Event::Publish { message, .. } => assert_eq!(message.topic, "a/b"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn v5_connack_announces_our_limits() {
    let cfg = SessionConfig {
        receive_maximum: 10,
        max_packet_size: 4096,
        topic_alias_maximum: 5,
        maximum_qos: QoS::AtLeastOnce,
        retain_available: false,
        wildcard_subscription_available: false,
        shared_subscription_available: false,
        subscription_identifiers_available: false,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    pair.connect_request(connect(ProtocolVersion::V5, "c"));
    pair.conn.accept_connect(pair.now, None, false);
    let Packet::ConnAck(a) = pair.recv_one() else {
        panic!("no CONNACK")
    };
    let p = a.properties;
    assert_eq!(p.receive_maximum, Some(10));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.retain_available, Some(false));
    assert_eq!(p.wildcard_subscription_available, Some(false));
    assert_eq!(p.shared_subscription_available, Some(false));
    assert_eq!(p.subscription_identifiers_available, Some(false));
    assert_eq!(p.assigned_client_identifier, None::<MqttString>);
}

#[test]
fn will_qos_above_maximum_is_refused_mqtt_3_2_2_12() {
    let cfg = SessionConfig {
        maximum_qos: QoS::AtMostOnce,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "c");
    c.will = Some(wire_will("w"));
    pair.send(Packet::Connect(Box::new(c)));
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::QOS_NOT_SUPPORTED),
        other => panic!("{other:?}"),
    }
}

#[test]
fn will_topic_with_wildcard_is_refused() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "c");
    c.will = Some(wire_will("w/#"));
    pair.send(Packet::Connect(Box::new(c)));
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::TOPIC_NAME_INVALID),
        other => panic!("{other:?}"),
    }
}

#[test]
fn will_properties_reach_the_request() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "c");
    let mut w = wire_will("w");
    w.properties.will_delay_interval = Some(30);
    w.properties.message_expiry_interval = Some(60);
    w.properties.content_type = Some("text/plain".into());
    c.will = Some(w);
    let will = pair.connect_request(c).will.unwrap();
    assert_eq!(will.delay_interval, 30);
    assert_eq!(will.message_expiry_interval, Some(60));
    assert_eq!(will.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(will.qos, QoS::AtLeastOnce);
}

#[test]
fn input_while_the_connect_awaits_its_answer_is_bounded() {
    let cfg = SessionConfig {
        max_packet_size: 128,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    pair.connect_request(connect(ProtocolVersion::V5, "c"));
    pair.send_raw(&[0xC0, 0x00].repeat(60));
    assert!(!pair.conn.is_closed(), "a pipelined burst is fine");
    pair.send_raw(&[0xC0, 0x00].repeat(10));
    assert!(pair.conn.is_closed());
    assert!(pair.recv().is_empty());
    assert_eq!(
        pair.closed().1,
        CloseReason::Protocol(ProtocolError::InputBeforeConnack)
    );
}

#[test]
fn v5_will_retain_when_retain_unavailable_is_refused_mqtt_3_2_2_13() {
    let cfg = SessionConfig {
        retain_available: false,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "c");
    let mut w = wire_will("w");
    w.retain = true;
    c.will = Some(w);
    pair.send(Packet::Connect(Box::new(c)));
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.reason_code, ReasonCode::RETAIN_NOT_SUPPORTED),
        other => panic!("{other:?}"),
    }
}

#[test]
fn v5_session_expiry_is_capped_and_announced_mqtt_3_2_2_3_2() {
    let cfg = SessionConfig {
        max_session_expiry: 600,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg.clone(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "exp");
    c.properties = ConnectProperties {
        session_expiry_interval: Some(3600),
        ..ConnectProperties::default()
    };
    assert_eq!(pair.connect_request(c).session_expiry_interval, 600);
    pair.conn.accept_connect(pair.now, None, false);
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.properties.session_expiry_interval, Some(600)),
        other => panic!("{other:?}"),
    }
    // Below the cap: nothing to announce, the client's value stands.
    let mut pair = Pair::new(cfg.clone(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "exp");
    c.properties = ConnectProperties {
        session_expiry_interval: Some(60),
        ..ConnectProperties::default()
    };
    assert_eq!(pair.connect_request(c).session_expiry_interval, 60);
    pair.conn.accept_connect(pair.now, None, false);
    match pair.recv_one() {
        Packet::ConnAck(a) => assert_eq!(a.properties.session_expiry_interval, None),
        other => panic!("{other:?}"),
    }
    // 3.1.1 Clean Session 0 (never expires) is capped too.
    let mut pair = Pair::new(cfg, ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "exp");
    c.clean_start = false;
    assert_eq!(pair.connect_request(c).session_expiry_interval, 600);
}
