//! Protocol edge cases over raw sockets with hand-built packets: CONNECT validation, keepalive,
//! protocol violations and malformed input. Each test starts its own broker.
//!
//! Against Mosquitto 2.0.11 (`HALYARD_TEST_AGAINST=mosquitto`) every test passes except:
//! - `v5_second_connect_disconnect_0x82`: Mosquitto closes without DISCONNECT 0x82.
//! - `v5_invalid_topic_name_disconnect_0x90`: Mosquitto sends DISCONNECT 0x82 instead of 0x90.
//! - `v5_exceeding_receive_maximum_0x93`: Mosquitto answers the excess PUBLISH with PUBREC
//!   0x97 (Quota exceeded) and keeps the connection (listed as a Mosquitto failure in issue 2).
//! - `v5_invalid_fixed_header_flags`: Mosquitto closes without DISCONNECT 0x81.
//! - `v5_no_local_on_shared_subscription`: Mosquitto grants the subscription instead of
//!   treating it as a Protocol Error [MQTT-3.8.3-4].

use std::io::Write;
use std::time::Duration;

use halyard_tests::TestBroker;
use halyard_tests::broker::keys;
use halyard_tests::raw::{self, Connect, Packet, Prop, Props, Publish, RawClient, Version, prop};

fn assert_serves(b: &TestBroker) {
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V5, "still-alive");
    c.send(&raw::pingreq());
    assert_eq!(
        c.recv(),
        Ok(Packet::PingResp),
        "broker still serves a new client"
    );
}

/// 3.1.1: an unsupported protocol level gets CONNACK return code 0x01 and the connection is
/// closed [MQTT-3.1.2-2].
#[test]
fn v311_unsupported_level_0x01() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V311, "lvl3");
    c.level = 3;
    let mut cl = RawClient::open(b.mqtt_addr(), Version::V311);
    cl.send(&c.encode());
    let seen = cl.expect_closed();
    assert!(
        matches!(seen.as_slice(), [Packet::ConnAck { code: 0x01, .. }]),
        "expected CONNACK 0x01 then close, got {seen:?}"
    );
}

/// An unknown protocol level (6) is refused: CONNACK 0x01 (3.1.1 form) or 0x84 (5.0 form,
/// Unsupported Protocol Version) and close [MQTT-3.1.2-2].
#[test]
fn unknown_level_refused_0x01_or_0x84() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "lvl6");
    c.level = 6;
    let mut cl = RawClient::open(b.mqtt_addr(), Version::V311);
    cl.send(&c.encode());
    let seen = cl.expect_closed();
    let ok = match seen.as_slice() {
        [Packet::ConnAck { code: 0x01, .. }] => true,
        // Decoded as 3.1.1 the 5.0 CONNACK shows its reason code all the same.
        [Packet::ConnAck { code: 0x84, .. }] => true,
        _ => false,
    };
    assert!(ok, "expected CONNACK 0x01 or 0x84 then close, got {seen:?}");
    assert_serves(&b);
}

/// A wrong protocol name is never accepted: the server closes the connection, at most after a
/// refusing CONNACK [MQTT-3.1.2-1] (both versions).
#[test]
fn wrong_protocol_name_closed() {
    let b = TestBroker::start();
    for v in [Version::V311, Version::V5] {
        let mut c = Connect::new(v, "name");
        c.protocol_name = "MQTX".into();
        let mut cl = RawClient::open(b.mqtt_addr(), v);
        cl.send(&c.encode());
        let seen = cl.expect_closed();
        assert!(
            seen.iter()
                .all(|p| matches!(p, Packet::ConnAck { code, .. } if *code != 0)),
            "{v:?}: no successful CONNACK for a wrong protocol name, got {seen:?}"
        );
    }
}

