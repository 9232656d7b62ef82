//! DISCONNECT, wills, server-initiated close, session hand-back.

use std::sync::Arc;

use halyard_codec::{Disconnect, DisconnectProperties, Packet, ProtocolVersion, ReasonCode};

use super::util::{Pair, VERSIONS, connect, wire_will};
use crate::{CloseReason, Connection, Event, ProtocolError, SessionConfig};

fn with_will(v: ProtocolVersion, expiry: Option<u32>) -> Pair {
    let mut pair = Pair::new(SessionConfig::default(), v);
    let mut c = connect(v, "w");
    c.will = Some(wire_will("will/t"));
    if let Some(e) = expiry {
        c.properties.session_expiry_interval = Some(e);
    }
    pair.establish(c, None);
    pair
}

fn take_conn(pair: &mut Pair) -> Connection {
    std::mem::replace(
        &mut pair.conn,
        Connection::new(Arc::new(SessionConfig::default()), pair.now),
    )
}

#[test]
fn normal_disconnect_discards_the_will_mqtt_3_14_4_3() {
    for v in VERSIONS {
        let mut pair = with_will(v, None);
        pair.send(Packet::Disconnect(Disconnect::default()));
        assert!(pair.recv().is_empty(), "the server answers nothing");
        let (will, reason) = pair.closed();
        assert_eq!(will, None);
        assert_eq!(reason, CloseReason::ClientDisconnect(ReasonCode::SUCCESS));
        // Closed is emitted once: the socket closing afterwards adds nothing.
        pair.conn.socket_closed(pair.now);
        assert!(pair.events().is_empty());
    }
}

#[test]
fn v5_disconnect_with_will_message_0x04_returns_the_will() {
    let mut pair = with_will(ProtocolVersion::V5, None);
    pair.send(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        ..Disconnect::default()
    }));
    let (will, _) = pair.closed();
    assert_eq!(will.unwrap().topic, "will/t");
}

#[test]
fn socket_closed_returns_the_will_once() {
    for v in VERSIONS {
        let mut pair = with_will(v, None);
        pair.conn.socket_closed(pair.now);
        let (will, reason) = pair.closed();
        assert_eq!(reason, CloseReason::SocketClosed);
        assert_eq!(will.unwrap().payload.as_ref(), b"gone");
        pair.conn.socket_closed(pair.now);
        pair.conn.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
        assert!(pair.events().is_empty());
        assert!(pair.recv().is_empty());
    }
}

#[test]
fn protocol_error_returns_the_will() {
    let mut pair = with_will(ProtocolVersion::V311, None);
    pair.send(Packet::PingResp);
    let (will, reason) = pair.closed();
    assert!(will.is_some());
    assert!(matches!(
        reason,
        CloseReason::Protocol(ProtocolError::ServerOnlyPacket(_))
    ));
}

#[test]
fn takeover_disconnect_0x8e_mqtt_3_1_4_3() {
    for v in VERSIONS {
        let mut pair = with_will(v, None);
        pair.conn.disconnect(ReasonCode::SESSION_TAKEN_OVER);
        let out = pair.recv();
        match v {
            ProtocolVersion::V5 => match out.as_slice() {
                [Packet::Disconnect(d)] => {
                    assert_eq!(d.reason_code, ReasonCode::SESSION_TAKEN_OVER);
                }
                other => panic!("{other:?}"),
            },
            ProtocolVersion::V311 => assert!(out.is_empty()),
        }
        let (will, reason) = pair.closed();
        assert_eq!(
            reason,
            CloseReason::ServerDisconnect(ReasonCode::SESSION_TAKEN_OVER)
        );
        assert!(will.is_some(), "the server decides about will delay");
    }
}

#[test]
fn disconnect_before_the_connect_decision_is_a_refusal() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    pair.connect_request(connect(ProtocolVersion::V5, "c"));
    pair.conn.disconnect(ReasonCode::SERVER_SHUTTING_DOWN);
    match pair.recv_one() {
        Packet::ConnAck(a) => assert!(!a.reason_code.is_success()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(pair.event(), Event::Closed { will: None, .. }));
}

#[test]
fn v5_disconnect_changes_session_expiry() {
    let mut pair = with_will(ProtocolVersion::V5, Some(10));
    pair.send(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: DisconnectProperties {
            session_expiry_interval: Some(500),
            ..DisconnectProperties::default()
        },
    }));
    assert_eq!(pair.conn.session_expiry_interval(), Some(500));
    pair.events();
    let session = take_conn(&mut pair).into_session().unwrap();
    assert_eq!(session.expiry_interval(), 500);
}

#[test]
fn v5_disconnect_cannot_raise_expiry_from_zero_mqtt_3_14_2_2() {
    let mut pair = with_will(ProtocolVersion::V5, None);
    pair.send(Packet::Disconnect(Disconnect {
        reason_code: ReasonCode::SUCCESS,
        properties: DisconnectProperties {
            session_expiry_interval: Some(500),
            ..DisconnectProperties::default()
        },
    }));
    match pair.recv_one() {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
    let (will, reason) = pair.closed();
    assert!(will.is_some(), "a protocol error publishes the will");
    assert_eq!(
        reason,
        CloseReason::Protocol(ProtocolError::SessionExpiryFromZero)
    );
    assert_eq!(pair.conn.session_expiry_interval(), Some(0));
    assert!(take_conn(&mut pair).into_session().is_none());
}

#[test]
fn into_session_only_when_it_outlives_the_connection() {
    // 3.1.1 Clean Session 0: kept.
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "keep");
    c.clean_start = false;
    pair.establish(c, None);
    pair.conn.socket_closed(pair.now);
    let s = take_conn(&mut pair).into_session().unwrap();
    assert_eq!(&**s.client_id(), "keep");
    // Clean Session 1: gone.
    let mut pair = Pair::connected(ProtocolVersion::V311, SessionConfig::default());
    pair.conn.socket_closed(pair.now);
    assert!(take_conn(&mut pair).into_session().is_none());
}

#[test]
fn connection_and_session_are_send() {
    // The server moves a session to another thread on takeover.
    fn assert_send<T: Send>() {}
    assert_send::<Connection>();
    assert_send::<crate::Session>();
    assert_send::<crate::Event>();
}

#[test]
fn v5_server_disconnect_code_not_allowed_in_disconnect_becomes_0x80() {
    let mut pair = with_will(ProtocolVersion::V5, None);
    pair.conn.disconnect(ReasonCode::BAD_AUTHENTICATION_METHOD);
    match pair.recv_one() {
        Packet::Disconnect(d) => assert_eq!(d.reason_code, ReasonCode::UNSPECIFIED_ERROR),
        other => panic!("{other:?}"),
    }
}
