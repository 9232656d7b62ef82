//! MQTT 5.0 sessions and wills: session expiry and Clean Start, offline queues and message
//! expiry, redelivery on resume, takeover, will messages and the Will Delay Interval. Raw
//! sockets for exact control, rumqttc v5 where the flow is ordinary. Each test starts its own
//! broker.
//!
//! Against Mosquitto 2.0.11 (`HALYARD_TEST_AGAINST=mosquitto`) every test passes except
//! `takeover_disconnects_first_with_0x8e`: Mosquitto 2.0.11 closes the old connection without
//! DISCONNECT 0x8E.

use std::time::Duration;

use halyard_tests::TestBroker;
use halyard_tests::raw::{
    self, Connect, Packet, Prop, Props, Publish, RawClient, Version, prop, publish_parts,
};
use halyard_tests::rumq::v5::{self, Client, QoS};

fn v5conn(b: &TestBroker, id: &str) -> RawClient {
    RawClient::connected(b.mqtt_addr(), Version::V5, id)
}

/// An expired queued message is never delivered [MQTT-3.3.2-5]; a queued message that has not
/// expired is delivered with its Message Expiry Interval reduced by the time it waited
/// [MQTT-3.3.2-6].
#[test]
fn message_expiry_offline_queue() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "expiry");
    c.clean = true;
    c.props = Props::new().with(Prop::U32(prop::SESSION_EXPIRY, 300));
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("exp/t", 1)], &Props::new());
    s.send(&raw::disconnect(Version::V5, 0, &Props::new()));
    s.expect_closed();

    let mut p = v5conn(&b, "exp-pub");
    let exp = |secs| Props::new().with(Prop::U32(prop::MESSAGE_EXPIRY, secs));
    p.publish(&Publish::new("exp/t", b"short").qos(1, 1).props(exp(1)));
    p.publish(&Publish::new("exp/t", b"long").qos(1, 2).props(exp(60)));
    std::thread::sleep(Duration::from_millis(2500));

    c.clean = false;
    let (mut s, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!((code, present), (0, true));
    let m = s.recv_publish();
    s.ack_publish(&m);
    let (_, payload, _, _, props) = publish_parts(&m);
    assert_eq!(
        payload, b"long",
        "the expired message must not be delivered"
    );
    let left = props
        .int(prop::MESSAGE_EXPIRY)
        .expect("expiry interval forwarded");
    assert!(
        left <= 58,
        "expiry reduced by the >= 2.5 s waited, got {left}"
    );
}

/// Persistent session with Session Expiry Interval: offline messages arrive on reconnect with
/// Session Present 1 [MQTT-3.1.2-23] [MQTT-3.2.2-3]; Clean Start 1 gives Session Present 0
/// [MQTT-3.2.2-2]; Session Expiry 0 ends the session at disconnect.
#[tokio::test]
async fn session_expiry_and_clean_start() {
    let b = TestBroker::start();
    let mut o = v5::opts(b.mqtt_addr(), "sess");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(300));
    let (mut s, ack) = Client::connect(o.clone()).await;
    assert!(!ack.session_present);
    s.subscribe("sess/t", QoS::ExactlyOnce).await;
    s.disconnect().await;

    let (mut p, _) = Client::connect(v5::opts(b.mqtt_addr(), "sess-pub")).await;
    p.publish("sess/t", QoS::AtLeastOnce, false, b"q1").await;
    p.publish("sess/t", QoS::ExactlyOnce, false, b"q2").await;
    let (mut s, ack) = Client::connect(o.clone()).await;
    assert!(ack.session_present, "[MQTT-3.2.2-3]");
    let m = s.next_publish().await;
    assert_eq!((&m.payload[..], m.qos), (&b"q1"[..], QoS::AtLeastOnce));
    let m = s.next_publish().await;
    assert_eq!((&m.payload[..], m.qos), (&b"q2"[..], QoS::ExactlyOnce));
    s.disconnect().await;

    let mut clean = o.clone();
    clean.set_clean_start(true);
    clean.set_session_expiry_interval(None);
    let (s, ack) = Client::connect(clean).await;
    assert!(
        !ack.session_present,
        "Clean Start 1 -> Session Present 0 [MQTT-3.2.2-2]"
    );
    s.disconnect().await;
    // That session had expiry 0: it ended with the connection.
    let (s, ack) = Client::connect(o).await;
    assert!(
        !ack.session_present,
        "a session with expiry 0 ends at disconnect [MQTT-3.1.2-22]"
    );
    s.disconnect().await;
}

