//! End-to-end tests: the `halyard` binary with real MQTT clients (rumqttc v4 = 3.1.1 and
//! v5), on both io backends. Each scenario runs once per backend.

mod common;

use std::time::Duration;

use common::Broker;
use rumqttc::v5::mqttbytes::v5::{LastWill as LastWill5, Packet as Packet5, Publish as Publish5};
use rumqttc::v5::{
    AsyncClient as Client5, Event as Event5, EventLoop as EventLoop5, MqttOptions as Options5,
};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::time::timeout;

/// Upper bound for any single wait in these tests (a failure, not a timing assertion).
const WAIT: Duration = Duration::from_secs(10);

fn v4(b: &Broker, id: &str, clean: bool) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", b.port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(o, 64)
}

fn v5(b: &Broker, id: &str) -> (Client5, EventLoop5) {
    let mut o = Options5::new(id, "127.0.0.1", b.port);
    o.set_keep_alive(Duration::from_secs(30));
    Client5::new(o, 64)
}

/// Polls until `pick` accepts an incoming packet; panics on error or after [`WAIT`].
async fn until4<T>(el: &mut EventLoop, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
    timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(p)) => {
                    if let Some(t) = pick(p) {
                        return t;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(e) => panic!("v4 connection failed: {e}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a packet")
}

async fn until5<T>(el: &mut EventLoop5, mut pick: impl FnMut(Packet5) -> Option<T>) -> T {
    timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(Event5::Incoming(p)) => {
                    if let Some(t) = pick(p) {
                        return t;
                    }
                }
                Ok(Event5::Outgoing(_)) => {}
                Err(e) => panic!("v5 connection failed: {e}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a packet")
}

fn publish4(p: Packet) -> Option<Publish> {
    match p {
        Packet::Publish(p) => Some(p),
        _ => None,
    }
}

fn publish5(p: Packet5) -> Option<Publish5> {
    match p {
        Packet5::Publish(p) => Some(p),
        _ => None,
    }
}

/// Drives a client's event loop in the background (for publishers).
fn drive4(mut el: EventLoop) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while el.poll().await.is_ok() {} })
}

fn drive5(mut el: EventLoop5) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while el.poll().await.is_ok() {} })
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn uring() {
                super::$name("uring").await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn epoll() {
                super::$name("epoll").await
            }
        }
    )*};
}

on_both_backends!(
    qos_levels_v311,
    qos_levels_v5,
    retained_set_deliver_delete_v5,
    will_on_abrupt_close_v311,
    persistent_session_v311,
    takeover_sends_0x8e_v5,
    fan_out_across_threads_v311,
    persistent_takeover_keeps_subscriptions_v311,
    shared_group_round_robin_v5,
    no_local_and_subscription_ids_v5,
    tiny_inboxes_back_pressure_qos1_v311,
);

/// QoS 0/1/2 end to end: the subscriber (granted QoS 2) gets each message at its published
/// QoS [MQTT-3.8.4-8].
async fn qos_levels_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    let (sub, mut sub_el) = v4(&b, "q-sub", true);
    sub.subscribe("q/#", QoS::ExactlyOnce).await.unwrap();
    until4(&mut sub_el, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    let (publ, pub_el) = v4(&b, "q-pub", true);
    let _driver = drive4(pub_el);
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish(format!("q/{i}"), qos, false, vec![i as u8; 3])
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let p = until4(&mut sub_el, publish4).await;
        got.push((p.topic.clone(), p.qos, p.payload.to_vec()));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("q/0".to_string(), QoS::AtMostOnce, vec![0u8; 3]),
            ("q/1".to_string(), QoS::AtLeastOnce, vec![1u8; 3]),
            ("q/2".to_string(), QoS::ExactlyOnce, vec![2u8; 3]),
        ]
    );
}

async fn qos_levels_v5(backend: &str) {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let b = Broker::start(backend, &[]);
    let (sub, mut sub_el) = v5(&b, "q5-sub");
    sub.subscribe("q5/#", Q5::ExactlyOnce).await.unwrap();
    until5(&mut sub_el, |p| {
        matches!(p, Packet5::SubAck(_)).then_some(())
    })
    .await;
    let (publ, pub_el) = v5(&b, "q5-pub");
    let _driver = drive5(pub_el);
    for (i, qos) in [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish(format!("q5/{i}"), qos, false, vec![i as u8])
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        let p = until5(&mut sub_el, publish5).await;
        got.push((p.topic.to_vec(), p.qos));
    }
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            (b"q5/0".to_vec(), Q5::AtMostOnce),
            (b"q5/1".to_vec(), Q5::AtLeastOnce),
            (b"q5/2".to_vec(), Q5::ExactlyOnce),
        ]
    );
}

