//! Round trips through a real store in a temporary directory: persist, close, reopen,
//! restore, compare.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use halyard_codec::{
    Connect, ConnectProperties, MqttString, Packet, ProtocolVersion, PubResponse, Publish,
    PublishProperties, QoS, ReasonCode, SubscriptionOptions, encode,
};
use halyard_session::{
    Connection, Delivery, Event, Message, MessageProperties, OutgoingParts, OutgoingStage, Session,
    SessionConfig, SessionParts, Subscription, WallClock, Will,
};
use halyard_store::StoreConfig;
use smallvec::smallvec;

use super::*;

/// A directory removed on drop (no tempfile dependency).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "halyard-durable-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn open(&self) -> Durability {
        let cfg = StoreConfig {
            commit_interval_ms: 0,
            ..StoreConfig::with_dir(&self.0)
        };
        Durability::open(&cfg, false).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const T0: u64 = 1_800_000_000_000;

/// Polls `f` to completion on this thread (the store's futures need no runtime).
fn block<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    // Bounded: a commit completes in milliseconds; 10 000 polls of up to 10 ms each.
    for _ in 0..10_000 {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
    panic!("store commit did not complete");
}

fn message(topic: &str, qos: QoS, expires_at: Option<Instant>) -> Arc<Message> {
    Arc::new(Message {
        topic: MqttString::from(topic),
        payload: Bytes::from(format!("payload of {topic}")),
        qos,
        retain: false,
        properties: MessageProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        },
        expires_at,
        publisher: Some("publisher".into()),
    })
}

fn delivery(m: &Arc<Message>, qos: QoS) -> Delivery {
    Delivery {
        message: m.clone(),
        qos,
        retain: false,
        subscription_ids: smallvec![3],
        packet_id: None,
    }
}

/// Subscriptions, QoS 1 awaiting PUBACK, QoS 2 awaiting PUBREC and PUBCOMP (resend order
/// not packet-id order), incoming QoS 2 ids and two queued messages.
fn busy_parts(clock: &WallClock) -> SessionParts {
    let expiring = message(
        "q/expiring",
        QoS::AtLeastOnce,
        Some(clock.now + Duration::from_secs(60)),
    );
    let out = |id: u16, order: u64, stage: OutgoingStage, qos: QoS| OutgoingParts {
        packet_id: id,
        stage,
        delivery: delivery(&message(&format!("out/{id}"), QoS::ExactlyOnce, None), qos),
        ever_sent: true,
        order,
    };
    SessionParts {
        client_id: "durable-client".into(),
        expiry_interval: 3600,
        subscriptions: vec![
            (
                "$share/g/s".into(),
                Subscription {
                    options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                    subscription_id: None,
                },
            ),
            (
                "q/#".into(),
                Subscription {
                    options: SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: halyard_codec::RetainHandling::DoNotSend,
                    },
                    subscription_id: Some(3),
                },
            ),
        ],
        outgoing: vec![
            out(65535, 10, OutgoingStage::AwaitingPuback, QoS::AtLeastOnce),
            out(1, 11, OutgoingStage::AwaitingPubrec, QoS::ExactlyOnce),
            out(2, 12, OutgoingStage::AwaitingPubcomp, QoS::ExactlyOnce),
        ],
        incoming_qos2: vec![7, 300],
        queued: vec![
            delivery(&expiring, QoS::AtLeastOnce),
            delivery(&message("q/two", QoS::ExactlyOnce, None), QoS::ExactlyOnce),
        ],
        next_packet_id: 3,
    }
}