/// The reserved CONNECT flag must be 0, otherwise the server closes the connection
/// [MQTT-3.1.2-3] (both versions; 5.0 may send CONNACK 0x81 first).
#[test]
fn reserved_connect_flag_closed() {
    let b = TestBroker::start();
    for v in [Version::V311, Version::V5] {
        let mut c = Connect::new(v, "reserved");
        c.reserved_flag = true;
        let mut cl = RawClient::open(b.mqtt_addr(), v);
        cl.send(&c.encode());
        let seen = cl.expect_closed();
        assert!(
            seen.iter()
                .all(|p| matches!(p, Packet::ConnAck { code, .. } if *code != 0)),
            "{v:?}: reserved flag set must not be accepted, got {seen:?}"
        );
    }
}

/// 3.1.1: an empty client id with clean session 0 gets CONNACK 0x02 (Identifier rejected) and
/// close [MQTT-3.1.3-8]; with clean session 1 it is accepted [MQTT-3.1.3-6].
#[test]
fn v311_empty_client_id() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V311, "");
    c.clean = false;
    let mut cl = RawClient::open(b.mqtt_addr(), Version::V311);
    cl.send(&c.encode());
    let seen = cl.expect_closed();
    assert!(
        matches!(
            seen.as_slice(),
            [Packet::ConnAck {
                code: 0x02,
                session_present: false,
                ..
            }]
        ),
        "expected CONNACK 0x02 then close, got {seen:?}"
    );
    c.clean = true;
    let (_cl, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!((code, present), (0, false));
}

/// 5.0: an empty client id is accepted and the server returns the id it assigned in Assigned
/// Client Identifier [MQTT-3.1.3-6] [MQTT-3.2.2-16]; two such clients get different ids.
#[test]
fn v5_empty_client_id_assigned() {
    let b = TestBroker::start();
    let c = Connect::new(Version::V5, "");
    let (_a, _, code, props) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    let id1 = props
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier")
        .to_string();
    assert!(!id1.is_empty());
    let (_b2, _, code, props) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    let id2 = props
        .str(prop::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier");
    assert_ne!(id1, id2, "assigned identifiers are unique");
}

/// The first packet must be CONNECT, otherwise the server closes the connection
/// [MQTT-3.1.0-1].
#[test]
fn first_packet_not_connect_closed() {
    let b = TestBroker::start();
    for v in [Version::V311, Version::V5] {
        let mut cl = RawClient::open(b.mqtt_addr(), v);
        cl.send(&raw::subscribe(v, 1, &[("a", 0)], &Props::new()));
        let seen = cl.expect_closed();
        assert!(
            seen.iter()
                .all(|p| !matches!(p, Packet::SubAck { .. } | Packet::ConnAck { .. })),
            "{v:?}: nothing but a close (or DISCONNECT) expected, got {seen:?}"
        );
    }
}

/// 3.1.1: a second CONNECT is a protocol violation: the connection is closed [MQTT-3.1.0-2].
#[test]
fn v311_second_connect_closed() {
    let b = TestBroker::start();
    let c = Connect::new(Version::V311, "twice");
    let (mut cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    cl.send(&c.encode());
    let seen = cl.expect_closed();
    assert!(
        seen.is_empty(),
        "no reply to a second CONNECT, got {seen:?}"
    );
}

/// 5.0: a second CONNECT is a Protocol Error: DISCONNECT 0x82 then close [MQTT-3.1.0-2].
#[test]
fn v5_second_connect_disconnect_0x82() {
    let b = TestBroker::start();
    let c = Connect::new(Version::V5, "twice5");
    let (mut cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    cl.send(&c.encode());
    cl.expect_disconnect(0x82);
}

/// Keepalive: with Keep Alive 1 s and silence, the server closes the connection after
/// 1.5 x the keepalive [MQTT-3.1.2-24] (checked with a generous bound, not timed).
#[test]
fn keepalive_expiry_closes() {
    let b = TestBroker::start();
    for v in [Version::V311, Version::V5] {
        let mut c = Connect::new(v, "ka");
        c.keepalive = 1;
        let (mut cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
        assert_eq!(code, 0);
        let seen = cl.expect_closed_within(Duration::from_secs(6));
        if v == Version::V5 {
            assert!(
                seen.iter()
                    .all(|p| matches!(p, Packet::Disconnect { reason: 0x8D, .. })),
                "only DISCONNECT 0x8D (Keep Alive timeout) may precede the close: {seen:?}"
            );
        }
    }
}

/// A client that keeps sending PINGREQ within the keepalive stays connected and gets
/// PINGRESP [MQTT-3.12.4-1].
#[test]
fn pingreq_keeps_connection() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "pinger");
    c.keepalive = 1;
    let (mut cl, _, _, _) = RawClient::connect(b.mqtt_addr(), &c);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        cl.send(&raw::pingreq());
        assert_eq!(cl.recv(), Ok(Packet::PingResp));
    }
}

/// The server's maximum keepalive is announced as Server Keep Alive when the client asks for
/// more (MQTT 5.0 §3.2.2.3.14); the client must use it [MQTT-3.2.2-21].
#[test]
fn v5_server_keep_alive_announced() {
    let b = TestBroker::start_with(&[(keys::MAX_KEEPALIVE, "10")]);
    let mut c = Connect::new(Version::V5, "ska");
    c.keepalive = 100;
    let (_cl, _, code, props) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    assert_eq!(
        props.int(prop::SERVER_KEEP_ALIVE),
        Some(10),
        "CONNACK properties: {props:?}"
    );
}

/// A PUBLISH whose topic name contains a wildcard is refused with DISCONNECT 0x90 (Topic Name
/// invalid) [MQTT-3.3.2-2].
#[test]
fn v5_invalid_topic_name_disconnect_0x90() {
    let b = TestBroker::start();
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, "badtopic");
    cl.send(&Publish::new("a/+/b", b"x").qos(1, 1).encode(Version::V5));
    cl.expect_disconnect(0x90);
    assert_serves(&b);
}

