//! The read timeout for half-sent packets (slowloris):
//! [`SessionConfig::partial_packet_timeout`].

use std::time::Duration;

use bytes::BytesMut;
use halyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode, encode};

use super::util::{Pair, VERSIONS, connect, publish, wire_will};
use crate::{CloseReason, Event, SessionConfig};

const TIMEOUT: Duration = Duration::from_secs(30);

fn cfg() -> SessionConfig {
    SessionConfig {
        partial_packet_timeout: TIMEOUT,
        ..SessionConfig::default()
    }
}

/// The encoding of a QoS 0 PUBLISH on `topic` as `version` writes it.
fn publish_bytes(version: ProtocolVersion, topic: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(
        &Packet::Publish(publish(topic, QoS::AtMostOnce, 0)),
        version,
        &mut buf,
    )
    .expect("test packet encodes");
    buf.to_vec()
}

/// Connected with a will and no keep alive (so only the partial-packet clock runs).
fn connected_with_will(v: ProtocolVersion, cfg: SessionConfig) -> Pair {
    let mut pair = Pair::new(cfg, v);
    let mut c = connect(v, "slow");
    c.will = Some(wire_will("will/slow"));
    pair.establish(c, None);
    pair
}

#[test]
fn a_half_sent_packet_closes_the_connection_after_the_timeout() {
    for v in VERSIONS {
        let mut pair = connected_with_will(v, cfg());
        assert_eq!(pair.conn.poll_timeout(), None, "empty buffer: no deadline");
        let start = pair.now;
        let bytes = publish_bytes(v, "a/b");
        pair.send_raw(&bytes[..3]);
        assert_eq!(pair.conn.poll_timeout(), Some(start + TIMEOUT));
        pair.advance(TIMEOUT - Duration::from_millis(1));
        assert!(!pair.conn.is_closed());
        pair.advance(Duration::from_millis(1));
        assert!(pair.conn.is_closed());
        let out = pair.recv();
        match v {
            // Quota exceeded: an implementation-imposed limit (MQTT 5.0 §3.14.2.1).
            ProtocolVersion::V5 => match out.as_slice() {
                [Packet::Disconnect(d)] => assert_eq!(d.reason_code, ReasonCode::QUOTA_EXCEEDED),
                other => panic!("expected DISCONNECT 0x97, got {other:?}"),
            },
            ProtocolVersion::V311 => assert!(out.is_empty(), "3.1.1 got {out:?}"),
        }
        let (will, reason) = pair.closed();
        assert_eq!(reason, CloseReason::PartialPacketTimeout);
        // Not closed by DISCONNECT: the will is published [MQTT-3.1.2-8].
        assert_eq!(will.expect("will returned").topic, "will/slow");
        assert_eq!(pair.conn.stats().partial_packet_timeouts, 1);
        assert_eq!(pair.conn.stats().protocol_errors, 0);
        assert_eq!(pair.conn.poll_timeout(), None);
    }
}

#[test]
fn trickled_bytes_do_not_extend_the_deadline() {
    let v = ProtocolVersion::V5;
    let mut pair = connected_with_will(v, cfg());
    let start = pair.now;
    let bytes = publish_bytes(v, "trickle/topic");
    for (i, b) in bytes[..bytes.len() - 1].iter().enumerate() {
        pair.send_raw(&[*b]);
        assert_eq!(pair.conn.poll_timeout(), Some(start + TIMEOUT), "byte {i}");
        pair.advance(Duration::from_secs(1));
    }
    pair.advance(TIMEOUT);
    assert!(pair.conn.is_closed());
    assert_eq!(pair.closed().1, CloseReason::PartialPacketTimeout);
}

#[test]
fn a_completed_packet_restarts_the_clock_for_the_next_one() {
    let v = ProtocolVersion::V311;
    let mut pair = connected_with_will(v, cfg());
    let bytes = publish_bytes(v, "x");
    pair.send_raw(&bytes[..2]);
    pair.advance(Duration::from_secs(20));
    // The rest of the first packet and the start of a second one.
    let mut rest = bytes[2..].to_vec();
    rest.extend_from_slice(&bytes[..2]);
    pair.send_raw(&rest);
    assert!(matches!(pair.event(), Event::Publish { .. }));
    assert_eq!(pair.conn.poll_timeout(), Some(pair.now + TIMEOUT));
    pair.advance(Duration::from_secs(20));
    assert!(
        !pair.conn.is_closed(),
        "50 s after the first byte, 20 s into the second packet"
    );
    // Completing the second packet empties the buffer: no deadline any more.
    pair.send_raw(&bytes[2..]);
    assert!(matches!(pair.event(), Event::Publish { .. }));
    assert_eq!(pair.conn.poll_timeout(), None);
}

#[test]
fn zero_disables_the_partial_packet_timeout() {
    let v = ProtocolVersion::V5;
    let cfg = SessionConfig {
        partial_packet_timeout: Duration::ZERO,
        ..SessionConfig::default()
    };
    let mut pair = connected_with_will(v, cfg);
    pair.send_raw(&publish_bytes(v, "a")[..2]);
    assert_eq!(pair.conn.poll_timeout(), None);
    pair.advance(Duration::from_secs(1_000_000));
    assert!(!pair.conn.is_closed());
}

#[test]
fn before_connect_only_the_connect_timeout_applies() {
    let v = ProtocolVersion::V5;
    let cfg = SessionConfig {
        connect_timeout: Duration::from_secs(10),
        partial_packet_timeout: Duration::from_secs(2),
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, v);
    let start = pair.now;
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(Box::new(connect(v, "c"))), v, &mut buf).unwrap();
    pair.send_raw(&buf[..5]);
    assert_eq!(
        pair.conn.poll_timeout(),
        Some(start + Duration::from_secs(10))
    );
    pair.advance(Duration::from_secs(5));
    assert!(!pair.conn.is_closed());
    pair.advance(Duration::from_secs(5));
    assert_eq!(pair.closed().1, CloseReason::ConnectTimeout);
}

#[test]
fn bytes_buffered_while_the_connect_is_decided_get_a_fresh_clock_on_accept() {
    let v = ProtocolVersion::V5;
    let mut pair = Pair::new(cfg(), v);
    let mut buf = BytesMut::new();
    encode(&Packet::Connect(Box::new(connect(v, "c"))), v, &mut buf).unwrap();
    buf.extend_from_slice(&publish_bytes(v, "early")[..3]);
    pair.send_raw(&buf);
    assert!(matches!(pair.event(), Event::Connect(_)));
    assert_eq!(pair.conn.poll_timeout(), None, "the server is deciding");
    pair.advance(Duration::from_secs(60));
    pair.conn.accept_connect(pair.now, None, false);
    assert_eq!(pair.conn.poll_timeout(), Some(pair.now + TIMEOUT));
}

#[test]
fn the_earlier_of_keep_alive_and_partial_packet_deadlines_is_reported() {
    let v = ProtocolVersion::V5;
    let mut pair = Pair::new(cfg(), v);
    let mut c = connect(v, "ka");
    c.keep_alive = 10;
    pair.establish(c, None);
    let start = pair.now;
    assert_eq!(
        pair.conn.poll_timeout(),
        Some(start + Duration::from_secs(15))
    );
    pair.send_raw(&publish_bytes(v, "k")[..2]);
    // Keep alive (15 s) comes first; the partial packet does not count as a packet.
    assert_eq!(
        pair.conn.poll_timeout(),
        Some(start + Duration::from_secs(15))
    );
    pair.advance(Duration::from_secs(15));
    assert_eq!(pair.closed().1, CloseReason::KeepAliveTimeout);
}