#[test]
fn session_round_trips_through_the_store() {
    let dir = TempDir::new();
    let cfg = SessionConfig::default();
    let before = WallClock::new(Instant::now(), T0);
    let parts = busy_parts(&before);
    let mut session = Session::from_parts(parts.clone(), &cfg).unwrap();
    {
        let d = dir.open();
        let committed =
            block(d.persist_session(&mut session, 5, Some(before.now), &before)).unwrap();
        assert_eq!(committed.seqs, [Some(0), Some(1)]);
        assert!(session.tracks_changes());
    }
    // Reopened 10 s later (wall clock).
    let after = WallClock::new(Instant::now(), T0 + 10_000);
    let d = dir.open();
    let state = d.load_at(&after, &cfg).unwrap();
    assert!(state.skipped.is_empty(), "{:?}", state.skipped);
    assert_eq!(state.sessions.len(), 1);
    let r = &state.sessions[0];
    assert_eq!(r.protocol_version, 5);
    assert_eq!(r.ledger, QueueLedger::from_seqs([0, 1]));
    assert_eq!(
        r.expires_at,
        Some(after.now + Duration::from_secs(3600) - Duration::from_secs(10))
    );
    let back = r.session.to_parts();
    // Times are rebased on the new clock: the expiring message has 50 s left.
    let left = back.queued[0].message.remaining_expiry_secs(after.now);
    assert_eq!(left, Some(50));
    let mut want = parts;
    want.queued[0] = delivery(
        &Arc::new(Message {
            expires_at: Some(after.now + Duration::from_secs(50)),
            ..(*want.queued[0].message).clone()
        }),
        QoS::AtLeastOnce,
    );
    // Restored queue entries 0 and 1 fix packet ids 1 and 2.
    want.queued[0].packet_id = Some(1);
    want.queued[1].packet_id = Some(2);
    assert_eq!(back, want);
}

fn v5_connect(client: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: false,
        keep_alive: 0,
        client_id: client.into(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: Some(600),
            ..Default::default()
        },
    }))
}

fn feed(conn: &mut Connection, now: Instant, p: Packet) {
    let mut buf = BytesMut::new();
    encode(&p, ProtocolVersion::V5, &mut buf).unwrap();
    conn.handle_bytes(now, &buf);
}

fn drain(conn: &mut Connection) {
    let mut out = BytesMut::new();
    for _ in 0..100 {
        if !conn.poll_transmit(&mut out) {
            break;
        }
    }
}

/// A 5.0 connection whose CONNECT was accepted with a fresh session stored first (as the
/// connection task does for a persistent session), and its empty ledger.
fn connect_stored(
    d: &Durability,
    cfg: &Arc<SessionConfig>,
    client: &str,
    now: Instant,
    clock: &WallClock,
) -> (Connection, QueueLedger) {
    let mut conn = Connection::new(cfg.clone(), now);
    feed(&mut conn, now, v5_connect(client));
    assert!(matches!(conn.poll_event(), Some(Event::Connect(_))));
    let mut fresh = Session::new(client.into(), 600, cfg);
    block(d.persist_session(&mut fresh, 5, None, clock)).unwrap();
    conn.accept_connect(now, Some(fresh), false);
    drain(&mut conn);
    (conn, QueueLedger::new())
}

