//! Messages to the client: window, queue, packet size, expiry, aliases, properties, resume.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use halyard_codec::{ConnectProperties, Packet, ProtocolVersion, QoS};
use smallvec::smallvec;

use super::util::{Pair, VERSIONS, connect, delivery, message, publishes};
use crate::{
    DeliverOutcome, Delivery, Dropped, MessageProperties, QueuePolicy, Session, SessionConfig,
};

fn v5_connect_with(props: ConnectProperties) -> halyard_codec::Connect {
    let mut c = connect(ProtocolVersion::V5, "client");
    c.properties = props;
    c
}

#[test]
fn qos0_delivery_is_sent_at_once() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        let out = pair.conn.deliver(pair.now, delivery("a", QoS::AtMostOnce));
        assert_eq!(out, DeliverOutcome::Sent);
        let packets = pair.recv();
        let p = publishes(&packets);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].qos, p[0].topic.as_str()), (QoS::AtMostOnce, "a"));
        assert_eq!(pair.conn.stats().publish_out, [1, 0, 0]);
    }
}

#[test]
fn inflight_window_and_queue_mqtt_3_3_4_9() {
    let cfg = SessionConfig {
        max_inflight: 2,
        ..SessionConfig::default()
    };
    for v in VERSIONS {
        let mut pair = Pair::connected(v, cfg.clone());
        let outcomes: Vec<_> = (0..3)
            .map(|i| {
                pair.conn
                    .deliver(pair.now, delivery(&format!("t/{i}"), QoS::AtLeastOnce))
            })
            .collect();
        assert_eq!(
            outcomes,
            [
                DeliverOutcome::Sent,
                DeliverOutcome::Sent,
                DeliverOutcome::Queued
            ]
        );
        let packets = pair.recv();
        let sent = publishes(&packets);
        let ids: Vec<u16> = sent.iter().map(|p| p.packet_id).collect();
        assert_eq!(sent.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert!(ids.iter().all(|&id| id != 0));
        // PUBACK frees a slot: the queued one goes out.
        pair.ack(Packet::PubAck, ids[0]);
        let packets = pair.recv();
        let next = publishes(&packets);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].topic, "t/2");
        assert_eq!(pair.conn.session().unwrap().inflight_len(), 2);
    }
}

#[test]
fn v5_client_receive_maximum_caps_the_window_mqtt_3_3_4_9() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    pair.establish(
        v5_connect_with(ConnectProperties {
            receive_maximum: Some(1),
            ..ConnectProperties::default()
        }),
        None,
    );
    assert_eq!(
        pair.conn.deliver(pair.now, delivery("a", QoS::ExactlyOnce)),
        DeliverOutcome::Sent
    );
    assert_eq!(
        pair.conn.deliver(pair.now, delivery("b", QoS::AtLeastOnce)),
        DeliverOutcome::Queued
    );
    let packets = pair.recv();
    let id = publishes(&packets)[0].packet_id;
    // QoS 2 holds the slot until PUBCOMP.
    pair.ack(Packet::PubRec, id);
    assert!(matches!(pair.recv_one(), Packet::PubRel(r) if r.packet_id == id));
    pair.ack(Packet::PubComp, id);
    let packets = pair.recv();
    assert_eq!(publishes(&packets)[0].topic, "b");
}

#[test]
fn qos2_outgoing_exchange() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.conn.deliver(pair.now, delivery("q", QoS::ExactlyOnce));
        let packets = pair.recv();
        let id = publishes(&packets)[0].packet_id;
        pair.ack(Packet::PubRec, id);
        assert!(matches!(pair.recv_one(), Packet::PubRel(r) if r.packet_id == id));
        pair.ack(Packet::PubComp, id);
        assert!(pair.recv().is_empty());
        assert_eq!(pair.conn.session().unwrap().inflight_len(), 0);
    }
}

