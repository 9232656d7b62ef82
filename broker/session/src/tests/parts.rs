//! Sessions and messages as plain parts and back (persistence), and change tracking.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use halyard_codec::{MqttString, Packet, ProtocolVersion, QoS, ReasonCode, SubscriptionOptions};
use smallvec::smallvec;

use super::util::{Pair, connect, delivery, publishes};
use crate::{
    Connection, Message, MessageParts, MessageProperties, OutgoingStage, PartsError, Session,
    SessionConfig, SessionParts, WallClock,
};

fn cfg() -> SessionConfig {
    SessionConfig {
        max_inflight: 3,
        ..SessionConfig::default()
    }
}

/// A 5.0 session left by a connection with: two subscriptions, QoS 1 and QoS 2 awaiting
/// their acknowledgement, QoS 2 past PUBREC, one incoming QoS 2 id awaiting PUBREL and two
/// queued messages.
fn busy_session(track: bool) -> (Session, Vec<u16>) {
    let cfg = cfg();
    let mut pair = Pair::new(cfg.clone(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "p");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    let mut fresh = Session::new("p".into(), 300, &cfg);
    fresh.set_track_changes(track);
    pair.connect_request(c);
    pair.conn.accept_connect(pair.now, Some(fresh), false);
    pair.recv();
    pair.subscribe(1, "a/#", SubscriptionOptions::qos(QoS::ExactlyOnce));
    let subscribe_event = |pair: &mut Pair| match pair.event() {
        crate::Event::Subscribe { requests, .. } => requests,
        other => panic!("{other:?}"),
    };
    let reqs = subscribe_event(&mut pair);
    let granted = vec![ReasonCode::GRANTED_QOS_2; reqs.len()];
    pair.conn.complete_subscribe(pair.now, 1, reqs, granted);
    pair.subscribe(2, "$share/g/b", SubscriptionOptions::qos(QoS::AtLeastOnce));
    let reqs = subscribe_event(&mut pair);
    pair.conn
        .complete_subscribe(pair.now, 2, reqs, vec![ReasonCode::GRANTED_QOS_1]);
    pair.recv();
    let mut with_ids = delivery("a/one", QoS::AtLeastOnce);
    with_ids.subscription_ids = smallvec![7, 9];
    with_ids.retain = true;
    for d in [
        with_ids,
        delivery("a/two", QoS::ExactlyOnce),
        delivery("a/three", QoS::ExactlyOnce),
        delivery("a/four", QoS::AtLeastOnce),
        delivery("a/five", QoS::ExactlyOnce),
    ] {
        pair.conn.deliver(pair.now, d);
    }
    let ids: Vec<u16> = publishes(&pair.recv())
        .iter()
        .map(|p| p.packet_id)
        .collect();
    assert_eq!(ids.len(), 3);
    pair.ack(Packet::PubRec, ids[2]);
    pair.recv();
    pair.publish("in", QoS::ExactlyOnce, 40);
    pair.events();
    pair.conn
        .complete_publish(pair.now, 40, ReasonCode::SUCCESS);
    pair.recv();
    pair.conn.socket_closed(pair.now);
    pair.events();
    let conn = std::mem::replace(&mut pair.conn, Connection::new(Arc::new(cfg), pair.now));
    (conn.into_session().expect("persistent session kept"), ids)
}

#[test]
fn session_parts_round_trip_is_lossless() {
    let (session, ids) = busy_session(false);
    let parts = session.to_parts();
    assert_eq!(&*parts.client_id, "p");
    assert_eq!(parts.expiry_interval, 300);
    let filters: Vec<&str> = parts
        .subscriptions
        .iter()
        .map(|(f, _)| f.as_str())
        .collect();
    assert_eq!(filters, ["$share/g/b", "a/#"]);
    let out: Vec<(u16, OutgoingStage, &str)> = parts
        .outgoing
        .iter()
        .map(|o| (o.packet_id, o.stage, o.delivery.message.topic.as_str()))
        .collect();
    assert_eq!(
        out,
        [
            (ids[0], OutgoingStage::AwaitingPuback, "a/one"),
            (ids[1], OutgoingStage::AwaitingPubrec, "a/two"),
            (ids[2], OutgoingStage::AwaitingPubcomp, "a/three"),
        ]
    );
    assert!(parts.outgoing.iter().all(|o| o.ever_sent));
    assert_eq!(
        parts.outgoing[0].delivery.subscription_ids.as_slice(),
        [7, 9]
    );
    assert_eq!(parts.incoming_qos2, [40]);
    let queued: Vec<&str> = parts
        .queued
        .iter()
        .map(|d| d.message.topic.as_str())
        .collect();
    assert_eq!(queued, ["a/four", "a/five"]);

    let rebuilt = Session::from_parts(parts.clone(), &cfg()).expect("valid parts");
    assert_eq!(rebuilt.to_parts(), parts);
    // Entries stored one at a time come back in any order: `order` restores the original.
    let mut shuffled = parts.clone();
    shuffled.outgoing.reverse();
    let rebuilt = Session::from_parts(shuffled, &cfg()).unwrap();
    assert_eq!(rebuilt.to_parts(), parts);
}

#[test]
fn rebuilt_session_resumes_like_the_original_mqtt_4_4_0_1() {
    let (session, ids) = busy_session(false);
    let rebuilt = Session::from_parts(session.to_parts(), &cfg()).unwrap();
    let mut next = Pair::new(cfg(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "p");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    next.connect_request(c);
    next.conn.accept_connect(next.now, Some(rebuilt), true);
    let packets = next.recv();
    assert!(matches!(&packets[0], Packet::ConnAck(a) if a.session_present));
    let mut seen = Vec::new();
    for p in &packets[1..] {
        match p {
            Packet::Publish(p) => {
                assert!(p.dup, "[MQTT-3.3.1-1] DUP on redelivery");
                seen.push(format!("publish {} {}", p.topic, p.packet_id));
            }
            Packet::PubRel(r) => seen.push(format!("pubrel {}", r.packet_id)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            format!("publish a/one {}", ids[0]),
            format!("publish a/two {}", ids[1]),
            format!("pubrel {}", ids[2]),
        ]
    );
    if let Packet::Publish(p) = &packets[1] {
        assert!(p.retain);
        assert_eq!(p.properties.subscription_identifiers, [7, 9]);
    }
    // Exactly once inbound: the duplicate of the PUBREC'd id is not routed again.
    let mut dup = super::util::publish("in", QoS::ExactlyOnce, 40);
    dup.dup = true;
    next.send(Packet::Publish(dup));
    assert!(next.events().is_empty());
    assert!(matches!(next.recv_one(), Packet::PubRec(r) if r.packet_id == 40));
    // The queue follows once the window frees, with fresh ids not clashing with restored ones.
    next.ack(Packet::PubAck, ids[0]);
    let p = next.recv();
    let p = publishes(&p);
    assert_eq!((p[0].topic.as_str(), p[0].dup), ("a/four", false));
    assert!(!ids.contains(&p[0].packet_id));
}

#[test]
fn from_parts_refuses_impossible_state() {
    let (session, _) = busy_session(false);
    let good = session.to_parts();
    let check = |f: fn(&mut SessionParts), want: PartsError| {
        let mut p = good.clone();
        f(&mut p);
        assert_eq!(Session::from_parts(p, &cfg()).unwrap_err(), want);
    };
    let id0 = good.outgoing[0].packet_id;
    check(|p| p.outgoing[0].packet_id = 0, PartsError::ZeroPacketId);
    check(
        |p| p.outgoing[1].packet_id = p.outgoing[0].packet_id,
        PartsError::DuplicatePacketId(id0),
    );
    check(
        |p| p.outgoing[0].stage = OutgoingStage::AwaitingPubcomp,
        PartsError::StageMismatch(id0),
    );
    check(
        |p| p.incoming_qos2.push(40),
        PartsError::DuplicatePacketId(40),
    );
    check(
        |p| {
            let s = p.subscriptions[0].clone();
            p.subscriptions.push(s);
        },
        PartsError::DuplicateFilter("$share/g/b".into()),
    );
}

#[test]
fn from_parts_applies_the_queue_limit() {
    let (session, _) = busy_session(false);
    let small = SessionConfig {
        max_queued_messages: 1,
        ..cfg()
    };
    let s = Session::from_parts(session.to_parts(), &small).unwrap();
    assert_eq!(s.queued_len(), 1);
    assert_eq!(s.stats().dropped.queue_full, 1);
}

#[test]
fn change_tracking_reports_what_to_persist() {
    let (mut session, ids) = busy_session(true);
    let ch = session.take_changes();
    assert!(ch.subscriptions);
    assert_eq!(ch.outgoing.iter().copied().collect::<Vec<_>>(), {
        let mut v = ids.clone();
        v.sort_unstable();
        v
    });
    assert_eq!(ch.incoming_qos2.iter().copied().collect::<Vec<_>>(), [40]);
    assert_eq!(ch.queue_popped, 0, "nothing left the queue yet");
    assert!(session.take_changes().is_empty(), "taken once");
    assert_eq!(
        session.outgoing_parts(ids[2]).map(|o| o.stage),
        Some(OutgoingStage::AwaitingPubcomp)
    );
    assert!(session.has_incoming_qos2(40));

    // Resume: completing exchanges, PUBREL and the queue pump are all recorded.
    let mut next = Pair::new(cfg(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "p");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(300);
    next.connect_request(c);
    next.conn.accept_connect(next.now, Some(session), true);
    next.recv();
    next.ack(Packet::PubAck, ids[0]);
    next.ack(Packet::PubRec, ids[1]);
    next.ack(Packet::PubRel, 40);
    next.recv();
    next.conn.socket_closed(next.now);
    next.events();
    let mut s = std::mem::replace(&mut next.conn, Connection::new(Arc::new(cfg()), next.now))
        .into_session()
        .unwrap();
    let ch = s.take_changes();
    assert!(ch.outgoing.contains(&ids[0]) && s.outgoing_parts(ids[0]).is_none());
    assert_eq!(
        s.outgoing_parts(ids[1]).map(|o| o.stage),
        Some(OutgoingStage::AwaitingPubcomp)
    );
    assert!(ch.outgoing.contains(&ids[1]));
    assert!(ch.incoming_qos2.contains(&40) && !s.has_incoming_qos2(40));
    assert_eq!(ch.queue_popped, 1, "a/four moved in flight");
    let new_id = *ch.outgoing.iter().find(|id| !ids.contains(id)).unwrap();
    assert_eq!(
        s.outgoing_parts(new_id)
            .map(|o| o.delivery.message.topic.to_string()),
        Some("a/four".into())
    );
    assert!(!ch.subscriptions && !ch.expiry_interval);
}

#[test]
fn untracked_sessions_record_nothing() {
    let (mut session, _) = busy_session(false);
    assert!(!session.tracks_changes());
    assert!(session.take_changes().is_empty());
}

fn full_message(expires_at: Option<Instant>) -> Message {
    Message {
        topic: MqttString::from("t/x"),
        payload: Bytes::from_static(b"payload"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: MessageProperties {
            payload_format_indicator: Some(true),
            content_type: Some("text/plain".into()),
            response_topic: Some("r".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        },
        expires_at,
        publisher: Some("pub".into()),
    }
}

#[test]
fn message_parts_round_trip_across_a_restart() {
    let before = WallClock::new(Instant::now(), 1_700_000_000_000);
    let msg = full_message(Some(before.now + Duration::from_millis(90_000)));
    let parts = msg.to_parts(&before);
    assert_eq!(parts.expires_at_unix_ms, Some(1_700_000_090_000));
    assert_eq!(parts.qos, 2);
    assert_eq!(Message::from_parts(parts.clone(), &before).unwrap(), msg);

    // After 30 s of downtime (wall clock), 60 s remain [MQTT-3.3.2-6].
    let after = WallClock::new(Instant::now(), 1_700_000_030_000);
    let back = Message::from_parts(parts.clone(), &after).unwrap();
    assert_eq!(back.remaining_expiry_secs(after.now), Some(60));
    // After 100 s it has expired [MQTT-3.3.2-5].
    let late = WallClock::new(Instant::now(), 1_700_000_100_000);
    assert!(
        Message::from_parts(parts, &late)
            .unwrap()
            .is_expired(late.now)
    );
}

#[test]
fn message_parts_refuse_bad_values() {
    let clock = WallClock::new(Instant::now(), 0);
    let good = full_message(None).to_parts(&clock);
    assert_eq!(good.expires_at_unix_ms, None);
    let bad_qos = MessageParts {
        qos: 3,
        ..good.clone()
    };
    assert_eq!(
        Message::from_parts(bad_qos, &clock).unwrap_err(),
        PartsError::InvalidQos(3)
    );
    let empty = MessageParts {
        topic: String::new(),
        ..good
    };
    assert_eq!(
        Message::from_parts(empty, &clock).unwrap_err(),
        PartsError::EmptyTopic
    );
}

#[test]
fn wall_clock_rounds_towards_keeping_unexpired_messages() {
    let c = WallClock::new(Instant::now(), 10_000);
    assert_eq!(c.unix_ms(c.now + Duration::from_micros(1)), 10_001);
    assert_eq!(c.unix_ms(c.now), 10_000);
    assert_eq!(c.instant(10_250), c.now + Duration::from_millis(250));
    // Far in the past: clamped, still expired.
    assert!(c.instant(0) <= c.now);
    // Far in the future: saturated, still unexpired.
    assert!(c.unix_ms(c.instant(u64::MAX)) > 10_000);
    assert!(c.instant(u64::MAX) > c.now);
}