/// Takeover: a second connection with the same client id makes the server send DISCONNECT
/// 0x8E (Session taken over) to the first and close it [MQTT-3.1.4-3]. The first connection is
/// raw (rumqttc reports a DISCONNECT followed by EOF as a plain abort); the second is rumqttc.
#[tokio::test]
async fn takeover_disconnects_first_with_0x8e() {
    let b = TestBroker::start();
    let mut first = v5conn(&b, "dup-id");
    let (mut second, ack) = Client::connect(v5::opts(b.mqtt_addr(), "dup-id")).await;
    assert_eq!(ack.code, v5::ConnectReturnCode::Success);
    let seen = tokio::task::spawn_blocking(move || first.expect_closed())
        .await
        .expect("join");
    assert!(
        matches!(seen.as_slice(), [Packet::Disconnect { reason: 0x8E, .. }]),
        "first connection: expected DISCONNECT 0x8E then close, got {seen:?}"
    );
    second.subscribe("dup/t", QoS::AtMostOnce).await;
}

fn will_connect(id: &str, will_delay: Option<u32>, session_expiry: u32) -> Connect {
    let mut c = Connect::new(Version::V5, id);
    c.props = Props::new().with(Prop::U32(prop::SESSION_EXPIRY, session_expiry));
    let mut wp = Props::new();
    if let Some(d) = will_delay {
        wp = wp.with(Prop::U32(prop::WILL_DELAY, d));
    }
    c.will = Some(raw::Will {
        topic: format!("will5/{id}"),
        payload: b"gone".to_vec(),
        qos: 1,
        retain: false,
        props: wp,
    });
    c
}

fn watcher(b: &TestBroker) -> RawClient {
    let mut w = v5conn(b, "will-watcher");
    w.subscribe(1, &[("will5/#", 1)], &Props::new());
    w
}

/// Marker published after the action under test: the watcher must see it (and nothing else
/// before it).
fn assert_next_is_marker(b: &TestBroker, w: &mut RawClient, why: &str) {
    let mut p = v5conn(b, "will-marker");
    p.publish(&Publish::new("will5/marker", b"m").qos(1, 1));
    let m = w.recv_publish();
    w.ack_publish(&m);
    assert_eq!(publish_parts(&m).0, "will5/marker", "{why}");
}

/// The will is sent when the connection drops [MQTT-3.1.2-8], not after DISCONNECT 0x00
/// [MQTT-3.1.2-10], and is sent after DISCONNECT 0x04 (Disconnect with Will Message).
#[test]
fn will_abnormal_normal_and_0x04() {
    let b = TestBroker::start();
    let mut w = watcher(&b);
    let (c, _, code, _) = RawClient::connect(b.mqtt_addr(), &will_connect("drop", None, 0));
    assert_eq!(code, 0);
    c.drop_abruptly();
    let m = w.recv_publish();
    w.ack_publish(&m);
    assert_eq!(publish_parts(&m).0, "will5/drop");

    let (mut c, _, _, _) = RawClient::connect(b.mqtt_addr(), &will_connect("polite", None, 0));
    c.send(&raw::disconnect(Version::V5, 0x00, &Props::new()));
    c.expect_closed();
    assert_next_is_marker(&b, &mut w, "no will after DISCONNECT 0x00 [MQTT-3.1.2-10]");

    let (mut c, _, _, _) = RawClient::connect(b.mqtt_addr(), &will_connect("with-will", None, 0));
    c.send(&raw::disconnect(Version::V5, 0x04, &Props::new()));
    c.expect_closed();
    let m = w.recv_publish();
    w.ack_publish(&m);
    assert_eq!(
        publish_parts(&m).0,
        "will5/with-will",
        "DISCONNECT 0x04 sends the will"
    );
}

/// Will Delay Interval: a reconnect before the delay cancels the will [MQTT-3.1.3-9].
#[test]
fn will_delay_cancelled_by_reconnect() {
    let b = TestBroker::start();
    let mut w = watcher(&b);
    let c0 = will_connect("delayed", Some(3), 300);
    let (c, _, code, _) = RawClient::connect(b.mqtt_addr(), &c0);
    assert_eq!(code, 0);
    c.drop_abruptly();
    let mut again = c0.clone();
    again.clean = false;
    again.will = None;
    let (mut c, present, code, _) = RawClient::connect(b.mqtt_addr(), &again);
    assert_eq!((code, present), (0, true));
    std::thread::sleep(Duration::from_millis(4000));
    assert_next_is_marker(
        &b,
        &mut w,
        "reconnect within the will delay cancels the will",
    );
    c.send(&raw::disconnect(Version::V5, 0, &Props::new()));
}