/// 3.1.1: a PUBLISH whose topic name contains a wildcard [MQTT-3.3.2-2] is a protocol
/// violation: the connection is closed [MQTT-4.8.0-1].
#[test]
fn v311_invalid_topic_name_closed() {
    let b = TestBroker::start();
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V311, "badtopic4");
    cl.send(&Publish::new("a/#", b"x").encode(Version::V311));
    let seen = cl.expect_closed();
    assert!(seen.is_empty(), "3.1.1: no reply, just a close: {seen:?}");
    assert_serves(&b);
}

/// 5.0: an invalid topic filter is refused, either with SUBACK 0x8F (Topic Filter invalid) or
/// as a malformed packet: DISCONNECT 0x81 then close [MQTT-4.7.1-1] [MQTT-4.13.1-1]. It is
/// never granted.
#[test]
fn v5_invalid_filter_refused() {
    let b = TestBroker::start();
    for (i, bad) in ["a/#/b", "a+/b", "x/#y"].into_iter().enumerate() {
        let mut s = RawClient::connected(b.mqtt_addr(), Version::V5, &format!("badf{i}"));
        s.send(&raw::subscribe(Version::V5, 1, &[(bad, 1)], &Props::new()));
        match s.recv() {
            Ok(Packet::SubAck { pid: 1, codes }) => {
                assert_eq!(codes, vec![0x8F], "filter {bad:?}")
            }
            Ok(Packet::Disconnect { reason: 0x81, .. }) => {
                s.expect_closed();
            }
            other => {
                panic!("filter {bad:?}: expected SUBACK 0x8F or DISCONNECT 0x81, got {other:?}")
            }
        }
    }
    assert_serves(&b);
}

/// A PUBLISH with both QoS bits set is malformed [MQTT-3.3.1-4]: 5.0 gets DISCONNECT 0x81,
/// 3.1.1 is closed.
#[test]
fn qos3_publish_malformed() {
    let b = TestBroker::start();
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, "qos3");
    cl.send(&Publish::new("a", b"x").qos(3, 1).encode(Version::V5));
    cl.expect_disconnect(0x81);
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V311, "qos3-4");
    cl.send(&Publish::new("a", b"x").qos(3, 1).encode(Version::V311));
    assert!(cl.expect_closed().is_empty());
    assert_serves(&b);
}