/// The incremental path the connection task uses: persist_changes after every step.
#[test]
fn incremental_changes_match_the_live_session_after_reopen() {
    let dir = TempDir::new();
    let cfg = Arc::new(SessionConfig {
        max_inflight: 2,
        ..SessionConfig::default()
    });
    let now = Instant::now();
    let clock = WallClock::new(now, T0);
    let live = {
        let d = dir.open();
        let (mut conn, mut ledger) = connect_stored(&d, &cfg, "inc", now, &clock);
        // Four messages routed: persisted to the queue first, then delivered.
        let msgs: Vec<Arc<Message>> = (0..4)
            .map(|i| message(&format!("m/{i}"), QoS::ExactlyOnce, None))
            .collect();
        for m in &msgs {
            let dl = delivery(m, QoS::ExactlyOnce);
            let c = block(d.persist_publish(
                m,
                &[DurableTarget {
                    client_id: &ClientId::from("inc"),
                    delivery: &dl,
                }],
                &clock,
            ))
            .unwrap();
            let seq = c.seqs[0];
            assert!(seq.is_some());
            // As `publish::apply_seqs`: the queue entry fixes the packet id.
            let dl = Delivery {
                packet_id: seq.map(packet_id_for),
                ..dl
            };
            // Window of 2: the first two go in flight, the rest wait in the queue.
            match conn.deliver(now, dl) {
                halyard_session::DeliverOutcome::Queued => ledger.pushed(seq),
                // Sent at once: its queue entry goes with the in-flight write.
                halyard_session::DeliverOutcome::Sent => ledger.consumed(seq),
                other => panic!("{other:?}"),
            }
            persist(&d, &mut conn, &mut ledger, &clock);
            drain(&mut conn);
        }
        // PUBREC for the first: its stage moves to awaiting PUBCOMP.
        feed(&mut conn, now, Packet::PubRec(PubResponse::new(1)));
        // The client publishes QoS 2 id 9; the broker PUBRECs it.
        feed(
            &mut conn,
            now,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "in".into(),
                packet_id: 9,
                payload: Bytes::from_static(b"x"),
                properties: PublishProperties::default(),
            }),
        );
        while conn.poll_event().is_some() {}
        conn.complete_publish(now, 9, ReasonCode::SUCCESS);
        persist(&d, &mut conn, &mut ledger, &clock);
        // PUBREC then PUBCOMP for the second: done, the window pulls m/2 from the queue.
        feed(&mut conn, now, Packet::PubRec(PubResponse::new(2)));
        feed(&mut conn, now, Packet::PubComp(PubResponse::new(2)));
        persist(&d, &mut conn, &mut ledger, &clock);
        drain(&mut conn);
        conn.socket_closed(now);
        while conn.poll_event().is_some() {}
        conn.into_session().unwrap().to_parts()
    };
    assert_eq!(live.outgoing.len(), 2);
    assert_eq!(live.queued.len(), 1);
    let d = dir.open();
    // The session was connected when last written: its expiry counts from the store's last
    // commit (real wall-clock time), so load at the real time.
    let state = d.load(Instant::now(), &SessionConfig::default()).unwrap();
    assert_eq!(state.sessions.len(), 1);
    let back = state.sessions[0].session.to_parts();
    assert_eq!(back.outgoing, live.outgoing);
    assert_eq!(back.incoming_qos2, [9]);
    assert_eq!(back.incoming_qos2, live.incoming_qos2);
    assert_eq!(back.queued, live.queued);
    assert_eq!(state.sessions[0].ledger.len(), 1);
}

/// Drives a connected, stored session through `script` (deliveries published to it first,
/// each persisted like the connection task does; then PUBACKs), and drops everything without
/// parking the session (a crash). Returns the live session's parts at the crash and what the
/// reopened store restores.
fn crash_after(qos: &[QoS], pubacks: &[u16], max_inflight: u16) -> (SessionParts, SessionParts) {
    let dir = TempDir::new();
    let cfg = Arc::new(SessionConfig {
        max_inflight,
        ..SessionConfig::default()
    });
    let now = Instant::now();
    let clock = WallClock::new(now, T0);
    let live = {
        let d = dir.open();
        let (mut conn, mut ledger) = connect_stored(&d, &cfg, "byref", now, &clock);
        for (i, q) in qos.iter().enumerate() {
            let m = message(&format!("m/{i}"), *q, None);
            let dl = delivery(&m, *q);
            let c = block(d.persist_publish(
                &m,
                &[DurableTarget {
                    client_id: &ClientId::from("byref"),
                    delivery: &dl,
                }],
                &clock,
            ))
            .unwrap();
            // As `publish::apply_seqs`: the queue entry fixes the packet id.
            let dl = Delivery {
                packet_id: c.seqs[0].map(packet_id_for),
                ..dl
            };
            match conn.deliver(now, dl) {
                halyard_session::DeliverOutcome::Queued => ledger.pushed_message(c.seqs[0], &m),
                _ => ledger.consumed_message(c.seqs[0], &m),
            }
            persist(&d, &mut conn, &mut ledger, &clock);
            drain(&mut conn);
        }
        for id in pubacks {
            feed(&mut conn, now, Packet::PubAck(PubResponse::new(*id)));
            persist(&d, &mut conn, &mut ledger, &clock);
            drain(&mut conn);
        }
        // Dropping `d` waits for the writer to commit what was submitted (lazy removals
        // included), as a running broker would have done before a later crash.
        conn.take_session_changes().expect("accepted").1.to_parts()
    };
    let d = dir.open();
    let state = d.load(Instant::now(), &SessionConfig::default()).unwrap();
    assert_eq!(state.sessions.len(), 1);
    (live, state.sessions[0].session.to_parts())
}

