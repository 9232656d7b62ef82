//! Parked connections (`io.park_idle_connections`): an idle plain-TCP connection keeps its
//! state compacted until its next bytes, message or deadline. Each test first waits until
//! the broker reports the connection parked (`halyard_connections_parked`), then checks that
//! it behaves as a working one: deliveries reach it, keep alive closes it, a new CONNECT
//! takes it over, its will fires. Halyard only (the gauge); run on both backends with
//! `HALYARD_TEST_BACKEND=uring|epoll`.

use std::thread::sleep;
use std::time::{Duration, Instant};

use halyard_tests::raw::{self, Connect, Packet, Publish, RawClient, Version, Will};
use halyard_tests::{TestBroker, WAIT, require_halyard};

const PARKED: &str = "halyard_connections_parked";

/// Waits (bounded by [`WAIT`]) until at least `n` connections are parked.
fn wait_parked(b: &TestBroker, n: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let parked = b.metrics().get(PARKED).unwrap_or(0.0);
        if parked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{parked} connections parked after {WAIT:?}, expected {n}"
        );
        sleep(Duration::from_millis(20));
    }
}

fn will(topic: &str) -> Will {
    Will {
        topic: topic.into(),
        payload: b"gone".to_vec(),
        qos: 1,
        retain: false,
        props: raw::Props::new(),
    }
}

/// A parked subscriber is woken by its deliveries (QoS 0 and 1, each protocol version), and
/// parks again after each.
#[test]
fn parked_subscriber_gets_its_deliveries() {
    require_halyard();
    let b = TestBroker::start();
    for (i, v) in [Version::V311, Version::V5].into_iter().enumerate() {
        let id = format!("park-sub-{i}");
        let topic = format!("park/t/{i}");
        let mut s = RawClient::connected(b.mqtt_addr(), v, &id);
        s.subscribe(1, &[(&topic, 1)], &raw::Props::new());
        wait_parked(&b, 1.0);
        let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, &format!("park-pub-{i}"));
        for (n, qos) in [(1u16, 0u8), (2, 1), (3, 1)] {
            // Both parked: the message wakes the subscriber.
            wait_parked(&b, 2.0);
            let body = format!("m{n}");
            p.publish(&Publish::new(&topic, body.as_bytes()).qos(qos, n));
            let m = s.recv_publish();
            let Packet::Publish { payload, .. } = &m else {
                unreachable!()
            };
            assert_eq!(payload, body.as_bytes());
            s.ack_publish(&m);
        }
        s.send(&raw::pingreq());
        assert_eq!(s.recv(), Ok(Packet::PingResp), "parked connection answers");
        s.drop_abruptly();
        p.drop_abruptly();
        let mut gone = b.metrics().get("halyard_connections").unwrap_or(1.0);
        let deadline = Instant::now() + WAIT;
        while gone > 0.0 && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
            gone = b.metrics().get("halyard_connections").unwrap_or(1.0);
        }
        assert_eq!(gone, 0.0, "closed connections are gone");
        assert_eq!(
            b.metrics().get(PARKED),
            Some(0.0),
            "no parked connection left"
        );
    }
}

/// Keep alive closes a parked connection after 1.5 x its keep alive [MQTT-3.1.2-24], and
/// its will is published.
#[test]
fn parked_connection_is_dropped_by_keep_alive_and_its_will_fires() {
    require_halyard();
    let b = TestBroker::start();
    let mut watcher = RawClient::connected(b.mqtt_addr(), Version::V311, "park-watch");
    watcher.subscribe(1, &[("park/will/ka", 1)], &raw::Props::new());
    let mut c = Connect::new(Version::V311, "park-ka");
    c.keepalive = 1;
    c.will = Some(will("park/will/ka"));
    let (mut cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    wait_parked(&b, 2.0);
    cl.expect_closed_within(Duration::from_secs(6));
    let m = watcher.recv_publish();
    let Packet::Publish { topic, payload, .. } = &m else {
        unreachable!()
    };
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("park/will/ka", &b"gone"[..])
    );
}

/// A new CONNECT with the client id of a parked connection takes it over: the parked one is
/// closed, its session (Clean Session 0) continues on the new one with its subscription.
#[test]
fn parked_connection_is_taken_over() {
    require_halyard();
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V311, "park-same");
    c.clean = false;
    let (mut first, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    first.subscribe(1, &[("park/take", 1)], &raw::Props::new());
    wait_parked(&b, 1.0);
    let (mut second, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    assert!(present, "the parked connection's session is resumed");
    first.expect_closed();
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "park-take-pub");
    p.publish(&Publish::new("park/take", b"after").qos(1, 1));
    let m = second.recv_publish();
    let Packet::Publish { payload, .. } = &m else {
        unreachable!()
    };
    assert_eq!(payload, b"after");
}

/// A parked connection whose socket drops publishes its will.
#[test]
fn parked_connection_closed_abruptly_fires_its_will() {
    require_halyard();
    let b = TestBroker::start();
    let mut watcher = RawClient::connected(b.mqtt_addr(), Version::V5, "park-watch");
    watcher.subscribe(1, &[("park/will/drop", 0)], &raw::Props::new());
    let mut c = Connect::new(Version::V5, "park-drop");
    c.will = Some(will("park/will/drop"));
    let (cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    wait_parked(&b, 2.0);
    cl.drop_abruptly();
    let Packet::Publish { payload, .. } = watcher.recv_publish() else {
        unreachable!()
    };
    assert_eq!(payload, b"gone");
}

/// `io.park_idle_connections = false`: nothing parks, connections still work.
#[test]
fn parking_can_be_turned_off() {
    require_halyard();
    let b = TestBroker::start_with(&[("HALYARD_IO__PARK_IDLE_CONNECTIONS", "false")]);
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V311, "nopark");
    s.subscribe(1, &[("nopark/t", 0)], &raw::Props::new());
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "nopark-pub");
    p.publish(&Publish::new("nopark/t", b"x").qos(1, 1));
    assert!(matches!(s.recv_publish(), Packet::Publish { .. }));
    assert_eq!(b.metrics().get(PARKED), Some(0.0));
}