/// A retained message is delivered to a later subscriber with RETAIN=1 [MQTT-3.3.1-8]; an
/// empty retained payload deletes it [MQTT-3.3.1-6].
async fn retained_set_deliver_delete_v5(backend: &str) {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let b = Broker::start(backend, &[]);
    let (publ, mut pub_el) = v5(&b, "r-pub");
    publ.publish("r/1", Q5::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    until5(&mut pub_el, |p| {
        matches!(p, Packet5::PubAck(_)).then_some(())
    })
    .await;

    let (sub, mut sub_el) = v5(&b, "r-sub");
    sub.subscribe("r/#", Q5::AtLeastOnce).await.unwrap();
    let p = until5(&mut sub_el, publish5).await;
    assert_eq!(&p.topic[..], b"r/1");
    assert_eq!(&p.payload[..], b"kept");
    assert!(p.retain, "retained delivery on subscribe has RETAIN=1");

    publ.publish("r/1", Q5::AtLeastOnce, true, "")
        .await
        .unwrap();
    until5(&mut pub_el, |p| {
        matches!(p, Packet5::PubAck(_)).then_some(())
    })
    .await;
    let (sub2, mut sub2_el) = v5(&b, "r-sub2");
    sub2.subscribe("r/#", Q5::AtLeastOnce).await.unwrap();
    until5(&mut sub2_el, |p| {
        matches!(p, Packet5::SubAck(_)).then_some(())
    })
    .await;
    publ.publish("r/marker", Q5::AtLeastOnce, false, "live")
        .await
        .unwrap();
    let _driver = drive5(pub_el);
    let first = until5(&mut sub2_el, publish5).await;
    assert_eq!(
        &first.topic[..],
        b"r/marker",
        "deleted retained message was delivered"
    );
    assert!(!first.retain);
}

/// A connection lost without DISCONNECT publishes its will [MQTT-3.1.2-8].
async fn will_on_abrupt_close_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    let (sub, mut sub_el) = v4(&b, "w-sub", true);
    sub.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    until4(&mut sub_el, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;

    let mut o = MqttOptions::new("w-client", "127.0.0.1", b.port);
    o.set_last_will(LastWill::new(
        "will/w-client",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (_c, mut el) = AsyncClient::new(o, 8);
    until4(&mut el, |p| matches!(p, Packet::ConnAck(_)).then_some(())).await;
    drop(el); // closes the socket without DISCONNECT

    let p = until4(&mut sub_el, publish4).await;
    assert_eq!(p.topic, "will/w-client");
    assert_eq!(&p.payload[..], b"gone");
}

/// Clean Session 0: subscriptions survive the connection, messages published meanwhile are
/// queued and delivered on reconnect with Session Present = 1 [MQTT-3.2.2-2].
async fn persistent_session_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    {
        let (c, mut el) = v4(&b, "persist", false);
        c.subscribe("ps/t", QoS::AtLeastOnce).await.unwrap();
        until4(&mut el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
        c.disconnect().await.unwrap();
        let _ = timeout(WAIT, async { while el.poll().await.is_ok() {} }).await;
    }
    let (publ, mut pub_el) = v4(&b, "persist-pub", true);
    publ.publish("ps/t", QoS::AtLeastOnce, false, "while away")
        .await
        .unwrap();
    until4(&mut pub_el, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;

    let (_c, mut el) = v4(&b, "persist", false);
    let present = until4(&mut el, |p| match p {
        Packet::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(present, "session present after reconnect");
    let p = until4(&mut el, publish4).await;
    assert_eq!(&p.payload[..], b"while away");
}

/// A second connection with the same client id takes the session over; the first gets
/// DISCONNECT 0x8E [MQTT-3.1.4-3]. Raw bytes, so the check does not depend on a client
/// library's parser.
async fn takeover_sends_0x8e_v5(backend: &str) {
    let b = Broker::start(backend, &[]);
    let port = b.port;
    let reason = tokio::task::spawn_blocking(move || {
        let first = common::raw_v5_connect(port, "twin");
        let _second = common::raw_v5_connect(port, "twin");
        common::read_disconnect_reason(first)
    })
    .await
    .unwrap();
    assert_eq!(reason, Some(0x8E));
    drop(b);
}

/// Several subscribers (spread over the I/O threads by SO_REUSEPORT) all receive each message.
async fn fan_out_across_threads_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    let mut subs = Vec::new();
    for i in 0..6 {
        let (c, mut el) = v4(&b, &format!("fan-{i}"), true);
        c.subscribe("fan/x", QoS::AtLeastOnce).await.unwrap();
        until4(&mut el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
        subs.push((c, el));
    }
    let (publ, pub_el) = v4(&b, "fan-pub", true);
    let _driver = drive4(pub_el);
    publ.publish("fan/x", QoS::AtLeastOnce, false, "all")
        .await
        .unwrap();
    for (_c, el) in &mut subs {
        let p = until4(el, publish4).await;
        assert_eq!(&p.payload[..], b"all");
    }
}

/// SIGTERM: 5.0 clients get DISCONNECT 0x8B, the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_with_0x8b_and_exits_0() {
    let b = Broker::start("epoll", &[]);
    let port = b.port;
    let (reason, code) = tokio::task::spawn_blocking(move || {
        let client = common::raw_v5_connect(port, "stay");
        let code = b.terminate();
        (common::read_disconnect_reason(client), code)
    })
    .await
    .unwrap();
    assert_eq!(reason, Some(0x8B));
    assert_eq!(code, Some(0));
}

/// v5 will with a delay is published after the delay when the client does not come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_will_v5_is_published() {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::LastWillProperties;
    let b = Broker::start("epoll", &[]);
    let (sub, mut sub_el) = v5(&b, "dw-sub");
    sub.subscribe("dw/#", Q5::AtLeastOnce).await.unwrap();
    until5(&mut sub_el, |p| {
        matches!(p, Packet5::SubAck(_)).then_some(())
    })
    .await;
    let mut o = Options5::new("dw-client", "127.0.0.1", b.port);
    o.set_session_expiry_interval(Some(60));
    let props = LastWillProperties {
        delay_interval: Some(1),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: None,
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
    };
    o.set_last_will(LastWill5::new(
        "dw/x",
        "late",
        Q5::AtLeastOnce,
        false,
        Some(props),
    ));
    let (_c, mut el) = Client5::new(o, 8);
    until5(&mut el, |p| matches!(p, Packet5::ConnAck(_)).then_some(())).await;
    drop(el);
    let p = until5(&mut sub_el, publish5).await;
    assert_eq!(&p.payload[..], b"late");
}

/// The admin endpoints answer while clients are connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let b = Broker::start("epoll", &[]);
    let (_c, mut el) = v4(&b, "adm", true);
    until4(&mut el, |p| matches!(p, Packet::ConnAck(_)).then_some(())).await;
    let b = tokio::task::spawn_blocking(move || {
        assert_eq!(b.admin_get("/healthz").trim(), "ok");
        // The start-up probe's bare TCP connection is counted until the broker reads its EOF:
        // wait (bounded) for it to go.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let metrics = loop {
            let m = b.admin_get("/metrics");
            if m.contains("halyard_connections 1\n") || std::time::Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(metrics.contains("halyard_connections 1\n"), "{metrics}");
        assert!(metrics.contains("halyard_io_backend{backend=\"epoll\"} 1"));
        let status: serde_json::Value = serde_json::from_str(&b.admin_get("/status")).unwrap();
        assert_eq!(status["io"]["backend"], "epoll");
        assert_eq!(status["counts"]["connections"], 1);
        b
    })
    .await
    .unwrap();
    drop(b);
}

/// Clean Session 0 reconnects (each a takeover of the offline or live session, landing on
/// whichever I/O thread the kernel picks) keep the subscription and report Session Present;
/// a message whose PUBACK the old connection never sent is resent first, with DUP.
async fn persistent_takeover_keeps_subscriptions_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    let (c, mut el) = v4(&b, "roam", false);
    c.subscribe("roam/t", QoS::AtLeastOnce).await.unwrap();
    until4(&mut el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
    let (publ, pub_el) = v4(&b, "roam-pub", true);
    let _driver = drive4(pub_el);
    let mut live = Some((c, el));
    for round in 0..6u8 {
        // Even rounds take over the live connection; odd rounds resume an offline session.
        if round % 2 == 1
            && let Some((c, mut el)) = live.take()
        {
            c.disconnect().await.unwrap();
            let _ = timeout(WAIT, async { while el.poll().await.is_ok() {} }).await;
        }
        let (c2, mut el2) = v4(&b, "roam", false);
        let present = until4(&mut el2, |p| match p {
            Packet::ConnAck(a) => Some(a.session_present),
            _ => None,
        })
        .await;
        assert!(present, "round {round}: session present");
        publ.publish("roam/t", QoS::AtLeastOnce, false, vec![round])
            .await
            .unwrap();
        // The previous round's message comes first again when the connection taken over
        // had not yet written its PUBACK (rumqttc writes it on a later poll, which an even
        // round may never give it): resent with DUP set [MQTT-4.4.0-1], once.
        let mut p = until4(&mut el2, publish4).await;
        if round > 0 && p.payload[..] == [round - 1] {
            assert!(p.dup, "round {round}: a resent message has DUP set");
            p = until4(&mut el2, publish4).await;
        }
        assert_eq!(p.payload[..], [round], "round {round}");
        live = Some((c2, el2));
    }
}

/// Each message to a shared group goes to exactly one member; two members both get some.
async fn shared_group_round_robin_v5(backend: &str) {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let b = Broker::start(backend, &[]);
    let mut members = Vec::new();
    for i in 0..2 {
        let (c, mut el) = v5(&b, &format!("share-{i}"));
        c.subscribe("$share/g/sh/t", Q5::AtLeastOnce).await.unwrap();
        until5(&mut el, |p| matches!(p, Packet5::SubAck(_)).then_some(())).await;
        members.push((c, el));
    }
    let (publ, pub_el) = v5(&b, "share-pub");
    let _driver = drive5(pub_el);
    for i in 0..10u8 {
        publ.publish("sh/t", Q5::AtLeastOnce, false, vec![i])
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, (_c, mut el)) in members.into_iter().enumerate() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(ev) = el.poll().await {
                if let Event5::Incoming(Packet5::Publish(p)) = ev {
                    let _ = tx.send((i, p.payload[0]));
                }
            }
        }));
    }
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let got = timeout(WAIT, rx.recv()).await.expect("shared deliveries");
        seen.push(got.unwrap());
    }
    let mut payloads: Vec<u8> = seen.iter().map(|(_, p)| *p).collect();
    payloads.sort_unstable();
    assert_eq!(
        payloads,
        (0..10).collect::<Vec<u8>>(),
        "each message exactly once"
    );
    assert!(seen.iter().any(|(m, _)| *m == 0) && seen.iter().any(|(m, _)| *m == 1));
    for t in tasks {
        t.abort();
    }
}