/// (topic, packet id, DUP on resend) of in-flight messages, in resend order.
fn resends(parts: &SessionParts) -> Vec<(String, u16, bool)> {
    let mut out = parts.outgoing.clone();
    out.sort_by_key(|o| o.order);
    out.into_iter()
        .map(|o| {
            (
                o.delivery.message.topic.to_string(),
                o.packet_id,
                o.ever_sent,
            )
        })
        .collect()
}

/// QoS 1 deliveries sent at once keep their queue entry as their only store copy (no
/// in-flight entry is written) until the PUBACK; after a crash the unacknowledged ones
/// below the sent limit come back in flight with the packet ids they were sent with and
/// DUP=1 [MQTT-4.4.0-1], in order, and the acknowledged ones are gone.
#[test]
fn qos1_in_flight_by_reference_comes_back_with_its_packet_id_after_a_crash() {
    let (live, parts) = crash_after(&[QoS::AtLeastOnce; 5], &[1, 3], 3);
    // m/0 and m/2 acknowledged; m/1, m/3 (popped when a window slot freed) and m/4 (sent
    // after) in flight.
    let live: Vec<_> = resends(&live)
        .into_iter()
        .map(|(t, id, _)| (t, id))
        .collect();
    assert_eq!(
        live,
        [("m/1".into(), 2), ("m/3".into(), 4), ("m/4".into(), 5)]
    );
    let back = resends(&parts);
    let want: Vec<_> = live.into_iter().map(|(t, id)| (t, id, true)).collect();
    assert_eq!(back, want);
    assert!(parts.queued.is_empty(), "{:?}", parts.queued);
}

/// A QoS 2 delivery written in flight after QoS 1 ones stored by reference turns those into
/// in-flight entries too, so that the resend order after a crash is the send order.
#[test]
fn qos2_in_flight_after_by_reference_qos1_keeps_the_resend_order() {
    let (_, parts) = crash_after(
        &[
            QoS::AtLeastOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
        ],
        &[],
        10,
    );
    let ids = resends(&parts);
    // m/3 was sent by reference after the QoS 2 entry: it comes back after it.
    assert_eq!(
        ids,
        [
            ("m/0".into(), 1, true),
            ("m/1".into(), 2, true),
            ("m/2".into(), 3, true),
            ("m/3".into(), 4, true)
        ]
    );
    assert!(parts.queued.is_empty());
}

/// At restart the queue is split at the sent limit: a QoS 1 entry below it may have been
/// sent (in flight by reference) and is resent with the packet id its entry fixes and DUP=1;
/// a QoS 0 entry below it may have been sent and is not sent again (at most once); a QoS 2
/// entry below it was not sent (its in-flight entry would have replaced it) and stays
/// queued; entries from the limit on were never sent and stay queued, with fixed ids.
#[test]
fn restored_queue_is_split_at_the_sent_limit() {
    let dir = TempDir::new();
    let cfg = SessionConfig::default();
    let clock = WallClock::new(Instant::now(), T0);
    {
        let d = dir.open();
        let mut fresh = Session::new("split".into(), 600, &cfg);
        block(d.persist_session(&mut fresh, 5, None, &clock)).unwrap();
        let store = d.store.as_ref().expect("enabled");
        let mut b = halyard_store::Batch::new();
        for (i, q) in [
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
            QoS::ExactlyOnce,
            QoS::AtLeastOnce,
        ]
        .into_iter()
        .enumerate()
        {
            let m = message(&format!("m/{i}"), q, None);
            b.enqueue(
                "split",
                &convert::delivery_to_stored(&delivery(&m, q), None, &clock),
            );
        }
        b.set_sent_limit("split", 3);
        store.submit(b).wait().unwrap();
    }
    let d = dir.open();
    let state = d.load(Instant::now(), &cfg).unwrap();
    let r = &state.sessions[0];
    assert_eq!(r.stale_queued, [0], "the QoS 0 entry is removed");
    let parts = r.session.to_parts();
    assert_eq!(resends(&parts), [("m/1".into(), 2, true)]);
    let queued: Vec<_> = parts
        .queued
        .iter()
        .map(|d| (d.message.topic.to_string(), d.packet_id))
        .collect();
    assert_eq!(queued, [("m/2".into(), Some(3)), ("m/3".into(), Some(4))]);
    assert_eq!(r.ledger.len(), 2);
}