/// Malformed packets in 5.0 (a property length running past the packet, a SUBSCRIBE with no
/// filter [MQTT-3.8.3-2], a PUBREL with wrong fixed-header flags [MQTT-3.6.1-1]) get
/// DISCONNECT 0x81 (Malformed Packet) or 0x82 (Protocol Error) then close.
#[test]
fn v5_malformed_packets() {
    let b = TestBroker::start();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "property length past the end",
            vec![0x30, 0x05, 0x00, 0x01, b'a', 0x09, 0x01],
        ),
        (
            "subscribe without filter",
            vec![0x82, 0x03, 0x00, 0x01, 0x00],
        ),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, &format!("mal{i}"));
        cl.send(&bytes);
        let seen = cl.expect_closed();
        assert!(
            matches!(
                seen.as_slice(),
                [Packet::Disconnect {
                    reason: 0x81 | 0x82,
                    ..
                }]
            ),
            "{what}: expected DISCONNECT 0x81/0x82 then close, got {seen:?}"
        );
    }
    assert_serves(&b);
}

/// Reserved fixed-header flags with the wrong value (PUBREL and SUBSCRIBE must have 0b0010)
/// are malformed: "the receiver MUST close the Network Connection" [MQTT-2.2.2-2], in 5.0
/// after DISCONNECT 0x81 (issue 2: the right reason code, then close).
#[test]
fn v5_invalid_fixed_header_flags() {
    let b = TestBroker::start();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("pubrel flags 0", vec![0x60, 0x02, 0x00, 0x01]),
        (
            "subscribe flags 0",
            vec![0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a'],
        ),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, &format!("flags{i}"));
        cl.send(&bytes);
        let seen = cl.expect_closed();
        assert!(
            matches!(seen.as_slice(), [Packet::Disconnect { reason: 0x81, .. }]),
            "{what}: expected DISCONNECT 0x81 then close, got {seen:?}"
        );
    }
    assert_serves(&b);
}

/// Sending more QoS 2 PUBLISHes than the server's Receive Maximum without completing them is
/// a protocol violation: DISCONNECT 0x93 (Receive Maximum exceeded) (MQTT 5.0 §3.3.4, §4.9).
#[test]
fn v5_exceeding_receive_maximum_0x93() {
    let b = TestBroker::start_with(&[(keys::RECEIVE_MAXIMUM, "5")]);
    let (mut cl, _, code, props) =
        RawClient::connect(b.mqtt_addr(), &Connect::new(Version::V5, "rmx"));
    assert_eq!(code, 0);
    let max = props.int(prop::RECEIVE_MAXIMUM).unwrap_or(65535);
    assert!(
        max <= 5,
        "configured Receive Maximum announced in CONNACK: {props:?}"
    );
    for pid in 1..=max + 1 {
        let pid = pid as u16;
        cl.send(&Publish::new("rmx/t", b"x").qos(2, pid).encode(Version::V5));
    }
    let seen = cl.expect_closed();
    let reasons: Vec<u8> = seen
        .iter()
        .filter_map(|p| match p {
            Packet::Disconnect { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![0x93], "packets before close: {seen:?}");
}

/// CONNECT with an Authentication Method the server does not support: CONNACK 0x8C (Bad
/// authentication method) and close (MQTT 5.0 §4.12 [MQTT-4.12.0-1]).
#[test]
fn v5_unsupported_auth_method_0x8c() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "auth");
    c.props = Props::new()
        .with(Prop::Str(prop::AUTH_METHOD, "X-UNKNOWN-METHOD".into()))
        .with(Prop::Bin(prop::AUTH_DATA, b"data".to_vec()));
    let mut cl = RawClient::open(b.mqtt_addr(), Version::V5);
    cl.send(&c.encode());
    let seen = cl.expect_closed();
    assert!(
        matches!(seen.as_slice(), [Packet::ConnAck { code: 0x8C, .. }]),
        "expected CONNACK 0x8C then close, got {seen:?}"
    );
}