#[test]
fn message_too_large_for_the_client_is_dropped_mqtt_3_1_2_25() {
    let mut pair = Pair::new(SessionConfig::default(), ProtocolVersion::V5);
    pair.establish(
        v5_connect_with(ConnectProperties {
            maximum_packet_size: Some(40),
            ..ConnectProperties::default()
        }),
        None,
    );
    let mut m = message("big", QoS::AtLeastOnce);
    m.payload = Bytes::from(vec![0u8; 64]);
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: smallvec![],
        packet_id: None,
    };
    assert_eq!(
        pair.conn.deliver(pair.now, d),
        DeliverOutcome::Dropped(Dropped::TooLarge)
    );
    assert!(pair.recv().is_empty());
    assert_eq!(pair.conn.stats().dropped.too_large, 1);
    assert_eq!(
        pair.conn.session().unwrap().inflight_len(),
        0,
        "no packet id spent"
    );
    // Small ones still go.
    assert_eq!(
        pair.conn.deliver(pair.now, delivery("s", QoS::AtLeastOnce)),
        DeliverOutcome::Sent
    );
}

#[test]
fn expired_messages_are_never_sent_mqtt_3_3_2_5() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut m = message("e", QoS::AtMostOnce);
    m.expires_at = Some(pair.now);
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: smallvec![],
        packet_id: None,
    };
    assert_eq!(
        pair.conn.deliver(pair.now, d),
        DeliverOutcome::Dropped(Dropped::Expired)
    );
    assert!(pair.recv().is_empty());
}

#[test]
fn forwarded_expiry_is_the_remaining_time_mqtt_3_3_2_6() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let mut m = message("e", QoS::AtMostOnce);
    m.expires_at = Some(pair.now + Duration::from_secs(10));
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: smallvec![],
        packet_id: None,
    };
    pair.now += Duration::from_secs(3);
    pair.conn.deliver(pair.now, d);
    let packets = pair.recv();
    assert_eq!(
        publishes(&packets)[0].properties.message_expiry_interval,
        Some(7)
    );
}

#[test]
fn queued_messages_that_expire_are_dropped() {
    let cfg = SessionConfig {
        max_inflight: 1,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V5, cfg);
    pair.conn
        .deliver(pair.now, delivery("first", QoS::AtLeastOnce));
    let mut m = message("late", QoS::AtLeastOnce);
    m.expires_at = Some(pair.now + Duration::from_secs(5));
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: smallvec![],
        packet_id: None,
    };
    assert_eq!(pair.conn.deliver(pair.now, d), DeliverOutcome::Queued);
    let packets = pair.recv();
    let id = publishes(&packets)[0].packet_id;
    pair.now += Duration::from_secs(6);
    pair.ack(Packet::PubAck, id);
    assert!(pair.recv().is_empty(), "the expired message is not sent");
    assert_eq!(pair.conn.session().unwrap().stats().dropped.expired, 1);
}

#[test]
fn v5_outgoing_topic_aliases_first_n() {
    let cfg = SessionConfig {
        max_topic_alias_out: 5,
        ..SessionConfig::default()
    };
    let mut pair = Pair::new(cfg, ProtocolVersion::V5);
    pair.establish(
        v5_connect_with(ConnectProperties {
            topic_alias_maximum: Some(1),
            ..ConnectProperties::default()
        }),
        None,
    );
    for topic in ["x/1", "x/1", "x/2", "x/1"] {
        pair.conn
            .deliver(pair.now, delivery(topic, QoS::AtMostOnce));
    }
    let packets = pair.recv();
    let seen: Vec<(&str, Option<u16>)> = publishes(&packets)
        .iter()
        .map(|p| (p.topic.as_str(), p.properties.topic_alias))
        .collect();
    assert_eq!(
        seen,
        [
            ("x/1", Some(1)),
            ("", Some(1)),
            ("x/2", None),
            ("", Some(1))
        ]
    );
}

#[test]
fn no_outgoing_aliases_without_client_topic_alias_maximum() {
    for v in VERSIONS {
        let mut pair = Pair::connected(v, SessionConfig::default());
        pair.conn.deliver(pair.now, delivery("a", QoS::AtMostOnce));
        pair.conn.deliver(pair.now, delivery("a", QoS::AtMostOnce));
        let packets = pair.recv();
        assert!(
            publishes(&packets)
                .iter()
                .all(|p| p.topic == "a" && p.properties.topic_alias.is_none())
        );
    }
}

