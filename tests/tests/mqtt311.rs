//! MQTT 3.1.1 behaviour with the rumqttc v4 client (and raw sockets where rumqttc hides the
//! detail under test). Each test starts its own broker.
//!
//! Against Mosquitto 2.0.11 (`HALYARD_TEST_AGAINST=mosquitto`) every test passes except:
//! - `overlapping_subscriptions_one_copy_max_qos`: Mosquitto sends one copy per matching
//!   subscription, each at that subscription's QoS. MQTT 3.1.1 §3.3.5 permits the extra copies,
//!   but Halyard's contract (issue 2) is one copy at the highest granted QoS.

use halyard_tests::TestBroker;
use halyard_tests::raw::{self, Connect, Packet, RawClient, Version, Will};
use halyard_tests::rumq::v4::{self, Client, QoS, SubscribeReasonCode};

fn qos(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Publish at QoS 0/1/2 to subscribers granted QoS 0/1/2: every message arrives once, at the
/// minimum of the published and the granted QoS. MQTT 3.1.1 §3.8.4: "The QoS of Payload
/// Messages sent in response to a Subscription MUST be the minimum of the QoS of the originally
/// published message and the maximum QoS granted by the Server" [MQTT-3.8.4-6]; QoS flows
/// §4.3.1-4.3.3 in both directions.
#[tokio::test]
async fn pubsub_qos_matrix() {
    let b = TestBroker::start();
    let mut subs = Vec::new();
    for sq in 0..3u8 {
        let (mut c, _) = Client::connect(v4::opts(b.mqtt_addr(), &format!("sub{sq}"))).await;
        let ack = c.subscribe("matrix/t", qos(sq)).await;
        assert_eq!(
            ack.return_codes,
            vec![SubscribeReasonCode::Success(qos(sq))]
        );
        subs.push(c);
    }
    let (mut p, _) = Client::connect(v4::opts(b.mqtt_addr(), "pub")).await;
    for pq in 0..3u8 {
        p.publish("matrix/t", qos(pq), false, format!("m{pq}").as_bytes())
            .await;
    }
    for (sq, c) in subs.iter_mut().enumerate() {
        for pq in 0..3u8 {
            let m = c.next_publish().await;
            assert_eq!(
                &m.payload[..],
                format!("m{pq}").as_bytes(),
                "order per topic"
            );
            assert_eq!(
                m.qos,
                qos(pq.min(sq as u8)),
                "delivered QoS for pub {pq} sub {sq}"
            );
            assert!(!m.retain, "live delivery has RETAIN 0 [MQTT-3.3.1-9]");
        }
    }
}

/// A QoS 2 message is delivered exactly once even though the subscriber receives it at QoS 2
/// and acknowledges through the full PUBREC/PUBREL/PUBCOMP flow [MQTT-4.3.3-2].
#[test]
fn qos2_exactly_once_raw() {
    let b = TestBroker::start();
    let mut sub = RawClient::connected(b.mqtt_addr(), Version::V311, "q2sub");
    assert_eq!(
        sub.subscribe(1, &[("q2/t", 2)], &raw::Props::new()),
        vec![2]
    );
    let mut publ = RawClient::connected(b.mqtt_addr(), Version::V311, "q2pub");
    publ.publish(&raw::Publish::new("q2/t", b"once").qos(2, 7));
    let m = sub.recv_publish();
    let Packet::Publish { qos, payload, .. } = &m else {
        unreachable!()
    };
    assert_eq!((*qos, payload.as_slice()), (2, &b"once"[..]));
    sub.ack_publish(&m);
    // A second message proves the first is not delivered again.
    publ.publish(&raw::Publish::new("q2/t", b"next").qos(2, 8));
    let m2 = sub.recv_publish();
    let Packet::Publish { payload, .. } = &m2 else {
        unreachable!()
    };
    assert_eq!(
        payload.as_slice(),
        b"next",
        "first message delivered once only"
    );
}

/// Retained messages: set, replaced, delivered to a later subscriber with RETAIN 1
/// [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-8]; an empty retained payload deletes it
/// [MQTT-3.3.1-10] [MQTT-3.3.1-11].
#[tokio::test]
async fn retained_set_replace_delete() {
    let b = TestBroker::start();
    let (mut p, _) = Client::connect(v4::opts(b.mqtt_addr(), "rpub")).await;
    p.publish("ret/a", QoS::AtLeastOnce, true, b"one").await;
    p.publish("ret/a", QoS::AtLeastOnce, true, b"two").await;
    p.publish("ret/b", QoS::AtLeastOnce, true, b"bee").await;

    let (mut s, _) = Client::connect(v4::opts(b.mqtt_addr(), "rsub1")).await;
    s.subscribe("ret/a", QoS::AtLeastOnce).await;
    let m = s.next_publish().await;
    assert_eq!(&m.payload[..], b"two", "the retained message was replaced");
    assert!(
        m.retain,
        "retained delivery on subscribe has RETAIN 1 [MQTT-3.3.1-8]"
    );

    // Delete ret/a, then a wildcard subscriber sees only ret/b.
    p.publish("ret/a", QoS::AtLeastOnce, true, b"").await;
    let (mut s2, _) = Client::connect(v4::opts(b.mqtt_addr(), "rsub2")).await;
    s2.subscribe("ret/#", QoS::AtLeastOnce).await;
    let m = s2.next_publish().await;
    assert_eq!((&m.topic[..], &m.payload[..]), ("ret/b", &b"bee"[..]));
    // Marker: a live message after the retained ones; nothing else may come before it.
    p.publish("ret/marker", QoS::AtLeastOnce, false, b"mark")
        .await;
    let m = s2.next_publish().await;
    assert_eq!(
        &m.topic[..],
        "ret/marker",
        "deleted retained message must not be sent"
    );
    assert!(!m.retain);
}

/// The will is published when the network connection closes without DISCONNECT
/// [MQTT-3.1.2-8], and not after a DISCONNECT [MQTT-3.1.2-10].
#[tokio::test]
async fn will_on_abnormal_close_not_on_disconnect() {
    let b = TestBroker::start();
    let (mut w, _) = Client::connect(v4::opts(b.mqtt_addr(), "watcher")).await;
    w.subscribe("will/#", QoS::AtLeastOnce).await;

    let mut o = v4::opts(b.mqtt_addr(), "dies");
    o.set_last_will(v4::LastWill::new(
        "will/dies",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (dies, _) = Client::connect(o).await;
    dies.drop_abruptly().await;
    let m = w.next_publish().await;
    assert_eq!((&m.topic[..], &m.payload[..]), ("will/dies", &b"gone"[..]));

    let mut o = v4::opts(b.mqtt_addr(), "polite");
    o.set_last_will(v4::LastWill::new(
        "will/polite",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (polite, _) = Client::connect(o).await;
    polite.disconnect().await;
    let (mut p, _) = Client::connect(v4::opts(b.mqtt_addr(), "marker")).await;
    p.publish("will/marker", QoS::AtLeastOnce, false, b"m")
        .await;
    let m = w.next_publish().await;
    assert_eq!(
        &m.topic[..],
        "will/marker",
        "no will after DISCONNECT [MQTT-3.1.2-10]"
    );
}

/// A raw abrupt close also triggers the will, with the will's QoS and retain flag honoured:
/// a live subscriber gets it with RETAIN 0 [MQTT-3.3.1-9], and a retained will is stored as a
/// retained message [MQTT-3.1.2-17] that a later subscriber gets with RETAIN 1 [MQTT-3.3.1-8].
#[test]
fn will_retained_raw() {
    let b = TestBroker::start();
    let mut live = RawClient::connected(b.mqtt_addr(), Version::V311, "rwill-live");
    live.subscribe(1, &[("rwill/status", 1)], &raw::Props::new());
    let mut c = Connect::new(Version::V311, "rwill");
    c.will = Some(Will {
        topic: "rwill/status".into(),
        payload: b"offline".to_vec(),
        qos: 1,
        retain: true,
        props: raw::Props::new(),
    });
    let (cl, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    cl.drop_abruptly();
    let m = live.recv_publish();
    let Packet::Publish {
        payload,
        retain,
        qos,
        ..
    } = &m
    else {
        unreachable!()
    };
    assert_eq!(
        (payload.as_slice(), *qos, *retain),
        (&b"offline"[..], 1, false)
    );
    live.ack_publish(&m);

    let mut later = RawClient::connected(b.mqtt_addr(), Version::V311, "rwill-later");
    later.subscribe(1, &[("rwill/status", 1)], &raw::Props::new());
    let Packet::Publish {
        payload, retain, ..
    } = later.recv_publish()
    else {
        unreachable!()
    };
    assert_eq!(payload, b"offline");
    assert!(retain, "retained will arrives with RETAIN 1");
}

/// Clean session 0: the session (subscriptions and QoS 1 messages published while offline)
/// survives the disconnect and is resumed with Session Present 1 [MQTT-3.1.2-4]
/// [MQTT-3.2.2-2]; connecting with clean session 1 discards it and gets Session Present 0
/// [MQTT-3.1.2-6] [MQTT-3.2.2-1].
#[tokio::test]
async fn persistent_session_offline_delivery() {
    let b = TestBroker::start();
    let mut o = v4::opts(b.mqtt_addr(), "persist");
    o.set_clean_session(false);
    let (mut s, ack) = Client::connect(o.clone()).await;
    assert!(!ack.session_present, "first connect has no session");
    s.subscribe("persist/t", QoS::AtLeastOnce).await;
    s.disconnect().await;

    let (mut p, _) = Client::connect(v4::opts(b.mqtt_addr(), "persist-pub")).await;
    p.publish("persist/t", QoS::AtLeastOnce, false, b"while-away-1")
        .await;
    p.publish("persist/t", QoS::AtLeastOnce, false, b"while-away-2")
        .await;

    let (mut s, ack) = Client::connect(o.clone()).await;
    assert!(ack.session_present, "session resumed [MQTT-3.2.2-2]");
    assert_eq!(&s.next_publish().await.payload[..], b"while-away-1");
    assert_eq!(&s.next_publish().await.payload[..], b"while-away-2");
    s.disconnect().await;

    let mut clean = o.clone();
    clean.set_clean_session(true);
    let (c, ack) = Client::connect(clean).await;
    assert!(
        !ack.session_present,
        "clean session 1 -> Session Present 0 [MQTT-3.2.2-1]"
    );
    c.disconnect().await;
    // The clean session discarded the subscription: a new persistent connect has no session.
    let (s, ack) = Client::connect(o).await;
    assert!(
        !ack.session_present,
        "clean session discarded the old session [MQTT-3.1.2-6]"
    );
    s.disconnect().await;
}

/// A second connection with the same client id makes the server close the first
/// [MQTT-3.1.4-2]; the new connection works.
#[test]
fn takeover_closes_first_connection() {
    let b = TestBroker::start();
    let mut first = RawClient::connected(b.mqtt_addr(), Version::V311, "same-id");
    let mut second = RawClient::connected(b.mqtt_addr(), Version::V311, "same-id");
    let seen = first.expect_closed();
    assert!(
        seen.iter().all(|p| !matches!(p, Packet::Disconnect { .. })),
        "3.1.1 servers never send DISCONNECT: {seen:?}"
    );
    second.send(&raw::pingreq());
    assert_eq!(
        second.recv(),
        Ok(Packet::PingResp),
        "second connection alive"
    );
}

/// Overlapping subscriptions: one copy at the highest granted QoS [MQTT-3.3.5-1].
#[test]
fn overlapping_subscriptions_one_copy_max_qos() {
    let b = TestBroker::start();
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V311, "overlap");
    let codes = s.subscribe(
        1,
        &[("ov/#", 0), ("ov/+/x", 2), ("ov/a/x", 1)],
        &raw::Props::new(),
    );
    assert_eq!(codes, vec![0, 2, 1]);
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "overlap-pub");
    p.publish(&raw::Publish::new("ov/a/x", b"one").qos(2, 1));
    p.publish(&raw::Publish::new("ov/a/x", b"marker").qos(2, 2));
    let m = s.recv_publish();
    let Packet::Publish { payload, qos, .. } = &m else {
        unreachable!()
    };
    assert_eq!((payload.as_slice(), *qos), (&b"one"[..], 2));
    s.ack_publish(&m);
    let m = s.recv_publish();
    let Packet::Publish { payload, .. } = &m else {
        unreachable!()
    };
    assert_eq!(
        payload.as_slice(),
        b"marker",
        "only one copy of the first message"
    );
}

/// Topics beginning with `$` are not matched by filters starting with `#` or `+`
/// [MQTT-4.7.2-1]; an explicit `$` filter matches them.
#[test]
fn dollar_topics_not_matched_by_wildcards() {
    let b = TestBroker::start();
    let mut wild = RawClient::connected(b.mqtt_addr(), Version::V311, "wild");
    assert_eq!(
        wild.subscribe(1, &[("#", 0), ("+/x", 0)], &raw::Props::new()),
        vec![0, 0]
    );
    let mut exact = RawClient::connected(b.mqtt_addr(), Version::V311, "exact");
    assert_eq!(
        exact.subscribe(1, &[("$test/x", 0)], &raw::Props::new()),
        vec![0]
    );
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "dpub");
    p.publish(&raw::Publish::new("$test/x", b"dollar").qos(1, 1));
    p.publish(&raw::Publish::new("plain/x", b"plain").qos(1, 2));
    let Packet::Publish { topic, .. } = exact.recv_publish() else {
        unreachable!()
    };
    assert_eq!(topic, "$test/x");
    let Packet::Publish { topic, .. } = wild.recv_publish() else {
        unreachable!()
    };
    assert_eq!(topic, "plain/x", "`#` and `+/x` must not match `$test/x`");
}

/// Unsubscribe stops delivery [MQTT-3.10.4-2]; UNSUBACK carries the packet id [MQTT-3.10.4-4].
#[test]
fn unsubscribe_stops_delivery() {
    let b = TestBroker::start();
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V311, "unsub");
    s.subscribe(1, &[("u/a", 1), ("u/b", 1)], &raw::Props::new());
    s.send(&raw::unsubscribe(Version::V311, 9, &["u/a"]));
    let ack = s.recv_until(|p| matches!(p, Packet::UnsubAck { .. }));
    assert_eq!(
        ack,
        Packet::UnsubAck {
            pid: 9,
            codes: vec![]
        }
    );
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "unsub-pub");
    p.publish(&raw::Publish::new("u/a", b"gone").qos(1, 1));
    p.publish(&raw::Publish::new("u/b", b"kept").qos(1, 2));
    let Packet::Publish { topic, .. } = s.recv_publish() else {
        unreachable!()
    };
    assert_eq!(topic, "u/b");
}

/// An invalid filter in SUBSCRIBE is never granted: the server either answers return code
/// 0x80 for it (MQTT 3.1.1 §3.9.3) or treats the packet as a protocol violation and closes the
/// connection [MQTT-4.8.0-1] (what Mosquitto does). Either way the broker keeps serving.
#[test]
fn invalid_filter_refused() {
    let b = TestBroker::start();
    for (i, bad) in ["a/#/b", "a+/b", "#/x"].into_iter().enumerate() {
        let mut s = RawClient::connected(b.mqtt_addr(), Version::V311, &format!("badf{i}"));
        s.send(&raw::subscribe(
            Version::V311,
            1,
            &[(bad, 1)],
            &raw::Props::new(),
        ));
        match s.recv() {
            Ok(Packet::SubAck { pid: 1, codes }) => {
                assert_eq!(codes, vec![0x80], "filter {bad:?} must be refused")
            }
            Err(raw::RecvError::Closed) => {}
            other => panic!("filter {bad:?}: expected SUBACK 0x80 or close, got {other:?}"),
        }
    }
    let mut ok = RawClient::connected(b.mqtt_addr(), Version::V311, "goodf");
    assert_eq!(ok.subscribe(1, &[("ok/+", 1)], &raw::Props::new()), vec![1]);
}

/// A repeated SUBSCRIBE with the same filter replaces the subscription and "any existing
/// retained messages matching the Topic Filter MUST be re-sent" [MQTT-3.8.4-3].
#[test]
fn resubscribe_resends_retained() {
    let b = TestBroker::start();
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "rs-pub");
    p.publish(&raw::Publish::new("rs/t", b"kept").qos(1, 1).retain());
    let mut s = RawClient::connected(b.mqtt_addr(), Version::V311, "rs-sub");
    for pid in 1..=2 {
        s.subscribe(pid, &[("rs/t", 0)], &raw::Props::new());
        let Packet::Publish {
            payload, retain, ..
        } = s.recv_publish()
        else {
            unreachable!()
        };
        assert_eq!(
            (payload.as_slice(), retain),
            (&b"kept"[..], true),
            "subscribe #{pid}"
        );
    }
}

