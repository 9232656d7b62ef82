//! End-to-end tests: the `halyard` binary with real MQTT clients (rumqttc v4 = 3.1.1 and
//! v5), on both io backends. Each scenario runs once per backend.

mod common;

use std::time::Duration;

use common::Broker;
use rumqttc::v5::mqttbytes::v5::{
    LastWill as LastWill5, Packet as Packet5, Publish as Publish5,
};
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
    tokio::spawn(async move {
        while el.poll().await.is_ok() {}
    })
}

fn drive5(mut el: EventLoop5) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while el.poll().await.is_ok() {}
    })
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
);

/// QoS 0/1/2 end to end: the subscriber (granted QoS 2) gets each message at its published
/// QoS [MQTT-3.8.4-8].
async fn qos_levels_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    let (sub, mut sub_el) = v4(&b, "q-sub", true);
    sub.subscribe("q/#", QoS::ExactlyOnce).await.unwrap();
    until4(&mut sub_el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;
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
    until5(&mut sub_el, |p| matches!(p, Packet5::SubAck(_)).then_some(())).await;
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
    publ.publish("r/1", Q5::AtLeastOnce, true, "kept").await.unwrap();
    until5(&mut pub_el, |p| matches!(p, Packet5::PubAck(_)).then_some(())).await;

    let (sub, mut sub_el) = v5(&b, "r-sub");
    sub.subscribe("r/#", Q5::AtLeastOnce).await.unwrap();
    let p = until5(&mut sub_el, publish5).await;
    assert_eq!(&p.topic[..], b"r/1");
    assert_eq!(&p.payload[..], b"kept");
    assert!(p.retain, "retained delivery on subscribe has RETAIN=1");

    publ.publish("r/1", Q5::AtLeastOnce, true, "").await.unwrap();
    until5(&mut pub_el, |p| matches!(p, Packet5::PubAck(_)).then_some(())).await;
    let (sub2, mut sub2_el) = v5(&b, "r-sub2");
    sub2.subscribe("r/#", Q5::AtLeastOnce).await.unwrap();
    until5(&mut sub2_el, |p| matches!(p, Packet5::SubAck(_)).then_some(())).await;
    publ.publish("r/marker", Q5::AtLeastOnce, false, "live").await.unwrap();
    let _driver = drive5(pub_el);
    let first = until5(&mut sub2_el, publish5).await;
    assert_eq!(&first.topic[..], b"r/marker", "deleted retained message was delivered");
    assert!(!first.retain);
}

/// A connection lost without DISCONNECT publishes its will [MQTT-3.1.2-8].
async fn will_on_abrupt_close_v311(backend: &str) {
    let b = Broker::start(backend, &[]);
    let (sub, mut sub_el) = v4(&b, "w-sub", true);
    sub.subscribe("will/#", QoS::AtLeastOnce).await.unwrap();
    until4(&mut sub_el, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;

    let mut o = MqttOptions::new("w-client", "127.0.0.1", b.port);
    o.set_last_will(LastWill::new("will/w-client", "gone", QoS::AtLeastOnce, false));
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
    until4(&mut pub_el, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;

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
    publ.publish("fan/x", QoS::AtLeastOnce, false, "all").await.unwrap();
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
    until5(&mut sub_el, |p| matches!(p, Packet5::SubAck(_)).then_some(())).await;
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
    o.set_last_will(LastWill5::new("dw/x", "late", Q5::AtLeastOnce, false, Some(props)));
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
        let metrics = b.admin_get("/metrics");
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