#[test]
fn v5_properties_are_forwarded_unchanged_mqtt_3_3_2_17_18_20() {
    let mut pair = Pair::connected(ProtocolVersion::V5, SessionConfig::default());
    let props = MessageProperties {
        payload_format_indicator: Some(true),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02")),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
    };
    let mut m = message("p", QoS::AtMostOnce);
    m.properties = props.clone();
    m.retain = true;
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtMostOnce,
        retain: true,
        subscription_ids: smallvec![4, 9],
        packet_id: None,
    };
    pair.conn.deliver(pair.now, d);
    let packets = pair.recv();
    let p = publishes(&packets)[0];
    assert!(p.retain);
    assert_eq!(p.properties.payload_format_indicator, Some(true));
    assert_eq!(p.properties.content_type, props.content_type);
    assert_eq!(p.properties.response_topic, props.response_topic);
    assert_eq!(p.properties.correlation_data, props.correlation_data);
    assert_eq!(p.properties.user_properties, props.user_properties);
    assert_eq!(p.properties.subscription_identifiers, vec![4, 9]);
}

#[test]
fn delivery_retain_flag_is_what_the_server_chose() {
    let mut pair = Pair::connected(ProtocolVersion::V311, SessionConfig::default());
    let mut m = message("r", QoS::AtMostOnce);
    m.retain = true;
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtMostOnce,
        retain: false,
        subscription_ids: smallvec![1],
        packet_id: None,
    };
    pair.conn.deliver(pair.now, d);
    let packets = pair.recv();
    assert!(!publishes(&packets)[0].retain);
}

#[test]
fn offline_queue_policies_and_counters() {
    let base = SessionConfig {
        max_queued_messages: 2,
        ..SessionConfig::default()
    };
    let now = std::time::Instant::now();
    // DropNewest: the third is refused.
    let mut s = Session::new("c".into(), 10, &base);
    for t in ["1", "2"] {
        s.enqueue(now, delivery(t, QoS::AtLeastOnce)).unwrap();
    }
    assert_eq!(
        s.enqueue(now, delivery("3", QoS::AtLeastOnce)),
        Err(Dropped::QueueFull)
    );
    assert_eq!(s.queued_len(), 2);
    assert_eq!(s.stats().dropped.queue_full, 1);
    // QoS 0 is not queued offline by default.
    assert_eq!(
        s.enqueue(now, delivery("q0", QoS::AtMostOnce)),
        Err(Dropped::Qos0Offline)
    );
    // DropOldest: the first goes, the third stays.
    let cfg = SessionConfig {
        queue_policy: QueuePolicy::DropOldest,
        ..base
    };
    let mut s = Session::new("c".into(), 10, &cfg);
    for t in ["1", "2", "3"] {
        s.enqueue(now, delivery(t, QoS::AtLeastOnce)).unwrap();
    }
    assert_eq!(s.stats().dropped.queue_full, 1);
    let mut pair = Pair::new(cfg, ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "c");
    c.clean_start = false;
    pair.connect_request(c);
    pair.conn.accept_connect(pair.now, Some(s), true);
    let packets = pair.recv();
    assert!(matches!(&packets[0], Packet::ConnAck(_)));
    let topics: Vec<&str> = publishes(&packets)
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(topics, ["2", "3"]);
}