/// A packet larger than the server's Maximum Packet Size gets DISCONNECT 0x95 (Packet too
/// large) and close (MQTT 5.0 §3.2.2.3.6, §4.13); the limit is announced in CONNACK.
#[test]
fn v5_oversize_packet_0x95() {
    let b = TestBroker::start_with(&[(keys::MAX_PACKET_SIZE, "1024")]);
    let (mut cl, _, code, props) =
        RawClient::connect(b.mqtt_addr(), &Connect::new(Version::V5, "big"));
    assert_eq!(code, 0);
    assert_eq!(
        props.int(prop::MAXIMUM_PACKET_SIZE),
        Some(1024),
        "CONNACK: {props:?}"
    );
    cl.send(
        &Publish::new("big/t", &[b'x'; 4096])
            .qos(1, 1)
            .encode(Version::V5),
    );
    cl.expect_disconnect(0x95);
    // A header announcing a huge remaining length is refused before the body is buffered.
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, "huge");
    cl.send(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    cl.expect_disconnect(0x95);
    assert_serves(&b);
}

/// Random garbage instead of CONNECT closes the connection, and the broker keeps serving.
/// Each round is framed as a complete packet of a random non-CONNECT type (so that a broker
/// that reads the whole packet before judging it also sees all of it), then raw noise.
#[test]
fn garbage_closed_broker_survives() {
    let b = TestBroker::start();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as u8
    };
    for round in 0..20usize {
        let mut first = next();
        if first >> 4 == 1 {
            first ^= 0x80;
        }
        let body: Vec<u8> = (0..(round * 5) % 120).map(|_| next()).collect();
        let bytes = raw::frame(first, &body);
        let mut cl = RawClient::open(b.mqtt_addr(), Version::V5);
        cl.send(&bytes);
        let seen = cl.expect_closed();
        assert!(
            seen.iter()
                .all(|p| !matches!(p, Packet::ConnAck { code: 0, .. })),
            "round {round}: garbage accepted: {seen:?}"
        );
    }
    // Garbage after a valid CONNECT: a reserved packet type 0 with noise.
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V311, "then-garbage");
    cl.send(&[0x00, 0x04, 0x13, 0x37, 0xFF, 0xFF]);
    cl.expect_closed();
    assert_serves(&b);
}

/// A CONNECT delivered one byte at a time is decoded once complete (streaming decode).
#[test]
fn connect_split_into_single_bytes() {
    let b = TestBroker::start();
    let mut cl = RawClient::open(b.mqtt_addr(), Version::V5);
    let bytes = Connect::new(Version::V5, "slowpoke").encode();
    for byte in bytes {
        cl.stream().write_all(&[byte]).expect("write one byte");
        cl.stream().flush().expect("flush");
        std::thread::sleep(Duration::from_millis(5));
    }
    match cl.recv() {
        Ok(Packet::ConnAck { code: 0, .. }) => {}
        other => panic!("expected CONNACK 0, got {other:?}"),
    }
}

/// A connection closed before its CONNECT completes is handled, and the broker keeps serving.
#[test]
fn truncated_connect_then_close() {
    let b = TestBroker::start();
    let bytes = Connect::new(Version::V5, "cut").encode();
    for cut in [1, 2, 5, bytes.len() - 1] {
        let cl = {
            let mut cl = RawClient::open(b.mqtt_addr(), Version::V5);
            cl.send(&bytes[..cut]);
            cl
        };
        cl.drop_abruptly();
    }
    assert_serves(&b);
}

