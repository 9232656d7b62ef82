//! Parked connections (`io.park_idle_connections`): an idle plain-TCP connection keeps its
//! state compacted until its next bytes, message or deadline. Each test first waits until
//! the broker reports the connection parked (`halyard_connections_parked`), then checks that
//! it behaves as a working one: deliveries reach it, keep alive closes it, a new CONNECT
//! takes it over, its will fires. Idle connections park outside any task (in the I/O
//! thread's epoll set), so `halyard_connections_parked_in_task` stays 0 here. Halyard only
//! (the gauges); run on both backends with `HALYARD_TEST_BACKEND=uring|epoll`.

use std::thread::sleep;
use std::time::{Duration, Instant};

use halyard_tests::raw::{self, Connect, Packet, Publish, RawClient, Version, Will};
use halyard_tests::{TestBroker, WAIT, require_halyard};

const PARKED: &str = "halyard_connections_parked";
const IN_TASK: &str = "halyard_connections_parked_in_task";

/// Waits (bounded by [`WAIT`]) until at least `n` connections are parked.
fn wait_parked(b: &TestBroker, n: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let parked = b.metrics().get(PARKED).unwrap_or(0.0);
        if parked >= n {
            assert_eq!(
                b.metrics().get(IN_TASK),
                Some(0.0),
                "idle connections park outside their tasks"
            );
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

/// Many parked connections woken at once, by one message each of them receives and then by
/// their own input, each get what is theirs, and park again.
#[test]
fn many_parked_subscribers_each_get_their_delivery() {
    require_halyard();
    const N: usize = 200;
    let b = TestBroker::start();
    let mut subs: Vec<RawClient> = (0..N)
        .map(|i| {
            let v = if i % 2 == 0 {
                Version::V311
            } else {
                Version::V5
            };
            let mut s = RawClient::connected(b.mqtt_addr(), v, &format!("park-many-{i}"));
            s.subscribe(
                1,
                &[("park/many", 1), (&format!("park/one/{i}"), 1)],
                &raw::Props::new(),
            );
            s
        })
        .collect();
    wait_parked(&b, N as f64);
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "park-many-pub");
    p.publish(&Publish::new("park/many", b"all").qos(1, 1));
    for s in &mut subs {
        let m = s.recv_publish();
        let Packet::Publish { payload, .. } = &m else {
            unreachable!()
        };
        assert_eq!(payload, b"all");
        s.ack_publish(&m);
    }
    // Woken by input: each parked connection answers its own ping.
    wait_parked(&b, (N + 1) as f64);
    for s in &mut subs {
        s.send(&raw::pingreq());
    }
    for s in &mut subs {
        assert_eq!(s.recv(), Ok(Packet::PingResp), "parked connection answers");
    }
    // And each its own message, published while all are parked.
    wait_parked(&b, (N + 1) as f64);
    for i in 0..N {
        let body = format!("one-{i}");
        p.publish(&Publish::new(&format!("park/one/{i}"), body.as_bytes()).qos(0, 0));
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let Packet::Publish { payload, .. } = s.recv_publish() else {
            unreachable!()
        };
        assert_eq!(payload, format!("one-{i}").as_bytes());
    }
    wait_parked(&b, (N + 1) as f64);
}

/// Connections parked right after their CONNACK whose SUBSCRIBEs arrive together: the
/// thread's parking resumes them in the same wake-ups (and registered each socket once,
/// parks each again after its SUBACK). Each SUBACK answers its own packet (its codes in its
/// filters' order, a refused filter included) and each subscription is in place once its
/// SUBACK arrived: the retained message follows it, deliveries come at the granted QoS.
#[test]
fn parked_connections_subscribing_together_each_get_their_own_suback() {
    require_halyard();
    const N: usize = 120;
    let version = |i: usize| {
        if i.is_multiple_of(2) {
            Version::V311
        } else {
            Version::V5
        }
    };
    let topic_qos = |p: &Packet| match p {
        Packet::Publish { topic, qos, .. } => (topic.clone(), *qos),
        other => panic!("expected a PUBLISH, got {other:?}"),
    };
    let b = TestBroker::start();
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "park-subs-pub");
    p.publish(
        &Publish::new("park/subs/retained", b"kept")
            .qos(1, 1)
            .retain(),
    );
    let mut subs: Vec<RawClient> = (0..N)
        .map(|i| RawClient::connected(b.mqtt_addr(), version(i), &format!("park-subs-{i}")))
        .collect();
    wait_parked(&b, (N + 1) as f64);
    // Every SUBSCRIBE first (the client's own filter at its own QoS, an invalid filter, a
    // filter all share, the retained topic), then the answers.
    for (i, s) in subs.iter_mut().enumerate() {
        let own = format!("park/subs/own/{i}");
        let filters = [
            (own.as_str(), (i % 2) as u8),
            ("park/subs/bad/#/x", 0),
            ("park/subs/all", 1),
            ("park/subs/retained", 0),
        ];
        s.send(&raw::subscribe(
            version(i),
            i as u16 + 1,
            &filters,
            &raw::Props::new(),
        ));
    }
    for (i, s) in subs.iter_mut().enumerate() {
        let refused = if version(i) == Version::V5 {
            0x8F
        } else {
            0x80
        };
        match s.recv_until(|p| matches!(p, Packet::SubAck { .. })) {
            Packet::SubAck { pid, codes } => {
                assert_eq!(pid, i as u16 + 1, "SUBACK of subscriber {i}");
                assert_eq!(
                    codes,
                    vec![(i % 2) as u8, refused, 1, 0],
                    "SUBACK codes of subscriber {i}"
                );
            }
            _ => unreachable!("recv_until returned a SUBACK"),
        }
        let m = s.recv_publish();
        assert_eq!(
            topic_qos(&m),
            ("park/subs/retained".into(), 0),
            "subscriber {i}: the retained message after its SUBACK"
        );
    }
    // All parked again after their SUBACKs.
    wait_parked(&b, (N + 1) as f64);
    for i in 0..N {
        let body = format!("own-{i}");
        p.publish(&Publish::new(&format!("park/subs/own/{i}"), body.as_bytes()).qos(1, 2));
    }
    p.publish(&Publish::new("park/subs/all", b"all").qos(1, 3));
    for (i, s) in subs.iter_mut().enumerate() {
        let own = s.recv_publish();
        assert_eq!(
            topic_qos(&own),
            (format!("park/subs/own/{i}"), (i % 2) as u8),
            "subscriber {i}: its own topic at its granted QoS"
        );
        let Packet::Publish { payload, .. } = &own else {
            unreachable!()
        };
        assert_eq!(payload, format!("own-{i}").as_bytes());
        s.ack_publish(&own);
        let all = s.recv_publish();
        assert_eq!(
            topic_qos(&all),
            ("park/subs/all".into(), 1),
            "subscriber {i}"
        );
        s.ack_publish(&all);
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

/// A parked connection that pings within its keep alive stays open: each ping wakes it
/// (input), is answered, and moves the keep-alive deadline on, across several keep-alive
/// periods and the timer wake-ups they bring; once it stops, keep alive closes it.
#[test]
fn parked_connection_kept_alive_by_its_pings() {
    require_halyard();
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V5, "park-ping");
    c.keepalive = 1;
    let (mut cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    for _ in 0..8 {
        wait_parked(&b, 1.0);
        sleep(Duration::from_millis(400));
        cl.send(&raw::pingreq());
        assert_eq!(cl.recv(), Ok(Packet::PingResp), "kept alive by its pings");
    }
    cl.expect_closed_within(Duration::from_secs(6));
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

/// While a publisher streams QoS 1 messages to a subscriber without pause (on the epoll
/// backend their input comes from the I/O thread's own epoll set, which the thread reads
/// between turns of compio's driver, `io::block_on`), what only a turn of the driver brings
/// still happens: a silent connection is closed by keep alive (a timer) and a new connection
/// is accepted (the listener); and every message arrives once, in order.
#[test]
fn a_stream_does_not_hold_back_timers_or_accepts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    require_halyard();
    let b = TestBroker::start();
    let addr = b.mqtt_addr();
    let mut sub = RawClient::connected(addr, Version::V311, "stream-sub");
    sub.subscribe(1, &[("stream/t", 1)], &raw::Props::new());
    let mut c = Connect::new(Version::V311, "stream-silent");
    c.keepalive = 1;
    let (mut silent, _, code, _) = RawClient::connect(addr, &c);
    assert_eq!(code, 0);

    let stop = Arc::new(AtomicBool::new(false));
    // Messages the subscriber has read: the publisher stays at most `AHEAD` in front, so a
    // receiver thread descheduled on a loaded host never lets its session's queue (1 000
    // messages by default, 64 in flight) overflow, which would drop messages by design.
    const AHEAD: u32 = 400;
    let received = Arc::new(AtomicU32::new(0));
    let publisher = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut p = RawClient::connected(addr, Version::V311, "stream-pub");
            let started = Instant::now();
            let mut n: u32 = 0;
            // Bounded in count and time whatever the main thread does.
            while !stop.load(Ordering::Relaxed)
                && n < 1_000_000
                && started.elapsed() < Duration::from_secs(30)
            {
                if n - received.load(Ordering::Acquire) >= AHEAD {
                    std::thread::yield_now();
                    continue;
                }
                n += 1;
                let pid = u16::try_from(n % 60_000 + 1).unwrap();
                let m = Publish::new("stream/t", &n.to_be_bytes()).qos(1, pid);
                assert_eq!(p.publish(&m), 0);
            }
            assert_eq!(p.publish(&Publish::new("stream/t", b"end").qos(1, 1)), 0);
            n
        })
    };
    let receiver = std::thread::spawn(move || {
        let mut next: u32 = 1;
        loop {
            let m = sub.recv_publish();
            sub.ack_publish(&m);
            let (_, payload, _, _, _) = raw::publish_parts(&m);
            if payload == b"end" {
                return next - 1;
            }
            assert_eq!(payload, next.to_be_bytes(), "once and in order");
            received.store(next, Ordering::Release);
            next += 1;
        }
    });

    silent.expect_closed_within(Duration::from_secs(6));
    let mut late = Connect::new(Version::V5, "stream-late");
    late.keepalive = 60;
    let (_late, _, code, _) = RawClient::connect(addr, &late);
    assert_eq!(code, 0, "accepted during the stream");
    stop.store(true, Ordering::Relaxed);
    let sent = publisher.join().unwrap();
    assert!(sent > 0);
    assert_eq!(receiver.join().unwrap(), sent);
    assert_eq!(
        b.metrics().sum("halyard_messages_dropped_total"),
        0.0,
        "nothing dropped"
    );
}

/// Input that a read left behind is read after the connection parks: with a read buffer of
/// 1 024 bytes, a burst of 64-byte PUBLISHes ends each read on a packet boundary, so the
/// connection is idle (and parks) with bytes still waiting, for which the socket reports no
/// new readiness on the epoll backend (its registration stays edge-triggered while parked).
/// The PINGREQ at the end of the burst is answered.
#[test]
fn input_left_by_a_full_read_is_read_after_parking() {
    require_halyard();
    let b = TestBroker::start_with(&[("HALYARD_IO__READ_BUFFER_BYTES", "1024")]);
    let mut c = RawClient::connected(b.mqtt_addr(), Version::V311, "park-burst");
    let publish = Publish::new("park/burst", &[b'x'; 50]).encode(Version::V311);
    assert_eq!(publish.len(), 64, "16 PUBLISHes fill one read exactly");
    for round in 0..3 {
        wait_parked(&b, 1.0);
        let mut burst = publish.repeat(16 * 4);
        burst.extend_from_slice(&raw::pingreq());
        c.send(&burst);
        assert_eq!(
            c.recv(),
            Ok(Packet::PingResp),
            "round {round}: burst read to its end"
        );
    }
}