/// No Local suppresses a client's own messages [MQTT-3.8.3-3]; overlapping subscriptions
/// give one copy carrying every matching subscription identifier [MQTT-3.3.4-3].
async fn no_local_and_subscription_ids_v5(backend: &str) {
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5::{Filter, SubscribeProperties};
    let b = Broker::start(backend, &[]);
    let (c, mut el) = v5(&b, "nl");
    let props = |id| SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    };
    let mut own = Filter::new("nl/own", Q5::AtLeastOnce);
    own.nolocal = true;
    c.subscribe_many_with_properties([own], props(1))
        .await
        .unwrap();
    c.subscribe_with_properties("ov/#", Q5::AtLeastOnce, props(2))
        .await
        .unwrap();
    c.subscribe_with_properties("ov/+", Q5::AtMostOnce, props(3))
        .await
        .unwrap();
    let mut acks = 0;
    while acks < 3 {
        until5(&mut el, |p| matches!(p, Packet5::SubAck(_)).then_some(())).await;
        acks += 1;
    }
    c.publish("nl/own", Q5::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    c.publish("ov/x", Q5::AtLeastOnce, false, "overlap")
        .await
        .unwrap();
    let p = until5(&mut el, publish5).await;
    assert_eq!(
        &p.topic[..],
        b"ov/x",
        "own message was not suppressed by No Local"
    );
    let mut ids = p
        .properties
        .map(|pr| pr.subscription_identifiers)
        .unwrap_or_default();
    ids.sort_unstable();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(p.qos, Q5::AtLeastOnce, "highest granted QoS");
    c.publish("ov/end", Q5::AtLeastOnce, false, "end")
        .await
        .unwrap();
    let p = until5(&mut el, publish5).await;
    assert_eq!(
        &p.topic[..],
        b"ov/end",
        "only one copy of the overlapping message"
    );
}