fn persist(d: &Durability, conn: &mut Connection, ledger: &mut QueueLedger, clock: &WallClock) {
    let (changes, session) = conn.take_session_changes().expect("accepted");
    block(d.persist_changes(changes, session, ledger, 5, clock)).unwrap();
}

#[test]
fn retained_messages_and_queues_from_publish_survive_reopen() {
    let dir = TempDir::new();
    let now = Instant::now();
    let clock = WallClock::new(now, T0);
    let retained = Arc::new(Message {
        retain: true,
        ..(*message("r/1", QoS::AtLeastOnce, Some(now + Duration::from_secs(5)))).clone()
    });
    {
        let d = dir.open();
        let mut s = Session::new("off".into(), 100, &SessionConfig::default());
        block(d.persist_session(&mut s, 4, Some(now), &clock)).unwrap();
        let dl = Delivery {
            retain: true,
            ..delivery(&retained, QoS::AtMostOnce)
        };
        let c = block(d.persist_publish(
            &retained,
            &[DurableTarget {
                client_id: &ClientId::from("off"),
                delivery: &dl,
            }],
            &clock,
        ))
        .unwrap();
        assert_eq!(c.seqs, [Some(0)]);
        let other = Arc::new(Message {
            retain: true,
            ..(*message("r/2", QoS::AtMostOnce, None)).clone()
        });
        block(d.persist_retained(&other, &clock)).unwrap();
        let clear = Arc::new(Message {
            retain: true,
            payload: Bytes::new(),
            ..(*message("r/2", QoS::AtMostOnce, None)).clone()
        });
        block(d.persist_retained(&clear, &clock)).unwrap();
    }
    let d = dir.open();
    let later = WallClock::new(Instant::now(), T0 + 2_000);
    let state = d.load_at(&later, &SessionConfig::default()).unwrap();
    assert_eq!(state.retained.len(), 1, "r/2 was deleted");
    let r = &state.retained[0];
    assert_eq!(r.topic.as_str(), "r/1");
    assert_eq!(r.qos, QoS::AtLeastOnce);
    assert_eq!(r.remaining_expiry_secs(later.now), Some(3));
    let q = state.sessions[0].session.to_parts().queued;
    assert_eq!(q.len(), 1);
    // The delivery's own QoS/RETAIN and the message's as published both survive.
    assert_eq!((q[0].qos, q[0].retain), (QoS::AtMostOnce, true));
    assert_eq!(
        (q[0].message.qos, q[0].message.retain),
        (QoS::AtLeastOnce, true)
    );
    assert_eq!(q[0].subscription_ids.as_slice(), [3]);
}

