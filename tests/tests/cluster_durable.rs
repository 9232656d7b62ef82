//! Multi-process cluster tests of what crosses nodes: QoS 1/2 when a node dies, pipelined
//! acknowledgements, and persistent sessions that follow their client to another node.
//!
//! First test: three cores with the store on, a persistent (offline) session on one core, a
//! publisher on another.
//! Checked: once a QoS 1 or QoS 2 PUBLISH on c1 is acknowledged, the copy forwarded to c2
//! (where the subscriber's persistent session lives) is in c2's store: c2 is SIGKILLed right
//! after the last acknowledgement and restarted on its data directory, and the subscriber,
//! reconnecting there with a persistent session, receives every acknowledged message, in
//! order. Before the fix, a forwarded copy was handed to the offline session in memory and
//! acknowledged at once (and, with the store on, the publisher did not even wait for that),
//! so the messages were lost with c2.

use std::collections::BTreeSet;
use std::time::Duration;

use halyard_tests::cluster::Cluster;
use halyard_tests::require_halyard;
use halyard_tests::rumq::v4;

const C1: usize = 0;
const C2: usize = 1;
const C3: usize = 2;

/// Messages per QoS level.
const N: usize = 40;

fn persistent(cl: &Cluster, node: usize, id: &str) -> v4::MqttOptions {
    let mut o = v4::opts(cl.mqtt(node), id);
    o.set_clean_session(false);
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_forwarded_messages_survive_the_subscribers_node_crash() {
    require_halyard();
    let mut cl = Cluster::new(
        "cluster-durable",
        30,
        &[("c1", "core"), ("c2", "core"), ("c3", "core")],
    );
    for n in &mut cl.nodes {
        n.env.push(("HALYARD_STORE__ENABLED", "true".to_string()));
    }
    for i in [C1, C2, C3] {
        cl.start(i);
    }
    cl.wait_formed(3);

    // A persistent session on c2 with a QoS 1 subscription, then offline.
    let (mut sub, ack) = v4::Client::connect(persistent(&cl, C2, "dur-sub")).await;
    assert!(!ack.session_present, "a new session");
    sub.subscribe("dur/#", v4::QoS::ExactlyOnce).await;
    sub.disconnect().await;
    // c1 knows c2's route.
    cl.settle();

    // Every message acknowledged on c1 (PUBACK for QoS 1, PUBCOMP for QoS 2).
    let (mut publisher, _) = v4::Client::connect(v4::opts(cl.mqtt(C1), "dur-pub")).await;
    let mut sent = Vec::new();
    for i in 0..N {
        for (qos, tag) in [(v4::QoS::AtLeastOnce, "q1"), (v4::QoS::ExactlyOnce, "q2")] {
            let payload = format!("{tag}-{i}");
            publisher
                .publish(&format!("dur/{tag}"), qos, false, payload.as_bytes())
                .await;
            sent.push(payload);
        }
    }
    // The subscriber's node dies right after the last acknowledgement, and comes back on
    // its data directory.
    cl.kill(C2);
    cl.start(C2);
    cl.wait_formed(3);

    let (mut sub, ack) = v4::Client::connect(persistent(&cl, C2, "dur-sub")).await;
    assert!(ack.session_present, "the session survived the crash");
    let mut got = Vec::new();
    while let Some(Ok(ev)) = sub.next_event(Duration::from_secs(3)).await {
        if let v4::Event::Incoming(v4::Packet::Publish(p)) = ev {
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
    }
    let have: BTreeSet<&String> = got.iter().collect();
    let missing: Vec<&String> = sent.iter().filter(|m| !have.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages lost with c2: {missing:?}",
        missing.len(),
        sent.len()
    );
    // Both streams in publish order (QoS 1 may repeat a message after the restart: order is
    // judged on first occurrences); QoS 2 exactly once.
    for tag in ["q1", "q2"] {
        let mut seen = BTreeSet::new();
        let firsts: Vec<&String> = got
            .iter()
            .filter(|m| m.starts_with(tag) && seen.insert(*m))
            .collect();
        let expected: Vec<String> = (0..N).map(|i| format!("{tag}-{i}")).collect();
        assert_eq!(
            firsts,
            expected.iter().collect::<Vec<_>>(),
            "{tag} in publish order"
        );
    }
    let q2: Vec<&String> = got.iter().filter(|m| m.starts_with("q2")).collect();
    assert_eq!(q2.len(), N, "QoS 2 exactly once: {q2:?}");
}

/// A dead node with routes does not hold QoS 1 publishers: once its link has been down for
/// `cluster.link_ack_timeout_ms`, acknowledged sends to it stop waiting (counted in
/// `link_unreachable`), and the live subscribers get every message. Before, each PUBLISH of
/// a publisher waited the whole timeout, one after the other, until autoclean removed the
/// dead node's routes (never, for a core).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_does_not_hold_qos1_publishers() {
    require_halyard();
    const ACK_TIMEOUT_MS: u64 = 1000;
    const MSGS: u64 = 40;
    let mut cl = Cluster::new(
        "cluster-dead-node",
        40,
        &[("c1", "core"), ("c2", "core"), ("c3", "core")],
    );
    for n in &mut cl.nodes {
        n.env.push((
            "HALYARD_CLUSTER__LINK_ACK_TIMEOUT_MS",
            ACK_TIMEOUT_MS.to_string(),
        ));
    }
    for i in [C1, C2, C3] {
        cl.start(i);
    }
    cl.wait_formed(3);
    let (mut live, _) = v4::Client::connect(v4::opts(cl.mqtt(C2), "live-sub")).await;
    live.subscribe("dead/#", v4::QoS::AtLeastOnce).await;
    let (mut doomed, _) = v4::Client::connect(v4::opts(cl.mqtt(C3), "doomed-sub")).await;
    doomed.subscribe("dead/#", v4::QoS::AtLeastOnce).await;
    cl.settle();
    cl.kill(C3);
    drop(doomed);

    let (mut publisher, _) = v4::Client::connect(v4::opts(cl.mqtt(C1), "dead-pub")).await;
    // Waiting the timeout per message would take MSGS seconds; half of that is the bound.
    let bound = Duration::from_millis(ACK_TIMEOUT_MS * MSGS / 2);
    let all = async {
        for i in 0..MSGS {
            publisher
                .publish(
                    "dead/x",
                    v4::QoS::AtLeastOnce,
                    false,
                    format!("{i}").as_bytes(),
                )
                .await;
        }
    };
    assert!(
        tokio::time::timeout(bound, all).await.is_ok(),
        "{MSGS} QoS 1 PUBLISHes not all acknowledged within {bound:?}: held by the dead node: {:#?}",
        cl.all_status()
    );
    let mut got = BTreeSet::new();
    while got.len() < MSGS as usize {
        match live.next_event(Duration::from_secs(5)).await {
            Some(Ok(v4::Event::Incoming(v4::Packet::Publish(p)))) => {
                got.insert(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert_eq!(
        got.len(),
        MSGS as usize,
        "the live subscriber on c2 got every message"
    );
    let unreachable = cl.status(C1)["link_unreachable"].as_u64();
    assert!(
        unreachable.is_some_and(|n| n > 0),
        "c1 counted sends that did not wait for the dead node: {unreachable:?}"
    );
}

/// One publisher with many QoS 1 PUBLISHes in flight to a subscriber on another node, over
/// a link whose queue and window are tiny (2 messages), so that copies keep finding the
/// queue full: every message arrives exactly once per copy sent and in publish order, and
/// every PUBLISH is acknowledged. (Copies are queued at once while the queue has room, and
/// behind the blocked one once it had none; the acknowledgements of a read's PUBLISHes
/// overlap instead of waiting one after the other.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_qos1_keeps_order_through_a_full_link_queue() {
    require_halyard();
    const MSGS: usize = 300;
    let mut cl = Cluster::new(
        "cluster-pipeline",
        50,
        &[("c1", "core"), ("r1", "replicant")],
    );
    for n in &mut cl.nodes {
        n.env
            .push(("HALYARD_CLUSTER__LINK_QUEUE_MAX", "2".to_string()));
        n.env
            .push(("HALYARD_CLUSTER__LINK_INFLIGHT_MAX", "2".to_string()));
    }
    cl.start(0);
    cl.wait_formed(1);
    cl.start(1);
    cl.wait_formed(2);
    let (mut sub, _) = v4::Client::connect(v4::opts(cl.mqtt(0), "pipe-sub")).await;
    sub.subscribe("pipe/#", v4::QoS::AtLeastOnce).await;
    cl.settle();

    let (mut publisher, _) = v4::Client::connect(v4::opts(cl.mqtt(1), "pipe-pub")).await;
    let send = async {
        for i in 0..MSGS {
            publisher
                .client
                .publish("pipe/x", v4::QoS::AtLeastOnce, false, format!("{i}"))
                .await
                .expect("queue PUBLISH");
        }
        let mut acked = 0;
        while acked < MSGS {
            match publisher.next_event(Duration::from_secs(10)).await {
                Some(Ok(v4::Event::Incoming(v4::Packet::PubAck(_)))) => acked += 1,
                Some(Ok(_)) => {}
                other => panic!("{acked} of {MSGS} PUBACKs, then {other:?}"),
            }
        }
    };
    let receive = collect_payloads(&mut sub, MSGS);
    let ((), got) = tokio::join!(send, receive);
    let expected: Vec<String> = (0..MSGS).map(|i| i.to_string()).collect();
    assert_eq!(got, expected, "every message once, in publish order");
    let blocked = cl.status(1)["link_blocked"].as_u64();
    assert!(
        blocked.is_some_and(|n| n > 0),
        "the test did fill the link queue: link_blocked = {blocked:?}"
    );
}

async fn collect_payloads(c: &mut v4::Client, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match c.next_event(Duration::from_secs(10)).await {
            Some(Ok(v4::Event::Incoming(v4::Packet::Publish(p)))) => {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    got
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// A persistent session follows its client to another node (store on): offline on c1 with
/// queued QoS 1 messages, the client reconnects to r1 and gets Session Present, the queue
/// and its subscription (messages published on c1 afterwards reach it on r1); connecting to
/// c1 again while connected to r1 takes the connected session back (the r1 connection is
/// closed) and keeps delivering; a Clean Start elsewhere ends it (the connection on c1 is
/// closed, and the next persistent connect finds no session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_follows_its_client_to_another_node() {
    require_halyard();
    let mut cl = Cluster::new("cluster-roam", 60, &[("c1", "core"), ("r1", "replicant")]);
    for n in &mut cl.nodes {
        n.env.push(("HALYARD_STORE__ENABLED", "true".to_string()));
    }
    const CORE: usize = 0;
    const REPLICANT: usize = 1;
    cl.start(CORE);
    cl.wait_formed(1);
    cl.start(REPLICANT);
    cl.wait_formed(2);

    let (mut roam, ack) = v4::Client::connect(persistent(&cl, CORE, "roamer")).await;
    assert!(!ack.session_present);
    roam.subscribe("roam/#", v4::QoS::AtLeastOnce).await;
    roam.disconnect().await;
    let (mut p1, _) = v4::Client::connect(v4::opts(cl.mqtt(CORE), "roam-pub-c1")).await;
    for m in numbered("queued", 0..5) {
        p1.publish("roam/a", v4::QoS::AtLeastOnce, false, m.as_bytes())
            .await;
    }

    // To the replicant: the session, its queue and its subscription come along.
    let (mut roam, ack) = v4::Client::connect(persistent(&cl, REPLICANT, "roamer")).await;
    assert!(ack.session_present, "the session followed the client to r1");
    assert_eq!(
        collect_payloads(&mut roam, 5).await,
        numbered("queued", 0..5)
    );
    cl.settle();
    for m in numbered("after-move", 0..3) {
        p1.publish("roam/b", v4::QoS::AtLeastOnce, false, m.as_bytes())
            .await;
    }
    assert_eq!(
        collect_payloads(&mut roam, 3).await,
        numbered("after-move", 0..3),
        "the subscription moved with the session"
    );

    // Back to the core while connected to the replicant: a takeover across nodes.
    let (mut back, ack) = v4::Client::connect(persistent(&cl, CORE, "roamer")).await;
    assert!(ack.session_present, "the connected session came back to c1");
    roam.wait_closed().await;
    cl.settle();
    let (mut p2, _) = v4::Client::connect(v4::opts(cl.mqtt(REPLICANT), "roam-pub-r1")).await;
    for m in numbered("back", 0..3) {
        p2.publish("roam/c", v4::QoS::AtLeastOnce, false, m.as_bytes())
            .await;
    }
    // A message still unacknowledged when the session left r1 comes again, with DUP.
    let mut got = Vec::new();
    while got.len() < 3 {
        match back.next_event(Duration::from_secs(10)).await {
            Some(Ok(v4::Event::Incoming(v4::Packet::Publish(p)))) => {
                let text = String::from_utf8_lossy(&p.payload).into_owned();
                if text.starts_with("back") {
                    got.push(text);
                } else {
                    assert!(
                        p.dup && numbered("after-move", 0..3).contains(&text),
                        "only an earlier in-flight message may come again, with DUP: {p:?}"
                    );
                }
            }
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert_eq!(got, numbered("back", 0..3));
    let moved = cl.status(CORE)["sessions_taken_over"].as_u64();
    assert_eq!(moved, Some(1), "c1 took one session over from r1");
    let moved = cl.status(REPLICANT)["sessions_taken_over"].as_u64();
    assert_eq!(moved, Some(1), "r1 took one session over from c1");

    // A Clean Start on the replicant ends the session on the core.
    let (clean, ack) = v4::Client::connect(v4::opts(cl.mqtt(REPLICANT), "roamer")).await;
    assert!(!ack.session_present, "clean start");
    back.wait_closed().await;
    clean.disconnect().await;
    let (_again, ack) = v4::Client::connect(persistent(&cl, CORE, "roamer")).await;
    assert!(
        !ack.session_present,
        "the clean start ended the old session everywhere"
    );
}

/// With `cluster.session_takeover = false` on the node a client reconnects to, its session
/// stays where it was made: no Session Present there, and it is still there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_takeover_can_be_turned_off() {
    require_halyard();
    let mut cl = Cluster::new(
        "cluster-no-roam",
        70,
        &[("c1", "core"), ("r1", "replicant")],
    );
    cl.nodes[1]
        .env
        .push(("HALYARD_CLUSTER__SESSION_TAKEOVER", "false".to_string()));
    cl.start(0);
    cl.wait_formed(1);
    cl.start(1);
    cl.wait_formed(2);
    let (mut c, _) = v4::Client::connect(persistent(&cl, 0, "stay")).await;
    c.subscribe("stay/#", v4::QoS::AtLeastOnce).await;
    c.disconnect().await;
    let (elsewhere, ack) = v4::Client::connect(persistent(&cl, 1, "stay")).await;
    assert!(!ack.session_present, "r1 does not ask for sessions");
    elsewhere.disconnect().await;
    let (_c, ack) = v4::Client::connect(persistent(&cl, 0, "stay")).await;
    assert!(ack.session_present, "the session stayed on c1");
}