/// With one-batch inboxes, QoS 1 traffic across threads waits for room instead of being
/// lost: every subscriber gets every message.
async fn tiny_inboxes_back_pressure_qos1_v311(backend: &str) {
    const N: usize = 300;
    let b = Broker::start(backend, &[("HALYARD_LIMITS__INBOX_CAPACITY", "1")]);
    let mut subs = Vec::new();
    for i in 0..4 {
        let (c, mut el) = v4(&b, &format!("bp-{i}"), true);
        c.subscribe("bp/t", QoS::AtLeastOnce).await.unwrap();
        until4(&mut el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
        subs.push((c, el));
    }
    let mut publishers = Vec::new();
    for i in 0..2 {
        let (publ, pub_el) = v4(&b, &format!("bp-pub-{i}"), true);
        publishers.push((publ, drive4(pub_el)));
    }
    let counts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for (_c, mut el) in subs {
        let counts = counts.clone();
        readers.push(tokio::spawn(async move {
            let mut n = 0;
            while n < N {
                match timeout(WAIT, el.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                        n += 1;
                        counts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            n
        }));
    }
    for i in 0..N {
        let (publ, _) = &publishers[i % 2];
        publ.publish("bp/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    for r in readers {
        assert_eq!(r.await.unwrap(), N, "a subscriber missed QoS 1 messages");
    }
}

/// A 5.0 session with a 1 s expiry is gone after it expires: reconnecting with Clean Start 0
/// finds no session [MQTT-3.1.2-23].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expires_v5() {
    let b = Broker::start("epoll", &[]);
    let connect = |expiry: u32| {
        let mut o = Options5::new("exp", "127.0.0.1", b.port);
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry));
        Client5::new(o, 8)
    };
    let (c, mut el) = connect(1);
    until5(&mut el, |p| matches!(p, Packet5::ConnAck(_)).then_some(())).await;
    c.disconnect().await.unwrap();
    let _ = timeout(WAIT, async { while el.poll().await.is_ok() {} }).await;
    // Wait (bounded) until the registry no longer holds the session.
    let admin = halyard_server::admin::ctl::AdminTarget {
        addr: format!("127.0.0.1:{}", b.admin_port),
        token: None,
    };
    let gone = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            let body = halyard_server::admin::ctl::get(&admin, "/status").unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["counts"]["sessions"] == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    })
    .await
    .unwrap();
    assert!(gone, "session did not expire");
    let (_c, mut el) = connect(60);
    let present = until5(&mut el, |p| match p {
        Packet5::ConnAck(a) => Some(a.session_present),
        _ => None,
    })
    .await;
    assert!(!present, "expired session must not be present");
}