/// The will is sent at min(Will Delay Interval, Session Expiry Interval) [MQTT-3.1.3-9]
/// (MQTT 5.0 §3.1.3.2.2): a 1 s session expiry sends a will whose delay is one hour; a 3 s
/// will delay with a long session sends it after the delay, not at once.
#[test]
fn will_delay_min_of_session_expiry() {
    let b = TestBroker::start();
    let mut w = watcher(&b);
    let (c, _, code, _) =
        RawClient::connect(b.mqtt_addr(), &will_connect("short-sess", Some(3600), 1));
    assert_eq!(code, 0);
    c.drop_abruptly();
    let m = w.recv_publish();
    w.ack_publish(&m);
    assert_eq!(
        publish_parts(&m).0,
        "will5/short-sess",
        "sent when the session ends"
    );

    let (c, _, _, _) = RawClient::connect(b.mqtt_addr(), &will_connect("delay3", Some(3), 300));
    c.drop_abruptly();
    // Not at once: a marker published right after the drop comes first.
    assert_next_is_marker(&b, &mut w, "the will waits for its delay");
    let m = w.recv_publish();
    w.ack_publish(&m);
    assert_eq!(
        publish_parts(&m).0,
        "will5/delay3",
        "sent once the delay has passed"
    );
}

/// An unacknowledged QoS 2 message is resent with DUP 1 when the session resumes
/// [MQTT-4.4.0-1]; after PUBREC the server resends PUBREL, not the PUBLISH [MQTT-4.4.0-2].
#[test]
fn qos2_redelivery_on_session_resume() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "redo5");
    c.props = Props::new().with(Prop::U32(prop::SESSION_EXPIRY, 300));
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("redo5/t", 2)], &Props::new());
    let mut p = v5conn(&b, "redo5-pub");
    p.publish(&Publish::new("redo5/t", b"one").qos(2, 1));
    p.publish(&Publish::new("redo5/t", b"two").qos(2, 2));
    let m1 = s.recv_publish();
    let m2 = s.recv_publish();
    let pid1 = match &m1 {
        Packet::Publish {
            pid, dup: false, ..
        } => *pid,
        other => panic!("first delivery: {other:?}"),
    };
    let pid2 = match &m2 {
        Packet::Publish { pid, .. } => *pid,
        other => panic!("second delivery: {other:?}"),
    };
    // PUBREC the first only, then drop the connection.
    s.send(&raw::ack(0x50, pid1));
    s.recv_until(|x| matches!(x, Packet::Ack { kind: 6, .. }));
    s.drop_abruptly();

    c.clean = false;
    let (mut s, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!((code, present), (0, true));
    let mut got_pubrel = false;
    let mut got_publish = false;
    for _ in 0..2 {
        match s.recv() {
            Ok(Packet::Ack { kind: 6, pid, .. }) => {
                assert_eq!(pid, pid1, "PUBREL resent for the PUBREC'd message");
                got_pubrel = true;
                s.send(&raw::ack(0x70, pid));
            }
            Ok(Packet::Publish {
                pid, dup, payload, ..
            }) => {
                assert_eq!((pid, dup, payload.as_slice()), (pid2, true, &b"two"[..]));
                got_publish = true;
                s.send(&raw::ack(0x50, pid));
                s.recv_until(|x| matches!(x, Packet::Ack { kind: 6, .. }));
                s.send(&raw::ack(0x70, pid));
            }
            other => panic!("on resume: {other:?}"),
        }
    }
    assert!(got_pubrel && got_publish);
}

/// A session whose Session Expiry Interval has passed is gone: the next connection with
/// Clean Start 0 gets Session Present 0 (MQTT 5.0 §3.1.2.11.2).
#[test]
fn session_expires_after_interval() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "expires");
    c.props = Props::new().with(Prop::U32(prop::SESSION_EXPIRY, 1));
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("expires/t", 1)], &Props::new());
    s.send(&raw::disconnect(Version::V5, 0, &Props::new()));
    s.expect_closed();
    std::thread::sleep(Duration::from_millis(2500));
    c.clean = false;
    let (_s, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!((code, present), (0, false), "the session expired");
}

/// Will Properties (content type, user properties, response topic, correlation data) are sent
/// with the will message (MQTT 5.0 §3.1.3.2).
#[test]
fn will_properties_forwarded() {
    let b = TestBroker::start();
    let mut w = watcher(&b);
    let mut c = will_connect("props-will", None, 0);
    if let Some(will) = c.will.as_mut() {
        will.props = Props::new()
            .with(Prop::Str(prop::CONTENT_TYPE, "text/plain".into()))
            .with(Prop::Str(prop::RESPONSE_TOPIC, "will5/reply".into()))
            .with(Prop::Bin(prop::CORRELATION_DATA, b"cd".to_vec()))
            .with(Prop::Pair(prop::USER_PROPERTY, "k".into(), "v".into()));
    }
    let (cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    cl.drop_abruptly();
    let m = w.recv_publish();
    let (topic, _, _, _, props) = publish_parts(&m);
    assert_eq!(topic, "will5/props-will");
    assert_eq!(props.str(prop::CONTENT_TYPE), Some("text/plain"));
    assert_eq!(props.str(prop::RESPONSE_TOPIC), Some("will5/reply"));
    assert_eq!(props.bin(prop::CORRELATION_DATA), Some(&b"cd"[..]));
    assert_eq!(props.user(), vec![("k".to_string(), "v".to_string())]);
}