/// With the server's Maximum QoS set to 1, CONNACK announces Maximum QoS 1
/// (MQTT 5.0 §3.2.2.3.4), a QoS 2 subscription is granted QoS 1 (MQTT 5.0 §3.8.4), and a
/// QoS 2 PUBLISH is refused with DISCONNECT 0x9B (QoS not supported) [MQTT-3.2.2-11].
#[test]
fn v5_maximum_qos_enforced() {
    let b = TestBroker::start_with(&[(keys::MAXIMUM_QOS, "1")]);
    let (mut cl, _, code, props) =
        RawClient::connect(b.mqtt_addr(), &Connect::new(Version::V5, "maxqos"));
    assert_eq!(code, 0);
    assert_eq!(props.int(prop::MAXIMUM_QOS), Some(1), "CONNACK: {props:?}");
    assert_eq!(cl.subscribe(1, &[("mq/t", 2)], &Props::new()), vec![1]);
    cl.send(&Publish::new("mq/t", b"x").qos(2, 1).encode(Version::V5));
    cl.expect_disconnect(0x9B);
    assert_serves(&b);
}

/// With Retain Available 0, a retained PUBLISH is refused with DISCONNECT 0x9A (Retain not
/// supported) [MQTT-3.2.2-14].
#[test]
fn v5_retain_not_available() {
    let b = TestBroker::start_with(&[(keys::RETAIN_AVAILABLE, "false")]);
    let (mut cl, _, code, props) =
        RawClient::connect(b.mqtt_addr(), &Connect::new(Version::V5, "noretain"));
    assert_eq!(code, 0);
    assert_eq!(
        props.int(prop::RETAIN_AVAILABLE),
        Some(0),
        "CONNACK: {props:?}"
    );
    cl.send(
        &Publish::new("nr/t", b"x")
            .qos(1, 1)
            .retain()
            .encode(Version::V5),
    );
    cl.expect_disconnect(0x9A);
}

/// Topic Alias 0 is not permitted [MQTT-3.3.2-8]: the server treats it as a protocol
/// violation, DISCONNECT 0x81, 0x82 or 0x94 then close (the specification names no single
/// code for the value 0; Mosquitto sends 0x81).
#[test]
fn v5_topic_alias_zero() {
    let b = TestBroker::start();
    let alias = Props::new().with(Prop::U16(prop::TOPIC_ALIAS, 0));
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, "alias0");
    cl.send(
        &Publish::new("a/b", b"x")
            .qos(1, 1)
            .props(alias)
            .encode(Version::V5),
    );
    let seen = cl.expect_closed();
    assert!(
        matches!(
            seen.as_slice(),
            [Packet::Disconnect {
                reason: 0x81 | 0x82 | 0x94,
                ..
            }]
        ),
        "expected DISCONNECT 0x81/0x82/0x94 then close, got {seen:?}"
    );
    assert_serves(&b);
}

/// An empty topic name with a Topic Alias that has no mapping is a Protocol Error: DISCONNECT
/// 0x82 (MQTT 5.0 §3.3.2.3.4).
#[test]
fn v5_topic_alias_unset() {
    let b = TestBroker::start();
    let alias = Props::new().with(Prop::U16(prop::TOPIC_ALIAS, 1));
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, "alias-unset");
    cl.send(
        &Publish::new("", b"x")
            .qos(1, 1)
            .props(alias)
            .encode(Version::V5),
    );
    cl.expect_disconnect(0x82);
    assert_serves(&b);
}

/// No Local on a Shared Subscription is a Protocol Error [MQTT-3.8.3-4]: DISCONNECT 0x82.
#[test]
fn v5_no_local_on_shared_subscription() {
    let b = TestBroker::start();
    let mut cl = RawClient::connected(b.mqtt_addr(), Version::V5, "nl-shared");
    let opts = raw::sub_opts(1, true, false, 0);
    cl.send(&raw::subscribe(
        Version::V5,
        1,
        &[("$share/g/t", opts)],
        &Props::new(),
    ));
    cl.expect_disconnect(0x82);
    assert_serves(&b);
}