#[test]
fn expiry_counts_downtime() {
    let dir = TempDir::new();
    let now = Instant::now();
    let clock = WallClock::new(now, T0);
    {
        let d = dir.open();
        let mut short = Session::new("short".into(), 10, &SessionConfig::default());
        block(d.persist_session(&mut short, 5, Some(now), &clock)).unwrap();
        let mut long = Session::new("long".into(), 100, &SessionConfig::default());
        block(d.persist_session(&mut long, 5, Some(now), &clock)).unwrap();
        for (topic, secs) in [("soon", 5), ("later", 50)] {
            let m = message(
                topic,
                QoS::AtLeastOnce,
                Some(now + Duration::from_secs(secs)),
            );
            let dl = delivery(&m, QoS::AtLeastOnce);
            let t = [DurableTarget {
                client_id: &ClientId::from("long"),
                delivery: &dl,
            }];
            block(d.persist_publish(&m, &t, &clock)).unwrap();
        }
        let will = Will {
            topic: "will/long".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: MessageProperties::default(),
            message_expiry_interval: Some(30),
            delay_interval: 20,
        };
        block(d.put_will(&"long".into(), &will, now + Duration::from_secs(20), &clock)).unwrap();
    }
    // 15 s of downtime: "short" (10 s) and "soon" (5 s) are gone; "long" has 85 s left,
    // "later" 35 s, and the will fires in 5 s, its message expiring 30 s after that.
    let d = dir.open();
    let after = WallClock::new(Instant::now(), T0 + 15_000);
    let state = d.load_at(&after, &SessionConfig::default()).unwrap();
    assert_eq!(state.dropped.sessions, 1);
    assert_eq!(state.dropped.queued, 1);
    assert_eq!(state.sessions.len(), 1);
    let s = &state.sessions[0];
    assert_eq!(&**s.session.client_id(), "long");
    assert_eq!(s.expires_at, Some(after.now + Duration::from_secs(85)));
    let q = s.session.to_parts().queued;
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].message.remaining_expiry_secs(after.now), Some(35));
    assert_eq!(state.wills.len(), 1);
    let w = &state.wills[0];
    assert_eq!(&*w.client_id, "long");
    assert_eq!(w.fire_at, after.now + Duration::from_secs(5));
    assert_eq!(w.will.delay_interval, 5);
    assert_eq!(w.will.message_expiry_interval, Some(30));
    assert_eq!(w.will.topic.as_str(), "will/long");
    // A will whose time passed during downtime is returned to publish at once.
    let d2 = dir.open_again(d);
    let late = WallClock::new(Instant::now(), T0 + 40_000);
    let state = d2.load_at(&late, &SessionConfig::default()).unwrap();
    assert_eq!(state.wills.len(), 1);
    assert!(state.wills[0].fire_at <= late.now);
}

impl TempDir {
    fn open_again(&self, old: Durability) -> Durability {
        drop(old);
        self.open()
    }
}

#[test]
fn disabled_store_writes_nothing_and_is_ready_at_once() {
    let d = Durability::disabled();
    assert!(!d.is_enabled());
    let now = Instant::now();
    let clock = WallClock::new(now, T0);
    let m = message("t", QoS::AtLeastOnce, None);
    let dl = delivery(&m, QoS::AtLeastOnce);
    let p = d.persist_publish(
        &m,
        &[DurableTarget {
            client_id: &ClientId::from("c"),
            delivery: &dl,
        }],
        &clock,
    );
    assert!(p.is_ready());
    assert_eq!(block(p).unwrap().seqs, [None]);
    let mut s = Session::new("c".into(), 10, &SessionConfig::default());
    assert!(d.persist_session(&mut s, 5, None, &clock).is_ready());
    assert!(!s.tracks_changes(), "no tracking cost without a store");
    assert!(
        d.load(now, &SessionConfig::default())
            .unwrap()
            .sessions
            .is_empty()
    );
}

#[test]
fn quota_errors_map_to_0x97() {
    let e = DurableError::Store(StoreError::QuotaExceeded {
        limit: halyard_store::QuotaLimit::DiskFull,
    });
    assert_eq!(e.reason_code(), ReasonCode::QUOTA_EXCEEDED);
    let busy = DurableError::Store(StoreError::Busy { limit: 1 });
    assert_eq!(busy.reason_code(), ReasonCode::SERVER_BUSY);
}