/// An unacknowledged QoS 1 message is sent again, with DUP 1, when a clean-session-0 client
/// reconnects [MQTT-4.4.0-1] [MQTT-3.3.1-1]; once acknowledged it is not sent again.
#[test]
fn qos1_redelivered_with_dup_on_reconnect() {
    let b = TestBroker::start();
    let mut c = Connect::new(Version::V311, "redeliver");
    c.clean = false;
    let (mut s, _, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!(code, 0);
    s.subscribe(1, &[("redo/t", 1)], &raw::Props::new());
    let mut p = RawClient::connected(b.mqtt_addr(), Version::V311, "redeliver-pub");
    p.publish(&raw::Publish::new("redo/t", b"again").qos(1, 1));
    let first = s.recv_publish();
    let Packet::Publish { dup, payload, .. } = &first else {
        unreachable!()
    };
    assert_eq!((payload.as_slice(), *dup), (&b"again"[..], false));
    s.drop_abruptly();

    let (mut s, present, code, _) = RawClient::connect(b.mqtt_addr(), &c);
    assert_eq!((code, present), (0, true));
    let again = s.recv_publish();
    let Packet::Publish {
        dup, payload, qos, ..
    } = &again
    else {
        unreachable!()
    };
    assert_eq!(
        (payload.as_slice(), *dup, *qos),
        (&b"again"[..], true, 1),
        "redelivered with DUP"
    );
    s.ack_publish(&again);
    s.send(&raw::disconnect(Version::V311, 0, &raw::Props::new()));
    s.expect_closed();

    let (mut s, _, _, _) = RawClient::connect(b.mqtt_addr(), &c);
    p.publish(&raw::Publish::new("redo/t", b"marker").qos(1, 2));
    let Packet::Publish { payload, .. } = s.recv_publish() else {
        unreachable!()
    };
    assert_eq!(
        payload, b"marker",
        "an acknowledged message is not redelivered"
    );
}