/// A taken admin port does not stop MQTT service (the admin server is disabled and logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_admin_port_does_not_block_mqtt() {
    // A port no other test of this process gets (see `free_port`).
    let squatter = std::net::TcpListener::bind(("127.0.0.1", common::free_port())).unwrap();
    let addr = squatter.local_addr().unwrap().to_string();
    let b = Broker::start("epoll", &[("HALYARD_ADMIN__BIND", &addr)]);
    let (_c, mut el) = v4(&b, "no-admin", true);
    until4(&mut el, |p| matches!(p, Packet::ConnAck(_)).then_some(())).await;
}

/// rumqttc (v5) sees the takeover as a server DISCONNECT with 0x8E.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_seen_by_rumqttc_v5() {
    use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
    use rumqttc::v5::{ConnectionError, StateError};
    let b = Broker::start("epoll", &[]);
    let (_c1, mut el1) = v5(&b, "twin-r");
    until5(&mut el1, |p| matches!(p, Packet5::ConnAck(_)).then_some(())).await;
    let (_c2, mut el2) = v5(&b, "twin-r");
    until5(&mut el2, |p| matches!(p, Packet5::ConnAck(_)).then_some(())).await;
    let reason = timeout(WAIT, async {
        loop {
            match el1.poll().await {
                Ok(_) => {}
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    ..
                })) => return Some(reason_code),
                Err(_) => return None,
            }
        }
    })
    .await
    .expect("first client was not disconnected");
    assert_eq!(reason, Some(DisconnectReasonCode::SessionTakenOver));
}

/// A client silent for 1.5 x its keep alive is disconnected [MQTT-3.1.2-24]: checks that the
/// session's deadline reaches the compio timer (bounded wait, no timing assertion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_timeout_closes_silent_client() {
    let b = Broker::start("epoll", &[]);
    let port = b.port;
    let closed = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        // 3.1.1 CONNECT, clean session, keep alive 1 s, client id "ka".
        let connect = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 1, 0, 2, b'k', b'a',
        ];
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&connect).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0]);
        let mut rest = Vec::new();
        // EOF (Ok) means the broker closed the connection; a timeout error means it did not.
        s.read_to_end(&mut rest).is_ok()
    })
    .await
    .unwrap();
    assert!(closed, "silent client was not disconnected");
}
