//! Parking: a connection compacted while idle and resumed behaves as if never parked.

use std::sync::Arc;
use std::time::Duration;

use halyard_codec::{Packet, ProtocolVersion, QoS, ReasonCode};

use super::util::{Pair, VERSIONS, connect, delivery, publishes, wire_will};
use crate::{CloseReason, Connection, SessionConfig};

/// Parks and resumes the pair's connection (it must be parkable).
fn park_and_resume(pair: &mut Pair) {
    let cfg = Arc::new(SessionConfig::default());
    let conn = std::mem::replace(&mut pair.conn, Connection::new(cfg.clone(), pair.now));
    let parked = conn.park().expect("idle connection parks");
    pair.conn = Connection::unpark(parked, cfg, pair.now);
}

#[test]
fn keep_alive_and_will_survive_parking() {
    for v in VERSIONS {
        let mut pair = Pair::new(SessionConfig::default(), v);
        let mut c = connect(v, "parked");
        c.keep_alive = 10;
        c.will = Some(wire_will("will/parked"));
        pair.establish(c, None);
        pair.advance(Duration::from_secs(5));
        let deadline = pair.conn.poll_timeout();
        assert!(deadline.is_some());
        let parked = std::mem::replace(
            &mut pair.conn,
            Connection::new(Arc::new(SessionConfig::default()), pair.now),
        )
        .park()
        .expect("idle connection parks");
        assert_eq!(parked.poll_timeout(), deadline);
        pair.conn = Connection::unpark(parked, Arc::new(SessionConfig::default()), pair.now);
        assert_eq!(pair.conn.poll_timeout(), deadline);
        assert_eq!(pair.conn.protocol_version(), v);
        pair.advance(Duration::from_millis(9_999));
        assert!(!pair.conn.is_closed());
        pair.advance(Duration::from_millis(1));
        assert!(pair.conn.is_closed());
        let (will, reason) = pair.closed();
        assert_eq!(reason, CloseReason::KeepAliveTimeout);
        assert_eq!(will.expect("will kept while parked").topic, "will/parked");
    }
}

#[test]
fn session_and_message_in_flight_survive_parking() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.conn
            .deliver(pair.now, delivery("a/b", QoS::AtLeastOnce));
        let sent = pair.recv();
        let id = publishes(&sent)[0].packet_id;
        park_and_resume(&mut pair);
        assert_eq!(
            pair.conn.session().map(|s| s.client_id().as_ref()),
            Some("client")
        );
        // The acknowledgement of the message sent before parking is expected, not a
        // protocol error, and the next message gets a new identifier.
        pair.ack(Packet::PubAck, id);
        assert!(!pair.conn.is_closed());
        pair.conn
            .deliver(pair.now, delivery("a/b", QoS::AtLeastOnce));
        let next = pair.recv();
        assert_ne!(publishes(&next)[0].packet_id, id);
        pair.send(Packet::PingReq);
        assert!(matches!(pair.recv_one(), Packet::PingResp));
    }
}

#[test]
fn only_an_idle_connected_connection_parks() {
    let cfg = Arc::new(SessionConfig::default());
    let fresh = Connection::new(cfg, std::time::Instant::now());
    assert!(!fresh.can_park());
    assert!(fresh.park().is_err());
    let mut pair = Pair::connected(ProtocolVersion::V311, SessionConfig::default());
    assert!(pair.conn.can_park());
    // Half a packet: its bytes and deadline are not parked.
    pair.send_raw(&[0xC0]);
    assert!(!pair.conn.can_park());
    pair.send_raw(&[0x00]);
    assert!(!pair.conn.can_park(), "PINGRESP waiting");
    assert!(matches!(pair.recv_one(), Packet::PingResp));
    assert!(pair.conn.can_park());
    // A PUBLISH awaiting the server's answer.
    pair.publish("t", QoS::AtLeastOnce, 7);
    let _ = pair.events();
    assert!(!pair.conn.can_park());
    pair.conn.complete_publish(pair.now, 7, ReasonCode::SUCCESS);
    let _ = pair.recv();
    assert!(pair.conn.can_park());
}