#[test]
fn resume_resends_inflight_with_dup_then_pubrel_then_queue_mqtt_4_4_0_1() {
    let cfg = SessionConfig {
        max_inflight: 3,
        ..SessionConfig::default()
    };
    for v in VERSIONS {
        let mut pair = Pair::new(cfg.clone(), v);
        let mut c = connect(v, "r");
        c.clean_start = false;
        if v == ProtocolVersion::V5 {
            c.properties.session_expiry_interval = Some(100);
        }
        pair.establish(c.clone(), None);
        for (t, q) in [
            ("one", QoS::AtLeastOnce),
            ("two", QoS::ExactlyOnce),
            ("three", QoS::ExactlyOnce),
            ("four", QoS::AtLeastOnce),
        ] {
            pair.conn.deliver(pair.now, delivery(t, q));
        }
        let packets = pair.recv();
        let first: Vec<(String, u16)> = publishes(&packets)
            .iter()
            .map(|p| (p.topic.to_string(), p.packet_id))
            .collect();
        assert_eq!(first.len(), 3);
        // "three" reaches PUBREC; then the network fails.
        pair.ack(Packet::PubRec, first[2].1);
        assert!(matches!(pair.recv_one(), Packet::PubRel(_)));
        pair.conn.socket_closed(pair.now);
        pair.events();
        let session = std::mem::replace(
            &mut pair.conn,
            crate::Connection::new(Arc::new(cfg.clone()), pair.now),
        )
        .into_session()
        .expect("session kept");
        assert_eq!(session.inflight_len(), 3);
        assert_eq!(session.queued_len(), 1);
        // Reconnect.
        let mut next = Pair::new(cfg.clone(), v);
        next.connect_request(c.clone());
        next.conn.accept_connect(next.now, Some(session), true);
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
        // Original order [MQTT-4.6.0-1]; the queued one waits for a free slot.
        assert_eq!(
            seen,
            [
                format!("publish one {}", first[0].1),
                format!("publish two {}", first[1].1),
                format!("pubrel {}", first[2].1),
            ]
        );
        next.ack(Packet::PubAck, first[0].1);
        let packets = next.recv();
        let p = publishes(&packets);
        assert_eq!((p[0].topic.as_str(), p[0].dup), ("four", false));
        assert_eq!(next.conn.stats().publish_resent, 2);
    }
}

#[test]
fn incoming_qos2_state_survives_reconnect() {
    let cfg = SessionConfig::default();
    let mut pair = Pair::new(cfg.clone(), ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "q2");
    c.clean_start = false;
    pair.establish(c.clone(), None);
    pair.publish("t", QoS::ExactlyOnce, 5);
    pair.events();
    pair.conn
        .complete_publish(pair.now, 5, halyard_codec::ReasonCode::SUCCESS);
    pair.recv();
    pair.conn.socket_closed(pair.now);
    let conn = std::mem::replace(
        &mut pair.conn,
        crate::Connection::new(Arc::new(cfg.clone()), pair.now),
    );
    let session = conn.into_session().unwrap();
    assert_eq!(session.incoming_qos2_len(), 1);
    let mut next = Pair::new(cfg, ProtocolVersion::V311);
    next.establish(c, Some(session));
    let mut p = super::util::publish("t", QoS::ExactlyOnce, 5);
    p.dup = true;
    next.send(Packet::Publish(p));
    assert!(next.events().is_empty(), "duplicate not routed twice");
    assert!(matches!(next.recv_one(), Packet::PubRec(r) if r.packet_id == 5));
}

#[test]
fn slow_consumer_output_backlog_is_bounded() {
    let cfg = SessionConfig {
        max_pending_output: 64,
        ..SessionConfig::default()
    };
    let mut pair = Pair::connected(ProtocolVersion::V311, cfg);
    let mut outcomes = Vec::new();
    for _ in 0..20 {
        outcomes.push(
            pair.conn
                .deliver(pair.now, delivery("topic/x", QoS::AtMostOnce)),
        );
    }
    assert!(outcomes.contains(&DeliverOutcome::Dropped(Dropped::OutputFull)));
    assert!(pair.conn.pending_output_len() < 64 + 32);
    assert_eq!(
        pair.conn
            .deliver(pair.now, delivery("q1", QoS::AtLeastOnce)),
        DeliverOutcome::Queued
    );
    // Once the output is flushed, the queued message goes out.
    let packets = pair.recv();
    assert!(publishes(&packets).iter().any(|p| p.topic == "q1"));
}

#[test]
fn deliver_before_accept_is_refused_and_after_close_is_queued() {
    let cfg = SessionConfig::default();
    let mut pair = Pair::new(cfg, ProtocolVersion::V311);
    assert_eq!(
        pair.conn.deliver(pair.now, delivery("a", QoS::AtLeastOnce)),
        DeliverOutcome::Dropped(Dropped::NotConnected)
    );
    let mut c = connect(ProtocolVersion::V311, "c");
    c.clean_start = false;
    pair.establish(c, None);
    pair.conn.socket_closed(pair.now);
    assert_eq!(
        pair.conn.deliver(pair.now, delivery("a", QoS::AtLeastOnce)),
        DeliverOutcome::Queued
    );
    assert_eq!(pair.conn.session().unwrap().queued_len(), 1);
}

#[test]
fn qos0_queued_offline_when_configured_is_sent_on_resume() {
    let cfg = SessionConfig {
        queue_qos0_offline: true,
        ..SessionConfig::default()
    };
    let now = std::time::Instant::now();
    let mut s = Session::new("c".into(), 10, &cfg);
    s.enqueue(now, delivery("zero", QoS::AtMostOnce)).unwrap();
    let mut pair = Pair::new(cfg, ProtocolVersion::V311);
    let mut c = connect(ProtocolVersion::V311, "c");
    c.clean_start = false;
    pair.connect_request(c);
    pair.conn.accept_connect(pair.now, Some(s), true);
    let packets = pair.recv();
    let p = publishes(&packets);
    assert_eq!((p[0].topic.as_str(), p[0].qos), ("zero", QoS::AtMostOnce));
}

#[test]
fn v5_inflight_too_large_for_the_new_connection_is_discarded_mqtt_3_1_2_25() {
    let cfg = SessionConfig::default();
    let now = std::time::Instant::now();
    // A session with one in-flight message sent on an earlier connection.
    let mut first = Pair::new(cfg.clone(), ProtocolVersion::V5);
    let mut c = connect(ProtocolVersion::V5, "big");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    first.establish(c.clone(), None);
    let mut m = message("big", QoS::AtLeastOnce);
    m.payload = Bytes::from(vec![7u8; 100]);
    let d = Delivery {
        message: Arc::new(m),
        qos: QoS::AtLeastOnce,
        retain: false,
        subscription_ids: smallvec![],
        packet_id: None,
    };
    assert_eq!(first.conn.deliver(now, d), DeliverOutcome::Sent);
    first.conn.socket_closed(now);
    let conn = std::mem::replace(
        &mut first.conn,
        crate::Connection::new(Arc::new(cfg.clone()), now),
    );
    let session = conn.into_session().unwrap();
    // The client comes back with a smaller Maximum Packet Size.
    let mut next = Pair::new(cfg, ProtocolVersion::V5);
    c.properties.maximum_packet_size = Some(50);
    next.connect_request(c);
    next.conn.accept_connect(next.now, Some(session), true);
    let packets = next.recv();
    assert!(publishes(&packets).is_empty());
    assert_eq!(next.conn.stats().dropped.too_large, 1);
    assert_eq!(next.conn.session().unwrap().inflight_len(), 0);
}

#[test]
fn fixed_packet_ids_are_used_and_wait_while_in_use() {
    for v in VERSIONS {
        let cfg = SessionConfig::default();
        let mut pair = Pair::new(cfg.clone(), v);
        let mut tracked = Session::new("client".into(), 0, &cfg);
        tracked.set_track_changes(true);
        pair.establish(connect(v, "client"), Some(tracked));
        let _ = pair.conn.take_session_changes();
        let fixed = |topic: &str, id: u16| Delivery {
            packet_id: Some(id),
            ..delivery(topic, QoS::AtLeastOnce)
        };
        assert_eq!(
            pair.conn.deliver(pair.now, fixed("a", 7)),
            DeliverOutcome::Sent
        );
        // Same identifier while 7 is in flight: waits, and what follows waits behind it.
        assert_eq!(
            pair.conn.deliver(pair.now, fixed("b", 7)),
            DeliverOutcome::Queued
        );
        assert_eq!(
            pair.conn.deliver(pair.now, fixed("c", 8)),
            DeliverOutcome::Queued
        );
        let packets = pair.recv();
        let sent: Vec<(&str, u16)> = publishes(&packets)
            .iter()
            .map(|p| (p.topic.as_str(), p.packet_id))
            .collect();
        assert_eq!(sent, [("a", 7)]);
        pair.ack(Packet::PubAck, 7);
        let packets = pair.recv();
        let sent: Vec<(&str, u16)> = publishes(&packets)
            .iter()
            .map(|p| (p.topic.as_str(), p.packet_id))
            .collect();
        assert_eq!(sent, [("b", 7), ("c", 8)]);
        let changes = pair
            .conn
            .take_session_changes()
            .map(|(c, _)| c.queue_popped);
        assert_eq!(changes, Some(2), "both left the queue once");
    }
}
